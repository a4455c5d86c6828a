#!/usr/bin/env bash
# How long a newcomer waits while the event loop fans an event out to many subscribers, for
# several --fanout-batch sizes, against the thread-per-connection server for comparison.
# For each setting: a fresh server ticking every 250 ms, N SSE subscribers held for 15 s, and a
# probe (a fresh GET /) every 50 ms from its own loop; prints the probe's and the events'
# latency percentiles. Everything runs on 127.0.0.1 and stops by itself.
#
#   scripts/fanout-sweep.sh [SUBSCRIBERS] [BATCH...]     (defaults: 1000, batches 512 128 64 32)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
if [ $# -gt 1 ]; then batches=("${@:2}"); else batches=(512 128 64 32); fi
[ -n "${C10K_BIN:-}" ] || cargo build --release --quiet
bin=${C10K_BIN:-target/release/c10k}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # label, server args...
  local label=$1; shift
  "$bin" serve --listen 127.0.0.1:0 --tick-ms 250 "$@" >"$out/addr" 2>/dev/null &
  local pid=$!
  for _ in $(seq 50); do grep -q listening "$out/addr" && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/listening on //p' "$out/addr")
  "$bin" load --target "$addr" --kind sse --connections "$n" --ramp-per-sec 200 --hold-s 15 \
    --probe-ms 50 --server-pid "$pid" --json "$out/report.json" >/dev/null 2>&1 || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  python3 - "$label" "$out/report.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[2]))["totals"]
ms = lambda us: "-" if us is None else f"{us / 1000:.1f}"
print(f"| {sys.argv[1]} | {t['probes_answered']}/{t['probes_sent']} | {ms(t['probe_p50_us'])} | {ms(t['probe_p99_us'])} | {ms(t['probe_p999_us'])} | {ms(t['event_p50_us'])} | {ms(t['event_p99_us'])} |")
PY
}

echo "$n SSE subscribers, a tick every 250 ms, a probe every 50 ms; latencies in ms"
echo "machine: $(nproc) cores, Linux $(uname -r)"
echo
echo "| server | probes answered | probe p50 | probe p99 | probe p99.9 | event p50 | event p99 |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for b in "${batches[@]}"; do
  run "evented, --fanout-batch $b" --model evented --fanout-batch "$b"
done
run "blocking, --threads unbounded" --model blocking --threads unbounded
