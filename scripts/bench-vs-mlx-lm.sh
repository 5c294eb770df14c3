#!/usr/bin/env bash
# Benchmarks mlx-hub against mlx-lm on one model folder, in one run:
#   mlx-hub bench --model DIR -p P -g G -n N --json
#   python3 -m mlx_lm benchmark --model DIR -p P -g G -n N
# on the same libmlx (Python's mlx wheel is the library mlx-hub links) and the same
# BLAS: OpenBLAS is linked into mlx-hub, and preloaded into Python with LD_PRELOAD so
# libmlx's cblas_* calls bind to it there too. Prints both and the ratios
# (mlx-hub / mlx-lm) of prompt tok/s and generation tok/s.
#
# Usage: scripts/bench-vs-mlx-lm.sh MODEL_DIR [-p 512] [-g 128] [-n 5]
# Env:   PYTHON (python3), OPENBLAS (/usr/lib/x86_64-linux-gnu/libopenblas.so.0),
#        MLX_HUB_BIN (skip the build and use this binary),
#        MLX_HUB_BENCH_CMD (subcommand; default "bench"),
#        CARGO_TARGET_DIR (where cargo builds; default target).
set -euo pipefail

usage() { echo "usage: $0 MODEL_DIR [-p PROMPT_TOKENS] [-g GENERATION_TOKENS] [-n TRIALS]" >&2; exit 2; }
[ $# -ge 1 ] || usage
MODEL=$1; shift
P=512 G=128 N=5
while [ $# -gt 0 ]; do
  case $1 in
    -p) P=$2; shift 2 ;;
    -g) G=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -f "$MODEL/config.json" ] || { echo "error: $MODEL has no config.json" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
OPENBLAS=${OPENBLAS:-/usr/lib/x86_64-linux-gnu/libopenblas.so.0}
CMD=${MLX_HUB_BENCH_CMD:-bench}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ -z "${MLX_HUB_BIN:-}" ]; then
  echo "== building mlx-hub (release)"
  (cd "$ROOT" && cargo build --release -p mlx-hub --quiet)
  MLX_HUB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mlx-hub"
fi

PRELOAD=
if [ "$(uname -s)" = Linux ]; then
  if [ -f "$OPENBLAS" ]; then
    PRELOAD=$OPENBLAS
    echo "== Python runs with LD_PRELOAD=$OPENBLAS (OpenBLAS, as linked into mlx-hub)"
  else
    echo "WARNING: $OPENBLAS not found: Python's mlx uses the wheel's reference BLAS" >&2
  fi
fi

echo "== versions"
"$MLX_HUB_BIN" --version
LD_PRELOAD=$PRELOAD "$PYTHON" -c 'import mlx.core as mx, mlx_lm; print("python mlx", mx.__version__, "mlx-lm", mlx_lm.__version__)'

echo "== mlx-hub $CMD --model $MODEL -p $P -g $G -n $N"
"$MLX_HUB_BIN" "$CMD" --model "$MODEL" -p "$P" -g "$G" -n "$N" --json > "$OUT/ours.json"
"$PYTHON" - "$OUT/ours.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   blas: {r['blas']}")
for i, t in enumerate(r["trials"], 1):
    print(f"   Trial {i}: prompt_tps={t['prompt_tps']:.3f}, generation_tps={t['generation_tps']:.3f}, peak_memory={t['peak_memory']:.3f}")
a = r["averages"]
print(f"   Averages: prompt_tps={a['prompt_tps']:.3f}, generation_tps={a['generation_tps']:.3f}, peak_memory={a['peak_memory']:.3f}")
PY

echo "== python3 -m mlx_lm benchmark --model $MODEL -p $P -g $G -n $N"
LD_PRELOAD=$PRELOAD "$PYTHON" -m mlx_lm benchmark --model "$MODEL" -p "$P" -g "$G" -n "$N" \
  2> "$OUT/theirs.err" | tee "$OUT/theirs.txt" | sed 's/^/   /' || { cat "$OUT/theirs.err" >&2; exit 1; }

echo "== ratios (mlx-hub / mlx-lm; > 1 means mlx-hub is faster)"
"$PYTHON" - "$OUT/ours.json" "$OUT/theirs.txt" <<'PY'
import json, re, sys
ours = json.load(open(sys.argv[1]))["averages"]
line = [l for l in open(sys.argv[2]) if l.startswith("Averages:")]
if not line:
    sys.exit("mlx_lm benchmark printed no Averages line")
theirs = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line[-1])}
for k, label in [("prompt_tps", "prompt tok/s"), ("generation_tps", "generation tok/s")]:
    print(f"   {label:17} mlx-hub {ours[k]:10.3f}   mlx-lm {theirs[k]:10.3f}   ratio {ours[k] / theirs[k]:.3f}x")
print(f"   {'peak memory GB':17} mlx-hub {ours['peak_memory']:10.3f}   mlx-lm {theirs['peak_memory']:10.3f}")
PY
