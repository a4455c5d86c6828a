#!/usr/bin/env bash
# What answering newcomers during a fan-out costs the fan-out: 19,000 SSE subscribers, one event
# every 500 ms, with a probe (a fresh connection and GET /) every P ms or none, for the floor and
# the evented server. The server runs on CPU 0 and the load generator on CPU 1, so the server's
# CPU time is its fan-out's length. Per run: the server's CPU over 5 s of the hold, the
# function-call interrupts CPU 1 received meanwhile (how a remote wake-up is delivered), and
# delivery p50/p99 and probe p99 from the load generator's report.
#
#   scripts/fanout-probe-cost.sh                                      # probes: none, 100, 20, 5 ms
#   C10K_BIN=target/release/c10k PROBES="0 20" MODELS=evented scripts/fanout-probe-cost.sh
#   BUSY_POLL_US=50 scripts/fanout-probe-cost.sh    # the load generator polls 50 µs before sleeping
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${C10K_BIN:-}" ] || cargo build --release --quiet
BIN=${C10K_BIN:-target/release/c10k}
PROBES=${PROBES:-0 100 20 5}
MODELS=${MODELS:-floor evented}
N=${N:-19000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
call_irqs_cpu1() { awk '$1 == "CAL:" {print $3}' /proc/interrupts; }

echo "model,probe_ms,server_cpu_ms_per_5s,cpu1_call_irqs_per_5s,delivery_p50_ms,delivery_p99_ms,probe_p99_ms"
for model in $MODELS; do
  for probe in $PROBES; do
    taskset -c 0 "$BIN" serve --model "$model" --workers 1 --tick-ms 500 --heartbeat-ms 0 \
      --listen 127.0.0.1:0 > "$tmp/server.out" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q "listening on" "$tmp/server.out" && break; sleep 0.1; done
    addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$tmp/server.out" | head -1)
    taskset -c 1 "$BIN" load --target "$addr" --kind sse --connections "$N" --ramp-per-sec 10000 \
      --hold-s 8 --probe-ms "$probe" --timeout-ms 10000 --busy-poll-us "${BUSY_POLL_US:-0}" \
      --json "$tmp/load.json" > /dev/null 2>&1 &
    load=$!
    sleep 4   # the ramp (2 s) and a fan-out or two
    c0=$(cpu_ticks "$server"); i0=$(call_irqs_cpu1)
    sleep 5
    c1=$(cpu_ticks "$server"); i1=$(call_irqs_cpu1)
    wait "$load" || true
    kill "$server"; wait "$server" 2>/dev/null || true
    hz=$(getconf CLK_TCK)
    python3 - "$tmp/load.json" "$model" "$probe" $(( (c1 - c0) * 1000 / hz )) $(( i1 - i0 )) <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
ms = lambda us: "" if us is None else "%.1f" % (us / 1000)
print(",".join([sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5],
                ms(t.get("held_event_p50_us")), ms(t.get("held_event_p99_us")),
                ms(t.get("held_probe_p99_us"))]))
PY
  done
done
