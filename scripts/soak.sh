#!/usr/bin/env bash
# Soak: `mlx-hub serve` under 10 minutes of mixed traffic (not in CI), printing the
# server's RSS and MLX memory (active / peak / cache, from /metrics) every INTERVAL
# seconds, then a summary: RSS and MLX active memory at the start, the end and the
# maximum, and the request counts by status.
#
# Traffic, all at once: registry reads (list, show, versions) in a loop, streamed
# chat completions (CHAT_CLIENTS concurrent clients), dataset uploads (a new
# content each time, so each registers a version) and /metrics scrapes.
#
# Usage: scripts/soak.sh [MODEL_DIR]
#   MODEL_DIR: an mlx-lm folder to serve (default: target/parity-fixtures/llama-tied-f32)
# Env: MLX_HUB_BIN (default: builds target/release/mlx-hub), SOAK_SECS (600),
#      INTERVAL (10), CHAT_CLIENTS (8), MAX_TOKENS (32), PORT (a free one).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${1:-$ROOT/target/parity-fixtures/llama-tied-f32}
SOAK_SECS=${SOAK_SECS:-600}
INTERVAL=${INTERVAL:-10}
CHAT_CLIENTS=${CHAT_CLIENTS:-8}
MAX_TOKENS=${MAX_TOKENS:-32}
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
BIN=${MLX_HUB_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release -p mlx-hub --manifest-path "$ROOT/Cargo.toml"
    BIN=$ROOT/target/release/mlx-hub
fi
[ -f "$MODEL/config.json" ] || { echo "no model folder at $MODEL" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/data/import"
cp -r "$MODEL" "$WORK/data/import/model"
URL=http://127.0.0.1:$PORT
RUST_LOG=warn "$BIN" serve --data-dir "$WORK/data" --port "$PORT" --no-worker 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 1 600); do curl -fs "$URL/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$URL/health" >/dev/null || { echo "serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

post() { curl -s -o /dev/null -w '%{http_code}\n' -H 'content-type: application/json' -X POST "$URL$1" -d "$2"; }
post /api/models '{"name":"soak"}' >/dev/null
[ "$(post /api/models/soak/versions '{"path":"model"}')" = 201 ] || { echo "registration failed" >&2; exit 1; }

END=$(( $(date +%s) + SOAK_SECS ))
STATUS=$WORK/status
touch "$STATUS"

reads() {
    while [ "$(date +%s)" -lt "$END" ]; do
        for path in /api/models /api/models/soak /api/models/soak/versions/latest /v1/models /api/ps; do
            curl -s -o /dev/null -w 'read %{http_code}\n' "$URL$path" >>"$STATUS"
        done
    done
}
chats() {
    local body
    body=$(printf '{"model":"soak","stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"Tell me about rivers, client %d."}]}' "$MAX_TOKENS" "$1")
    while [ "$(date +%s)" -lt "$END" ]; do
        curl -s -N -o /dev/null -w 'chat %{http_code}\n' -H 'content-type: application/json' \
             -X POST "$URL/v1/chat/completions" -d "$body" >>"$STATUS"
    done
}
uploads() {
    local i=0
    while [ "$(date +%s)" -lt "$END" ]; do
        i=$((i + 1))
        printf '{"text":"soak upload %d row %d"}\n' $(for r in $(seq 1 50); do echo "$i $r"; done) |
            curl -s -o /dev/null -w 'upload %{http_code}\n' -X POST --data-binary @- \
                 "$URL/api/datasets/soak-data/upload" >>"$STATUS"
        sleep 1
    done
}
scrapes() {
    while [ "$(date +%s)" -lt "$END" ]; do
        curl -s -o /dev/null -w 'metrics %{http_code}\n' "$URL/metrics" >>"$STATUS"
        sleep 1
    done
}

reads & PIDS+=($!)
for c in $(seq 1 "$CHAT_CLIENTS"); do chats "$c" & PIDS+=($!); done
uploads & PIDS+=($!)
scrapes & PIDS+=($!)

metric() { awk -v n="$1" '$1 == n { printf "%.1f", $2 / 1048576 }' "$WORK/metrics"; }
printf '%8s %10s %12s %12s %12s %10s\n' elapsed rss_mib mlx_active mlx_peak mlx_cache requests
START=$(date +%s)
SAMPLES=$WORK/samples
while [ "$(date +%s)" -lt "$END" ]; do
    curl -s "$URL/metrics" >"$WORK/metrics" || true
    rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER/status")
    line=$(printf '%8s %10s %12s %12s %12s %10s' "$(( $(date +%s) - START ))s" "$rss" \
        "$(metric mlx_hub_mlx_active_memory_bytes)" "$(metric mlx_hub_mlx_peak_memory_bytes)" \
        "$(metric mlx_hub_mlx_cache_memory_bytes)" "$(wc -l <"$STATUS")")
    echo "$line" | tee -a "$SAMPLES"
    sleep "$INTERVAL"
done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()

echo
echo "requests by kind and status:"
sort "$STATUS" | uniq -c | sort -rn
awk 'NR == 1 { r0 = $2; a0 = $3 } { if ($2 > rmax) rmax = $2; if ($3 > amax) amax = $3; r1 = $2; a1 = $3 }
     END { printf "RSS MiB: start %s, end %s, max %s; MLX active MiB: start %s, end %s, max %s\n",
           r0, r1, rmax, a0, a1, amax }' "$SAMPLES"
if grep -qE ' 5[0-9][0-9]$' "$STATUS" && grep -E ' 5[0-9][0-9]$' "$STATUS" | grep -vq 'chat 503'; then
    echo "FAIL: 5xx answers other than chat 503 (queue full)" >&2
    exit 1
fi
