//! Training parity with mlx-lm (reference: `scripts/parity/lora_reference.py`):
//! tokenized rows and the first batch identical; `default_loss` within 1e-4; one SGD
//! and one Adam LoRA step within 1e-5; a 6-step Adam trajectory (train + val losses)
//! within 1e-4; adapters written here load in mlx-lm with the same greedy tokens.

mod train_common;

use std::path::Path;

use engine::generate::{DEFAULT_PREFILL_STEP, greedy_tokens};
use engine::models::Llama;
use engine::nn::Adapt;
use engine::tokenizer::Tokenizer;
use engine::train::adapters::{ADAPTER_FILE, save_params};
use engine::train::{
    AdapterSpec, BatchPlan, DataOptions, NumpyRng, Optimizer, OptimizerKind, Schedule, TrainConfig,
    default_loss, load_dataset, load_into, train,
};
use mlx::{Array, Params};
use serde_json::Value;
use train_common::*;

// Adam without bias correction moves every weight by about lr·sign(g), so float-noise
// differences in tiny gradients (|g| near eps) show up scaled by lr: 1e-3 keeps them < 1e-5.
const LR: f32 = 1e-3;
const SEED: u64 = 3;

fn max_diff(a: &Array, b: &Array) -> f32 {
    let (a, b) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn compare_params(ours: &Params, theirs: &Params, tol: f32, what: &str) -> f32 {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{what}: parameter names"
    );
    let mut worst = 0.0f32;
    for (k, v) in ours {
        let d = max_diff(v, &theirs[k]);
        assert!(d <= tol, "{what}: {k} differs by {d}");
        worst = worst.max(d);
    }
    worst
}

/// Fresh LoRA adapters with a non-zero `lora_b`, saved as an adapter folder.
fn initial_adapters(model: &Llama, dir: &Path) -> (AdapterSpec, Params) {
    let spec = AdapterSpec {
        num_layers: -1,
        ..AdapterSpec::default()
    };
    let mut params = spec.init(model, SEED).unwrap();
    let key = mlx::random::Key::new(99).unwrap();
    for (k, v) in params.iter_mut() {
        if k.ends_with("lora_b") {
            *v = mlx::random::normal(&v.shape(), mlx::Dtype::Float32, 0.0, 0.02, Some(&key))
                .unwrap();
        }
    }
    let cfg = TrainConfig {
        adapter: spec.clone(),
        ..TrainConfig::default()
    };
    cfg.adapter_config().write(dir).unwrap();
    save_params(&dir.join(ADAPTER_FILE), &params).unwrap();
    (spec, params)
}

#[test]
fn loss_step_and_trajectory_match_mlx_lm() {
    let Some(model_dir) = fixture_model("llama-tied-f32") else {
        return;
    };
    let Some(()) = python_ok() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    text_dataset(&data_dir);
    let model = Llama::load(&model_dir).unwrap();
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let init_dir = tmp.path().join("init");
    let (spec, init) = initial_adapters(&model, &init_dir);
    let out_dir = tmp.path().join("ref");
    let (iters, bs) = (6usize, 4usize);
    reference(&[
        "train",
        "--model",
        model_dir.to_str().unwrap(),
        "--data",
        data_dir.to_str().unwrap(),
        "--adapters",
        init_dir.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--batch-size",
        &bs.to_string(),
        "--seed",
        &SEED.to_string(),
        "--lr",
        &LR.to_string(),
        "--iters",
        &iters.to_string(),
        "--steps-per-eval",
        "3",
    ]);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("ref.json")).unwrap()).unwrap();

    // Tokenization.
    let data = load_dataset(&data_dir, &tok, &DataOptions::default()).unwrap();
    let ours: Vec<(Vec<u32>, usize)> = data
        .train
        .examples
        .iter()
        .map(|e| (e.tokens.clone(), e.offset))
        .collect();
    let theirs: Vec<(Vec<u32>, usize)> = serde_json::from_value(r["examples"].clone()).unwrap();
    assert_eq!(ours, theirs, "tokenized rows");

    // First batch and its loss.
    let mut plan = BatchPlan::new(&data.train, bs, 2048).unwrap();
    let mut rng = NumpyRng::new(SEED as u32);
    let batch = plan.next_looping(&data.train, &mut rng).unwrap();
    let want_tokens: Vec<Vec<i32>> =
        serde_json::from_value(r["first_batch"]["tokens"].clone()).unwrap();
    let want_lengths: Vec<Vec<i32>> =
        serde_json::from_value(r["first_batch"]["lengths"].clone()).unwrap();
    assert_eq!(
        batch.tokens.to_vec::<i32>().unwrap(),
        want_tokens.concat(),
        "first batch tokens"
    );
    assert_eq!(
        batch.lengths.to_vec::<i32>().unwrap(),
        want_lengths.concat()
    );
    let scale = spec.lora.scale;
    fn adapt(p: &Params, lora_scale: f32) -> Adapt<'_> {
        Adapt {
            params: Some(p),
            lora_scale,
            dropout: 0.0,
        }
    }
    let (loss, ntoks) =
        default_loss(&model, &adapt(&init, scale), &batch.tokens, &batch.lengths).unwrap();
    let (loss, ntoks) = (loss.item_f32().unwrap(), ntoks.item::<i32>().unwrap());
    let want = r["loss"].as_f64().unwrap() as f32;
    eprintln!(
        "loss ours {loss} mlx-lm {want} (|Δ| {})",
        (loss - want).abs()
    );
    assert!((loss - want).abs() <= 1e-4, "loss {loss} vs {want}");
    assert_eq!(ntoks as i64, r["ntoks"].as_i64().unwrap());

    // One step with SGD and with Adam.
    for (name, kind) in [
        ("sgd", OptimizerKind::sgd()),
        ("adam", OptimizerKind::adam()),
    ] {
        let mut params = init.clone();
        let (_, grads) = mlx::value_and_grad(
            |p: &Params, a: &[Array]| {
                let (l, n) = default_loss(&model, &adapt(p, scale), &a[0], &a[1])
                    .map_err(|e| mlx::Error::Mlx(e.to_string()))?;
                Ok(vec![l, n])
            },
            &params,
            &[batch.tokens.clone(), batch.lengths.clone()],
        )
        .unwrap();
        let gmax = grads
            .values()
            .flat_map(|g| g.to_f32_vec().unwrap())
            .fold(0.0f32, |m, x| m.max(x.abs()));
        eprintln!("{name}: max |grad| {gmax}");
        let mut opt = Optimizer::new(kind, Schedule::Constant(LR));
        opt.update(&mut params, &grads).unwrap();
        let theirs = mlx::io::load_safetensors(out_dir.join(format!("{name}.safetensors")))
            .unwrap()
            .tensors;
        let d = compare_params(&params, &theirs, 1e-5, name);
        eprintln!("one {name} step: max |Δ| {d}");
    }

    // A short Adam run: every step's loss and the validation losses.
    let cfg = TrainConfig {
        adapter: spec.clone(),
        learning_rate: LR,
        batch_size: bs,
        iters,
        steps_per_report: 1,
        steps_per_eval: 3,
        seed: SEED,
        resume: Some(init.clone()),
        ..TrainConfig::default()
    };
    let outcome = train(&model, &data, &cfg, None, &mut |_| {}).unwrap();
    let want: Vec<f32> = serde_json::from_value(r["trajectory"]["train"].clone()).unwrap();
    let want_val: Vec<(usize, f32)> =
        serde_json::from_value(r["trajectory"]["val"].clone()).unwrap();
    eprintln!(
        "train losses ours {:?}\n            mlx-lm {want:?}",
        outcome.step_losses
    );
    eprintln!(
        "val losses ours {:?}\n          mlx-lm {want_val:?}",
        outcome.val_losses
    );
    assert_eq!(outcome.step_losses.len(), want.len());
    for (i, (a, b)) in outcome.step_losses.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-4, "step {}: {a} vs {b}", i + 1);
    }
    assert_eq!(outcome.val_losses.len(), want_val.len());
    for ((ia, a), (ib, b)) in outcome.val_losses.iter().zip(&want_val) {
        assert_eq!(ia, ib);
        assert!((a - b).abs() <= 1e-4, "val at {ia}: {a} vs {b}");
    }
    let trained = mlx::io::load_safetensors(out_dir.join("trained.safetensors"))
        .unwrap()
        .tensors;
    let d = compare_params(&outcome.params, &trained, 1e-4, "after training");
    eprintln!("adapters after {iters} Adam steps: max |Δ| {d}");
}

#[test]
fn our_adapters_load_in_mlx_lm_with_same_greedy_tokens() {
    let Some(model_dir) = fixture_model("llama-tied-f32") else {
        return;
    };
    let Some(()) = python_ok() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    text_dataset(&data_dir);
    let model = Llama::load(&model_dir).unwrap();
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let data = load_dataset(&data_dir, &tok, &DataOptions::default()).unwrap();
    let out = tmp.path().join("adapters");
    let cfg = TrainConfig {
        adapter: AdapterSpec {
            num_layers: -1,
            ..AdapterSpec::default()
        },
        learning_rate: 5e-3,
        iters: 10,
        batch_size: 4,
        steps_per_report: 5,
        adapter_path: Some(out.clone()),
        ..TrainConfig::default()
    };
    train(&model, &data, &cfg, None, &mut |_| {}).unwrap();
    let prompt = "The quick brown";
    let r: Value = serde_json::from_str(&reference(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--adapters",
        out.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        "12",
    ]))
    .unwrap();
    let mut tuned = Llama::load(&model_dir).unwrap();
    load_into(&mut tuned, &out).unwrap();
    let ids = tok.encode(prompt, true).unwrap();
    let want_prompt: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
    assert_eq!(ids, want_prompt);
    let ours: Vec<u32> = greedy_tokens(&tuned, &ids, 12, DEFAULT_PREFILL_STEP).unwrap();
    let base: Vec<u32> = greedy_tokens(&model, &ids, 12, DEFAULT_PREFILL_STEP).unwrap();
    let want: Vec<u32> = serde_json::from_value(r["generated_ids"].clone()).unwrap();
    eprintln!("tuned ours {ours:?}\n   mlx-lm {want:?}\n base     {base:?}");
    assert_eq!(ours, want, "greedy tokens with the adapter");
    assert_ne!(ours, base, "the adapter changes the output");
}

#[test]
fn completions_and_chat_tokenize_and_mask_as_mlx_lm() {
    let Some(model_dir) = fixture_model("llama-tied-f32") else {
        return;
    };
    let Some(()) = python_ok() else { return };
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let completions: Vec<Value> = TRAIN_TEXT
        .iter()
        .zip(VALID_TEXT.iter().cycle())
        .map(|(p, c)| serde_json::json!({"prompt": p, "completion": c}))
        .collect();
    let chat: Vec<Value> = TRAIN_TEXT
        .iter()
        .zip(VALID_TEXT.iter().cycle())
        .enumerate()
        .map(|(i, (p, c))| {
            let mut m = vec![
                serde_json::json!({"role": "user", "content": p}),
                serde_json::json!({"role": "assistant", "content": c}),
            ];
            if i % 2 == 0 {
                m.insert(
                    0,
                    serde_json::json!({"role": "system", "content": "Be brief."}),
                );
            }
            serde_json::json!({ "messages": m })
        })
        .collect();
    for (name, rows) in [("completions", completions), ("chat", chat)] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_jsonl(&dir.join("train.jsonl"), &rows);
        for mask in [false, true] {
            let mut args = vec![
                "tokenize",
                "--model",
                model_dir.to_str().unwrap(),
                "--data",
                dir.to_str().unwrap(),
            ];
            if mask {
                args.push("--mask-prompt");
            }
            let theirs: Vec<(Vec<u32>, usize)> = serde_json::from_str(&reference(&args)).unwrap();
            let opts = DataOptions {
                mask_prompt: mask,
                ..DataOptions::default()
            };
            let data = load_dataset(&dir, &tok, &opts).unwrap();
            let ours: Vec<(Vec<u32>, usize)> = data
                .train
                .examples
                .iter()
                .map(|e| (e.tokens.clone(), e.offset))
                .collect();
            assert_eq!(ours, theirs, "{name}, mask_prompt={mask}");
            if mask {
                assert!(ours.iter().all(|(_, o)| *o > 0));
            }
        }
    }
}

#[test]
fn adapters_trained_by_mlx_lm_load_here_with_the_same_greedy_tokens() {
    let Some(model_dir) = fixture_model("llama-tied-q4-g64") else {
        return;
    };
    let Some(()) = python_ok() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    text_dataset(&data_dir);
    let out = tmp.path().join("mlx-lm-adapters");
    let status = std::process::Command::new("python3")
        .args(["-m", "mlx_lm", "lora", "--train", "--model"])
        .arg(&model_dir)
        .arg("--data")
        .arg(&data_dir)
        .args([
            "--iters",
            "10",
            "--batch-size",
            "4",
            "--num-layers",
            "-1",
            "--learning-rate",
            "5e-3",
            "--adapter-path",
        ])
        .arg(&out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "mlx_lm lora failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let prompt = "All that glitters";
    let r: Value = serde_json::from_str(&reference(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--adapters",
        out.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        "12",
    ]))
    .unwrap();
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let mut tuned = Llama::load(&model_dir).unwrap();
    let config = load_into(&mut tuned, &out).unwrap();
    assert_eq!(config.spec.num_layers, -1);
    let ids = tok.encode(prompt, true).unwrap();
    let ours: Vec<u32> = greedy_tokens(&tuned, &ids, 12, DEFAULT_PREFILL_STEP).unwrap();
    let want: Vec<u32> = serde_json::from_value(r["generated_ids"].clone()).unwrap();
    eprintln!("mlx-lm-trained adapters: ours {ours:?}\n                         mlx-lm {want:?}");
    assert_eq!(ours, want);
}

#[test]
fn schedules_match_mlx_optimizers() {
    let Some(()) = python_ok() else { return };
    let code = r#"
import json, mlx.core as mx
from mlx_lm.tuner.utils import build_schedule
out = {}
for name, cfg in {
    "cosine": {"name": "cosine_decay", "arguments": [1e-3, 50, 1e-5]},
    "warmup_cosine": {"name": "cosine_decay", "arguments": [2e-4, 40], "warmup": 10, "warmup_init": 1e-6},
    "linear": {"name": "linear_schedule", "arguments": [1e-3, 0.0, 30]},
}.items():
    f = build_schedule(cfg)
    out[name] = [f(mx.array(s, mx.uint64)).item() for s in range(0, 70)]
print(json.dumps(out))
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours = [
        (
            "cosine",
            Schedule::Cosine {
                init: 1e-3,
                decay_steps: 50,
                end: 1e-5,
            },
        ),
        (
            "warmup_cosine",
            Schedule::Warmup {
                warmup: 10,
                warmup_init: 1e-6,
                after: Box::new(Schedule::Cosine {
                    init: 2e-4,
                    decay_steps: 40,
                    end: 0.0,
                }),
            },
        ),
        (
            "linear",
            Schedule::Linear {
                init: 1e-3,
                end: 0.0,
                steps: 30,
            },
        ),
    ];
    for (name, s) in ours {
        let want: Vec<f32> = serde_json::from_value(r[name].clone()).unwrap();
        for (step, w) in want.iter().enumerate() {
            let got = s.at(step as u64);
            assert!(
                (got - w).abs() <= 1e-6 * w.abs().max(1e-6),
                "{name} at step {step}: {got} vs {w}"
            );
        }
    }
}
