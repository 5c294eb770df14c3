#!/usr/bin/env bash
# Fuzzing (not in CI): runs each cargo-fuzz target of fuzz/ for SECONDS (default 60)
# and prints the executions per target (libFuzzer's stat::number_of_executed_units)
# and whether it crashed (panic, abort, OOM over -rss_limit_mb, or a timeout).
#
# The committed seeds (fuzz/corpus/<target>/, from fuzz/make-seeds.py) are read
# only; what the fuzzer finds goes to fuzz/target/corpus/<target>/ (kept between
# runs) and crashing inputs to fuzz/artifacts/<target>/. A crash found is fixed
# and its input kept as a unit test in the crate that owns the entry point.
#
# We have a stable toolchain only: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's
# nightly flags. No sanitizer (-s none): the targets are safe Rust; we hunt
# panics, overflows (debug assertions on), runaway memory and time.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Env: FUZZ_RSS_MB (2048), FUZZ_TIMEOUT (10 s per input), FUZZ_PARALLEL (targets run at
# once, default 1: each then has the seconds to itself).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-60}
shift || true
if ((BASH_VERSINFO[0] < 4)); then
    echo "fuzz.sh needs bash >= 4 (associative arrays, wait -n); macOS: brew install bash" >&2
    exit 1
fi
RSS_MB=${FUZZ_RSS_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT:-10}
export RUSTC_BOOTSTRAP=1
FLAGS=(--sanitizer none --release --debug-assertions --features hub,api)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz || exit 1
fi
cd "$ROOT/fuzz" || exit 1
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo fuzz list)
fi
cargo fuzz build "${FLAGS[@]}" || exit 1

PARALLEL=${FUZZ_PARALLEL:-1}
run_one() {
    local t=$1
    mkdir -p "target/corpus/$t" "artifacts/$t"
    cargo fuzz run "${FLAGS[@]}" "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
        -print_final_stats=1 >"target/fuzz-$t.log" 2>&1
    echo $? >"target/fuzz-$t.rc"
}
running=0
for t in "${TARGETS[@]}"; do
    echo "== $t: ${SECS} s"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

declare -A EXECS RESULT
status=0
for t in "${TARGETS[@]}"; do
    log="target/fuzz-$t.log"
    rc=$(cat "target/fuzz-$t.rc")
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ -z "$execs" ]; then
        # no final stats (a crash): the last "#N" status line
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    EXECS[$t]=${execs:-0}
    if [ "$rc" -eq 0 ]; then
        RESULT[$t]=ok
    else
        status=1
        what=$(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+' "$log" || echo "exit $rc")
        art=$(grep -oE "artifacts/$t/[a-z]+-[0-9a-f]+" "$log" | tail -1)
        RESULT[$t]="CRASH ($what) ${art:-}"
        grep -m3 -A3 'panicked at' "$log" || tail -20 "$log"
    fi
done

echo
printf '%-26s %14s  %s\n' target executions result
for t in "${TARGETS[@]}"; do
    printf '%-26s %14s  %s\n' "$t" "${EXECS[$t]}" "${RESULT[$t]}"
done
exit $status
