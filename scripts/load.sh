#!/usr/bin/env bash
# Bounded load on loopback (not in CI): runs crates/hub/tests/load.rs with registry
# reads at LOAD_RPS (default 200/s) for LOAD_SECS (default 60 s here; the test's own
# default is 10 s), then LOAD_STREAMS (500) concurrent streamed chats, and prints
# the figures: achieved rate, p50/p90/p99/max latency and errors of the reads; the
# streams completed or refused (503 + Retry-After) and memory after.
#
# Usage: scripts/load.sh [SECONDS]
# Env: LOAD_RPS, LOAD_STREAMS (passed through), CARGO_PROFILE (default: test profile).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export LOAD_SECS=${1:-${LOAD_SECS:-60}}
export LOAD_RPS=${LOAD_RPS:-200}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

echo "load: registry reads at ${LOAD_RPS}/s for ${LOAD_SECS} s, then ${LOAD_STREAMS:-500} chat streams"
start=$(date +%s)
set +e
cargo test --manifest-path "$ROOT/Cargo.toml" -p hub --test load -- --nocapture >"$LOG" 2>&1
rc=$?
set -e
grep -E '^(registry reads|chat streams|memory|SKIPPED)' "$LOG" || true
grep -E 'test result:|panicked' "$LOG" || true
echo "load: done in $(( $(date +%s) - start )) s (cargo rc=$rc)"
if [ "$rc" -ne 0 ]; then
    tail -40 "$LOG"
fi
exit "$rc"
