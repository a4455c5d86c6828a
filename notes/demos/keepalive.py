#!/usr/bin/env python3
"""Fresh connection per request versus one persistent (keep-alive) connection.

Three measurements against the project's probe, `GET /` (answer: `200`, body `ok\\n`):

1. fresh:      N probes, each on a new TCP connection (connect, request, read the
               response, close). Timed from just before connect() to the last byte.
2. keep-alive: N probes on one persistent connection. Timed from just before sending
               the request to the last byte of the response.
               Fresh and keep-alive probes alternate, so both see the same machine load.
3. pipelined:  10 requests written in one send() on one connection, then the 10
               responses read back (RFC 9112 section 9.3.2).

Before and after, it reads `accepted` from `GET /stats` (each /stats read is itself one
accepted connection, which the script accounts for) to show how many TCP connections the
server actually accepted.

Python 3 standard library only. Usage:

    python3 notes/demos/keepalive.py [HOST:PORT] [N]

defaults: 127.0.0.1:8080, N = 2000. Every socket has a 5 s timeout.
"""

import json
import socket
import statistics
import sys
import time


def read_response(sock, buf=b""):
    """Reads one Content-Length response; returns (status line, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed before a full response head")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed inside a response body")
        rest += data
    return head.split(b"\r\n", 1)[0].decode(), rest[length:], rest[:length]


def stats(host, port):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET /stats HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  "Connection: close\r\n\r\n".encode())
        _, _, body = read_response(s)
    return json.loads(body)


def summary(name, samples_ns):
    us = sorted(x / 1000 for x in samples_ns)
    n = len(us)
    return (f"{name:<11} n={n}  median {statistics.median(us):7.1f} us   "
            f"p90 {us[int(n * 0.90)]:7.1f} us   p99 {us[int(n * 0.99)]:7.1f} us   "
            f"mean {statistics.fmean(us):7.1f} us")


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    host, port = addr.rsplit(":", 1)
    port = int(port)
    req = f"GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode()

    before = stats(host, port)["accepted"]

    # 1 and 2, interleaved so that both see the same machine load: a probe on a new
    # TCP connection, then a probe on the one persistent connection, N times.
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    leftover = b""
    fresh, keep = [], []
    for _ in range(n):
        t = time.perf_counter_ns()
        f = socket.create_connection((host, port), timeout=5)
        f.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f.sendall(req)
        status, _, _ = read_response(f)
        fresh.append(time.perf_counter_ns() - t)
        f.close()
        assert status == "HTTP/1.1 200 OK", status

        t = time.perf_counter_ns()
        s.sendall(req)
        status, leftover, _ = read_response(s, leftover)
        keep.append(time.perf_counter_ns() - t)
        assert status == "HTTP/1.1 200 OK", status

    # 3. Ten requests pipelined in one write on the same connection.
    s.sendall(req * 10)
    answers = []
    for _ in range(10):
        status, leftover, body = read_response(s, leftover)
        answers.append((status, body))
    s.close()

    after = stats(host, port)["accepted"]

    print(summary("fresh", fresh))
    print(summary("keep-alive", keep))
    print(f"pipelined   10 requests in one send() -> {len(answers)} responses, "
          f"all {set(a[0] for a in answers)}, bodies {set(a[1] for a in answers)}")
    # Each stats() call is one accepted connection of its own.
    print(f"server 'accepted' counter: {before} -> {after}: {after - before - 1} connections "
          f"for {2 * n + 10} requests ({n} fresh + 1 persistent; the -1 is the second "
          "/stats read itself)")


if __name__ == "__main__":
    main()
