// The binary links libmlx (directly and through the engine): put its folder in the
// rpath, and record the commit the binary was built from.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{dir}");
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MLX_HUB_GIT_COMMIT={commit}");
    let pin = std::env::var("DEP_MLX_PIN").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=MLX_HUB_MLX_PIN_CLI={pin}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
