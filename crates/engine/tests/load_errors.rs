//! Broken model folders are clear errors naming the file or the tensor, never panics.
use std::path::{Path, PathBuf};

use engine::models::load_model;

/// The tiny float32 Llama of the parity fixtures (skip, or fail under CI).
fn fixture() -> Option<PathBuf> {
    test_support::require("load_errors", test_support::tiny_model())
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// Loads and runs one forward pass, so lazily read tensors are read too.
fn load_and_run(dir: &Path) -> Result<(), String> {
    let model = load_model(dir).map_err(|e| e.to_string())?;
    let mut cache = model.make_cache();
    let tokens = mlx::Array::from_slice(&[1i32, 2, 3], &[1, 3]).map_err(|e| e.to_string())?;
    let logits = model
        .forward(&tokens, &mut cache)
        .map_err(|e| e.to_string())?;
    logits.eval().map_err(|e| e.to_string())
}

fn weights_file(dir: &Path) -> PathBuf {
    dir.join("model.safetensors")
}

#[test]
fn truncated_safetensors_is_an_error_naming_the_file() {
    let Some(src) = fixture() else { return };
    let dir = copy_dir(&src);
    let path = weights_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_and_run(dir.path()).unwrap_err();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn header_that_lies_about_sizes_is_an_error() {
    let Some(src) = fixture() else { return };
    let dir = copy_dir(&src);
    let path = weights_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // Claim the first tensor ends far past the end of the file.
    let (name, info) = header
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| *k != "__metadata__")
        .unwrap();
    let name = name.clone();
    info["data_offsets"][1] = serde_json::json!(bytes.len() * 4);
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(&text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    let err = load_and_run(dir.path()).unwrap_err();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(
        err.contains(&name),
        "the error names the tensor {name}: {err}"
    );
}

#[test]
fn config_with_a_wrong_type_or_unknown_model_type_is_an_error() {
    let Some(src) = fixture() else { return };
    let dir = copy_dir(&src);
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_size"] = serde_json::json!("sixty-four");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = load_and_run(dir.path()).unwrap_err();
    assert!(err.contains("hidden_size"), "{err}");
    config["hidden_size"] = serde_json::json!(64);
    config["model_type"] = serde_json::json!("mamba");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = load_and_run(dir.path()).unwrap_err();
    assert!(err.contains("mamba") && err.contains("llama"), "{err}");
}
