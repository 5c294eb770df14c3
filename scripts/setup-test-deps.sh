#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, from the package
# registries only, then prepares the cached test data. Idempotent; run as root
# (or with sudo available). CI runs it from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# System packages: OpenBLAS (linked ahead of libmlx), PostgreSQL client tools,
# Prometheus (the metrics test scrapes the hub with it), curl (scripts/start.sh),
# Chromium and its WebDriver (the admin UI's browser tests), DejaVu fonts (the text of
# the performance report's PNG charts, `mlx-hub perf-plot`), iproute2 (`ip netns`: the
# multi-host test's network namespaces).
need_apt=()
for pkg in libopenblas-dev postgresql-client prometheus curl chromium chromium-driver fonts-dejavu-core iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# Python: MLX wheels (the same libmlx the mlx crate links) and mlx-lm, the reference.
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

# A real S3 server for the S3 artifact store's tests (crates/hub/tests/artifacts_s3.rs):
# s3s-fs serves the S3 API over a local directory. Pinned; 0.15+ needs a newer Rust.
S3S_FS_VERSION=0.14.1
if ! s3s-fs --version 2>/dev/null | grep -q " ${S3S_FS_VERSION}\$"; then
    cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --quiet
fi

# The real model for tests (SmolLM2-135M-Instruct Q4_1 GGUF), checked and cached.
scripts/fetch-smollm2.sh >/dev/null

# Reference fixtures made by mlx-lm (small random models and their greedy tokens).
python3 scripts/parity/make_fixtures.py target/parity-fixtures >/dev/null

echo "test dependencies ready"
