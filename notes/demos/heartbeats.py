#!/usr/bin/env python3
"""Print what an idle SSE client and an idle WebSocket client receive, with timestamps.

Run it against a server with ticks off and a short heartbeat, e.g.

    target/release/c10k serve --model evented --listen 127.0.0.1:8080 \\
        --tick-ms 0 --heartbeat-ms 2000
    python3 notes/demos/heartbeats.py 127.0.0.1:8080 5

With nothing published, the only traffic is the heartbeat: an SSE comment line
(`: hb`) and a WebSocket ping frame (opcode 0x9), each of which keeps every NAT and
firewall on the path seeing the connection as active. Python 3 stdlib only; runs for
the given number of seconds (default 5), then exits.
"""

import base64
import os
import select
import socket
import sys
import time


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    host, port = addr.rsplit(":", 1)

    sse = socket.create_connection((host, int(port)), timeout=5)
    sse.sendall(f"GET /sse HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())
    ws = socket.create_connection((host, int(port)), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    ws.sendall((f"GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode())

    t0 = time.monotonic()
    names = {sse: "sse", ws: "ws "}
    heads = {sse: False, ws: False}
    while time.monotonic() - t0 < seconds:
        ready, _, _ = select.select([sse, ws], [], [], 0.2)
        for s in ready:
            data = s.recv(65536)
            if not data:
                print(f"{time.monotonic() - t0:6.2f} s  {names[s]}  closed")
                return
            if not heads[s] and b"\r\n\r\n" in data:
                head, data = data.split(b"\r\n\r\n", 1)
                heads[s] = True
                status = head.split(b"\r\n", 1)[0].decode()
                print(f"{time.monotonic() - t0:6.2f} s  {names[s]}  {status}")
                if not data:
                    continue
            shown = data.hex(" ") if s is ws else repr(data)
            print(f"{time.monotonic() - t0:6.2f} s  {names[s]}  {len(data)} bytes: {shown}")
    sse.close()
    ws.close()


if __name__ == "__main__":
    main()
