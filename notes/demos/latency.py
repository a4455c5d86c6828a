#!/usr/bin/env python3
"""Delivery latency of the same broadcast events over SSE, chunked streaming, WebSocket
and long polling, measured side by side from one client process.

Every `tick` carries `sent_ns`, the server's wall clock when it published the event; on
the same host, `time.time_ns() - sent_ns` at arrival is the delivery latency. One select()
loop reads all four connections; the long-poll client re-polls (`GET /poll?after=SEQ`) the moment each answer arrives.
Every socket that select() reports ready in one call gets the same arrival timestamp
(taken when select() returns), and the order of the sockets rotates on each call, so
the client's own parsing order does not show up as a transport difference.

Python 3 standard library only. Usage:

    target/release/c10k serve --model evented --listen 127.0.0.1:8080 --tick-ms 200
    python3 notes/demos/latency.py [HOST:PORT] [EVENTS]

default 127.0.0.1:8080 and 30 events; it stops after EVENTS events or 60 s.
"""

import base64
import json
import os
import select
import socket
import statistics
import sys
import time


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    want = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    host, port = addr.rsplit(":", 1)

    def conn(req):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req.encode())
        return s

    key = base64.b64encode(os.urandom(16)).decode()
    socks = {
        "sse": conn(f"GET /sse HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        "stream": conn(f"GET /stream HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        "ws": conn(f"GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n"),
    }
    # Long poll: start from "whatever comes next" after the newest retained event.
    probe = socket.create_connection((host, int(port)), timeout=5)
    probe.sendall(f"GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                  .encode())
    raw = b""
    while True:
        d = probe.recv(65536)
        if not d:
            break
        raw += d
    last = json.loads(raw.split(b"\r\n\r\n", 1)[1])["events_published"]
    socks["poll"] = conn(f"GET /poll?after={last} HTTP/1.1\r\nHost: {addr}\r\n\r\n")

    bufs = {k: b"" for k in socks}
    headed = {k: False for k in socks}
    lat = {k: {} for k in socks}  # name -> seq -> latency in microseconds
    names = {v: k for k, v in socks.items()}
    t_end = time.monotonic() + 60

    def seen(name, obj, now_ns):
        if obj.get("event") == "tick" and obj["seq"] > last:
            lat[name].setdefault(obj["seq"], (now_ns - obj["sent_ns"]) / 1000)

    order = list(socks.values())
    while time.monotonic() < t_end and min(len(v) for v in lat.values()) < want:
        # Rotate the order, and stamp every socket in a batch with the moment select()
        # returned, so the client's own parsing order does not show up as latency.
        order = order[1:] + order[:1]
        ready, _, _ = select.select(order, [], [], 1.0)
        now_ns = time.time_ns()
        for s in ready:
            name = names[s]
            data = s.recv(65536)
            if not data:
                sys.exit(f"{name}: connection closed")
            bufs[name] += data
            b = bufs[name]
            if not headed[name]:
                if b"\r\n\r\n" not in b:
                    continue
                b = b.split(b"\r\n\r\n", 1)[1]
                headed[name] = name != "poll"
                if name == "poll":
                    b = bufs[name]  # poll responses are parsed whole below
            if name == "sse":
                while b"\n\n" in b:
                    block, b = b.split(b"\n\n", 1)
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            seen(name, json.loads(line[6:]), now_ns)
            elif name == "stream":
                while b"\n" in b:
                    line, b = b.split(b"\n", 1)
                    line = line.strip()
                    if line.startswith(b"{"):
                        seen(name, json.loads(line), now_ns)
            elif name == "ws":
                while len(b) >= 2 and len(b) >= 2 + (b[1] & 0x7F):
                    n = b[1] & 0x7F
                    assert n < 126, "demo handles small frames only"
                    opcode, payload, b = b[0] & 0x0F, b[2:2 + n], b[2 + n:]
                    if opcode == 0x1:
                        seen(name, json.loads(payload), now_ns)
            else:  # poll: one full response per answer, then poll again at once
                while b"\r\n\r\n" in b:
                    head, rest = b.split(b"\r\n\r\n", 1)
                    length = int([l for l in head.split(b"\r\n")
                                  if l.lower().startswith(b"content-length")][0]
                                 .split(b":")[1])
                    if len(rest) < length:
                        break
                    events, b = json.loads(rest[:length]), rest[length:]
                    for e in events:
                        seen(name, e, now_ns)
                    after = max([e["seq"] for e in events] + [last])
                    last_poll = max(after, max(lat["poll"], default=last))
                    s.sendall(f"GET /poll?after={last_poll} HTTP/1.1\r\nHost: {addr}"
                              "\r\n\r\n".encode())
            bufs[name] = b

    common = sorted(set.intersection(*(set(v) for v in lat.values())))[:want]
    print(f"{len(common)} events seen by all four clients (seq {common[0]}..{common[-1]})")
    for name in ("sse", "stream", "ws", "poll"):
        xs = sorted(lat[name][q] for q in common)
        print(f"  {name:<7} median {statistics.median(xs):7.1f} us   "
              f"max {xs[-1]:8.1f} us   mean {statistics.fmean(xs):7.1f} us")
    for s in socks.values():
        s.close()


if __name__ == "__main__":
    main()
