//! GGUF import (`engine::convert::convert_gguf`): the real SmolLM2-135M-Instruct Q4_1
//! GGUF (fetched by `scripts/fetch-smollm2.sh`) imported into an mlx-lm folder must give
//! the same greedy tokens in mlx-lm (`scripts/parity/mlx_lm_generate_ref.py`) as here,
//! and answer a factual question sensibly; bad inputs are clear errors that leave no
//! output folder behind.
//!
//! Tests that need the GGUF or Python mlx-lm skip (with the reason printed) when either
//! is absent, unless `CI` is set, where they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use engine::convert::{ConvertError, ConvertOptions, convert_gguf};
use serde_json::json;

mod convert_common;
use convert_common::*;

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Nothing but `keep` in `parent` (no staging folder left behind).
fn assert_only(parent: &Path, keep: &[&str]) {
    let names: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(
        names.is_empty(),
        "left behind in {}: {names:?}",
        parent.display()
    );
}

#[test]
fn smollm2_gguf_imports_and_matches_mlx_lm() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2-mlx");

    let t0 = Instant::now();
    let report = convert_gguf(&gguf, &out, &ConvertOptions::default()).expect("import");
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "imported {} in {secs:.2}s: {} tensors, {} bytes of weights ({} on disk, GGUF {}), {} parameters",
        gguf.display(),
        report.tensors,
        report.total_size,
        dir_size(&out),
        std::fs::metadata(&gguf).unwrap().len(),
        report.total_parameters
    );
    assert_only(tmp.path(), &["smollm2-mlx"]);

    // Layout, exactly as mlx-lm writes it.
    for f in [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["rope_traditional"], false);
    assert_eq!(config["tie_word_embeddings"], true);
    // Q4_1 layers, a Q8_0 embedding: a per-module override in mlx-lm's format.
    assert_eq!(
        config["quantization"],
        json!({"group_size": 32, "bits": 4, "mode": "affine",
               "model.embed_tokens": {"group_size": 32, "bits": 8, "mode": "affine"}})
    );
    assert_eq!(config["quantization_config"], config["quantization"]);
    let index = read_json(&out.join("model.safetensors.index.json"));
    assert_eq!(index["metadata"]["total_size"], json!(report.total_size));
    let weight_map = index["weight_map"].as_object().unwrap();
    assert_eq!(weight_map.len(), report.tensors);
    assert!(weight_map.values().all(|f| f == "model.safetensors"));
    let st = mlx::io::load_safetensors(out.join("model.safetensors")).unwrap();
    assert_eq!(
        st.metadata,
        BTreeMap::from([("format".to_string(), "mlx".to_string())])
    );
    assert!(
        st.tensors
            .contains_key("model.layers.0.self_attn.q_proj.scales")
    );
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );

    // Same greedy tokens as mlx-lm on the converted folder, and a sensible answer.
    let (prompt, generated, text) = ours(&out);
    eprintln!("ours: {generated:?} {text:?}");
    assert!(
        text.contains("Paris"),
        "answer does not mention Paris: {text:?}"
    );
    if !python_mlx_lm() {
        return;
    }
    let reference = mlx_lm_reference(&out);
    assert_eq!(prompt, ids(&reference["prompt_ids"]), "prompt ids differ");
    assert_eq!(
        generated,
        ids(&reference["generated_ids"]),
        "greedy tokens differ from mlx-lm's (mlx-lm text: {:?})",
        reference["text"]
    );

    // Refuses to overwrite the folder it just wrote.
    let err = convert_gguf(&gguf, &out, &ConvertOptions::default()).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
}

#[test]
fn unsupported_architecture_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("mamba.gguf");
    let w = mlx::Array::from_slice(&[1.0f32; 8], &[2, 4]).unwrap();
    let meta = BTreeMap::from([
        ("general.architecture".to_string(), "mamba".to_string()),
        ("general.name".to_string(), "tiny".to_string()),
    ]);
    mlx::io::save_gguf(&gguf, [("token_embd.weight", &w)], &meta).unwrap();
    let out = tmp.path().join("out");
    let err = convert_gguf(&gguf, &out, &ConvertOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unsupported GGUF architecture `mamba`") && msg.contains("llama"),
        "{msg}"
    );
    assert!(!out.exists());
    assert_only(tmp.path(), &["mamba.gguf"]);
}

#[test]
fn not_a_gguf_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.gguf");
    std::fs::write(&bad, b"this is not a gguf file at all").unwrap();
    let out = tmp.path().join("out");
    let msg = convert_gguf(&bad, &out, &ConvertOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");
    assert_only(tmp.path(), &["bad.gguf"]);
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&gguf).unwrap();
    for (name, len) in [
        ("half.gguf", bytes.len() / 2),
        ("header.gguf", 1000),
        ("last-byte.gguf", bytes.len() - 1),
    ] {
        let cut = tmp.path().join(name);
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let out = tmp.path().join("out");
        let err = convert_gguf(&cut, &out, &ConvertOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("more than the file holds"),
            "{name}: {msg}"
        );
        assert!(!out.exists(), "{name}: output folder left behind");
        std::fs::remove_file(&cut).unwrap();
    }
    assert_only(tmp.path(), &[]);
}

#[test]
fn existing_output_folder_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    // The check comes first: even a missing GGUF reports the existing folder.
    let gguf = smollm2_gguf().unwrap_or_else(|| tmp.path().join("missing.gguf"));
    let err = convert_gguf(&gguf, &out, &ConvertOptions::default()).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_only(tmp.path(), &["out"]);
}

/// llama.cpp's q/k row permutation (HF → GGUF), as `convert_hf_to_gguf.py` applies it.
fn permute_rows(a: &mlx::Array, n_head: i32) -> mlx::Array {
    let shape = a.shape();
    let mut view = vec![n_head, 2, shape[0] / n_head / 2];
    view.extend_from_slice(&shape[1..]);
    a.reshape(&view)
        .and_then(|v| v.swapaxes(1, 2))
        .and_then(|v| v.reshape(&shape))
        .unwrap()
}

/// The un-permutation is right: putting llama.cpp's q/k layout back and switching to
/// traditional (interleaved) RoPE gives the same greedy tokens.
#[test]
fn unpermuted_qk_equal_llama_cpp_layout_with_traditional_rope() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    convert_gguf(&gguf, &a, &ConvertOptions::default()).expect("import");
    let b = tmp.path().join("b");
    std::fs::create_dir(&b).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    let mut config = read_json(&a.join("config.json"));
    let heads = config["num_attention_heads"].as_i64().unwrap() as i32;
    let kv_heads = config["num_key_value_heads"].as_i64().unwrap() as i32;
    config["rope_traditional"] = json!(true);
    std::fs::write(b.join("config.json"), config.to_string()).unwrap();
    let st = mlx::io::load_safetensors(a.join("model.safetensors")).unwrap();
    let mut permuted = BTreeMap::new();
    for (name, t) in &st.tensors {
        let t = if name.contains(".self_attn.q_proj.") {
            permute_rows(t, heads)
        } else if name.contains(".self_attn.k_proj.") {
            permute_rows(t, kv_heads)
        } else {
            t.clone()
        };
        permuted.insert(name.clone(), t);
    }
    mlx::io::save_safetensors(
        b.join("model.safetensors"),
        permuted.iter().map(|(k, v)| (k.as_str(), v)),
        &st.metadata,
    )
    .unwrap();
    let (_, ours_a, text) = ours(&a);
    let (_, ours_b, _) = ours(&b);
    assert_eq!(
        ours_a, ours_b,
        "un-permuted + rope_traditional=false: {text:?}"
    );
}
