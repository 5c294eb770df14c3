//! Parity with mlx-lm: for every fixture model (see `scripts/parity/README.md`), our
//! greedy tokens must equal mlx-lm's exactly and the first-step logits must be within
//! 1e-3 absolute. Fixtures: `$MLX_HUB_PARITY_FIXTURES` or `<workspace>/target/parity-fixtures`
//! (`python3 scripts/parity/make_fixtures.py target/parity-fixtures`).

use std::path::PathBuf;

use engine::generate::{DEFAULT_PREFILL_STEP, first_step_logits, greedy_tokens};
use engine::models::load_model;
use serde_json::Value;

const LOGIT_TOLERANCE: f32 = 1e-3;

/// The mlx-lm parity fixtures (skip, or fail under CI).
fn fixtures_dir() -> Option<PathBuf> {
    test_support::require("parity fixtures", test_support::parity_fixtures())
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

#[test]
fn greedy_tokens_and_logits_match_mlx_lm() {
    let Some(dir) = fixtures_dir() else { return };
    let index = read_json(&dir.join("index.json"));
    let models = index["models"].as_array().expect("models");
    assert!(!models.is_empty(), "index.json lists no models");

    let mut failures = Vec::new();
    let mut worst = (0.0f32, String::new());
    for m in models {
        let name = m["name"].as_str().expect("name");
        let model = match load_model(dir.join(m["path"].as_str().expect("path"))) {
            Ok(model) => model,
            Err(e) => {
                failures.push(format!("{name}: load failed: {e}"));
                continue;
            }
        };
        let reference = read_json(&dir.join(m["reference"].as_str().expect("reference")));
        let mut model_worst = 0.0f32;
        let mut token_ok = true;
        for p in reference["prompts"].as_array().expect("prompts") {
            let pname = p["name"].as_str().unwrap_or("?");
            let prompt = ids(&p["prompt_ids"]);
            let expected = ids(&p["generated_ids"]);
            let want_logits: Vec<f32> = p["first_logits"]
                .as_array()
                .expect("first_logits")
                .iter()
                .map(|x| x.as_f64().expect("a logit") as f32)
                .collect();

            if !expected.is_empty() {
                let logits = first_step_logits(model.as_ref(), &prompt, DEFAULT_PREFILL_STEP)
                    .expect("first step");
                let logits = logits.to_f32_vec().expect("logits");
                assert_eq!(
                    logits.len(),
                    want_logits.len(),
                    "{name}/{pname}: vocab size"
                );
                let dev = logits
                    .iter()
                    .zip(&want_logits)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                model_worst = model_worst.max(dev);
                if dev > worst.0 {
                    worst = (dev, format!("{name}/{pname}"));
                }
                if dev.is_nan() || dev > LOGIT_TOLERANCE {
                    failures.push(format!(
                        "{name}/{pname}: first logits differ by {dev:e} (> {LOGIT_TOLERANCE:e})"
                    ));
                }
            }
            let got = greedy_tokens(
                model.as_ref(),
                &prompt,
                expected.len(),
                DEFAULT_PREFILL_STEP,
            )
            .expect("decode");
            if got != expected {
                token_ok = false;
                failures.push(format!(
                    "{name}/{pname}: tokens differ\n  ours:   {got:?}\n  mlx-lm: {expected:?}"
                ));
            }
        }
        println!(
            "{name:34} tokens {}  max |Δlogit| {model_worst:.2e}",
            if token_ok { "exact" } else { "DIFFER" }
        );
    }
    println!(
        "worst first-step logit deviation: {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn first_prompt(dir: &std::path::Path, model: &str) -> (Vec<u32>, Vec<u32>) {
    let reference = read_json(&dir.join(format!("{model}.reference.json")));
    let p = &reference["prompts"][0];
    (ids(&p["prompt_ids"]), ids(&p["generated_ids"]))
}

fn greedy(
    model: &dyn engine::models::LanguageModel,
    prompt: &[u32],
    n: usize,
    step: usize,
) -> Vec<u32> {
    greedy_tokens(model, prompt, n, step).expect("decode")
}

#[test]
fn chunked_prefill_gives_the_same_tokens() {
    let Some(dir) = fixtures_dir() else { return };
    let name = "llama-untied-llama3rope-q4-g64";
    let model = load_model(dir.join(name)).expect("load");
    let (prompt, expected) = first_prompt(&dir, name);
    for step in [1, 2, 3, DEFAULT_PREFILL_STEP] {
        assert_eq!(
            greedy(model.as_ref(), &prompt, expected.len(), step),
            expected,
            "prefill step {step}"
        );
    }
}

#[test]
fn sharded_weights_without_index_load() {
    let Some(dir) = fixtures_dir() else { return };
    let name = "qwen3-qknorm-mixed";
    let src = dir.join(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).expect("copy config");
    let st = mlx::io::load_safetensors(src.join("model.safetensors")).expect("load");
    let all: Vec<(&String, &mlx::Array)> = st.tensors.iter().collect();
    let (a, b) = all.split_at(all.len() / 2);
    let meta = st.metadata.clone();
    for (i, part) in [a, b].into_iter().enumerate() {
        let file = tmp
            .path()
            .join(format!("model-0000{}-of-00002.safetensors", i + 1));
        mlx::io::save_safetensors(&file, part.iter().map(|(k, v)| (k.as_str(), *v)), &meta)
            .expect("save shard");
    }
    let model = load_model(tmp.path()).expect("load shards");
    let (prompt, expected) = first_prompt(&dir, name);
    assert_eq!(
        greedy(
            model.as_ref(),
            &prompt,
            expected.len(),
            DEFAULT_PREFILL_STEP
        ),
        expected
    );
}

#[test]
fn weight_errors_name_the_tensor() {
    use engine::config::ModelConfig;
    use engine::models::Llama;
    use engine::weights::{ModelError, Weights};

    let Some(dir) = fixtures_dir() else { return };
    let src = dir.join("qwen2-bias-q4-g64");
    let config = ModelConfig::from_dir(&src).expect("config");
    let tensors = || {
        mlx::io::load_safetensors(src.join("model.safetensors"))
            .expect("load")
            .tensors
    };

    let mut t = tensors();
    t.remove("model.layers.1.self_attn.k_proj.bias");
    match Llama::from_weights(config.clone(), Weights::from_map(t)) {
        Err(ModelError::MissingTensor { name }) => {
            assert_eq!(name, "model.layers.1.self_attn.k_proj.bias")
        }
        other => panic!("expected a missing tensor, got {other:?}"),
    }

    let mut t = tensors();
    t.insert(
        "model.layers.0.extra.weight".into(),
        mlx::zeros(&[2], mlx::Dtype::Float32).unwrap(),
    );
    match Llama::from_weights(config.clone(), Weights::from_map(t)) {
        Err(ModelError::UnexpectedTensor { name }) => {
            assert_eq!(name, "model.layers.0.extra.weight")
        }
        other => panic!("expected an unexpected tensor, got {other:?}"),
    }

    let mut t = tensors();
    t.insert(
        "model.norm.weight".into(),
        mlx::zeros(&[63], mlx::Dtype::Float32).unwrap(),
    );
    let err = Llama::from_weights(config, Weights::from_map(t)).expect_err("wrong shape");
    match &err {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.norm.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[64][..], &[63][..])
            );
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("model.norm.weight"), "{err}");

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Weights::load_dir(empty.path()),
        Err(ModelError::NoWeights { .. })
    ));
}

#[test]
fn kv_cache_grows_in_steps_and_returns_what_it_holds() {
    use engine::models::KvCache;
    let mut cache = KvCache::new();
    let chunk = |l: i32| mlx::ones(&[1, 2, l, 8], mlx::Dtype::Float32).unwrap();
    let (k, v) = cache.update_and_fetch(&chunk(250), &chunk(250)).unwrap();
    assert_eq!(
        (k.shape(), v.shape()),
        (vec![1, 2, 250, 8], vec![1, 2, 250, 8])
    );
    assert_eq!(cache.state()[0].shape(), vec![1, 2, 256, 8]);
    let (k, _) = cache.update_and_fetch(&chunk(10), &chunk(10)).unwrap();
    assert_eq!(k.shape(), vec![1, 2, 260, 8]);
    assert_eq!(cache.offset(), 260);
    // As mlx-lm: the unused tail (250..256) is cut before one more step is appended.
    assert_eq!(cache.state()[0].shape(), vec![1, 2, 506, 8]);
    assert_eq!(
        k.sum(mlx::Axes::All, false).unwrap().item::<f32>().unwrap(),
        (260 * 16) as f32
    );
    let (k, _) = cache.update_and_fetch(&chunk(1), &chunk(1)).unwrap();
    assert_eq!(k.shape(), vec![1, 2, 261, 8]);
    assert_eq!(cache.state()[0].shape(), vec![1, 2, 506, 8]);
}
