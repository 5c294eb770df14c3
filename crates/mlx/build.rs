//! Finds libmlx (the official wheels), compiles our C++ shim against it, and links
//! OpenBLAS ahead of libmlx so its `cblas_*` symbols win over the wheel's reference BLAS.
//!
//! Where MLX comes from, in order:
//! 1. `MLX_DIR`: a folder holding `include/` and `lib/`;
//! 2. an importable Python `mlx` (`python3 -m mlx --cmake-dir`), if it matches the pin;
//! 3. the pinned wheels installed with `python3 -m pip install --target <cache>`.
//!
//! Cross-compiling (a target whose arch or OS is not the build machine's): the host's
//! Python mlx and its wheels are for the wrong machine, so step 2 is skipped and step 3
//! fetches the target's `mlx-cpu` wheel (Linux targets) into a cache of its own; OpenBLAS
//! is looked for only in the target's multiarch folders, never the host's.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The one place the MLX version is pinned.
const MLX_VERSION: &str = "0.32.4";

fn main() {
    for var in [
        "MLX_DIR",
        "MLX_HUB_CACHE_DIR",
        "MLX_HUB_NO_OPENBLAS",
        "OPENBLAS_LIB_DIR",
        "PYTHON",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=build.rs");

    // The target's OS, not the build script's own (`cfg!` here is the host's): they
    // differ when cross-compiling, e.g. the macOS build check from Linux.
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let (root, source) = match find_mlx(&target_os) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("\nerror: could not find or install MLX {MLX_VERSION}.\n{why}\n");
            eprintln!("Fix one of:");
            eprintln!("  * set MLX_DIR to a folder with include/mlx/mlx.h and lib/libmlx.*");
            let wheel = if target_os == "macos" {
                format!("mlx=={MLX_VERSION}")
            } else {
                format!("mlx[cpu]=={MLX_VERSION}")
            };
            eprintln!("  * make `python3 -m pip` work with Python 3.10 or newer (MLX has no");
            eprintln!("    wheels for older ones; a stock Mac's python3 may be 3.9: brew install");
            eprintln!("    python@3.12, then PYTHON=python3.12), so the build installs `{wheel}`");
            eprintln!("  * install it yourself: python3 -m pip install '{wheel}'");
            std::process::exit(1);
        }
    };
    let include = root.join("include");
    let lib = root.join("lib");

    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let openblas = if target_os == "linux" && env::var_os("MLX_HUB_NO_OPENBLAS").is_none() {
        find_openblas()
    } else {
        None
    };

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .file("csrc/shim.cpp")
        .file("csrc/qmm.cpp")
        .include(&include)
        .include("csrc")
        .warnings(false)
        .opt_level(2)
        .define("MLX_HUB_MLX_PIN", format!("\"{MLX_VERSION}\"").as_str());
    if openblas.is_some() {
        build.define("MLX_HUB_OPENBLAS", "1");
    }
    if target_arch == "aarch64" {
        // GCC's note that std::pair's argument passing changed in GCC 10 (MLX's headers).
        build.flag_if_supported("-Wno-psabi");
    }
    build.compile("mlxshim");

    // Order matters: OpenBLAS must come before libmlx in the link line (and so in the
    // binary's DT_NEEDED list) for the dynamic loader to bind libmlx's cblas_* to it.
    match &openblas {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=dylib=openblas");
            println!("cargo:rustc-cfg=mlx_openblas");
        }
        None if target_os == "linux"
            && env::var_os("MLX_HUB_NO_OPENBLAS").is_none()
            && cross_compiling() =>
        {
            println!(
                "cargo:warning=OpenBLAS for {} not found in /usr/lib/{} or /usr/{}/lib: \
                 MLX will use the wheel's reference BLAS (Debian: install libopenblas-dev \
                 for the target's architecture, or set OPENBLAS_LIB_DIR or \
                 MLX_HUB_NO_OPENBLAS=1)",
                multiarch(),
                multiarch(),
                multiarch()
            );
        }
        None if target_os == "linux" && env::var_os("MLX_HUB_NO_OPENBLAS").is_none() => {
            println!(
                "cargo:warning=OpenBLAS not found: MLX will use the wheel's reference BLAS, \
                 about 20x slower on CPU matmul. Install it (Debian: apt-get install \
                 libopenblas-dev) and rebuild."
            );
        }
        None => {}
    }
    println!("cargo::rustc-check-cfg=cfg(mlx_openblas)");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    if target_os == "linux" {
        // dlsym/dladdr, to report at run time which BLAS the loader bound.
        println!("cargo:rustc-link-lib=dylib=dl");
    }
    // rpath for this crate's own tests and examples; dependents read DEP_MLX_LIB_DIR.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:lib_dir={}", lib.display());
    println!("cargo:pin={MLX_VERSION}");
    println!("cargo:rustc-env=MLX_HUB_MLX_LIB_DIR={}", lib.display());
    println!("cargo:rustc-env=MLX_HUB_MLX_SOURCE={source}");
    println!("cargo:rustc-env=MLX_HUB_MLX_PIN={MLX_VERSION}");
}

/// Whether `root` holds the headers and the target's libmlx (a Linux wheel's `.so`
/// is no use to a macOS target and the other way round).
fn has_mlx(root: &Path, target_os: &str) -> bool {
    let lib = if target_os == "macos" {
        "libmlx.dylib"
    } else {
        "libmlx.so"
    };
    root.join("include/mlx/mlx.h").is_file() && root.join("lib").join(lib).is_file()
}

/// Whether the target is another machine than the one running this build script.
fn cross_compiling() -> bool {
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    target_arch != env::consts::ARCH || target_os != env::consts::OS
}

/// Debian's multiarch tuple for a Linux target (`aarch64-linux-gnu`).
fn multiarch() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    format!("{arch}-linux-gnu")
}

fn python() -> String {
    env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn find_mlx(target_os: &str) -> Result<(PathBuf, String), String> {
    let mut notes = Vec::new();
    if let Some(dir) = env::var_os("MLX_DIR") {
        let dir = PathBuf::from(dir);
        if has_mlx(&dir, target_os) {
            return Ok((dir, "MLX_DIR".into()));
        }
        return Err(format!(
            "MLX_DIR={} has no include/mlx/mlx.h and lib/libmlx.* for {target_os}",
            dir.display()
        ));
    }

    // Python's mlx and pip's wheels are the build machine's: a cross build brings its
    // own MLX — MLX_DIR for macOS (the unpacked mlx-metal wheel's mlx/, as
    // scripts/ci/macos-cross-build.sh does), or the target's `mlx-cpu` wheel for Linux.
    let cross = cross_compiling();
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if cross && target_os != "linux" {
        return Err(format!(
            "cross-compiling for {}: set MLX_DIR to the target's MLX {MLX_VERSION} \
             (include/ and lib/, e.g. the unpacked mlx-metal wheel's mlx/ for macOS)",
            env::var("TARGET").unwrap_or_default()
        ));
    }

    // An importable Python mlx of the pinned version: `python3 -m mlx --cmake-dir`
    // prints the package folder, which holds include/ and lib/. Not when
    // cross-compiling: that one is built for this machine.
    let py = |arg: &str| {
        if cross {
            return None;
        }
        Command::new(python())
            .args(["-m", "mlx", arg])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (py("--cmake-dir"), py("--version")) {
        (Some(dir), Some(version)) => {
            let dir = PathBuf::from(dir);
            if version == MLX_VERSION && has_mlx(&dir, target_os) {
                let note = format!("python ({})", dir.display());
                return Ok((dir, note));
            }
            notes.push(format!(
                "python mlx {version} at {} skipped (pinned {MLX_VERSION}, or no libmlx)",
                dir.display()
            ));
        }
        _ if cross => notes.push("cross-compiling: the host's python mlx is not used".into()),
        _ => notes.push("no importable python mlx (`python3 -m mlx --cmake-dir` failed)".into()),
    }

    // The pinned wheels, installed once into a cache shared by every checkout. A
    // foreign target gets its own cache and only the `mlx-cpu` wheel (it carries
    // include/ and lib/libmlx.so; the `mlx` wheel is the Python extension).
    let cache = if cross {
        cache_dir().join(format!("mlx-{MLX_VERSION}-{target_arch}-{target_os}"))
    } else {
        cache_dir().join(format!("mlx-{MLX_VERSION}"))
    };
    let root = cache.join("mlx");
    if has_mlx(&root, target_os) {
        return Ok((root, format!("wheel cache ({})", cache.display())));
    }
    let spec = if cross {
        format!("mlx-cpu=={MLX_VERSION}")
    } else if target_os == "macos" {
        format!("mlx=={MLX_VERSION}")
    } else {
        format!("mlx[cpu]=={MLX_VERSION}")
    };
    let staging = cache.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    println!("cargo:warning=installing {spec} into {}", cache.display());
    let mut pip = Command::new(python());
    pip.args(["-m", "pip", "install", "--quiet", "--no-input", "--target"])
        .arg(&staging);
    if cross {
        // The tag of the official Linux wheels (pip matches --platform exactly).
        pip.args(["--only-binary=:all:", "--no-deps", "--platform"])
            .arg(format!("manylinux_2_35_{target_arch}"));
    }
    let status = pip.arg(&spec).status();
    match status {
        Ok(s) if s.success() && has_mlx(&staging.join("mlx"), target_os) => {
            // Publish atomically so a concurrent build never sees half an install.
            match std::fs::rename(&staging, &cache) {
                Ok(()) => {}
                Err(_) if has_mlx(&root, target_os) => {
                    let _ = std::fs::remove_dir_all(&staging);
                }
                Err(e) => return Err(format!("could not move the wheel into the cache: {e}")),
            }
            Ok((root, format!("wheel cache ({})", cache.display())))
        }
        Ok(s) => Err(format!(
            "{}\n`{} -m pip install --target {} {spec}` failed ({s})",
            notes.join("\n"),
            python(),
            staging.display()
        )),
        Err(e) => Err(format!(
            "{}\ncould not run {}: {e}",
            notes.join("\n"),
            python()
        )),
    }
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("MLX_HUB_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("mlx-hub");
    }
    if let Some(home) = env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/mlx-hub");
    }
    PathBuf::from(env::var("OUT_DIR").unwrap()).join("mlx-cache")
}

fn find_openblas() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("OPENBLAS_LIB_DIR") {
        return Some(PathBuf::from(dir));
    }
    // The target's multiarch folder (Debian's libopenblas-dev:<arch> when cross-compiling),
    // then, for a native build only, the usual host folders.
    let mut candidates = vec![format!("/usr/lib/{}", multiarch())];
    if cross_compiling() {
        candidates.push(format!("/usr/{}/lib", multiarch()));
    } else {
        candidates.extend(["/usr/lib64", "/usr/lib", "/usr/local/lib"].map(String::from));
    }
    candidates
        .into_iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("libopenblas.so").exists())
}
