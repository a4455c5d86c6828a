#!/usr/bin/env bash
# What a server sees when an SSE client goes away: no "close" message, only the end of
# the TCP byte stream (read() returns 0 after the client's FIN).
#
# Usage: notes/demos/sse_close.sh [HOST:PORT] [SERVER_PID]
#   HOST:PORT   a running `c10k serve` (default 127.0.0.1:8080)
#   SERVER_PID  optional: if given and strace is installed, the server's socket reads are
#               traced while the client connects and is killed (needs ptrace permission).
# Every step is bounded: curl and strace run under `timeout`, waits are fixed sleeps.
set -u
ADDR=${1:-127.0.0.1:8080}
SPID=${2:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

sse_count() { curl -s --max-time 2 "http://$ADDR/stats" | grep -o '"sse":[0-9]*'; }

if [ -n "$SPID" ] && command -v strace >/dev/null; then
  timeout 6 strace -p "$SPID" -e trace=recvfrom -o "$TMP/strace" 2>/dev/null &
  STRACE=$!
  sleep 1
fi

echo "before:            $(sse_count)"
timeout 30 curl -sN "http://$ADDR/sse" > "$TMP/events" &
CURL=$!
sleep 1.5
echo "curl connected:    $(sse_count)   (curl pid $CURL, $(grep -c '^id:' "$TMP/events") events received so far)"
kill "$CURL"            # SIGTERM: curl exits; its kernel closes the socket (FIN)
wait "$CURL" 2>/dev/null
sleep 0.5
echo "after kill:        $(sse_count)"

if [ -n "${STRACE:-}" ]; then
  wait "$STRACE" 2>/dev/null
  echo
  echo "server-side socket reads, /stats requests and EAGAIN lines dropped:"
  # Reads of the /stats connections are noise here; what is left is the SSE connection.
  awk '/EAGAIN|^(\+\+\+|---)/ { next }
       { split($1, a, /[(,]/); fd = a[2] }
       /GET \/stats/ { stats[fd] = 1; next }
       fd in stats { if ($NF == "0") delete stats[fd]; next }
       { print }' "$TMP/strace"
fi
