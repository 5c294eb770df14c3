//! Sampling and logits processing on hand-made logits: mlx-lm's `sample_utils`
//! semantics (top-p, min-p, top-k, temperature, penalties, logit bias), seeded
//! reproducibility, and the stop-string matcher.

use std::collections::{BTreeMap, BTreeSet};

use engine::generate::StopMatcher;
use engine::sampling::{
    KeySequence, LogitsProcessors, ProcessorParams, Sampler, SamplerParams, apply_min_p,
    apply_top_k, apply_top_p,
};
use mlx::Array;

const DRAWS: i32 = 4000;

/// Log-probabilities `[1, V]` of `probs`.
fn logprobs(probs: &[f32]) -> Array {
    let lp: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    Array::from_slice(&lp, &[1, lp.len() as i32]).unwrap()
}

/// `DRAWS` independent draws from `[1, V]` log-probabilities (rows broadcast).
fn draws(sampler: &Sampler, lp: &Array, seed: u64) -> Vec<u32> {
    let v = lp.dim(-1);
    let batch = lp.broadcast_to(&[DRAWS, v]).unwrap();
    let mut keys = KeySequence::new(seed).unwrap();
    let key = keys.next().unwrap();
    let out = sampler.sample(&batch, Some(&key)).unwrap();
    out.as_type(mlx::Dtype::Int32)
        .unwrap()
        .to_vec::<i32>()
        .unwrap()
        .into_iter()
        .map(|t| t as u32)
        .collect()
}

fn sampler(temp: f32, top_p: f32, min_p: f32, top_k: usize) -> Sampler {
    Sampler::new(SamplerParams {
        temp,
        top_p,
        min_p,
        top_k,
        ..SamplerParams::default()
    })
    .unwrap()
}

fn finite_set(a: &Array) -> BTreeSet<usize> {
    a.to_f32_vec()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite())
        .map(|(i, _)| i)
        .collect()
}

fn seen(tokens: &[u32]) -> BTreeSet<usize> {
    tokens.iter().map(|&t| t as usize).collect()
}

#[test]
fn seeded_sampling_is_reproducible() {
    let lp = logprobs(&[0.1, 0.2, 0.3, 0.15, 0.25]);
    let s = sampler(1.0, 0.0, 0.0, 0);
    let a = draws(&s, &lp, 7);
    let b = draws(&s, &lp, 7);
    let c = draws(&s, &lp, 8);
    assert_eq!(a, b, "same seed, same draws");
    assert_ne!(a, c, "another seed, other draws");
    // Successive keys of one sequence differ, and are reproducible too.
    let mut k1 = KeySequence::new(3).unwrap();
    let mut k2 = KeySequence::new(3).unwrap();
    let one: Vec<u32> = (0..5)
        .map(|_| {
            let k = k1.next().unwrap();
            k.as_array().to_vec::<u32>().unwrap()[1]
        })
        .collect();
    let two: Vec<u32> = (0..5)
        .map(|_| {
            let k = k2.next().unwrap();
            k.as_array().to_vec::<u32>().unwrap()[1]
        })
        .collect();
    assert_eq!(one, two);
    assert_eq!(seen(&one).len(), 5);
}

#[test]
fn temperature_draws_follow_the_distribution() {
    let probs = [0.1f32, 0.2, 0.3, 0.4];
    let d = draws(&sampler(1.0, 0.0, 0.0, 0), &logprobs(&probs), 11);
    for (i, p) in probs.iter().enumerate() {
        let freq = d.iter().filter(|&&t| t as usize == i).count() as f32 / DRAWS as f32;
        assert!((freq - p).abs() < 0.04, "token {i}: {freq} vs {p}");
    }
    // A low temperature sharpens towards the argmax.
    let cold = draws(&sampler(0.1, 0.0, 0.0, 0), &logprobs(&probs), 11);
    let top = cold.iter().filter(|&&t| t == 3).count() as f32 / DRAWS as f32;
    assert!(top > 0.9, "temp 0.1 gives the top token {top}");
}

#[test]
fn temp_zero_is_argmax() {
    let lp = logprobs(&[0.1, 0.5, 0.4]);
    let t = sampler(0.0, 0.5, 0.3, 1).sample(&lp, None).unwrap();
    assert_eq!(
        t.as_type(mlx::Dtype::Int32)
            .unwrap()
            .to_vec::<i32>()
            .unwrap(),
        [1]
    );
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    // Sorted mass: 0.5 + 0.3 = 0.8 >= 0.8 → the nucleus is {0, 1}.
    let lp = logprobs(&[0.5, 0.3, 0.15, 0.05]);
    assert_eq!(
        finite_set(&apply_top_p(&lp, 0.8).unwrap()),
        BTreeSet::from([0, 1])
    );
    assert_eq!(
        finite_set(&apply_top_p(&lp, 0.81).unwrap()),
        BTreeSet::from([0, 1, 2])
    );
    assert_eq!(
        finite_set(&apply_top_p(&lp, 0.4).unwrap()),
        BTreeSet::from([0])
    );
    let d = draws(&sampler(1.0, 0.8, 0.0, 0), &lp, 1);
    assert_eq!(
        seen(&d),
        BTreeSet::from([0, 1]),
        "only the nucleus is ever drawn"
    );
    // Renormalised: 0.5/0.8 = 0.625.
    let f0 = d.iter().filter(|&&t| t == 0).count() as f32 / DRAWS as f32;
    assert!((f0 - 0.625).abs() < 0.04, "{f0}");
}

#[test]
fn min_p_is_relative_to_the_top_probability() {
    // 0.2 * 0.6 = 0.12: tokens 2 (0.1) and 3 (0.05) go.
    let lp = logprobs(&[0.6, 0.25, 0.1, 0.05]);
    assert_eq!(
        finite_set(&apply_min_p(&lp, 0.2, 1).unwrap()),
        BTreeSet::from([0, 1])
    );
    // min_tokens_to_keep keeps the three most likely.
    assert_eq!(
        finite_set(&apply_min_p(&lp, 0.2, 3).unwrap()),
        BTreeSet::from([0, 1, 2])
    );
    let d = draws(&sampler(1.0, 0.0, 0.2, 0), &lp, 2);
    assert_eq!(seen(&d), BTreeSet::from([0, 1]));
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    let lp = logprobs(&[0.1, 0.35, 0.05, 0.3, 0.2]);
    assert_eq!(
        finite_set(&apply_top_k(&lp, 2).unwrap()),
        BTreeSet::from([1, 3])
    );
    let d = draws(&sampler(1.0, 0.0, 0.0, 3), &lp, 3);
    assert_eq!(seen(&d), BTreeSet::from([1, 3, 4]));
    // top_k = 1 is greedy whatever the temperature.
    let d = draws(&sampler(5.0, 0.0, 0.0, 1), &lp, 4);
    assert_eq!(seen(&d), BTreeSet::from([1]));
}

#[test]
fn filters_chain_in_mlx_lm_order() {
    // top-p 0.9 keeps {0,1,2} (0.4+0.3+0.2), then min-p 0.6 (≥ 0.24) keeps {0,1}.
    let lp = logprobs(&[0.4, 0.3, 0.2, 0.1]);
    let s = sampler(1.0, 0.9, 0.6, 0);
    assert_eq!(finite_set(&s.filter(&lp).unwrap()), BTreeSet::from([0, 1]));
    assert_eq!(seen(&draws(&s, &lp, 5)), BTreeSet::from([0, 1]));
}

fn processors(p: ProcessorParams) -> LogitsProcessors {
    LogitsProcessors::new(p).unwrap()
}

fn apply(p: &LogitsProcessors, history: &[i32], logits: &[f32]) -> Vec<f32> {
    let h = Array::from_slice(history, &[history.len() as i32]).unwrap();
    let l = Array::from_slice(logits, &[1, logits.len() as i32]).unwrap();
    p.apply(&h, &l).unwrap().to_f32_vec().unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} != {b:?}");
    }
}

const LOGITS: [f32; 6] = [2.0, -1.0, 0.5, -3.0, 1.5, 0.0];

#[test]
fn repetition_penalty_matches_mlx_lm_formula() {
    // mlx-lm: selected = where(l < 0, l * p, l / p) on the last `context_size` tokens,
    // once per token however often it repeats.
    let p = processors(ProcessorParams {
        repetition_penalty: Some(1.5),
        ..Default::default()
    });
    close(
        &apply(&p, &[0, 1, 1, 3], &LOGITS),
        &[2.0 / 1.5, -1.5, 0.5, -4.5, 1.5, 0.0],
    );
    let p = processors(ProcessorParams {
        repetition_penalty: Some(1.5),
        repetition_context_size: 2,
        ..Default::default()
    });
    // Only the last two tokens (1, 3) count: token 0 is not penalised.
    close(
        &apply(&p, &[0, 1, 1, 3], &LOGITS),
        &[2.0, -1.5, 0.5, -4.5, 1.5, 0.0],
    );
    // Off when 0 or None.
    let p = processors(ProcessorParams {
        repetition_penalty: Some(0.0),
        ..Default::default()
    });
    assert!(p.is_empty());
}

#[test]
fn presence_and_frequency_penalties() {
    let p = processors(ProcessorParams {
        presence_penalty: Some(0.5),
        ..Default::default()
    });
    close(
        &apply(&p, &[0, 1, 1, 3], &LOGITS),
        &[1.5, -1.5, 0.5, -3.5, 1.5, 0.0],
    );
    let p = processors(ProcessorParams {
        frequency_penalty: Some(0.5),
        ..Default::default()
    });
    close(
        &apply(&p, &[0, 1, 1, 3], &LOGITS),
        &[1.5, -2.0, 0.5, -3.5, 1.5, 0.0],
    );
}

#[test]
fn logit_bias_forces_a_token() {
    let p = processors(ProcessorParams {
        logit_bias: BTreeMap::from([(5, 100.0), (0, -1.0)]),
        ..Default::default()
    });
    let out = apply(&p, &[], &LOGITS);
    close(&out, &[1.0, -1.0, 0.5, -3.0, 1.5, 100.0]);
    let l = Array::from_slice(&out, &[1, 6]).unwrap();
    let lp = l.sub(l.logsumexp(-1, true).unwrap()).unwrap();
    assert_eq!(
        seen(&draws(&sampler(1.0, 0.0, 0.0, 0), &lp, 9)),
        BTreeSet::from([5])
    );
}

#[test]
fn invalid_parameters_are_refused() {
    assert!(
        Sampler::new(SamplerParams {
            temp: -1.0,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        Sampler::new(SamplerParams {
            top_p: 1.5,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        Sampler::new(SamplerParams {
            min_p: -0.1,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        LogitsProcessors::new(ProcessorParams {
            repetition_penalty: Some(-1.0),
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn stop_matcher_holds_back_and_cuts() {
    let mut m = StopMatcher::new(&["world".to_string(), "\n\n".to_string()]);
    assert_eq!(m.push("Hello wo"), ("Hello ".to_string(), false));
    assert_eq!(m.push("r"), (String::new(), false));
    assert_eq!(m.push("ld! more"), (String::new(), true));

    let mut m = StopMatcher::new(&["world".to_string()]);
    assert_eq!(m.push("a wor"), ("a ".to_string(), false));
    assert_eq!(m.push("k"), ("work".to_string(), false));
    assert_eq!(m.push("wo"), (String::new(), false));
    assert_eq!(m.finish(), "wo");

    // A stop string inside one piece, text before it kept; multi-byte text.
    let mut m = StopMatcher::new(&["é!".to_string()]);
    assert_eq!(m.push("caféé"), ("café".to_string(), false));
    assert_eq!(m.push("! x"), (String::new(), true));

    // The earliest stop string wins.
    let mut m = StopMatcher::new(&["bc".to_string(), "ab".to_string()]);
    assert_eq!(m.push("xabc"), ("x".to_string(), true));
}
