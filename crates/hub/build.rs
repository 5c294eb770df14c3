// Tests (unit and integration) link libmlx through the engine: put its folder in their rpath.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_ENGINE_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    provenance();
}

/// Build provenance recorded in the lineage of trained versions:
/// `MLX_HUB_CARGO_LOCK_SHA256` (sha256 of the workspace `Cargo.lock`) and
/// `MLX_HUB_GIT_COMMIT` (`$MLX_HUB_COMMIT`, else `git rev-parse HEAD`, else
/// `unknown`).
fn provenance() {
    use sha2::Digest;
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-env-changed=MLX_HUB_COMMIT");
    let lock_hash = std::fs::read(&lock)
        .map(|b| hex::encode(sha2::Sha256::digest(&b)))
        .unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=MLX_HUB_CARGO_LOCK_SHA256={lock_hash}");
    let git = root.join(".git");
    for f in ["HEAD", "refs/heads", "packed-refs"] {
        if git.join(f).exists() {
            println!("cargo:rerun-if-changed={}", git.join(f).display());
        }
    }
    let commit = std::env::var("MLX_HUB_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(&root)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLX_HUB_GIT_COMMIT={commit}");
}
