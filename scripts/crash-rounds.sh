#!/usr/bin/env bash
# Crash-safety rounds beyond CI's: SIGKILLs `mlx-hub serve` during a LoRA job and a
# large model registration ROUNDS times (default 30) with a larger folder
# (BIG_MB, default 384; each round adds a third of it to the data dir), checking the database and disk invariants after each
# restart (see crates/cli/tests/crash_rounds.rs). CI runs 10 rounds of 96 MB.
#
# Usage: scripts/crash-rounds.sh        (SEED=N replays a run: its seed is printed)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CRASH_ROUNDS=${ROUNDS:-30}
export CRASH_BIG_MB=${BIG_MB:-384}
[ -n "${SEED:-}" ] && export CRASH_SEED=$SEED
cd "$ROOT"
exec cargo test -p mlx-hub --test crash_rounds -- --nocapture
