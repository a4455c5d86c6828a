#!/usr/bin/env bash
# Past one process's descriptor limit: several evented servers share one port (SO_REUSEPORT,
# the kernel spreads connections over them), and the load generator holds N SSE clients against
# them from as many processes and source addresses as it needs. Prints the load report's summary
# and each server's threads and resident memory while the clients are held. Everything runs on
# 127.0.0.1 and stops by itself.
#
#   scripts/scale-out.sh [CLIENTS] [SERVERS] [PORT]     (defaults: 30000 2 18600)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-30000}
servers=${2:-2}
port=${3:-18600}
cargo build --release --quiet
bin=target/release/c10k
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$servers"); do
  "$bin" serve --model evented --listen "127.0.0.1:$port" --reuse-port >/dev/null 2>&1 &
  pids+=($!)
done
sleep 0.5
hold=8
"$bin" load --target "127.0.0.1:$port" --kind sse --connections "$clients" --ramp-per-sec 5000 \
  --hold-s "$hold" 2>&1 | tail -4 &
load=$!
# Read the servers while every client is held: after the ramp, before the end of the hold.
sleep $(( clients / 5000 + hold / 2 + 1 ))
echo "machine: $(nproc) cores, Linux $(uname -r), RLIMIT_NOFILE $(ulimit -Hn)"
for p in "${pids[@]}"; do
  printf 'server %s: %s open descriptors, %s threads, RSS %s\n' "$p" \
    "$(ls /proc/"$p"/fd | wc -l)" \
    "$(awk '/^Threads:/ {print $2}' /proc/"$p"/status)" \
    "$(awk '/^VmRSS:/ {print $2 " " $3}' /proc/"$p"/status)"
done
wait "$load"
