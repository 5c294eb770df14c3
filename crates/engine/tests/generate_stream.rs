//! Streaming generation on the parity fixtures (tiny random-weight models saved by
//! mlx-lm, with mlx-lm's greedy tokens): temp 0 = mlx-lm's tokens, top_k 1 = greedy,
//! seeds, stop strings across tokens, stop ids, cancellation, logprobs, threads.
//! Fixtures: `$MLX_HUB_PARITY_FIXTURES` or `<workspace>/target/parity-fixtures`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engine::generate::{
    FinishReason, GenerateParams, GenerationEvent, Generator, generate, generate_greedy,
};
use engine::models::load_model;
use engine::tokenizer::Tokenizer;
use serde_json::Value;

const MODELS: [&str; 3] = [
    "llama-tied-f32",
    "qwen3-qknorm-q4-g64",
    "mistral-traditional-f32",
];

/// The mlx-lm parity fixtures (skip, or fail under CI).
fn fixtures_dir() -> Option<PathBuf> {
    test_support::require("parity fixtures", test_support::parity_fixtures())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

struct Case {
    prompt: Vec<u32>,
    expected: Vec<u32>,
    logprobs: Vec<f32>,
}

fn cases(dir: &std::path::Path, name: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.reference.json"))).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Case {
            prompt: ids(&p["prompt_ids"]),
            expected: ids(&p["generated_ids"]),
            logprobs: p["generated_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

/// Greedy, EOS not a stop, `n` tokens.
fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: n,
        stop_token_ids: Some(Vec::new()),
        ..GenerateParams::default()
    }
}

#[test]
fn temp_zero_equals_mlx_lm_and_greedy() {
    let Some(dir) = fixtures_dir() else { return };
    for name in MODELS {
        let model = load_model(dir.join(name)).unwrap();
        let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
        for (i, c) in cases(&dir, name).iter().enumerate() {
            let mut params = greedy(c.expected.len());
            params.logprobs = Some(3);
            let out = generate(model.as_ref(), &tok, &c.prompt, &params).unwrap();
            assert_eq!(
                out.token_ids, c.expected,
                "{name} prompt {i}: mlx-lm tokens"
            );
            assert_eq!(out.finished.reason, FinishReason::Length);
            assert_eq!(out.finished.generation_tokens, c.expected.len());
            assert_eq!(out.finished.prompt_tokens, c.prompt.len());
            let g = generate_greedy(model.as_ref(), &c.prompt, c.expected.len()).unwrap();
            assert_eq!(out.token_ids, g, "{name} prompt {i}: GreedyGenerator");
            // Streamed text = one decode of the whole sequence.
            assert_eq!(
                out.text,
                tok.decode(&out.token_ids, false).unwrap(),
                "{name} {i}"
            );
            // Log-probabilities: mlx-lm's, and the top alternative is the greedy token.
            for (t, want) in out.tokens.iter().zip(&c.logprobs) {
                assert!(
                    (t.logprob - want).abs() < 1e-3,
                    "{name} {i}: {} vs {want}",
                    t.logprob
                );
                assert_eq!(t.top_logprobs.len(), 3);
                assert_eq!(t.top_logprobs[0].0, t.id);
                assert!(t.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
            }
            // top_k = 1 at any temperature is greedy.
            let mut k1 = greedy(c.expected.len());
            k1.temp = 1.3;
            k1.top_k = 1;
            k1.seed = Some(5);
            let out = generate(model.as_ref(), &tok, &c.prompt, &k1).unwrap();
            assert_eq!(out.token_ids, c.expected, "{name} prompt {i}: top_k 1");
        }
    }
}

#[test]
fn seeded_generation_is_reproducible() {
    let Some(dir) = fixtures_dir() else { return };
    let name = MODELS[0];
    let model = load_model(dir.join(name)).unwrap();
    let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
    let prompt = &cases(&dir, name)[0].prompt;
    let run = |seed| {
        let mut p = greedy(24);
        p.temp = 1.5;
        p.top_p = 0.95;
        p.seed = Some(seed);
        generate(model.as_ref(), &tok, prompt, &p)
            .unwrap()
            .token_ids
    };
    let a = run(42);
    assert_eq!(a, run(42), "same seed, same tokens");
    assert_ne!(a, run(43), "another seed, other tokens");
    assert_eq!(a.len(), 24);
}

#[test]
fn penalties_and_bias_steer_generation() {
    let Some(dir) = fixtures_dir() else { return };
    let name = MODELS[0];
    let model = load_model(dir.join(name)).unwrap();
    let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
    let c = &cases(&dir, name)[0];
    // A huge bias forces one token every step.
    let mut p = greedy(6);
    p.logit_bias.insert(77, 1e4);
    let out = generate(model.as_ref(), &tok, &c.prompt, &p).unwrap();
    assert_eq!(out.token_ids, vec![77; 6]);
    // ... and a huge repetition penalty then forbids repeating it.
    p.repetition_penalty = Some(1e9);
    p.logit_bias.insert(77, 1.0);
    let out = generate(model.as_ref(), &tok, &c.prompt, &p).unwrap();
    let distinct: std::collections::BTreeSet<_> = out.token_ids.iter().collect();
    assert_eq!(distinct.len(), out.token_ids.len(), "{:?}", out.token_ids);
}

#[test]
fn stop_string_spanning_two_tokens_is_cut_and_never_emitted() {
    let Some(dir) = fixtures_dir() else { return };
    let name = MODELS[0];
    let model = load_model(dir.join(name)).unwrap();
    let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
    let mut checked = 0;
    for c in cases(&dir, name) {
        let full = generate(model.as_ref(), &tok, &c.prompt, &greedy(20)).unwrap();
        // Two consecutive tokens whose pieces are plain text: the stop string is the
        // last char of one and the first char of the next.
        let pieces: Vec<&str> = full.tokens.iter().map(|t| t.text_delta.as_str()).collect();
        let Some(i) = (1..pieces.len()).find(|&i| {
            let ok = |s: &str| !s.is_empty() && !s.contains('\u{FFFD}');
            ok(pieces[i - 1]) && ok(pieces[i])
        }) else {
            continue;
        };
        let stop = format!(
            "{}{}",
            pieces[i - 1].chars().last().unwrap(),
            pieces[i].chars().next().unwrap()
        );
        let expected = &full.text[..full.text.find(&stop).unwrap()];
        let mut p = greedy(20);
        p.stop = vec![stop.clone()];
        let mut text = String::new();
        let mut reason = None;
        for ev in Generator::new(model.as_ref(), &tok, &c.prompt, &p).unwrap() {
            match ev.unwrap() {
                GenerationEvent::Token(t) => {
                    assert!(!t.text_delta.contains(&stop));
                    text.push_str(&t.text_delta);
                }
                GenerationEvent::Finished(f) => {
                    text.push_str(&f.text_delta);
                    reason = Some(f.reason);
                }
            }
        }
        assert_eq!(reason, Some(FinishReason::Stop));
        assert_eq!(text, expected, "stop {stop:?}");
        assert!(!text.contains(&stop));
        checked += 1;
    }
    assert!(checked > 0, "no prompt had two plain-text tokens in a row");
}

#[test]
fn stop_token_ids_end_generation() {
    let Some(dir) = fixtures_dir() else { return };
    let name = MODELS[0];
    let model = load_model(dir.join(name)).unwrap();
    let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
    let c = &cases(&dir, name)[0];
    let stop_id = c.expected[5];
    let first = c.expected.iter().position(|&t| t == stop_id).unwrap();
    let mut p = greedy(20);
    p.stop_token_ids = Some(vec![stop_id]);
    let out = generate(model.as_ref(), &tok, &c.prompt, &p).unwrap();
    assert_eq!(out.token_ids, c.expected[..first]);
    assert_eq!(out.finished.reason, FinishReason::Stop);
    assert_eq!(out.finished.stop_token, Some(stop_id));
    assert_eq!(
        out.finished.generation_tokens,
        first + 1,
        "the stop token counts"
    );
    assert_eq!(out.text, tok.decode(&out.token_ids, false).unwrap());
    // Default stop ids are the tokenizer's EOS ids.
    let eos = tok.eos_token_ids()[0];
    let mut p = GenerateParams {
        max_tokens: 10,
        ..GenerateParams::default()
    };
    p.logit_bias.insert(eos, 1e4);
    let out = generate(model.as_ref(), &tok, &c.prompt, &p).unwrap();
    assert!(out.token_ids.is_empty());
    assert_eq!(out.finished.stop_token, Some(eos));
}

#[test]
fn cancellation_stops_within_one_step() {
    let Some(dir) = fixtures_dir() else { return };
    let name = MODELS[0];
    let model = load_model(dir.join(name)).unwrap();
    let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
    let c = &cases(&dir, name)[0];
    let flag = Arc::new(AtomicBool::new(false));
    let gen_ = Generator::new(model.as_ref(), &tok, &c.prompt, &greedy(100))
        .unwrap()
        .with_cancel(flag.clone());
    let mut n = 0;
    let mut finished = None;
    for ev in gen_ {
        match ev.unwrap() {
            GenerationEvent::Token(_) => {
                n += 1;
                if n == 3 {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            GenerationEvent::Finished(f) => finished = Some(f),
        }
    }
    let f = finished.unwrap();
    assert_eq!(n, 3);
    assert_eq!(f.reason, FinishReason::Cancelled);
    assert_eq!(f.generation_tokens, 3);
}

#[test]
fn generation_runs_on_a_dedicated_thread() {
    let Some(dir) = fixtures_dir() else { return };
    let name = MODELS[1];
    let c = cases(&dir, name).remove(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let model_dir = dir.join(name);
    let prompt = c.prompt.clone();
    let n = c.expected.len();
    // The model is loaded on the generation thread: `load_model` returns lazily loaded
    // weights, which (like every unevaluated array) must be evaluated on the thread
    // that recorded them.
    let worker = std::thread::spawn(move || {
        let model = load_model(&model_dir).unwrap();
        let tok = Tokenizer::from_dir(&model_dir).unwrap();
        for ev in Generator::new(model.as_ref(), &tok, &prompt, &greedy(n)).unwrap() {
            tx.send(ev.unwrap()).unwrap();
        }
    });
    let mut got = Vec::new();
    let mut finished = false;
    for ev in rx {
        match ev {
            GenerationEvent::Token(t) => got.push(t.id),
            GenerationEvent::Finished(f) => {
                finished = true;
                assert!(f.prompt_tps > 0.0 && f.generation_tps > 0.0);
                assert!(f.peak_memory > 0);
            }
        }
    }
    worker.join().unwrap();
    assert!(finished);
    assert_eq!(got, c.expected);
}

/// Seeded sampling draws exactly mlx-lm's tokens. References from mlx-lm 0.32.2 on
/// `qwen3-qknorm-f32` (chat prompt: system "be nice", user "hi"), `mx.random.seed(1)`:
/// `stream_generate(..., max_tokens=8, sampler=make_sampler(...),
///  logits_processors=make_logits_processors(...))`.
#[test]
fn seeded_sampling_matches_mlx_lm() {
    let Some(dir) = fixtures_dir() else { return };
    let name = "qwen3-qknorm-f32";
    let model = load_model(dir.join(name)).unwrap();
    let tok = Tokenizer::from_dir(dir.join(name)).unwrap();
    let messages = [
        serde_json::json!({"role": "system", "content": "be nice"}),
        serde_json::json!({"role": "user", "content": "hi"}),
    ];
    let prompt = tok.encode_chat(&messages, true, None).unwrap();
    assert_eq!(prompt.len(), 27);
    // make_sampler(0.8)
    let mut p = greedy(8);
    p.temp = 0.8;
    p.seed = Some(1);
    let out = generate(model.as_ref(), &tok, &prompt, &p).unwrap();
    assert_eq!(out.token_ids, [122, 60, 211, 439, 70, 591, 495, 136]);
    // make_sampler(0.9, top_p=0.9, min_p=0.05, top_k=20),
    // make_logits_processors(repetition_penalty=1.3, logit_bias={5: 2.0})
    let mut p = greedy(8);
    p.temp = 0.9;
    p.top_p = 0.9;
    p.min_p = 0.05;
    p.top_k = 20;
    p.repetition_penalty = Some(1.3);
    p.logit_bias.insert(5, 2.0);
    p.seed = Some(1);
    let out = generate(model.as_ref(), &tok, &prompt, &p).unwrap();
    assert_eq!(out.token_ids, [247, 63, 350, 430, 81, 602, 548, 225]);
}
