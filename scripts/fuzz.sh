#!/usr/bin/env bash
# Fuzzes the sans-IO core with libFuzzer (cargo-fuzz, nightly): the request head parser, the body
# decoder, the WebSocket frame decoder, the SSE parser and the connection session. Installs
# cargo-fuzz when it is missing, runs every target for SECONDS (default 60) from the committed
# seeds in fuzz/corpus/ (new inputs go to fuzz/work/, crashes to fuzz/artifacts/), and prints
# each target's execution count. No network traffic. FUZZ_ARGS adds libFuzzer flags, e.g.
# FUZZ_ARGS=-runs=10000000 to stop at ten million executions.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
if [ $# -gt 1 ]; then targets=("${@:2}"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
cargo +nightly fuzz build -O
# A session's behaviour is about the order of events, not the size of one read: shorter inputs
# explore more of it per second.
max_len() { if [ "$1" = session ]; then echo 1024; else echo 4096; fi; }
for t in "${targets[@]}"; do
  mkdir -p "work/$t"
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    -max_len="$(max_len "$t")" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "$t: ${runs:-?} executions$([ "$status" -ne 0 ] && echo ", FAILED (see fuzz/artifacts/$t/)")"
  [ "$status" -eq 0 ] || tail -n 30 "$log"
  rm -f "$log"
done
