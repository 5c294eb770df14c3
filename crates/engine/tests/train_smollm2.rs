//! LoRA on the real SmolLM2-135M-Instruct (the Q4_1 GGUF imported to an mlx-lm
//! folder, then dequantized to float32: MLX's CPU quantized matmul is ~30× slower
//! than OpenBLAS' sgemm here) for a few dozen steps on real text: the English dialogs
//! of the `chatterbot-corpus` package, turned into JSONL by
//! scripts/chatterbot-to-jsonl.py. The validation loss (same batches before and
//! after) goes down.

mod train_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use engine::convert::{ConvertOptions, convert_gguf, convert_model};
use engine::models::Llama;
use engine::nn::Adapt;
use engine::tokenizer::Tokenizer;
use engine::train::{
    AdapterSpec, DataOptions, NumpyRng, TrainConfig, evaluate, load_dataset, train,
};
use train_common::*;

/// The SmolLM2 GGUF (skip, or fail under CI).
fn smollm2_gguf() -> Option<PathBuf> {
    test_support::require("SmolLM2", test_support::smollm2_gguf())
}

#[test]
fn lora_on_smollm2_lowers_the_validation_loss_on_real_text() {
    let Some(gguf) = smollm2_gguf() else { return };
    let Some(()) = python_ok() else { return };
    eprintln!("BLAS: {}", blas_kind());
    let tic = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let q4_dir = tmp.path().join("smollm2-q4");
    convert_gguf(&gguf, &q4_dir, &ConvertOptions::default()).unwrap();
    let model_dir = tmp.path().join("smollm2-f32");
    let f32_opts = ConvertOptions {
        dequantize: true,
        dtype: Some(mlx::Dtype::Float32),
        ..ConvertOptions::default()
    };
    convert_model(&q4_dir, &model_dir, &f32_opts).unwrap();
    let data_dir = tmp.path().join("data");
    let o = Command::new("python3")
        .arg(workspace().join("scripts/chatterbot-to-jsonl.py"))
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chatterbot-to-jsonl.py failed (pip install -r scripts/requirements-test.txt):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("corpus rows: {}", String::from_utf8_lossy(&o.stdout).trim());
    let model = Llama::load(&model_dir).unwrap();
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let data = load_dataset(&data_dir, &tok, &DataOptions::default()).unwrap();
    let valid = data.valid.as_ref().expect("valid.jsonl");
    let (batch, max_len, val_batches, seed) = (2usize, 32usize, 8i64, 7u64);
    let cfg = TrainConfig {
        adapter: AdapterSpec {
            num_layers: 8,
            ..AdapterSpec::default()
        },
        learning_rate: 2e-4,
        batch_size: batch,
        iters: 16,
        val_batches,
        steps_per_report: 8,
        steps_per_eval: 1_000_000,
        save_every: 0,
        max_seq_length: max_len,
        seed,
        ..TrainConfig::default()
    };
    // The same validation batches (same draw) before and after training.
    let val = |params: &mlx::Params| {
        let adapt = Adapt {
            params: Some(params),
            lora_scale: cfg.adapter.lora.scale,
            dropout: 0.0,
        };
        let mut rng = NumpyRng::new(99);
        evaluate(&model, &adapt, valid, batch, val_batches, max_len, &mut rng).unwrap()
    };
    let before = val(&cfg.adapter.init(&model, seed).unwrap());
    let t_train = Instant::now();
    let out = train(&model, &data, &cfg, None, &mut |e| {
        eprintln!("{}", serde_json::to_string(e).unwrap())
    })
    .unwrap();
    let train_secs = t_train.elapsed().as_secs_f64();
    let after = val(&out.params);
    eprintln!(
        "SmolLM2 (float32) LoRA on chatterbot-corpus: val loss {before:.4} -> {after:.4} after {} steps ({train_secs:.1}s training, {:.1}s total)",
        cfg.iters,
        tic.elapsed().as_secs_f64()
    );
    assert!(after < before, "val loss {after} not below {before}");
    assert!(
        before - after > 0.05,
        "val loss barely moved: {before} -> {after}"
    );
}
