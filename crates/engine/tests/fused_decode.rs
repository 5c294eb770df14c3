//! The fused decode step (one MLX node per block, `mlx::quantization::decode_layer`)
//! against the op-by-op path on every quantized parity fixture: the same greedy tokens
//! and logits within 1e-3 at every step (float32 sums in another order, over 230 steps); and a cache shared with a clone (as the prefix
//! cache keeps them) is never written through.
//! Fixtures: `$MLX_HUB_PARITY_FIXTURES` or `<workspace>/target/parity-fixtures`.

use std::path::PathBuf;
use std::sync::Mutex;

use engine::models::{KvCache, LanguageModel, load_model, set_fused_decode};
use mlx::Array;
use mlx::quantization::decode_layer_calls;

// The switch is process-wide: tests that flip it run one at a time.
static SWITCH: Mutex<()> = Mutex::new(());

/// The fused step runs our CPU kernels: pin MLX's CPU device (the GPU is MLX's default
/// on a Mac; there the GPU path is MLX's own, tested by the parity tests).
fn on_cpu() {
    mlx::system::set_default_device(mlx::system::Device::Cpu).unwrap();
}

/// The mlx-lm parity fixtures (skip, or fail under CI).
fn fixtures_dir() -> Option<PathBuf> {
    test_support::require("parity fixtures", test_support::parity_fixtures())
}

fn quantized_fixtures(dir: &std::path::Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    index["models"]
        .as_array()
        .unwrap()
        .iter()
        // The mixed fixtures keep a float projection (layer 0's down_proj): op by op.
        .filter(|m| {
            !m["quantization"].is_null() && !m["name"].as_str().unwrap().ends_with("-mixed")
        })
        .map(|m| m["path"].as_str().unwrap().to_string())
        .collect()
}

fn tokens(ids: &[u32]) -> Array {
    let v: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Array::from_slice(&v, &[1, v.len() as i32]).unwrap()
}

/// Greedy decode of `n` tokens from `cache` after `last`: the tokens and each step's logits.
fn decode(
    model: &dyn LanguageModel,
    cache: &mut [KvCache],
    mut last: u32,
    n: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let (mut out, mut logits) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let l = model.forward(&tokens(&[last]), cache).unwrap();
        let v = l.to_f32_vec().unwrap();
        let t = l.argmax(Some(-1), false).unwrap();
        last = t.as_type(mlx::Dtype::Int32).unwrap().item::<i32>().unwrap() as u32;
        out.push(last);
        logits.push(v);
    }
    (out, logits)
}

fn prompt(len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| 3 + (i * 37) % 500).collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn fused_decode_equals_op_by_op_decode() {
    on_cpu();
    let Some(dir) = fixtures_dir() else { return };
    let _guard = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let names = quantized_fixtures(&dir);
    assert!(!names.is_empty());
    let mut ran_fused = 0;
    for name in &names {
        let model = load_model(dir.join(name)).unwrap();
        let p = prompt(40);
        let run = |fused: bool| {
            set_fused_decode(fused);
            let mut cache = model.make_cache();
            engine::generate::prefill(model.as_ref(), &mut cache, &p[..p.len() - 1], 16).unwrap();
            let before = decode_layer_calls();
            // Past the cache's first 256 positions: the buffers grow mid-decode.
            let out = decode(model.as_ref(), &mut cache, p[p.len() - 1], 230);
            (out, decode_layer_calls() - before)
        };
        let ((fused, fused_logits), fused_calls) = run(true);
        let ((plain, plain_logits), plain_calls) = run(false);
        set_fused_decode(true);
        assert_eq!(plain_calls, 0, "{name}: the op-by-op path ran fused layers");
        // A model with any float projection (mlx-lm leaves layers whose input size is not
        // a multiple of the group unquantized) decodes op by op: all layers or none.
        let all = 230 * model.config().num_hidden_layers as u64;
        assert!(
            fused_calls == all || fused_calls == 0,
            "{name}: {fused_calls} fused nodes"
        );
        ran_fused += (fused_calls == all) as usize;
        assert_eq!(fused, plain, "{name}: tokens differ");
        let d = max_diff(&fused_logits, &plain_logits);
        println!("{name:34} 230 tokens equal, max |Δlogit| {d:.2e}");
        assert!(d < 1e-3, "{name}: logits differ by {d}");
    }
    assert!(
        ran_fused >= names.len() / 2,
        "only {ran_fused} models ran fused"
    );
}

#[test]
fn a_model_with_a_float_projection_decodes_op_by_op() {
    on_cpu();
    let Some(dir) = fixtures_dir() else { return };
    let _guard = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    set_fused_decode(true);
    let model = load_model(dir.join("llama-untied-llama3rope-mixed")).unwrap();
    let mut cache = model.make_cache();
    let before = decode_layer_calls();
    decode(model.as_ref(), &mut cache, 5, 3);
    assert_eq!(decode_layer_calls(), before);
}

#[test]
fn a_cache_shared_with_a_clone_is_not_written_through() {
    on_cpu();
    let Some(dir) = fixtures_dir() else { return };
    let _guard = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    set_fused_decode(true);
    let model = load_model(dir.join("qwen3-qknorm-q4-g64")).unwrap();
    let p = prompt(24);
    let (head, last) = (&p[..p.len() - 1], p[p.len() - 1]);

    let mut fresh = model.make_cache();
    engine::generate::prefill(model.as_ref(), &mut fresh, head, 512).unwrap();
    let want = decode(model.as_ref(), &mut fresh, last, 8);

    // A prefix-cache entry and a sequence that reuses fewer of its positions: the
    // sequence's decode writes over positions the entry still holds.
    let mut entry = model.make_cache();
    engine::generate::prefill(model.as_ref(), &mut entry, head, 512).unwrap();
    let mut reuse = entry.clone();
    for c in &mut reuse {
        c.trim(5);
    }
    decode(model.as_ref(), &mut reuse, 7, 8);

    let got = decode(model.as_ref(), &mut entry, last, 8);
    assert_eq!(got.0, want.0, "the clone's cache was written through");
    assert!(max_diff(&got.1, &want.1) < 1e-5);
}

#[test]
fn fused_batch_decode_equals_op_by_op_batch_decode() {
    on_cpu();
    let Some(dir) = fixtures_dir() else { return };
    let _guard = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    for name in [
        "qwen3-qknorm-q4-g64",
        "llama-untied-llama3rope-q4-g64",
        "mistral-traditional-q8-g32",
    ] {
        let model = load_model(dir.join(name)).unwrap();
        let run = |fused: bool| {
            set_fused_decode(fused);
            let before = decode_layer_calls();
            let mut caches: Vec<Vec<KvCache>> = [5, 17, 30]
                .iter()
                .map(|&n| {
                    let mut c = model.make_cache();
                    engine::generate::prefill(model.as_ref(), &mut c, &prompt(n), 512).unwrap();
                    c
                })
                .collect();
            let mut last = vec![1i32, 2, 3];
            let mut logits = Vec::new();
            for _ in 0..6 {
                let t = Array::from_slice(&last, &[3, 1]).unwrap();
                let mut refs: Vec<&mut [KvCache]> =
                    caches.iter_mut().map(|c| c.as_mut_slice()).collect();
                let l = model.forward_batch(&t, &mut refs).unwrap();
                let next = l.argmax(Some(-1), false).unwrap();
                last = next
                    .as_type(mlx::Dtype::Int32)
                    .unwrap()
                    .to_vec::<i32>()
                    .unwrap();
                logits.push(l.to_f32_vec().unwrap());
            }
            (logits, decode_layer_calls() - before)
        };
        let (fused, calls) = run(true);
        let (plain, plain_calls) = run(false);
        set_fused_decode(true);
        assert_eq!(calls, 6 * model.config().num_hidden_layers as u64, "{name}");
        assert_eq!(plain_calls, 0, "{name}");
        let d = max_diff(&fused, &plain);
        println!("{name:34} batch of 3: max |Δlogit| {d:.2e}");
        assert!(d < 1e-3, "{name}: logits differ by {d}");
    }
}
