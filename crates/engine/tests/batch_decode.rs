//! Batched decoding (`engine::batch`): each sequence of a batch decodes what it decodes
//! alone — the same tokens, log-probabilities within 1e-4 (BLAS kernels differ between
//! one row and several) — whatever joins or leaves the batch; and a reused (prefix) cache gives the same greedy tokens.
//! Fixtures: `$MLX_HUB_PARITY_FIXTURES` or `<workspace>/target/parity-fixtures`.
//!
//! `MLX_HUB_BATCH_BENCH=DIR` also times decode steps of batch 1 and 8 on that model
//! folder (printed; nothing asserted).

use std::path::PathBuf;
use std::time::Instant;

use engine::batch::{Sequence, decode_step};
use engine::generate::{GenerateParams, SampledToken};
use engine::models::{LanguageModel, load_model};

const MODELS: [&str; 3] = [
    "llama-tied-f32",
    "qwen3-qknorm-q4-g64",
    "mistral-traditional-f32",
];

/// The mlx-lm parity fixtures (skip, or fail under CI).
fn fixtures_dir() -> Option<PathBuf> {
    test_support::require("parity fixtures", test_support::parity_fixtures())
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 3 + (i * 31 + salt * 7) % 500)
        .collect()
}

fn params(i: usize) -> GenerateParams {
    let mut p = GenerateParams {
        max_tokens: 12,
        prefill_step: 16,
        ..GenerateParams::default()
    };
    match i % 4 {
        0 => {}
        1 => {
            p.temp = 0.8;
            p.top_p = 0.9;
            p.seed = Some(5 + i as u64);
        }
        2 => {
            p.repetition_penalty = Some(1.4);
            p.logit_bias.insert(4, 3.0);
            p.logprobs = Some(3);
        }
        _ => {
            p.temp = 1.1;
            p.top_k = 10;
            p.min_p = 0.02;
            p.seed = Some(99);
        }
    }
    p
}

fn ready(model: &dyn LanguageModel, ids: &[u32], p: &GenerateParams) -> Sequence {
    let mut s = Sequence::new(model, ids, p, None).unwrap();
    while s.prefill_remaining() > 0 {
        s.prefill_chunk(model, p.prefill_step).unwrap();
    }
    s
}

/// Token ids (and alternatives' ids) exactly, log-probabilities to 1e-4: a batch
/// of rows goes through BLAS's matrix-matrix kernel where one row goes through its
/// matrix-vector one (OpenBLAS), so the logits may differ in the last bits.
fn assert_same(want: &[SampledToken], got: &[SampledToken], what: &str) {
    let ids = |v: &[SampledToken]| -> Vec<(u32, Vec<u32>)> {
        v.iter()
            .map(|t| (t.id, t.top_logprobs.iter().map(|p| p.0).collect()))
            .collect()
    };
    assert_eq!(ids(want), ids(got), "{what}: tokens differ");
    for (w, g) in want.iter().zip(got) {
        assert!(
            (w.logprob - g.logprob).abs() < 1e-4,
            "{what}: logprob {} vs {}",
            w.logprob,
            g.logprob
        );
        for (a, b) in w.top_logprobs.iter().zip(&g.top_logprobs) {
            assert!(
                (a.1 - b.1).abs() < 1e-4,
                "{what}: top logprob {} vs {}",
                a.1,
                b.1
            );
        }
    }
}

/// Runs one sequence alone.
fn solo(model: &dyn LanguageModel, ids: &[u32], p: &GenerateParams) -> Vec<SampledToken> {
    let mut s = ready(model, ids, p);
    let mut out = Vec::new();
    while s.wants_step() {
        out.extend(decode_step(model, &mut [&mut s]).unwrap().read().unwrap());
    }
    out
}

#[test]
fn a_batch_decodes_what_each_sequence_decodes_alone() {
    let Some(dir) = fixtures_dir() else { return };
    for name in MODELS {
        let model = load_model(dir.join(name)).unwrap();
        let model = model.as_ref();
        let prompts: Vec<Vec<u32>> = (0..5).map(|i| prompt(5 + 9 * i, i as u32)).collect();
        let want: Vec<Vec<SampledToken>> = prompts
            .iter()
            .enumerate()
            .map(|(i, ids)| solo(model, ids, &params(i)))
            .collect();
        // staggered: sequence i joins at step 2*i, so the batch changes every step
        let mut seqs: Vec<Option<Sequence>> = (0..prompts.len()).map(|_| None).collect();
        let mut got: Vec<Vec<SampledToken>> = (0..prompts.len()).map(|_| Vec::new()).collect();
        for step in 0.. {
            for (i, ids) in prompts.iter().enumerate() {
                if step == 2 * i {
                    seqs[i] = Some(ready(model, ids, &params(i)));
                }
            }
            let mut rows: Vec<(usize, &mut Sequence)> = seqs
                .iter_mut()
                .enumerate()
                .filter_map(|(i, s)| s.as_mut().filter(|s| s.wants_step()).map(|s| (i, s)))
                .collect();
            if rows.is_empty() && step > 2 * prompts.len() {
                break;
            }
            let idx: Vec<usize> = rows.iter().map(|r| r.0).collect();
            let mut refs: Vec<&mut Sequence> = rows.iter_mut().map(|r| &mut *r.1).collect();
            let toks = decode_step(model, &mut refs).unwrap().read().unwrap();
            for (i, t) in idx.into_iter().zip(toks) {
                got[i].push(t);
            }
        }
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_same(w, g, &format!("{name}: sequence {i} in a batch"));
        }
    }
}

#[test]
fn a_reused_prefix_cache_gives_the_same_greedy_tokens() {
    let Some(dir) = fixtures_dir() else { return };
    let model = load_model(dir.join("llama-tied-f32")).unwrap();
    let model = model.as_ref();
    let p = GenerateParams {
        max_tokens: 10,
        ..GenerateParams::default()
    };
    let ids = prompt(40, 1);
    let want: Vec<u32> = solo(model, &ids, &p).iter().map(|t| t.id).collect();
    // a cache holding a longer, diverging sequence: its first 30 tokens are shared
    let mut other = ids[..30].to_vec();
    other.extend(prompt(20, 9));
    let donor = ready(model, &other, &p);
    let reuse = (donor.cache().to_vec(), 30);
    let mut s = Sequence::new(model, &ids, &p, Some(reuse)).unwrap();
    assert_eq!(s.cached_tokens(), 30);
    assert_eq!(s.prefill_remaining(), 40 - 1 - 30);
    while s.prefill_remaining() > 0 {
        s.prefill_chunk(model, 512).unwrap();
    }
    let mut got = Vec::new();
    while s.wants_step() {
        got.extend(decode_step(model, &mut [&mut s]).unwrap().read().unwrap());
    }
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), want);
    // the donor's cache is untouched: it still decodes its own continuation
    let donor_want: Vec<u32> = solo(model, &other, &p).iter().map(|t| t.id).collect();
    let mut donor = donor;
    let mut donor_got = Vec::new();
    while donor.wants_step() {
        donor_got.extend(
            decode_step(model, &mut [&mut donor])
                .unwrap()
                .read()
                .unwrap(),
        );
    }
    assert_eq!(
        donor_got.iter().map(|t| t.id).collect::<Vec<_>>(),
        donor_want
    );
}

#[test]
fn step_times_when_asked() {
    let Some(dir) = std::env::var_os("MLX_HUB_BATCH_BENCH") else {
        return;
    };
    let model = load_model(PathBuf::from(dir)).unwrap();
    let model = model.as_ref();
    let p = GenerateParams {
        max_tokens: 64,
        ..GenerateParams::default()
    };
    for b in [1usize, 2, 4, 8] {
        let mut seqs: Vec<Sequence> = (0..b)
            .map(|i| ready(model, &prompt(100 + 10 * i, i as u32), &p))
            .collect();
        let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
        let mut pending = decode_step(model, &mut refs).unwrap();
        let t = Instant::now();
        let mut steps = 0;
        while refs.iter().all(|s| s.wants_step()) {
            let next = decode_step(model, &mut refs).unwrap();
            pending.read().unwrap();
            pending = next;
            steps += 1;
        }
        pending.read().unwrap();
        let per = t.elapsed().as_secs_f64() / steps as f64;
        eprintln!(
            "batch {b}: {:.2} ms/step, {:.1} tok/s",
            per * 1e3,
            b as f64 / per
        );
    }
}

#[test]
fn densified_weights_decode_the_same_greedy_tokens() {
    let Some(dir) = fixtures_dir() else { return };
    for name in ["llama-tied-q4-g64", "qwen3-qknorm-q4-g64"] {
        let model = load_model(dir.join(name)).unwrap();
        let p = GenerateParams {
            max_tokens: 12,
            ..GenerateParams::default()
        };
        let ids = prompt(30, 4);
        let want = solo(model.as_ref(), &ids, &p);
        let mut dense = load_model(dir.join(name)).unwrap();
        let bytes = dense
            .densify(engine::models::Dtype::Float32)
            .unwrap()
            .expect("llama-family models densify");
        assert!(bytes > 0);
        let got = solo(dense.as_ref(), &ids, &p);
        let ids_of = |v: &[SampledToken]| v.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids_of(&got), ids_of(&want), "{name}");
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a.logprob - b.logprob).abs() < 1e-3,
                "{name}: {a:?} vs {b:?}"
            );
        }
    }
}
