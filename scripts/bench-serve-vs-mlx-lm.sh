#!/usr/bin/env bash
# Serving benchmark, one run, same machine: `mlx-hub serve` (the folder registered
# in a scratch hub) vs `mlx_lm.server` on the same model folder, the same libmlx
# (Python's mlx wheel is the library mlx-hub links) and the same BLAS (OpenBLAS is
# linked into mlx-hub and preloaded into Python with LD_PRELOAD):
#   (a) one stream: tokens/s and time to first token (TTFT)
#   (b) 8 concurrent streams: aggregate tokens/s, TTFT p50/p95
#   (c) a 16-token completion of a tiny model over HTTP: latency p50/p95
# Greedy requests (temperature 0, no seed, so mlx_lm.server batches them too).
# Prints both sides and the ratios (goals: (a) >= 1.1x, (b) >= 1.5x with TTFT p50
# no worse, (c) p50 < 100 ms).
#
# Usage: scripts/bench-serve-vs-mlx-lm.sh [MODEL_DIR [TINY_DIR]]
#   MODEL_DIR: an mlx-lm folder (default: SmolLM2-135M-Instruct converted from the
#              cached Q4_1 GGUF into ~/.cache/mlx-hub/bench/smollm2)
#   TINY_DIR:  the tiny model of (c) (default: target/parity-fixtures/llama-tied-f32)
# Env: PYTHON (python3), OPENBLAS (/usr/lib/x86_64-linux-gnu/libopenblas.so.0),
#      MLX_HUB_BIN (skip the release build), TOKENS (128: tokens per stream),
#      ROUNDS (3: repetitions of (a) and (b)), LATENCY_N (40: requests of (c)),
#      DENSE (1: also measure `mlx-hub serve` with MLX_HUB_SERVING_WEIGHTS=float32, i.e.
#      dense float32 weights; 0: skip it), JSON_OUT (also write the figures there as
#      JSON, for scripts/perf-report).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
OPENBLAS=${OPENBLAS:-/usr/lib/x86_64-linux-gnu/libopenblas.so.0}
CACHE=${MLX_HUB_CACHE:-$HOME/.cache/mlx-hub}
MODEL=${1:-}
TINY=${2:-$ROOT/target/parity-fixtures/llama-tied-f32}
OUT=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

if [ -z "${MLX_HUB_BIN:-}" ]; then
  echo "== building mlx-hub (release)"
  (cd "$ROOT" && cargo build --release -p mlx-hub --quiet)
  MLX_HUB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mlx-hub"
fi
if [ -z "$MODEL" ]; then
  MODEL=$CACHE/bench/smollm2
  if [ ! -f "$MODEL/config.json" ]; then
    GGUF=$CACHE/models/SmolLM2-135M-Instruct-Q4_1.gguf
    [ -f "$GGUF" ] || "$ROOT/scripts/fetch-smollm2.sh"
    echo "== converting $GGUF -> $MODEL"
    mkdir -p "$(dirname "$MODEL")"
    "$MLX_HUB_BIN" convert --model "$GGUF" --mlx-path "$MODEL"
  fi
fi
[ -f "$MODEL/config.json" ] || { echo "error: $MODEL has no config.json" >&2; exit 1; }
[ -f "$TINY/config.json" ] || { echo "error: $TINY has no config.json (make the parity fixtures)" >&2; exit 1; }

PRELOAD=
if [ "$(uname -s)" = Linux ] && [ -f "$OPENBLAS" ]; then PRELOAD=$OPENBLAS; fi
echo "== versions"
"$MLX_HUB_BIN" --version | head -3
LD_PRELOAD=$PRELOAD "$PYTHON" -c 'import mlx.core as mx, mlx_lm; print("python mlx", mx.__version__, "mlx-lm", mlx_lm.__version__)'
echo "   model: $MODEL   tiny: $TINY   python LD_PRELOAD=${PRELOAD:-none}"

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url pid
  for _ in $(seq 1 600); do
    if curl -fs "$1" >/dev/null 2>&1; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "error: server $2 died" >&2; return 1; }
    sleep 0.2
  done
  echo "error: $1 never answered" >&2; return 1
}

# ours: a scratch hub with both folders registered (linked, not copied)
DATA=$OUT/hub
"$MLX_HUB_BIN" models --data-dir "$DATA" register bench "$MODEL" --link >/dev/null
"$MLX_HUB_BIN" models --data-dir "$DATA" register tiny "$TINY" --link >/dev/null
OURS_PORT=$(free_port)
MLX_HUB_SERVING_WEIGHTS=native MLX_HUB_KEEP_ALIVE=-1 RUST_LOG=warn "$MLX_HUB_BIN" serve \
  --data-dir "$DATA" --port "$OURS_PORT" \
  > "$OUT/ours.log" 2>&1 &
PIDS+=($!); OURS_PID=$!
wait_http "http://127.0.0.1:$OURS_PORT/health" "$OURS_PID"
DENSE_PORT=0
if [ "${DENSE:-1}" = 1 ]; then
  DENSE_PORT=$(free_port)
  MLX_HUB_SERVING_WEIGHTS=float32 MLX_HUB_KEEP_ALIVE=-1 RUST_LOG=warn "$MLX_HUB_BIN" serve \
    --data-dir "$DATA" --port "$DENSE_PORT" > "$OUT/ours-dense.log" 2>&1 &
  PIDS+=($!); DENSE_PID=$!
  wait_http "http://127.0.0.1:$DENSE_PORT/health" "$DENSE_PID"
fi

THEIRS_PORT=$(free_port)
LD_PRELOAD=$PRELOAD "$PYTHON" -m mlx_lm server --model "$MODEL" --port "$THEIRS_PORT" \
  --log-level WARNING > "$OUT/theirs.log" 2>&1 &
PIDS+=($!); THEIRS_PID=$!
TINY_PORT=$(free_port)
LD_PRELOAD=$PRELOAD "$PYTHON" -m mlx_lm server --model "$TINY" --port "$TINY_PORT" \
  --log-level WARNING > "$OUT/theirs-tiny.log" 2>&1 &
PIDS+=($!); TINY_PID=$!
wait_http "http://127.0.0.1:$THEIRS_PORT/v1/models" "$THEIRS_PID"
wait_http "http://127.0.0.1:$TINY_PORT/v1/models" "$TINY_PID"

"$PYTHON" - "$OURS_PORT" "$DENSE_PORT" "$THEIRS_PORT" "$TINY_PORT" "${TOKENS:-128}" \
  "${ROUNDS:-3}" "${LATENCY_N:-40}" "${JSON_OUT:-}" <<'PY'
import http.client, json, statistics, sys, threading, time

ours_port, dense_port, theirs_port, tiny_port, tokens, rounds, latency_n = map(int, sys.argv[1:8])
json_out = sys.argv[8]
PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain how a steam engine works, step by step.",
    "Describe a walk through a busy market in the morning.",
    "Write a letter to a friend about your summer holidays.",
    "Tell the history of the bicycle in detail.",
    "Describe the water cycle to a ten year old.",
    "Write a recipe for bread and explain each step.",
    "Describe a football match from kick-off to the final whistle.",
]

def stream(port, model, prompt, max_tokens):
    """One streamed chat completion: (ttft s, tokens, total s)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", json.dumps(body),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    ttft, chunks, usage = None, 0, None
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"].get("completion_tokens")
        for ch in ev.get("choices", []):
            if ch.get("delta", {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    c.close()
    return ttft or total, usage or chunks, total

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def single(port, model):
    best = None
    for i in range(rounds):
        ttft, n, total = stream(port, model, PROMPTS[0], tokens)
        tps = (n - 1) / max(total - ttft, 1e-9)
        if best is None or tps > best[0]:
            best = (tps, ttft, n)
    return best

def concurrent(port, model, k=8):
    best = None
    for _ in range(rounds):
        results = [None] * k
        def run(i):
            results[i] = stream(port, model, PROMPTS[i % len(PROMPTS)], tokens)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(k)]
        t0 = time.perf_counter()
        for t in threads: t.start()
        for t in threads: t.join()
        wall = time.perf_counter() - t0
        n = sum(r[1] for r in results)
        ttfts = [r[0] for r in results]
        row = (n / wall, pct(ttfts, 50), pct(ttfts, 95), n)
        if best is None or row[0] > best[0]:
            best = row
    return best

def latency(port, model):
    body = json.dumps({"model": model, "prompt": "The quick brown fox", "max_tokens": 16,
                       "temperature": 0.0})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for i in range(latency_n + 3):
        t0 = time.perf_counter()
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    c.close()
    return pct(times, 50), pct(times, 95)

# side: (name, port, model, tiny port, tiny model); each side runs alone
sides = [("mlx-hub", ours_port, "bench", ours_port, "tiny")]
if dense_port:
    sides.append(("mlx-hub-f32", dense_port, "bench", dense_port, "tiny"))
sides.append(("mlx_lm", theirs_port, "default_model", tiny_port, "default_model"))
res = {}
for side, port, model, tport, tmodel in sides:
    stream(port, model, "Hello", 8)  # load and warm up
    res[side] = {"single": single(port, model), "conc": concurrent(port, model),
                 "lat": latency(tport, tmodel)}
    s, c, l = res[side]["single"], res[side]["conc"], res[side]["lat"]
    print(f"   {side:11} (a) {s[0]:7.1f} tok/s  TTFT {s[1]*1000:7.1f} ms | "
          f"(b) 8 streams {c[0]:7.1f} tok/s  TTFT p50 {c[1]*1000:7.1f} ms p95 {c[2]*1000:7.1f} ms | "
          f"(c) p50 {l[0]*1000:6.1f} ms p95 {l[1]*1000:6.1f} ms", flush=True)

if json_out:
    rows = [{"engine": "mlx_lm.server" if side == "mlx_lm" else side,
             "single_tps": r["single"][0], "single_ttft_ms": r["single"][1] * 1e3,
             "concurrent_tps": r["conc"][0], "concurrent_ttft_p50_ms": r["conc"][1] * 1e3,
             "concurrent_ttft_p95_ms": r["conc"][2] * 1e3,
             "latency_p50_ms": r["lat"][0] * 1e3, "latency_p95_ms": r["lat"][1] * 1e3}
            for side, r in res.items()]
    # ours first, the baseline last: the report's table and plots read that way
    json.dump({"tokens_per_stream": tokens, "rounds": rounds, "latency_requests": latency_n,
               "rows": rows}, open(json_out, "w"), indent=2)

t = res["mlx_lm"]
print(f"== ratios ({tokens} tokens per stream, best of {rounds}; latency over {latency_n} "
      "requests; > 1 means mlx-hub is faster)")
for side in [x[0] for x in sides if x[0] != "mlx_lm"]:
    o = res[side]
    print(f"   {side}:")
    print(f"     (a) single-stream tok/s: {o['single'][0] / t['single'][0]:.2f}x (goal >= 1.1x); "
          f"TTFT {o['single'][1]*1000:.1f} vs {t['single'][1]*1000:.1f} ms")
    print(f"     (b) 8-stream aggregate tok/s: {o['conc'][0] / t['conc'][0]:.2f}x (goal >= 1.5x); "
          f"TTFT p50 {o['conc'][1]*1000:.1f} vs {t['conc'][1]*1000:.1f} ms "
          f"({'no worse' if o['conc'][1] <= t['conc'][1] else 'WORSE'})")
    print(f"     (c) 16-token completion p50: {o['lat'][0]*1000:.1f} ms (goal < 100 ms), "
          f"mlx_lm {t['lat'][0]*1000:.1f} ms; ratio {t['lat'][0] / o['lat'][0]:.2f}x")
PY
