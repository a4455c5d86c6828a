#!/usr/bin/env python3
"""A small SSE server that is not c10k-lab's, to point `c10k load --url` at.

GET /events?room=1 with the header `X-Token: secret` gets an event stream: an event every
--every-ms milliseconds whose data is JSON with its send time in milliseconds since the epoch
(`{"ts": 1764000000123, "room": "1"}`) and no `seq`. Without the header: 401. GET /health: 204.
One thread per connection (Python's ThreadingHTTPServer); listens on 127.0.0.1 only and stops
after --seconds.

    python3 scripts/foreign-sse.py --port 3000 &
    cargo run --release -- load --url 'http://127.0.0.1:3000/events?room=1' \\
        -H 'X-Token: secret' --timestamp ts --probe-url http://127.0.0.1:3000/health \\
        --probe-status 204 --connections 200 --hold-s 5
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--every-ms", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=300)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/health":
                self.send_response(204)
                self.end_headers()
                return
            if url.path != "/events":
                self.send_error(404)
                return
            if self.headers.get("X-Token") != "secret":
                self.send_response(401)
                self.send_header("WWW-Authenticate", "Token")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            room = parse_qs(url.query).get("room", [""])[0]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                while True:
                    data = json.dumps({"ts": int(time.time() * 1000), "room": room})
                    self.wfile.write(f"event: note\ndata: {data}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(args.every_ms / 1000)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Timer(args.seconds, server.shutdown).start()
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
