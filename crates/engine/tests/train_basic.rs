//! Training behaviour on the tiny fixture models: reproducible and decreasing losses,
//! QLoRA / DoRA / full fine-tune, precise dataset errors, NaN and cancellation stops,
//! adapter folders that load back.

mod train_common;

use std::sync::atomic::AtomicBool;

use engine::models::Llama;
use engine::tokenizer::Tokenizer;
use engine::train::adapters::{ADAPTER_CONFIG, ADAPTER_FILE};
use engine::train::{
    AdapterConfig, AdapterSpec, DataOptions, FineTuneType, TrainConfig, TrainError, TrainEvent,
    load_adapters, load_dataset, train,
};
use serde_json::json;
use train_common::*;

fn setup(name: &str) -> Option<(Llama, Tokenizer, tempfile::TempDir)> {
    let dir = fixture_model(name)?;
    let tmp = tempfile::tempdir().unwrap();
    text_dataset(&tmp.path().join("data"));
    Some((
        Llama::load(&dir).unwrap(),
        Tokenizer::from_dir(&dir).unwrap(),
        tmp,
    ))
}

fn cfg(iters: usize, lr: f32) -> TrainConfig {
    TrainConfig {
        adapter: AdapterSpec {
            num_layers: -1,
            ..AdapterSpec::default()
        },
        learning_rate: lr,
        iters,
        batch_size: 4,
        steps_per_report: 10,
        steps_per_eval: 1000,
        seed: 7,
        ..TrainConfig::default()
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn thirty_steps_reduce_the_loss_and_are_bit_reproducible() {
    let Some((model, tok, tmp)) = setup("llama-tied-f32") else {
        return;
    };
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    let c = cfg(30, 1e-2);
    let mut events = Vec::new();
    let a = train(&model, &data, &c, None, &mut |e| events.push(e.clone())).unwrap();
    let b = train(&model, &data, &c, None, &mut |_| {}).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&a.step_losses),
        bits(&b.step_losses),
        "same seed, same losses"
    );
    let (first, last) = (mean(&a.step_losses[..3]), mean(&a.step_losses[27..]));
    eprintln!("losses {:?}", a.step_losses);
    assert!(last < first * 0.8, "loss did not drop: {first} -> {last}");
    let (v0, v1) = (a.val_losses[0].1, a.val_losses.last().unwrap().1);
    assert!(v1 < v0, "validation loss did not drop: {v0} -> {v1}");
    let reports = events
        .iter()
        .filter(|e| matches!(e, TrainEvent::Train { .. }))
        .count();
    assert_eq!(reports, 3);
    let c2 = TrainConfig { seed: 8, ..c };
    let d = train(&model, &data, &c2, None, &mut |_| {}).unwrap();
    assert_ne!(
        bits(&a.step_losses),
        bits(&d.step_losses),
        "another seed differs"
    );
}

#[test]
fn qlora_dora_and_full_fine_tune_train() {
    let Some((q, tok, tmp)) = setup("llama-tied-q4-g64") else {
        return;
    };
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    // QLoRA on a 4-bit base.
    let out = train(&q, &data, &cfg(12, 1e-2), None, &mut |_| {}).unwrap();
    assert!(mean(&out.step_losses[9..]) < mean(&out.step_losses[..3]));
    // Full fine-tune refuses quantized layers.
    let mut full = cfg(2, 1e-3);
    full.adapter.fine_tune_type = FineTuneType::Full;
    let err = train(&q, &data, &full, None, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("quantized"), "{err}");
    // DoRA on the quantized base.
    let mut dora = cfg(12, 1e-2);
    dora.adapter.fine_tune_type = FineTuneType::Dora;
    let out = train(&q, &data, &dora, None, &mut |_| {}).unwrap();
    assert!(out.params.keys().any(|k| k.ends_with(".m")));
    assert!(mean(&out.step_losses[9..]) < mean(&out.step_losses[..3]));

    // Full fine-tune of the last block of the float model, saved and loaded back.
    let Some((f, _, _)) = setup("llama-tied-f32") else {
        return;
    };
    let mut full = cfg(12, 1e-3);
    full.adapter.fine_tune_type = FineTuneType::Full;
    full.adapter.num_layers = 1;
    let dir = tmp.path().join("full");
    full.adapter_path = Some(dir.clone());
    let out = train(&f, &data, &full, None, &mut |_| {}).unwrap();
    assert!(out.params.keys().all(|k| k.starts_with("model.layers.1.")));
    assert!(mean(&out.step_losses[9..]) < mean(&out.step_losses[..3]));
    let loaded = load_adapters(&dir, &f).unwrap();
    assert_eq!(loaded.config.spec.fine_tune_type, FineTuneType::Full);
    assert_eq!(loaded.params.len(), out.params.len());
}

#[test]
fn adapter_folder_has_mlx_lm_fields_and_checkpoints() {
    let Some((model, tok, tmp)) = setup("llama-tied-f32") else {
        return;
    };
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    let dir = tmp.path().join("out");
    let mut c = cfg(4, 1e-3);
    c.save_every = 2;
    c.adapter_path = Some(dir.clone());
    train(&model, &data, &c, None, &mut |_| {}).unwrap();
    for f in [
        ADAPTER_FILE,
        ADAPTER_CONFIG,
        "0000002_adapters.safetensors",
        "0000004_adapters.safetensors",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap();
    assert_eq!(v["fine_tune_type"], "lora");
    assert_eq!(v["num_layers"], -1);
    assert_eq!(
        v["lora_parameters"],
        json!({"rank": 8, "scale": 20.0, "dropout": 0.0})
    );
    let a = load_adapters(&dir, &model).unwrap();
    assert_eq!(a.params.len(), 2 * 7 * 2);
    assert!(
        a.params
            .contains_key("model.layers.1.self_attn.q_proj.lora_a")
    );
    assert_eq!(
        a.params["model.layers.0.mlp.down_proj.lora_a"].shape(),
        vec![128, 8]
    );
    // A config mlx-lm would reject is rejected with its reason.
    let bad = json!({"num_layers": 2, "lora_parameters": {"rank": 8, "alpha": 16, "dropout": 0.0}});
    let err = AdapterConfig::from_json(&bad, std::path::Path::new("x.json")).unwrap_err();
    assert!(err.to_string().contains("alpha"), "{err}");
}

fn data_error(lines: &str, mask_prompt: bool) -> String {
    let Some(dir) = fixture_model("llama-tied-f32") else {
        return String::new();
    };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("train.jsonl"), lines).unwrap();
    let opts = DataOptions {
        mask_prompt,
        ..DataOptions::default()
    };
    match load_dataset(tmp.path(), &tok, &opts) {
        Ok(_) => panic!("dataset accepted:\n{lines}"),
        Err(e) => {
            assert!(matches!(e, TrainError::Data { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn bad_datasets_name_file_and_line() {
    if fixture_model("llama-tied-f32").is_none() {
        return;
    }
    let good = r#"{"text": "fine"}"#;
    let mut lines: Vec<String> = (0..6).map(|_| good.to_string()).collect();
    lines.push(r#"{"text": "broken"#.into());
    let e = data_error(&(lines.join("\n") + "\n"), false);
    assert!(e.contains("train.jsonl, line 7: invalid JSON"), "{e}");

    let e = data_error("", false);
    assert!(e.contains("train.jsonl, line 1: the file is empty"), "{e}");

    let e = data_error(
        &format!("{good}\n{{\"prompt\": \"a\", \"completion\": \"b\"}}\n"),
        false,
    );
    assert!(e.contains("line 2: missing `text`"), "{e}");

    let e = data_error(&format!("{good}\n{{\"text\": 5}}\n"), false);
    assert!(e.contains("line 2: `text` must be a string"), "{e}");

    let chat = |last: &str| {
        json!({"messages": [{"role": "user", "content": "hi"}, {"role": last, "content": "x"}]})
            .to_string()
    };
    let e = data_error(&format!("{}\n{}\n", chat("assistant"), chat("user")), true);
    assert!(
        e.contains("line 2: with --mask-prompt a chat row must end with an assistant message"),
        "{e}"
    );
    let e = data_error(&format!("{good}\n"), true);
    assert!(
        e.contains("prompt masking is not supported for a text dataset"),
        "{e}"
    );
}

#[test]
fn nan_loss_stops_at_its_step_and_cancel_stops_promptly() {
    let Some((model, tok, tmp)) = setup("llama-tied-f32") else {
        return;
    };
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    let dir = tmp.path().join("nan");
    let mut c = cfg(20, 1e30);
    c.adapter_path = Some(dir.clone());
    let err = train(&model, &data, &c, None, &mut |_| {}).unwrap_err();
    let TrainError::NonFinite { step, .. } = err else {
        panic!("expected NonFinite, got {err:?}");
    };
    assert!(step > 1 && step <= 20, "step {step}");
    assert!(err.to_string().contains(&format!("step {step}")));
    assert!(!dir.join(ADAPTER_FILE).exists(), "no adapters written");

    let cancel = AtomicBool::new(false);
    let mut n = 0;
    let err = train(&model, &data, &cfg(50, 1e-3), Some(&cancel), &mut |e| {
        if let TrainEvent::Train { .. } = e {
            n += 1;
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(err, TrainError::Cancelled { step: 11 }), "{err:?}");
    assert_eq!(n, 1);
}

#[test]
fn compiled_and_eager_steps_give_the_same_losses() {
    let Some((model, tok, tmp)) = setup("llama-tied-f32") else {
        return;
    };
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    let c = cfg(8, 1e-2);
    let compiled = train(&model, &data, &c, None, &mut |_| {}).unwrap();
    let eager = TrainConfig {
        compile: false,
        ..c.clone()
    };
    let eager = train(&model, &data, &eager, None, &mut |_| {}).unwrap();
    eprintln!(
        "compiled {:?}\neager    {:?}",
        compiled.step_losses, eager.step_losses
    );
    for (a, b) in compiled.step_losses.iter().zip(&eager.step_losses) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn fused_lora_and_dora_give_the_same_logits_as_unfused() {
    use engine::generate::{DEFAULT_PREFILL_STEP, first_step_logits, greedy_tokens};
    use engine::train::adapters::fuse;
    let Some((model, tok, tmp)) = setup("llama-tied-f32") else {
        return;
    };
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    for ft in [FineTuneType::Lora, FineTuneType::Dora] {
        let dir = tmp.path().join(ft.name());
        let mut c = cfg(8, 1e-2);
        c.adapter.fine_tune_type = ft;
        c.adapter_path = Some(dir.clone());
        train(&model, &data, &c, None, &mut |_| {}).unwrap();
        let a = load_adapters(&dir, &model).unwrap();
        let mut unfused = model.clone();
        engine::train::apply_adapters(&mut unfused, &a).unwrap();
        let mut fused = model.clone();
        fuse(&mut fused, &a, false).unwrap();
        let ids = tok.encode("The quick brown", true).unwrap();
        let run = |m: &Llama| {
            let logits = first_step_logits(m, &ids, DEFAULT_PREFILL_STEP).unwrap();
            // the tokens after the first, as the step-by-step generator gave them
            let toks = greedy_tokens(m, &ids, 8, DEFAULT_PREFILL_STEP).unwrap()[1..].to_vec();
            (logits.to_f32_vec().unwrap(), toks)
        };
        let (lu, tu) = run(&unfused);
        let (lf, tf) = run(&fused);
        let d = lu
            .iter()
            .zip(&lf)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{}: fused vs unfused max |Δlogit| {d}", ft.name());
        assert!(d < 1e-3, "{d}");
        assert_eq!(tu, tf);
    }
}
