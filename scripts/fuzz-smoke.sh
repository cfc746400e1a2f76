#!/usr/bin/env bash
# Short fuzz run of every target (default 15 s each) on the stable toolchain: libFuzzer
# via libfuzzer-sys, with the sanitizer-coverage passes requested directly (no nightly,
# no cargo-fuzz). Fails if any target finds a crash. Usage: scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-15}
target=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
cargo build --locked --release --target "$target" --bins
for t in wire_parse spa_fwknop spa_native privsep_codec; do
  corpus=$(mktemp -d)
  seeds=seeds/$t
  [ -d "$seeds" ] || seeds=
  echo "fuzz $t for ${secs}s"
  log=$(mktemp)
  status=0
  "target/$target/release/$t" "$corpus" $seeds -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^(Done|==[0-9]+==|SUMMARY|panicked)" "$log" || true
  rm -rf "$corpus"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $t FAILED (exit $status); the crashing input is saved in fuzz/" >&2
    exit 1
  fi
  rm -f "$log"
done
echo "fuzz smoke: 4 targets ran ${secs}s each, no crashes"
