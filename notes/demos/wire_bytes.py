#!/usr/bin/env python3
"""Bytes on the wire for one broadcast event, per transport, captured from the server.

Opens four clients against a running server with ticks on (the default, one per second):

  /sse        text/event-stream           id: N / event: tick / data: JSON / blank line
  /stream     chunked application/x-ndjson one chunk holding JSON + "\\n"
  /ws         WebSocket                    one unmasked text frame from the server
  /poll       long polling                 one request + one full response per event

waits for the next tick, and prints the exact bytes of that same event (same seq, same
JSON) as each client received it, plus what the long-poll client had to send to get it.
It also sends the JSON back over the WebSocket to count a client-to-server (masked) frame.
Nothing is computed from the encoders: every byte count is of bytes read from or written
to a real socket.

Python 3 standard library only. Usage:

    python3 notes/demos/wire_bytes.py [HOST:PORT]

default 127.0.0.1:8080. Every socket has a 5 s timeout.
"""

import base64
import json
import os
import socket
import sys

UA = b"User-Agent: curl/7.88.1\r\nAccept: */*\r\n"  # what curl sends, for a fair request size


def connect(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("closed before the response head ended")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


class Reader:
    """Buffered reads from one socket."""

    def __init__(self, sock, buf=b""):
        self.sock, self.buf = sock, buf

    def need(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed")
            self.buf += data

    def until(self, sep):
        while sep not in self.buf:
            self.need(len(self.buf) + 1)
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def take(self, n):
        self.need(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def sse_event(r):
    """One SSE block (up to and including the blank line), skipping comment blocks."""
    while True:
        block = r.until(b"\n\n")
        if not block.startswith(b":"):
            return block


def chunk(r):
    size_line = r.until(b"\r\n")
    size = int(size_line.split(b";")[0], 16)
    return size_line + r.take(size + 2)


def ws_frame(r):
    b0, b1 = r.take(2)
    head = bytes([b0, b1])
    n = b1 & 0x7F
    if n == 126:
        ext = r.take(2)
        n = int.from_bytes(ext, "big")
        head += ext
    elif n == 127:
        ext = r.take(8)
        n = int.from_bytes(ext, "big")
        head += ext
    if b1 & 0x80:
        head += r.take(4)
    return head, r.take(n), b0 & 0x0F


def ws_client_frame(payload, opcode=0x1):
    """A masked client frame, as RFC 6455 section 5.3 requires of clients."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def seq_of(json_bytes):
    return json.loads(json_bytes)["seq"]


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    host, port = addr.rsplit(":", 1)
    port = int(port)
    host_line = f"Host: {addr}\r\n".encode()

    # One-time setup of the three long-lived subscriptions.
    sse = connect(host, port)
    sse_req = b"GET /sse HTTP/1.1\r\n" + host_line + UA + b"\r\n"
    sse.sendall(sse_req)
    sse_head, rest = read_head(sse)
    sse_r = Reader(sse, rest)

    stream = connect(host, port)
    stream_req = b"GET /stream HTTP/1.1\r\n" + host_line + UA + b"\r\n"
    stream.sendall(stream_req)
    stream_head, rest = read_head(stream)
    stream_r = Reader(stream, rest)

    ws = connect(host, port)
    key = base64.b64encode(os.urandom(16))
    ws_req = (b"GET /ws HTTP/1.1\r\n" + host_line + UA +
              b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    ws.sendall(ws_req)
    ws_head, rest = read_head(ws)
    assert ws_head.startswith(b"HTTP/1.1 101"), ws_head
    ws_r = Reader(ws, rest)

    # Long polling: find the newest seq, then ask for what comes after it.
    poll = connect(host, port)
    poll.sendall(b"GET /poll?after=0 HTTP/1.1\r\n" + host_line + UA + b"\r\n")
    head, rest = read_head(poll)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                 .split(b":")[1])
    r = Reader(poll, rest)
    events = json.loads(r.take(length))
    last = events[-1]["seq"] if events else 0
    poll_req = f"GET /poll?after={last} HTTP/1.1\r\n".encode() + host_line + UA + b"\r\n"
    poll.sendall(poll_req)  # held by the server until the next event
    poll_resp_head, rest = read_head(poll)
    r = Reader(poll, rest)
    length = int([l for l in poll_resp_head.split(b"\r\n")
                  if l.lower().startswith(b"content-length")][0].split(b":")[1])
    poll_body = r.take(length)
    (ev,) = json.loads(poll_body)
    seq = ev["seq"]
    json_bytes = json.dumps(ev, separators=(",", ":")).encode()

    # The same event as the three subscribers received it.
    while True:
        block = sse_event(sse_r)
        data = [l[len(b"data: "):] for l in block.split(b"\n") if l.startswith(b"data: ")]
        if data and seq_of(data[0]) == seq:
            sse_bytes = block
            break
    while True:
        c = chunk(stream_r)
        if seq_of(c.split(b"\r\n", 1)[1].strip()) == seq:
            chunk_bytes = c
            break
    while True:
        fh, payload, opcode = ws_frame(ws_r)
        if opcode == 0x1 and seq_of(payload) == seq:
            ws_bytes = fh + payload
            break

    # Client to server over the WebSocket: the same JSON, masked; the echo comes back.
    client_frame = ws_client_frame(payload)
    ws.sendall(client_frame)
    while True:
        fh, echo, opcode = ws_frame(ws_r)
        if opcode == 0x1 and echo == payload:
            break

    jl = len(json_bytes)
    print(f"event seq {seq}: JSON payload {jl} bytes: {json_bytes.decode()}")
    print()
    print("per event (bytes the receiver reads for this one event; overhead = total - JSON):")
    rows = [
        ("SSE (/sse)", len(sse_bytes)),
        ("chunked NDJSON (/stream)", len(chunk_bytes)),
        ("WebSocket, server->client", len(ws_bytes)),
        ("WebSocket, client->server", len(client_frame)),
        ("long poll, response", len(poll_resp_head) + len(poll_body)),
        ("long poll, request", len(poll_req)),
        ("long poll, request+response", len(poll_req) + len(poll_resp_head) + len(poll_body)),
    ]
    for name, n in rows:
        print(f"  {name:<30} {n:4d} bytes   overhead {n - jl:4d}")
    print()
    print("exact bytes:")
    print(f"  SSE:        {sse_bytes!r}")
    print(f"  chunk:      {chunk_bytes!r}")
    print(f"  WS frame:   header {ws_bytes[:len(ws_bytes) - jl].hex(' ')} + payload")
    print(f"  WS client:  header {client_frame[:len(client_frame) - jl].hex(' ')} "
          "(last 4 = mask key) + masked payload")
    print(f"  poll req:   {poll_req!r}")
    print(f"  poll resp:  {poll_resp_head!r} + body {poll_body!r}")
    print()
    print("one-time setup per connection (request head + response head):")
    print(f"  SSE        {len(sse_req):4d} + {len(sse_head):4d} bytes")
    print(f"  stream     {len(stream_req):4d} + {len(stream_head):4d} bytes")
    print(f"  WebSocket  {len(ws_req):4d} + {len(ws_head):4d} bytes (handshake)")
    print(f"  SSE response head:    {sse_head!r}")
    print(f"  stream response head: {stream_head!r}")
    print(f"  WS response head:     {ws_head!r}")
    for s in (sse, stream, ws, poll):
        s.close()


if __name__ == "__main__":
    main()
