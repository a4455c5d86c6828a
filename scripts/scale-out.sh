#!/usr/bin/env bash
# Past one process's descriptor limit: one evented server of WORKERS processes (`--workers`,
# one event stream), and the load generator holding CLIENTS SSE clients against it from as many
# processes and source addresses as it needs. Prints the load report's summary, with the
# server's memory over all its processes (RSS and PSS). Everything runs on 127.0.0.1 and stops
# by itself. Extra arguments go to `c10k serve` (for example --reuse-port).
#
#   scripts/scale-out.sh [CLIENTS] [WORKERS] [PORT] [SERVE ARGS...]   (defaults: 30000 2 18600)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-30000}
workers=${2:-2}
port=${3:-18600}
shift $(( $# < 3 ? $# : 3 ))
cargo build --release --quiet
bin=target/release/c10k
log=$(mktemp)
"$bin" serve --model evented --listen "127.0.0.1:$port" --workers "$workers" "$@" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q '^listening on' "$log" && break; sleep 0.1; done
grep -q '^listening on' "$log" || { cat "$log"; exit 1; }
echo "machine: $(nproc) cores, Linux $(uname -r), RLIMIT_NOFILE $(ulimit -Hn)"
"$bin" load --target "127.0.0.1:$port" --kind sse --connections "$clients" --ramp-per-sec 5000 \
  --hold-s 8 --server-pid "$server" 2>&1 | tail -5
