#!/usr/bin/env python3
"""Show that an HTTP/1.1 response can flow while its request is still being sent.

Sends `POST /echo` with a chunked request body, one part at a time, pausing between
parts. After each part it waits for that part to come back in the response, and prints
timestamps. If the response could only start after the whole request had arrived, the
first echo would arrive after the last part was sent; it arrives long before.

Python 3 standard library only. Usage:

    python3 notes/demos/echo_duplex.py [HOST:PORT] [PARTS] [PAUSE_SECONDS]

defaults: 127.0.0.1:8080, 5 parts, 0.5 s pause. Every wait is bounded (5 s timeout).
"""

import socket
import sys
import time


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    parts = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
    host, port = addr.rsplit(":", 1)

    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()

    def ms():
        return f"{(time.monotonic() - t0) * 1000:8.1f} ms"

    head = (
        f"POST /echo HTTP/1.1\r\nHost: {addr}\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sock.sendall(head)
    print(f"{ms()}  sent request head (body not started)")

    received = b""
    # The response head arrives before a single body byte has been sent.
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        if not data:
            sys.exit("server closed the connection")
        received += data
    resp_head, received = received.split(b"\r\n\r\n", 1)
    status = resp_head.split(b"\r\n", 1)[0].decode()
    print(f"{ms()}  got response head: {status!r}  (request body: 0 bytes sent so far)")

    echoed = received
    for i in range(1, parts + 1):
        part = f"part {i} of {parts}\n".encode()
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        print(f"{ms()}  sent {part!r}")
        # Wait until this part has come back inside the (chunked) response body.
        while part not in echoed:
            data = sock.recv(65536)
            if not data:
                sys.exit("server closed the connection")
            echoed += data
        print(f"{ms()}  echo of part {i} arrived; request still open "
              f"(parts still to send: {parts - i}, then the last-chunk)")
        if i < parts:
            time.sleep(pause)

    sock.sendall(b"0\r\n\r\n")
    print(f"{ms()}  sent last-chunk: the request is complete only now")
    while not echoed.endswith(b"0\r\n\r\n"):
        data = sock.recv(65536)
        if not data:
            break
        echoed += data
    print(f"{ms()}  response complete (its last-chunk arrived)")
    sock.close()


if __name__ == "__main__":
    main()
