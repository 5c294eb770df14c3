#!/usr/bin/env bash
# Benchmarks LoRA training, mlx-hub against mlx-lm, in one run: the same SmolLM2 folder
# (imported from the cached GGUF and dequantized to float32; `--variants "f32 q4"` adds
# the 4-bit import, i.e. QLoRA, ~30x slower on CPU where MLX's quantized matmul has no
# BLAS behind it),
# the same data (chatterbot-corpus via scripts/chatterbot-to-jsonl.py), the same LoRA
# config and seed:
#   mlx-hub train --model M --data D ... --json
#   python3 -m mlx_lm lora --train --model M --data D ...
# on the same libmlx (Python's mlx wheel is the library mlx-hub links) and the same BLAS
# (OpenBLAS linked into mlx-hub, preloaded into Python with LD_PRELOAD). Prints each
# side's tokens/s and peak memory from its last report (steps after the first report,
# so compilation and warm-up are not counted) and the tokens/s ratio (mlx-hub / mlx-lm).
#
# Usage: scripts/bench-lora-vs-mlx-lm.sh [--iters 20] [--batch-size 4] [--num-layers 16]
#        [--max-seq-length 64] [--variants "f32 q4"] [--model DIR (instead of SmolLM2)]
# Env:   PYTHON (python3), OPENBLAS (/usr/lib/x86_64-linux-gnu/libopenblas.so.0),
#        MLX_HUB_BIN (skip the build and use this binary), MLX_HUB_SMOLLM2_GGUF,
#        CARGO_TARGET_DIR (where cargo builds; default target), JSON_OUT (also write
#        the figures there as JSON, for scripts/perf-report).
set -euo pipefail

ITERS=20 BATCH=4 LAYERS=16 MAXLEN=64 VARIANTS="f32" MODEL=
while [ $# -gt 0 ]; do
  case $1 in
    --iters) ITERS=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --num-layers) LAYERS=$2; shift 2 ;;
    --max-seq-length) MAXLEN=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --model) MODEL=$2; VARIANTS=given; shift 2 ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done
REPORT=$((ITERS / 2))

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
OPENBLAS=${OPENBLAS:-/usr/lib/x86_64-linux-gnu/libopenblas.so.0}
GGUF=${MLX_HUB_SMOLLM2_GGUF:-$HOME/.cache/mlx-hub/models/SmolLM2-135M-Instruct-Q4_1.gguf}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ -z "${MLX_HUB_BIN:-}" ]; then
  echo "== building mlx-hub (release)"
  (cd "$ROOT" && cargo build --release -p mlx-hub --quiet)
  MLX_HUB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mlx-hub"
fi
PRELOAD=
if [ "$(uname -s)" = Linux ] && [ -f "$OPENBLAS" ]; then
  PRELOAD=$OPENBLAS
  echo "== Python runs with LD_PRELOAD=$OPENBLAS (OpenBLAS, as linked into mlx-hub)"
fi
echo "== versions"
"$MLX_HUB_BIN" --version
LD_PRELOAD=$PRELOAD "$PYTHON" -c 'import mlx.core as mx, mlx_lm; print("python mlx", mx.__version__, "mlx-lm", mlx_lm.__version__)'

echo "== data: chatterbot-corpus -> $OUT/data"
"$PYTHON" "$ROOT/scripts/chatterbot-to-jsonl.py" "$OUT/data" | sed 's/^/   /'

model_dir() {
  case $1 in
    given) echo "$MODEL" ;;
    q4)
      [ -d "$OUT/q4" ] || "$MLX_HUB_BIN" convert --model "$GGUF" --mlx-path "$OUT/q4" --json >/dev/null
      echo "$OUT/q4" ;;
    f32)
      model_dir q4 >/dev/null
      [ -d "$OUT/f32" ] || "$MLX_HUB_BIN" convert --model "$OUT/q4" --mlx-path "$OUT/f32" \
        --dequantize --dtype float32 --json >/dev/null
      echo "$OUT/f32" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

COMMON=(--data "$OUT/data" --iters "$ITERS" --batch-size "$BATCH" --num-layers "$LAYERS"
        --max-seq-length "$MAXLEN" --learning-rate 1e-5 --steps-per-report "$REPORT"
        --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --seed 0)
SUMMARY=$OUT/summary.txt
for v in $VARIANTS; do
  M=$(model_dir "$v")
  echo "== [$v] mlx-hub train --model $M ${COMMON[*]}"
  "$MLX_HUB_BIN" train --model "$M" "${COMMON[@]}" --adapter-path "$OUT/ours-$v" --json \
    > "$OUT/ours-$v.jsonl"
  grep '"event":"train"' "$OUT/ours-$v.jsonl" | sed 's/^/   /'
  echo "== [$v] python3 -m mlx_lm lora --train --model $M ${COMMON[*]}"
  # mlx_lm.lora's own main, with a reporting callback that prints its report dicts as JSON.
  LD_PRELOAD=$PRELOAD HF_HUB_OFFLINE=1 "$PYTHON" - --model "$M" "${COMMON[@]}" \
    --adapter-path "$OUT/theirs-$v" > "$OUT/theirs-$v.txt" 2> "$OUT/theirs-$v.err" <<'PY' \
    || { cat "$OUT/theirs-$v.err" >&2; exit 1; }
import json, sys
import mlx_lm.lora as lora
from mlx_lm.tuner.callbacks import TrainingCallback
class Report(TrainingCallback):
    def on_train_loss_report(self, info):
        print("REPORT " + json.dumps(info), flush=True)
    def on_val_loss_report(self, info):
        pass
lora.get_reporting_callbacks = lambda *a, **k: Report()
sys.argv = ["mlx_lm.lora", "--train"] + sys.argv[1:]
lora.main()
PY
  grep '^REPORT ' "$OUT/theirs-$v.txt" | sed 's/^REPORT /   /'
  "$PYTHON" - "$v" "$OUT/ours-$v.jsonl" "$OUT/theirs-$v.txt" "$OUT/rows.jsonl" >> "$SUMMARY" <<'PY'
import json, re, sys
v, ours_f, theirs_f, rows_f = sys.argv[1:]
ours = [json.loads(l) for l in open(ours_f) if '"event":"train"' in l][-1]
theirs = [json.loads(l[7:]) for l in open(theirs_f) if l.startswith("REPORT ")][-1]
tps, mem, loss = theirs["tokens_per_second"], theirs["peak_memory"], theirs["train_loss"]
weights = {"f32": "float32", "q4": "4-bit g32 (QLoRA)"}.get(v, v)
with open(rows_f, "a") as f:
    for engine, t, m, l in (("mlx-hub", ours["tokens_per_second"], ours["peak_memory_gb"],
                             ours["train_loss"]), ("mlx_lm.lora", tps, mem, loss)):
        f.write(json.dumps({"weights": weights, "engine": engine, "tokens_per_second": t,
                            "peak_memory_gb": m, "train_loss": l}) + "\n")
print(f"   {v:5} tokens/s mlx-hub {ours['tokens_per_second']:9.1f}  mlx-lm {tps:9.1f}  "
      f"ratio {ours['tokens_per_second'] / tps:.3f}x   peak GB mlx-hub {ours['peak_memory_gb']:.3f}  "
      f"mlx-lm {mem:.3f}   train loss mlx-hub {ours['train_loss']:.3f}  mlx-lm {loss:.3f}")
PY
done
if [ -n "${JSON_OUT:-}" ]; then
  "$PYTHON" - "$OUT/rows.jsonl" "$JSON_OUT" "$ITERS" "$BATCH" "$LAYERS" "$MAXLEN" <<'PY'
import json, sys
rows_f, out, iters, batch, layers, maxlen = sys.argv[1:]
json.dump({"iters": int(iters), "batch_size": int(batch), "num_layers": int(layers),
           "max_seq_length": int(maxlen), "rows": [json.loads(l) for l in open(rows_f)]},
          open(out, "w"), indent=2)
PY
fi
echo "== summary (iters $ITERS, batch $BATCH, num-layers $LAYERS, max-seq-length $MAXLEN; ratio > 1: mlx-hub faster)"
cat "$SUMMARY"
