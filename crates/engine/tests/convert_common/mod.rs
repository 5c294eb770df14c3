//! Shared by the convert tests: the cached SmolLM2 GGUF, and greedy tokens from mlx-lm
//! and from us for the same chat prompt.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::generate::generate_greedy;
use engine::models::load_model;
use engine::tokenizer::Tokenizer;
use serde_json::{Value, json};

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct-Q4_1.gguf";
pub const PROMPT: &str = "What is the capital of France?";
pub const MAX_TOKENS: usize = 24;

pub use test_support::workspace_root;

pub fn skip_or_fail(reason: &str) {
    test_support::require::<()>("convert", Err(reason.to_string()));
}

/// The cached GGUF (skip, or fail under CI).
pub fn smollm2_gguf() -> Option<PathBuf> {
    test_support::require("SmolLM2", test_support::smollm2_gguf())
}

pub fn python_mlx_lm() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import mlx_lm"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        skip_or_fail("python3 with mlx-lm is not available (pip install mlx-lm)");
    }
    ok
}

/// mlx-lm's greedy tokens for the chat prompt on `dir`. A reference run
/// that hangs (MLX's Python process was once seen stuck in a futex under
/// heavy load) is killed after 180 s and tried once more.
pub fn mlx_lm_reference(dir: &Path) -> Value {
    let script = workspace_root().join("scripts/parity/mlx_lm_generate_ref.py");
    for attempt in 1..=2 {
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir)
            .args(["--prompt", PROMPT, "--chat", "--ignore-eos", "--max-tokens"])
            .arg(MAX_TOKENS.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run mlx_lm_generate_ref.py");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while child
            .try_wait()
            .expect("wait for mlx_lm_generate_ref.py")
            .is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if child
            .try_wait()
            .expect("wait for mlx_lm_generate_ref.py")
            .is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "mlx_lm_generate_ref.py on {} hung (attempt {attempt})",
                dir.display()
            );
            continue;
        }
        let out = child
            .wait_with_output()
            .expect("mlx_lm_generate_ref.py output");
        assert!(
            out.status.success(),
            "mlx-lm failed on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return serde_json::from_slice(&out.stdout).expect("JSON from mlx_lm_generate_ref.py");
    }
    panic!("mlx_lm_generate_ref.py hung twice on {}", dir.display());
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Our prompt ids, greedy tokens and decoded text for the chat prompt on `dir`.
pub fn ours(dir: &Path) -> (Vec<u32>, Vec<u32>, String) {
    let tok = Tokenizer::from_dir(dir).expect("tokenizer");
    let prompt = tok
        .encode_chat(&[json!({"role": "user", "content": PROMPT})], true, None)
        .expect("chat prompt");
    let model = load_model(dir).expect("load converted model");
    let generated = generate_greedy(model.as_ref(), &prompt, MAX_TOKENS).expect("generate");
    let text = tok.decode(&generated, true).expect("decode");
    (prompt, generated, text)
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
