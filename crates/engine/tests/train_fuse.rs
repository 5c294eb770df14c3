//! `fuse_to_dir` (`mlx-hub fuse`) against mlx-lm: the fused folder has the same
//! config.json, tensor names, dtypes, shapes and (nearly) values as `mlx_lm.fuse`
//! writes, loads in mlx-lm (`mlx_lm.load`) and gives there the same greedy tokens
//! as our in-memory adapted model. Quantized base re-quantized, quantized base
//! dequantized, and DoRA on a float base with biases.

mod train_common;

use std::collections::BTreeMap;
use std::path::Path;

use engine::generate::generate_greedy;
use engine::models::Llama;
use engine::tokenizer::Tokenizer;
use engine::train::adapters::{ADAPTER_FILE, fuse, load_adapters, save_params};
use engine::train::{AdapterSpec, FineTuneType, TrainConfig, fuse_to_dir, load_into};
use mlx::{Array, Dtype};
use serde_json::Value;
use train_common::*;

const PROMPT: &str = "The quick brown";
const MAX_TOKENS: usize = 12;

/// Adapters with a non-zero `lora_b` (fresh ones fuse to the base model), saved.
fn write_adapters(model: &Llama, dir: &Path, fine_tune_type: FineTuneType) {
    let spec = AdapterSpec {
        fine_tune_type,
        num_layers: -1,
        ..AdapterSpec::default()
    };
    let mut params = spec.init(model, 5).unwrap();
    let key = mlx::random::Key::new(11).unwrap();
    for (k, v) in params.iter_mut() {
        if k.ends_with("lora_b") {
            *v = mlx::random::normal(&v.shape(), Dtype::Float32, 0.0, 0.01, Some(&key)).unwrap();
        }
    }
    let cfg = TrainConfig {
        adapter: spec,
        ..TrainConfig::default()
    };
    cfg.adapter_config().write(dir).unwrap();
    save_params(&dir.join(ADAPTER_FILE), &params).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tensors(dir: &Path) -> BTreeMap<String, Array> {
    mlx::io::load_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .tensors
}

/// Every tensor of `ours` against `theirs`: names, dtypes, shapes; float values
/// within `tol`; packed quantized words allowed to differ in a few places (a value
/// on a rounding boundary).
fn compare_folders(ours: &Path, theirs: &Path, tol: f32) {
    assert_eq!(
        read_json(&ours.join("config.json")),
        read_json(&theirs.join("config.json")),
        "config.json"
    );
    let (a, b) = (tensors(ours), tensors(theirs));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "tensor names"
    );
    for (name, x) in &a {
        let y = &b[name];
        assert_eq!(x.dtype(), y.dtype(), "{name}: dtype");
        assert_eq!(x.shape(), y.shape(), "{name}: shape");
        if x.dtype().is_float() {
            let (xs, ys) = (x.to_f32_vec().unwrap(), y.to_f32_vec().unwrap());
            let d = xs
                .iter()
                .zip(&ys)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(d <= tol, "{name}: values differ by {d}");
        } else {
            let (xs, ys) = (x.to_vec::<u32>().unwrap(), y.to_vec::<u32>().unwrap());
            let differing = xs.iter().zip(&ys).filter(|(p, q)| p != q).count();
            assert!(
                differing * 100 <= xs.len(),
                "{name}: {differing} of {} packed words differ",
                xs.len()
            );
        }
    }
}

fn mlx_lm_fuse(base: &Path, adapters: &Path, out: &Path, dequantize: bool) {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "mlx_lm", "fuse", "--model"])
        .arg(base)
        .arg("--adapter-path")
        .arg(adapters)
        .arg("--save-path")
        .arg(out)
        .env("HF_HUB_OFFLINE", "1");
    if dequantize {
        cmd.arg("--dequantize");
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "mlx_lm fuse failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Greedy tokens of the fused folder as mlx-lm generates them.
fn mlx_lm_greedy(model_dir: &Path) -> Vec<u32> {
    let r: Value = serde_json::from_str(&reference(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "--max-tokens",
        &MAX_TOKENS.to_string(),
    ]))
    .unwrap();
    serde_json::from_value(r["generated_ids"].clone()).unwrap()
}

fn greedy(model: &Llama, tok: &Tokenizer) -> Vec<u32> {
    let ids = tok.encode(PROMPT, true).unwrap();
    generate_greedy(model, &ids, MAX_TOKENS).unwrap()
}

fn check(fixture: &str, fine_tune_type: FineTuneType, dequantize: bool, tol: f32) {
    let Some(base) = fixture_model(fixture) else {
        return;
    };
    let Some(()) = python_ok() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let adapters = tmp.path().join("adapters");
    let model = Llama::load(&base).unwrap();
    let tok = Tokenizer::from_dir(&base).unwrap();
    write_adapters(&model, &adapters, fine_tune_type);

    let ours = tmp.path().join("ours");
    let report = fuse_to_dir(&base, &adapters, &ours, dequantize, &mut |_| {}).unwrap();
    assert!(report.files.contains(&"tokenizer.json".to_string()));
    assert_eq!(
        report.quantization.is_some(),
        !dequantize && fixture.contains("-q"),
        "quantization entry"
    );
    let theirs = tmp.path().join("theirs");
    mlx_lm_fuse(&base, &adapters, &theirs, dequantize);
    compare_folders(&ours, &theirs, tol);

    // In memory: the unfused adapters when the fused model is float, else the
    // in-memory fuse (re-quantization rounds the merged weights the same way).
    let mut adapted = Llama::load(&base).unwrap();
    if report.quantization.is_some() {
        let a = load_adapters(&adapters, &adapted).unwrap();
        fuse(&mut adapted, &a, false).unwrap();
    } else {
        load_into(&mut adapted, &adapters).unwrap();
    }
    let want = greedy(&adapted, &tok);
    let reloaded = greedy(&Llama::load(&ours).unwrap(), &tok);
    let in_mlx_lm = mlx_lm_greedy(&ours);
    let base_tokens = greedy(&model, &tok);
    eprintln!(
        "{fixture} {fine_tune_type:?} dequantize={dequantize}: in-memory {want:?}\n  reloaded {reloaded:?}\n  mlx-lm   {in_mlx_lm:?}\n  base     {base_tokens:?}"
    );
    assert_eq!(reloaded, want, "our fused folder reloaded here");
    assert_eq!(in_mlx_lm, want, "our fused folder in mlx-lm");
    assert_ne!(want, base_tokens, "the adapters change the output");

    // An existing output folder is refused and left alone.
    let err = fuse_to_dir(&base, &adapters, &ours, dequantize, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn lora_on_a_quantized_base_is_requantized_like_mlx_lm_fuse() {
    check("llama-tied-q4-g64", FineTuneType::Lora, false, 1e-5);
}

#[test]
fn lora_on_a_quantized_base_dequantized_like_mlx_lm_fuse() {
    check("llama-tied-q4-g64", FineTuneType::Lora, true, 1e-5);
}

#[test]
fn dora_on_a_float_base_with_biases_like_mlx_lm_fuse() {
    check("qwen2-bias-f32", FineTuneType::Dora, false, 1e-5);
}
