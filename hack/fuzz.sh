#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS (default 180) each,
# one after the other, and fails on the first crash (its input is saved under
# fuzz/artifacts/<target>/; replay it with `cargo fuzz run --sanitizer none <target> <file>`,
# and once fixed, copy it into fuzz/corpus/<target>/ so `make test` keeps replaying it).
#
# Stable toolchain only: `--sanitizer none` is what keeps cargo-fuzz off nightly flags
# (no -Zsanitizer); the build is still release with debug assertions and overflow checks,
# and libFuzzer's coverage and comparison tracing. cargo-fuzz is installed once into
# ~/.cache/mqfleet/cargo-fuzz. New inputs the fuzzer finds go to fuzz/target/corpus/
# (not committed); fuzz/corpus/ is only read.
#
# FUZZ_TARGETS="frame acl" picks targets.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
per_target=${FUZZ_SECONDS:-180}
targets=${FUZZ_TARGETS:-frame header batch stored_message fastjson acl consume_queue index checkpoint timer_store state_json}
version=0.13.2
prefix=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}/cargo-fuzz

if ! "$prefix/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$version"; then
  echo "== installing cargo-fuzz $version into $prefix"
  cargo install cargo-fuzz --version "$version" --locked --root "$prefix"
fi
export PATH="$prefix/bin:$PATH"
# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null; then
  echo "== installing a C++ compiler for libFuzzer"
  apt-get update -q && apt-get install -y -q g++
fi

echo "== building the fuzz targets (release, debug assertions, no sanitizer)"
cargo fuzz build --sanitizer none

summary=()
failed=""
for t in $targets; do
  work=$root/fuzz/target/corpus/$t
  log=$root/fuzz/target/fuzz-$t.log
  mkdir -p "$work" "$root/fuzz/artifacts/$t"
  echo "== fuzzing $t for ${per_target}s (log: fuzz/target/fuzz-$t.log)"
  rc=0
  cargo fuzz run --sanitizer none "$t" "$work" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
  if [ -z "$runs" ]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  fi
  units=$(find "$work" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    line=$(printf '%-15s ok     %10s runs in %4ss (%s/s), %s corpus units' "$t" "${runs:-?}" "${secs:-?}" \
      "$([ -n "$runs" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ] && echo $((runs / secs)) || echo '?')" "$units")
  else
    line=$(printf '%-15s CRASH  after %s runs (exit %s): %s' "$t" "${runs:-?}" "$rc" \
      "$(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -1)")
    failed="$failed $t"
    tail -40 "$log"
  fi
  echo "$line"
  summary+=("$line")
done

echo "== fuzz summary (${per_target}s per target)"
printf '%s\n' "${summary[@]}"
if [ -n "$failed" ]; then
  echo "== crashes in:$failed"
  exit 1
fi
