// Tests (unit and integration) link libmlx through the engine: put its folder in their rpath.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_ENGINE_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
