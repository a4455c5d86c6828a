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
# A session's behaviour is about the order of events, not the size of one read: shorter inputs
# explore more of it per second.
max_len() { if [ "$1" = session ]; then echo 1024; else echo 4096; fi; }
# The session is safe Rust from end to end; AddressSanitizer makes it 14 times slower here and
# the unsafe code it reaches (httparse) is fuzzed under the sanitizer by request_head.
sanitizer() { if [ "$1" = session ]; then echo none; else echo address; fi; }
for t in "${targets[@]}"; do
  mkdir -p "work/$t"
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run -O -s "$(sanitizer "$t")" "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    -max_len="$(max_len "$t")" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  case $status in
    0) echo "$t: ${runs:-?} executions" ;;
    # libFuzzer's exit status when interrupted (Ctrl-C): what ran is still counted.
    72) echo "$t: ${runs:-?} executions, interrupted" ;;
    *) echo "$t: ${runs:-?} executions, FAILED (see fuzz/artifacts/$t/)"; tail -n 30 "$log" ;;
  esac
  rm -f "$log"
done
