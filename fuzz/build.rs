// The targets link libmlx through the engine: put its folder in their rpath.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_ENGINE_LIB_DIR") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
}
