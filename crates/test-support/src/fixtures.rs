//! Where the tests' data lives. Each finder returns `Err(why)` when the data
//! is missing; pass it to [`crate::require`] / [`crate::require!`].

use std::path::{Path, PathBuf};

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The mlx-lm-made reference fixtures (small random models, their greedy
/// tokens): `MLX_HUB_PARITY_FIXTURES`, else `target/parity-fixtures`, made by
/// `scripts/parity/make_fixtures.py` (scripts/setup-test-deps.sh runs it).
pub fn parity_fixtures() -> Result<PathBuf, String> {
    let dir = std::env::var_os("MLX_HUB_PARITY_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/parity-fixtures"));
    if dir.join("index.json").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "{} is missing (run scripts/parity/make_fixtures.py, or scripts/setup-test-deps.sh)",
            dir.display()
        ))
    }
}

/// The tiny float32 Llama of the parity fixtures.
pub fn tiny_model() -> Result<PathBuf, String> {
    let dir = parity_fixtures()?.join("llama-tied-f32");
    if dir.join("config.json").is_file() {
        Ok(dir)
    } else {
        Err(format!("{} is missing", dir.display()))
    }
}

/// The real model: SmolLM2-135M-Instruct, Q4_1 GGUF: `MLX_HUB_SMOLLM2_GGUF`,
/// else the cache scripts/fetch-smollm2.sh fills (`MLX_HUB_CACHE`, default
/// `~/.cache/mlx-hub`).
pub fn smollm2_gguf() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MLX_HUB_SMOLLM2_GGUF") {
        return Ok(PathBuf::from(p));
    }
    let cache = match std::env::var("MLX_HUB_CACHE") {
        Ok(c) => PathBuf::from(c),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mlx-hub"),
    };
    let p = cache.join("models/SmolLM2-135M-Instruct-Q4_1.gguf");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: run scripts/fetch-smollm2.sh or set MLX_HUB_SMOLLM2_GGUF",
            p.display()
        ))
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies a folder (flat) to `dest`.
pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

/// A `train.jsonl`-style file of `n` `{"text": …}` rows (each row different).
pub fn write_text_rows(path: &Path, n: usize) {
    let rows: String = (0..n)
        .map(|i| {
            serde_json::json!({"text": format!("row {i}: the river crosses the stone {i} times.")})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, rows).unwrap();
}
