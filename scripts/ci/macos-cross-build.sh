#!/usr/bin/env bash
# macOS build check: cross-compiles the workspace for aarch64-apple-darwin from Linux
# and fails on any compile or link error of the `mlx-hub` binary or of any of the
# workspace's test binaries. It keeps the Mac build honest on a CI that has no Mac.
#
# What comes out is a BUILD CHECK, NOT A PRODUCT. The binaries are never run here, and
# must not be shipped: the C++ shim (crates/mlx/csrc) is compiled and linked against
# zig's own libc++ (linked statically), while libmlx.dylib from the official wheel uses
# the system's /usr/lib/libc++.1.dylib. Both use the std::__1 ABI, which is why the
# link works, but the two copies do not share type_info or their runtime state, so
# e.g. a C++ exception thrown in libmlx and caught in the shim may not match on a Mac.
# CoreFoundation and Security are linked against small stand-ins
# (scripts/ci/macos-stubs/*.tbd) because zig ships no Apple frameworks; no feature
# change avoids them: chrono's `clock` (iana-time-zone: CoreFoundation) is required by
# object_store and by the chat templates' local time, and reqwest 0.13's rustls TLS
# (object_store's and the OTLP exporter's client) always brings rustls-platform-verifier
# (Security, CoreFoundation), which is what a real Mac should use anyway. The product
# is built natively on a Mac (Xcode's SDK and toolchain): `cargo build --release -p mlx-hub`.
#
# Toolchain, all from the package registries, pinned and installed idempotently:
#   * the Rust target aarch64-apple-darwin (rustup);
#   * zig (PyPI `ziglang`): C/C++ compiler for the target, linker, macOS libSystem;
#   * cargo-zigbuild (PyPI `cargo-zigbuild`: the upstream project's own prebuilt
#     binary, the same release as the Rust crate; it saves the minute and more that
#     `cargo install --locked` spends compiling it), in a venv of its own with ziglang;
#   * MLX's headers and libmlx.dylib from the official `mlx-metal` macOS arm64 wheel
#     (the `mlx` wheel only holds the Python bindings), at the crate's pinned version.
# Caches: ${MLX_HUB_CACHE_DIR:-~/.cache/mlx-hub}/macos-cross (venv, wheel, unpacked
# MLX, the stand-in SDK) and the target dir target/macos-cross (debug profile, no
# debug info, dependencies unoptimised: only compile and link errors matter here).
#
# Run as root on Debian (installs `file` with apt if missing), or as a user with
# rustup, python3 with pip and `file`. Usage: scripts/ci/macos-cross-build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

TARGET=aarch64-apple-darwin
ZIG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.1
# The one MLX pin lives in crates/mlx/build.rs.
MLX_VERSION=$(sed -n 's/^const MLX_VERSION: &str = "\(.*\)";$/\1/p' crates/mlx/build.rs)
[[ -n $MLX_VERSION ]] || { echo "macos-cross: no MLX_VERSION in crates/mlx/build.rs" >&2; exit 1; }
MACOS_MIN=14.0 # the wheel's macosx_14_0 tag
WHEEL_PLATFORM=macosx_14_0_arm64

CACHE=${MLX_HUB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlx-hub}/macos-cross
TARGET_DIR=${MACOS_CROSS_TARGET_DIR:-$ROOT/target/macos-cross}
mkdir -p "$CACHE"

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO="sudo"; fi

t_all=$(date +%s)
t_step=$t_all
step() { # step NAME: print the time since the previous step
    local now
    now=$(date +%s)
    echo "macos-cross: $1 took $((now - t_step))s"
    t_step=$now
}

# --- Toolchain -------------------------------------------------------------------
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

if ! command -v file >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq file
fi

VENV=$CACHE/venv
have_tools() {
    [[ -x $VENV/bin/cargo-zigbuild ]] &&
        [[ $("$VENV/bin/cargo-zigbuild" --version 2>/dev/null) == "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]] &&
        [[ $("$VENV/bin/python3" -m ziglang version 2>/dev/null) == "$ZIG_VERSION" ]]
}
if ! have_tools; then
    [[ -x $VENV/bin/python3 ]] || python3 -m venv "$VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
        "ziglang==$ZIG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    have_tools || { echo "macos-cross: zig or cargo-zigbuild did not install" >&2; exit 1; }
fi
# cargo-zigbuild finds zig as `python3 -m ziglang`: the venv's python3 comes first.
export PATH="$VENV/bin:$PATH"
step "toolchain (rust target, zig $ZIG_VERSION, cargo-zigbuild $CARGO_ZIGBUILD_VERSION)"

# --- MLX for the target: the official wheel's mlx/ folder is an MLX_DIR ----------
MLX_DIR=$CACHE/mlx-$MLX_VERSION-$WHEEL_PLATFORM
if [[ ! -f $MLX_DIR/include/mlx/mlx.h || ! -f $MLX_DIR/lib/libmlx.dylib ]]; then
    wheels=$CACHE/wheels
    mkdir -p "$wheels"
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --platform "$WHEEL_PLATFORM" --python-version 3.11 --no-deps \
        "mlx-metal==$MLX_VERSION" -d "$wheels"
    staging=$MLX_DIR.tmp$$
    rm -rf "$staging"
    # Unpack mlx/ without the 140 MB Metal kernel library: linking never reads it.
    python3 - "$wheels"/mlx_metal-"$MLX_VERSION"-*.whl "$staging" <<'EOF'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("mlx/") and not name.endswith(".metallib"):
            z.extract(name, dest)
EOF
    rm -rf "$MLX_DIR"
    mv "$staging/mlx" "$MLX_DIR"
    rm -rf "$staging"
fi
[[ -f $MLX_DIR/include/mlx/mlx.h && -f $MLX_DIR/lib/libmlx.dylib ]] ||
    { echo "macos-cross: the mlx-metal wheel has no include/mlx/mlx.h or lib/libmlx.dylib" >&2; exit 1; }
step "MLX $MLX_VERSION wheel for $WHEEL_PLATFORM"

# --- A stand-in SDK: the framework stubs, laid out as an SDK ------------------------
# SDKROOT tells rustc (no `xcrun` look-up warning), cc and cargo-zigbuild where the
# SDK is; cargo-zigbuild passes its System/Library/Frameworks to the linker as -F.
# libSystem and the C/C++ headers still come from zig.
SDK=$CACHE/MacOSX-stubs.sdk
rm -rf "$SDK"
mkdir -p "$SDK/usr/lib" "$SDK/usr/include"
for tbd in scripts/ci/macos-stubs/*.tbd; do
    fw=$(basename "$tbd" .tbd)
    mkdir -p "$SDK/System/Library/Frameworks/$fw.framework"
    cp "$tbd" "$SDK/System/Library/Frameworks/$fw.framework/$fw.tbd"
done

export MLX_DIR SDKROOT=$SDK MACOSX_DEPLOYMENT_TARGET=$MACOS_MIN
export CARGO_INCREMENTAL=0
# Debug profile, lighter: no debug info, dependencies and tests unoptimised.
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
export CARGO_PROFILE_DEV_OPT_LEVEL=0 CARGO_PROFILE_TEST_OPT_LEVEL=0
build=(cargo zigbuild --locked --target "$TARGET" --target-dir "$TARGET_DIR"
    --config 'profile.dev.package."*".opt-level=0' --config 'profile.test.package."*".opt-level=0'
    --message-format=json-render-diagnostics)

log=$TARGET_DIR/macos-cross.log
mkdir -p "$TARGET_DIR"
: >"$log"
cargo_build() { # cargo_build ARGS...: build, keep the JSON messages, explain stub misses
    local json=$TARGET_DIR/macos-cross-$1.json
    shift
    if ! { "${build[@]}" "$@" 2>&1 >"$json" | tee -a "$log" >&2; }; then
        if grep -Eq 'undefined symbol: _k?(CF|Sec)' "$log"; then
            echo "macos-cross: a dependency now imports CoreFoundation or Security symbols" \
                "the stand-ins lack: add them (as listed above) to scripts/ci/macos-stubs/*.tbd," \
                "once checked against macOS $MACOS_MIN's SDK." >&2
        fi
        return 1
    fi
}

# --- Build ------------------------------------------------------------------------
cargo_build bin -p mlx-hub --bins
step "cargo zigbuild -p mlx-hub (bin)"
cargo_build tests --workspace --tests
step "cargo zigbuild --workspace --tests"

# --- Check what came out --------------------------------------------------------------
bin=$TARGET_DIR/$TARGET/debug/mlx-hub
desc=$(file -b "$bin")
echo "macos-cross: $bin: $desc"
[[ $desc == "Mach-O 64-bit arm64 executable"* ]] ||
    { echo "macos-cross: mlx-hub is not a Mach-O arm64 executable" >&2; exit 1; }

# Every test executable cargo reported, and the load commands a Mac's dyld reads:
# libmlx through @rpath, and no duplicate LC_RPATH (dyld on macOS 15.4+ refuses those).
python3 - "$TARGET" "$bin" "$TARGET_DIR"/macos-cross-*.json <<'EOF'
import json, struct, subprocess, sys

target, bin_path, logs = sys.argv[1], sys.argv[2], sys.argv[3:]
exes = {bin_path}
for path in logs:
    for line in open(path):
        msg = json.loads(line) if line.startswith("{") else {}
        exe = msg.get("executable") if msg.get("reason") == "compiler-artifact" else None
        if exe and f"/{target}/" in exe:  # not the build scripts run on the host
            exes.add(exe)

LC_LOAD_DYLIB, LC_RPATH = 0xC, 0x8000001C

def load_commands(path):
    data = open(path, "rb").read()
    magic, _, _, _, ncmds, _, _, _ = struct.unpack_from("<8I", data)
    assert magic == 0xFEEDFACF, f"{path}: not a 64-bit Mach-O"
    off, dylibs, rpaths = 32, [], []
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<2I", data, off)
        if cmd in (LC_LOAD_DYLIB, LC_RPATH):
            (str_off,) = struct.unpack_from("<I", data, off + 8)
            s = data[off + str_off : off + size].split(b"\0")[0].decode()
            (dylibs if cmd == LC_LOAD_DYLIB else rpaths).append(s)
        off += size
    return dylibs, rpaths

bad = []
for exe in sorted(exes):
    desc = subprocess.run(["file", "-b", exe], capture_output=True, text=True).stdout
    if not desc.startswith("Mach-O 64-bit arm64 executable"):
        bad.append(f"{exe}: {desc.strip()}")
        continue
    dylibs, rpaths = load_commands(exe)
    if len(set(rpaths)) != len(rpaths):
        bad.append(f"{exe}: duplicate LC_RPATH {rpaths}")
    if "@rpath/libmlx.dylib" in dylibs and not rpaths:
        bad.append(f"{exe}: links @rpath/libmlx.dylib with no LC_RPATH")
    if exe == bin_path:
        print("macos-cross: mlx-hub loads", ", ".join(dylibs))
print(f"macos-cross: {len(exes)} executables checked (Mach-O arm64)")
if bad:
    sys.exit("macos-cross: bad executables:\n  " + "\n  ".join(bad))
EOF
step "checks of the executables"
echo "macos-cross: OK, the macOS build check took $(($(date +%s) - t_all))s in all"
