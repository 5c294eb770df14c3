#!/usr/bin/env bash
# Installs what the test suite needs, from the package registries only, then prepares
# the cached test data. Idempotent. CI runs it from .ci/run on a fresh Debian machine
# (as root, or with sudo); on a Mac it uses Homebrew. Works with macOS's bash 3.2.
#
# Linux (apt):  OpenBLAS (linked ahead of libmlx), PostgreSQL client tools, Prometheus
#   (the metrics test scrapes the hub with it), curl (scripts/start.sh), Chromium and
#   its WebDriver (the admin UI's browser tests), DejaVu fonts (the text of the
#   performance report's PNG charts), iproute2 (`ip netns`: the multi-host test).
# macOS (Homebrew): PostgreSQL (started, with the `postgres` role and the `test`
#   database the tests use), Prometheus, Google Chrome and chromedriver. BLAS is
#   Apple's Accelerate (no OpenBLAS); the multi-host test is Linux-only.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup-test-deps: MLX needs Python >= 3.10; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
    echo "  macOS: brew install python@3.12 (or: uv python install 3.12), then PYTHON=python3.12 $0" >&2
    exit 1
fi

case "$(uname -s)" in
Linux)
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
    need_apt=""
    for pkg in libopenblas-dev postgresql-client prometheus curl chromium chromium-driver fonts-dejavu-core iproute2; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_apt="$need_apt $pkg"
    done
    if [ -n "$need_apt" ]; then
        $SUDO apt-get update -qq
        # shellcheck disable=SC2086 # a list of package names
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_apt
    fi
    ;;
Darwin)
    command -v brew >/dev/null || {
        echo "setup-test-deps: Homebrew is needed on macOS (see the README's Mac section)" >&2
        exit 1
    }
    brew list postgresql@16 >/dev/null 2>&1 || brew install postgresql@16
    brew list prometheus >/dev/null 2>&1 || brew install prometheus
    brew list --cask google-chrome >/dev/null 2>&1 || brew install --cask google-chrome
    brew list --cask chromedriver >/dev/null 2>&1 || brew install --cask chromedriver
    # chromedriver from a cask is quarantined until this attribute is removed
    xattr -d com.apple.quarantine "$(command -v chromedriver)" 2>/dev/null || true
    pg_bin="$(brew --prefix postgresql@16)/bin"
    brew services start postgresql@16 >/dev/null
    for _ in $(seq 1 50); do "$pg_bin/pg_isready" -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    # The tests connect as postgres://postgres@127.0.0.1:5432/test (trust, as on CI).
    "$pg_bin/psql" -h 127.0.0.1 -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='postgres'" | grep -q 1 ||
        "$pg_bin/createuser" -h 127.0.0.1 -s postgres
    "$pg_bin/psql" -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 ||
        "$pg_bin/createdb" -h 127.0.0.1 -U postgres test
    ;;
*)
    echo "setup-test-deps: $(uname -s) is not supported (Linux or macOS)" >&2
    exit 1
    ;;
esac

# Python: MLX wheels (the same libmlx the mlx crate links) and mlx-lm, the reference.
"$PYTHON" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

# A real S3 server for the S3 artifact store's tests (crates/hub/tests/artifacts_s3.rs):
# s3s-fs serves the S3 API over a local directory. Pinned; 0.15+ needs a newer Rust.
S3S_FS_VERSION=0.14.1
if ! s3s-fs --version 2>/dev/null | grep -q " ${S3S_FS_VERSION}\$"; then
    cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --quiet
fi

# The real model for tests (SmolLM2-135M-Instruct Q4_1 GGUF), checked and cached.
PYTHON=$PYTHON scripts/fetch-smollm2.sh >/dev/null

# Reference fixtures made by mlx-lm (small random models and their greedy tokens).
"$PYTHON" scripts/parity/make_fixtures.py target/parity-fixtures >/dev/null

echo "test dependencies ready"
