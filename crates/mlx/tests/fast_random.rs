//! Fast kernels against plain-Rust references, and seeded random numbers against
//! values from MLX's Python API (same library, same keys).
mod common;
use common::*;
use mlx::fast::{self, AttentionMask, RopeOffset};
use mlx::random::{self, Key};
use mlx::{Array, Dtype};

fn lcg(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn rms_norm_and_layer_norm() {
    let x = lcg(12, 1);
    let w = lcg(4, 2);
    let b = lcg(4, 3);
    let eps = 1e-5;
    let mut rms = vec![];
    let mut ln = vec![];
    for row in x.chunks(4) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
        rms.extend(row.iter().zip(&w).map(|(v, w)| v / (ms + eps).sqrt() * w));
        let mean = row.iter().sum::<f32>() / 4.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        ln.extend(
            row.iter()
                .zip(w.iter().zip(&b))
                .map(|(v, (w, b))| (v - mean) / (var + eps).sqrt() * w + b),
        );
    }
    let xa = arr(&x, &[3, 4]);
    let wa = arr(&w, &[4]);
    let ba = arr(&b, &[4]);
    assert_close(
        &vals(&fast::rms_norm(&xa, Some(&wa), eps).unwrap()),
        &rms,
        1e-5,
    );
    assert_close(
        &vals(&fast::layer_norm(&xa, Some(&wa), Some(&ba), eps).unwrap()),
        &ln,
        1e-5,
    );
}

/// RoPE by the definition: angle = position · base^(-2i/dims).
fn rope_ref(
    x: &[f32],
    l: usize,
    d: usize,
    traditional: bool,
    base: f32,
    offset: usize,
) -> Vec<f32> {
    let mut out = x.to_vec();
    for p in 0..l {
        for i in 0..d / 2 {
            let theta = (p + offset) as f32 * base.powf(-2.0 * i as f32 / d as f32);
            let (a, b) = if traditional {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + d / 2)
            };
            let (x1, x2) = (x[p * d + a], x[p * d + b]);
            out[p * d + a] = x1 * theta.cos() - x2 * theta.sin();
            out[p * d + b] = x1 * theta.sin() + x2 * theta.cos();
        }
    }
    out
}

#[test]
fn rope_layouts_offsets_and_custom_frequencies() {
    let (l, d) = (5usize, 8usize);
    let x = lcg(l * d, 4);
    let xa = arr(&x, &[1, 1, l as i32, d as i32]);
    for traditional in [false, true] {
        for offset in [0usize, 7] {
            let got = fast::rope(
                &xa,
                d as i32,
                traditional,
                Some(10000.0),
                1.0,
                RopeOffset::Fixed(offset as i32),
                None,
            )
            .unwrap();
            assert_close(
                &vals(&got),
                &rope_ref(&x, l, d, traditional, 10000.0, offset),
                1e-4,
            );
        }
    }
    // Offset as an array gives the same result.
    let off = Array::scalar(7i32).unwrap();
    let got = fast::rope(
        &xa,
        d as i32,
        false,
        Some(10000.0),
        1.0,
        RopeOffset::Array(&off),
        None,
    )
    .unwrap();
    assert_close(&vals(&got), &rope_ref(&x, l, d, false, 10000.0, 7), 1e-4);
    // Custom frequencies are periods (as mlx-lm's Llama3RoPE passes them): base^(2i/d).
    let periods: Vec<f32> = (0..d / 2)
        .map(|i| 500.0f32.powf(2.0 * i as f32 / d as f32))
        .collect();
    let f = arr(&periods, &[(d / 2) as i32]);
    let got = fast::rope(
        &xa,
        d as i32,
        false,
        None,
        1.0,
        RopeOffset::Fixed(3),
        Some(&f),
    )
    .unwrap();
    assert_close(&vals(&got), &rope_ref(&x, l, d, false, 500.0, 3), 1e-4);
}

#[allow(clippy::too_many_arguments)]
/// Attention by the definition, q [Hq, L, D], k/v [Hkv, S, D].
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    hq: usize,
    hkv: usize,
    l: usize,
    s: usize,
    d: usize,
    causal: bool,
) -> Vec<f32> {
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0; hq * l * d];
    for h in 0..hq {
        let kh = h / (hq / hkv);
        for i in 0..l {
            let mut scores: Vec<f32> = (0..s)
                .map(|j| {
                    (0..d)
                        .map(|t| q[(h * l + i) * d + t] * k[(kh * s + j) * d + t])
                        .sum::<f32>()
                        * scale
                })
                .collect();
            if causal {
                for (j, sc) in scores.iter_mut().enumerate() {
                    if j > i + (s - l) {
                        *sc = f32::NEG_INFINITY;
                    }
                }
            }
            let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for t in 0..d {
                out[(h * l + i) * d + t] = (0..s).map(|j| e[j] / z * v[(kh * s + j) * d + t]).sum();
            }
        }
    }
    out
}

#[test]
fn attention_with_gqa_and_masks() {
    let (hq, hkv, l, s, d) = (4usize, 2usize, 3usize, 5usize, 8usize);
    let q = lcg(hq * l * d, 5);
    let k = lcg(hkv * s * d, 6);
    let v = lcg(hkv * s * d, 7);
    let qa = arr(&q, &[1, hq as i32, l as i32, d as i32]);
    let ka = arr(&k, &[1, hkv as i32, s as i32, d as i32]);
    let va = arr(&v, &[1, hkv as i32, s as i32, d as i32]);
    let scale = 1.0 / (d as f32).sqrt();
    for causal in [false, true] {
        let mask = if causal {
            AttentionMask::Causal
        } else {
            AttentionMask::None
        };
        let got = fast::scaled_dot_product_attention(&qa, &ka, &va, scale, mask).unwrap();
        assert_close(
            &vals(&got),
            &attention_ref(&q, &k, &v, hq, hkv, l, s, d, causal),
            1e-5,
        );
    }
    // A boolean array mask equal to the causal one gives the causal result.
    let keep: Vec<bool> = (0..l)
        .flat_map(|i| (0..s).map(move |j| j <= i + (s - l)))
        .collect();
    let m = Array::from_slice(&keep, &[l as i32, s as i32]).unwrap();
    let got =
        fast::scaled_dot_product_attention(&qa, &ka, &va, scale, AttentionMask::Array(&m)).unwrap();
    assert_close(
        &vals(&got),
        &attention_ref(&q, &k, &v, hq, hkv, l, s, d, true),
        1e-5,
    );
}

#[test]
fn seeded_random_matches_mlx_python() {
    let key = Key::new(42).unwrap();
    assert_eq!(key.as_array().to_vec::<u32>().unwrap(), vec![0, 42]);
    let n = random::normal(&[4], Dtype::Float32, 0.0, 1.0, Some(&key)).unwrap();
    assert_close(
        &vals(&n),
        &[0.18693565, 1.0653338, -1.5593127, -1.5352954],
        1e-6,
    );
    let u = random::uniform(0.0, 1.0, &[4], Dtype::Float32, Some(&key)).unwrap();
    assert_close(
        &vals(&u),
        &[0.574_144_4, 0.8566375, 0.05946118, 0.0623556],
        1e-6,
    );
    let (a, b) = key.split().unwrap();
    assert_eq!(
        a.as_array().to_vec::<u32>().unwrap(),
        vec![2465931498, 3679230171]
    );
    assert_eq!(
        b.as_array().to_vec::<u32>().unwrap(),
        vec![255383827, 267815257]
    );
    let r = random::randint(0, 100, &[5], Some(&key)).unwrap();
    assert_eq!(r.to_vec::<i32>().unwrap(), vec![72, 86, 19, 20, 18]);
    let p = random::permutation(6, Some(&key)).unwrap();
    assert_eq!(
        p.as_type(Dtype::Int32).unwrap().to_vec::<i32>().unwrap(),
        vec![4, 3, 5, 0, 1, 2]
    );
    let logits = arr(&[0.0, 1.0, 2.0, 3.0], &[1, 4]);
    let c = random::categorical(&logits, -1, Some(&key)).unwrap();
    assert_eq!(c.to_vec::<u32>().unwrap(), vec![3]);
    // Same key, same numbers; no key: MLX's global key, reseedable.
    let again = random::normal(&[4], Dtype::Float32, 0.0, 1.0, Some(&key)).unwrap();
    assert_eq!(vals(&again), vals(&n));
    random::seed(7);
    let g1 = vals(&random::normal(&[3], Dtype::Float32, 0.0, 1.0, None).unwrap());
    random::seed(7);
    let g2 = vals(&random::normal(&[3], Dtype::Float32, 0.0, 1.0, None).unwrap());
    assert_eq!(g1, g2);
}

#[test]
fn random_distributions_have_the_right_moments() {
    let key = Key::new(1).unwrap();
    let keys = key.split_n(4).unwrap();
    let n = vals(&random::normal(&[20000], Dtype::Float32, 2.0, 0.5, Some(&keys[0])).unwrap());
    let mean = n.iter().sum::<f32>() / n.len() as f32;
    let std = (n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32).sqrt();
    assert!(
        (mean - 2.0).abs() < 0.02 && (std - 0.5).abs() < 0.02,
        "{mean} {std}"
    );
    let p = Array::scalar(0.3f32).unwrap();
    let b = random::bernoulli(&p, &[20000], Some(&keys[1])).unwrap();
    let frac = vals(&b.as_type(Dtype::Float32).unwrap())
        .iter()
        .sum::<f32>()
        / 20000.0;
    assert!((frac - 0.3).abs() < 0.02, "{frac}");
    let logits = arr(&[0.0, (3.0f32).ln()], &[1, 2]);
    let draws = random::categorical_n(&logits, -1, 20000, Some(&keys[2])).unwrap();
    let ones = draws
        .to_vec::<u32>()
        .unwrap()
        .iter()
        .filter(|&&x| x == 1)
        .count() as f32
        / 20000.0;
    assert!((ones - 0.75).abs() < 0.02, "{ones}");
    let g = vals(&random::gumbel(&[20000], Dtype::Float32, Some(&keys[3])).unwrap());
    let gmean = g.iter().sum::<f32>() / g.len() as f32;
    assert!((gmean - 0.5772).abs() < 0.03, "{gmean}");
}
