#!/usr/bin/env python3
"""Open N idle long-lived connections to a c10k server and hold them for a fixed time.

Each connection sends one request (SSE, chunked stream, WebSocket upgrade, or a long poll) and
waits for the response head, then the script holds every socket open without reading, for
--hold seconds after the last one opened (always bounded), and exits, closing them all.

Connections are opened one after another, so a server that stops answering is noticed at the
exact count where it happens. Opening stops early after --max-failures failures in a row (a
refused connect, a closed connection, a non-success status such as 503, or no head within
--timeout seconds). The first error of each kind is recorded.

Progress lines and a final JSON summary go to stdout. Source addresses are spread over
--sources (e.g. 127.0.0.1,127.0.0.2) so one process can use more than one ephemeral port range.

Raise the open-file limit of this process to its hard limit first; at most about
RLIMIT_NOFILE - 50 connections fit in one process, so run several processes for more.

Example:
    scripts/hold-connections.py --target 127.0.0.1:9000 --kind ws --count 5000 --hold 30
"""

import argparse
import json
import os
import resource
import signal
import socket
import struct
import sys
import time

REQUESTS = {
    "sse": b"GET /sse HTTP/1.1\r\nHost: c10k\r\n\r\n",
    "stream": b"GET /stream HTTP/1.1\r\nHost: c10k\r\n\r\n",
    "poll": b"GET /poll HTTP/1.1\r\nHost: c10k\r\n\r\n",
    "ws": (
        b"GET /ws HTTP/1.1\r\nHost: c10k\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ),
}
# Linux <netinet/in.h>; not exported by every Python version.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SUCCESS = {"sse": 200, "stream": 200, "poll": None, "ws": 101}


def open_one(target, source, kind, timeout):
    """Returns (socket, None) or (None, error description)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        # Let connect() pick the port for the whole 4-tuple: bind() alone cannot reuse ports
        # held in TIME_WAIT by earlier runs.
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((source, 0))
        s.connect(target)
        s.sendall(REQUESTS[kind])
        if kind == "poll":
            # A held poll has no head yet: it is held once the request is sent.
            return s, None
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                s.close()
                return None, "closed before a response head"
            head += chunk
            if len(head) > 65536:
                s.close()
                return None, "response head too long"
        status = int(head.split(b" ", 2)[1])
        if status != SUCCESS[kind]:
            s.close()
            return None, f"status {status}"
        return s, None
    except OSError as e:
        s.close()
        return None, f"{type(e).__name__}: {e}"
    except (ValueError, IndexError):
        s.close()
        return None, "malformed response head"


held = []


def release(status):
    """Closes every held connection and exits. An abortive close (RST) leaves no TIME_WAIT
    behind: tens of thousands of those would keep the ephemeral ports (and port 0 for the next
    server's listener) taken for a minute."""
    no_linger = struct.pack("ii", 1, 0)
    for s in held:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, no_linger)
            s.close()
        except OSError:
            pass
    print(f"released {len(held)}", flush=True)
    os._exit(status)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="HOST:PORT of the server")
    p.add_argument("--kind", choices=sorted(REQUESTS), default="sse")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--hold", type=float, default=30.0, help="seconds to hold after opening")
    p.add_argument("--sources", default="127.0.0.1", help="comma-separated source addresses")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a head")
    p.add_argument("--max-failures", type=int, default=20, help="stop after this many in a row")
    p.add_argument("--progress", type=int, default=1000, help="print a line every N opened")
    p.add_argument("--max-seconds", type=float, default=600.0, help="hard cap on the whole run")
    args = p.parse_args()

    # Never outlive the cap, whatever happens; SIGTERM ends the hold early.
    signal.signal(signal.SIGALRM, lambda *_: release(3))
    signal.alarm(int(args.max_seconds))
    signal.signal(signal.SIGTERM, lambda *_: release(0))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))
    sources = args.sources.split(",")

    errors = {}
    first_error = None
    failures_in_a_row = 0
    started = time.monotonic()
    for i in range(args.count):
        s, err = open_one(target, sources[i % len(sources)], args.kind, args.timeout)
        if s is not None:
            held.append(s)
            failures_in_a_row = 0
            if len(held) % args.progress == 0:
                print(f"opened {len(held)} after {time.monotonic() - started:.1f} s", flush=True)
            continue
        kind = err.split(":")[0]
        if kind not in errors:
            errors[kind] = 0
            print(f"first '{err}' at attempt {i + 1} ({len(held)} open)", flush=True)
        errors[kind] += 1
        if first_error is None:
            first_error = {"attempt": i + 1, "open": len(held), "error": err}
        failures_in_a_row += 1
        if failures_in_a_row >= args.max_failures:
            print(f"stopping after {failures_in_a_row} failures in a row", flush=True)
            break
    summary = {
        "kind": args.kind,
        "requested": args.count,
        "open": len(held),
        "seconds_to_open": round(time.monotonic() - started, 2),
        "first_error": first_error,
        "errors": errors,
    }
    print("SUMMARY " + json.dumps(summary), flush=True)
    time.sleep(args.hold)
    release(0)


if __name__ == "__main__":
    main()
