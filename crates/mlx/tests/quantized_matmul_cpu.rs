//! Our CPU quantized matmul (csrc/qmm.cpp) against MLX's own: shapes, bits, groups,
//! scale dtypes, both kernels (SIMD and portable), lazy inputs, compile and gradients.
mod common;
use common::*;
use mlx::quantization::{
    QuantSpec, Quantized, cpu_kernel, cpu_kernel_calls, cpu_pool_self_check, force_portable_kernel,
    quantize, quantized_matmul, quantized_matmul_reference,
};
use mlx::{Array, Dtype, compile, random, value_and_grad_vec};

fn normal(shape: &[i32], seed: u64) -> Array {
    let key = random::Key::new(seed).unwrap();
    random::normal(shape, Dtype::Float32, 0.0, 1.0, Some(&key)).unwrap()
}

fn quantized(n: i32, k: i32, bits: i32, group: i32, dtype: Dtype, seed: u64) -> Quantized {
    let w = normal(&[n, k], seed).mul(0.2f32).unwrap();
    let q = quantize(
        &w.as_type(dtype).unwrap(),
        QuantSpec::new(group, bits).unwrap(),
    )
    .unwrap();
    mlx::eval([&q.weight, &q.scales, &q.biases]).unwrap();
    q
}

/// Ours vs MLX's, relative to the size of the result (sums of K products).
#[track_caller]
fn assert_matches(got: &Array, want: &Array, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    assert_eq!(got.dtype(), want.dtype(), "{what}");
    let (g, w) = (vals(got), vals(want));
    let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    // Ours accumulates in float32 whatever the input dtype; MLX accumulates half inputs
    // in their own precision (bfloat16 keeps 8 bits of mantissa), so there the reference
    // itself is that far from the exact value.
    let tol = match want.dtype() {
        Dtype::Float32 => 2e-5,
        Dtype::Float16 => 1e-2,
        _ => 5e-2,
    };
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * scale,
            "{what}: element {i}: ours {a} vs MLX {b} (scale {scale})"
        );
    }
}

#[test]
fn kernel_is_reported() {
    on_cpu();
    let k = cpu_kernel();
    // Shown with `--show-output` (scripts/ci/aarch64-kernel-tests.sh checks it).
    println!("cpu kernel: {} ({} threads)", k.name, k.threads);
    assert!(k.threads >= 1);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_eq!(k.name, "avx2-fma");
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(k.name, "neon");
}

// The kernel choice is process-wide: tests that flip it run one at a time.
static KERNEL_SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn equals_mlx_over_shapes_bits_groups_and_both_kernels() {
    on_cpu();
    let _switch = KERNEL_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let before = cpu_kernel_calls();
    let mut fast_calls = 0;
    for portable in [false, true] {
        force_portable_kernel(portable);
        for bits in [4, 8] {
            for group in [32, 64, 128] {
                // An odd number of outputs, and K an odd multiple of the group.
                let (n, k) = (37, group * 5);
                let q = quantized(n, k, bits, group, Dtype::Float32, 7);
                // 1 (decode), 2 and 7 (the few-row kernel, with a ragged block of 4),
                // 33 (tiles + sgemm).
                for rows in [1, 2, 7, 33] {
                    let x = normal(&[rows, k], 100 + rows as u64);
                    let what = format!("portable {portable} bits {bits} group {group} rows {rows}");
                    let got = quantized_matmul(&x, &q, true).unwrap();
                    let want = quantized_matmul_reference(&x, &q, true).unwrap();
                    assert_matches(&got, &want, &what);
                    fast_calls += 1;
                }
                // Leading batch axes: [2, 3, K].
                let x = normal(&[2, 3, k], 5);
                let got = quantized_matmul(&x, &q, true).unwrap();
                assert_eq!(got.shape(), vec![2, 3, n]);
                let want = quantized_matmul_reference(&x, &q, true).unwrap();
                assert_matches(&got, &want, "batched");
                fast_calls += 1;
            }
        }
    }
    force_portable_kernel(false);
    assert!(
        cpu_kernel_calls() - before >= fast_calls,
        "our kernels ran {} times for {fast_calls} products",
        cpu_kernel_calls() - before
    );
}

#[test]
fn half_precision_scales_and_activations() {
    on_cpu();
    for dtype in [Dtype::Float16, Dtype::Bfloat16] {
        let q = quantized(64, 256, 4, 64, dtype, 11);
        assert_eq!(q.scales.dtype(), dtype);
        for rows in [1, 20] {
            // float32 activations with half scales, and half activations.
            for xdt in [Dtype::Float32, dtype] {
                let x = normal(&[rows, 256], 12).as_type(xdt).unwrap();
                let got = quantized_matmul(&x, &q, true).unwrap();
                let want = quantized_matmul_reference(&x, &q, true).unwrap();
                assert_matches(
                    &got,
                    &want,
                    &format!("{dtype:?} scales, {xdt:?} x, {rows} rows"),
                );
            }
        }
    }
}

#[test]
fn non_transposed_and_unsupported_bits_still_work() {
    on_cpu();
    // Not our kernels' case: MLX's op answers, with the same values.
    let q = quantized(64, 128, 4, 64, Dtype::Float32, 13);
    let x = normal(&[3, 64], 14);
    let got = quantized_matmul(&x, &q, false).unwrap();
    let want = quantized_matmul_reference(&x, &q, false).unwrap();
    assert_matches(&got, &want, "transpose=false");
    let q2 = quantized(64, 128, 2, 64, Dtype::Float32, 15);
    let x = normal(&[3, 128], 16);
    let got = quantized_matmul(&x, &q2, true).unwrap();
    let want = quantized_matmul_reference(&x, &q2, true).unwrap();
    assert_matches(&got, &want, "2 bits");
    // Bad input is MLX's error, not a crash.
    let wrong = normal(&[3, 100], 17);
    assert!(quantized_matmul(&wrong, &q, true).is_err());
}

#[test]
fn lazy_inputs_and_lazy_weights() {
    on_cpu();
    // Neither x nor the quantized weights are evaluated before the product.
    let w = normal(&[48, 192], 21).mul(0.1f32).unwrap();
    let q = quantize(&w, QuantSpec::new(32, 4).unwrap()).unwrap();
    let x = normal(&[5, 192], 22).add(normal(&[5, 192], 23)).unwrap();
    let t = x.transpose(&[1, 0]).unwrap().transpose(&[1, 0]).unwrap();
    let got = quantized_matmul(&t, &q, true).unwrap();
    let want = quantized_matmul_reference(&x, &q, true).unwrap();
    assert_matches(&got, &want, "lazy");
    // A strided (non-contiguous) view of x.
    let wide = normal(&[5, 384], 24);
    let view = wide
        .reshape(&[5, 2, 192])
        .unwrap()
        .transpose(&[1, 0, 2])
        .unwrap();
    let got = quantized_matmul(&view, &q, true).unwrap();
    let want = quantized_matmul_reference(&view, &q, true).unwrap();
    assert_matches(&got, &want, "strided view");
}

#[test]
fn inside_compile() {
    on_cpu();
    let q = quantized(96, 256, 4, 64, Dtype::Float32, 31);
    let qc = q.clone();
    let mut f = compile(
        move |xs: &[Array]| {
            let y = quantized_matmul(&xs[0], &qc, true)?;
            Ok(vec![y.mul(2.0f32)?.add(1.0f32)?])
        },
        false,
    )
    .unwrap();
    for rows in [1, 3, 17] {
        let x = normal(&[rows, 256], 32 + rows as u64);
        let got = f.call(std::slice::from_ref(&x)).unwrap().remove(0);
        let want = quantized_matmul_reference(&x, &q, true)
            .unwrap()
            .mul(2.0f32)
            .unwrap()
            .add(1.0f32)
            .unwrap();
        assert_matches(&got, &want, &format!("compiled, {rows} rows"));
    }
}

#[test]
fn gradients_through_x_scales_and_biases() {
    on_cpu();
    let q = quantized(40, 128, 4, 32, Dtype::Float32, 41);
    let x = normal(&[6, 128], 42);
    let c = normal(&[6, 40], 43);
    let grads = |reference: bool| {
        let (w, c) = (q.weight.clone(), c.clone());
        let spec = q.spec;
        value_and_grad_vec(
            move |xs: &[Array]| {
                let qq = Quantized {
                    weight: w.clone(),
                    scales: xs[1].clone(),
                    biases: xs[2].clone(),
                    spec,
                };
                let y = if reference {
                    quantized_matmul_reference(&xs[0], &qq, true)?
                } else {
                    quantized_matmul(&xs[0], &qq, true)?
                };
                Ok(vec![y.mul(&c)?.sum(mlx::Axes::All, false)?])
            },
            &[x.clone(), q.scales.clone(), q.biases.clone()],
            &[0, 1, 2],
        )
        .unwrap()
    };
    let (v_ours, g_ours) = grads(false);
    let (v_ref, g_ref) = grads(true);
    assert_matches(&v_ours[0], &v_ref[0], "loss");
    for (i, name) in ["x", "scales", "biases"].iter().enumerate() {
        assert_matches(&g_ours[i], &g_ref[i], &format!("d loss / d {name}"));
    }
    // The packed weights have no gradient, as with MLX's op.
    let w = q.weight.clone();
    let r = value_and_grad_vec(
        |xs: &[Array]| {
            let qq = Quantized {
                weight: xs[1].clone(),
                ..q.clone()
            };
            Ok(vec![
                quantized_matmul(&xs[0], &qq, true)?.sum(mlx::Axes::All, false)?,
            ])
        },
        &[x.clone(), w],
        &[1],
    );
    assert!(r.is_err());
}

/// A small random block for `decode_layer`: dim 64, 4 query heads over 2 kv heads of 16.
struct Block {
    norms: [Array; 2],
    lin: Vec<Quantized>,
    bias: Vec<Array>,
    qk: [Array; 2],
    freqs: Array,
}

const DIM: i32 = 64;
const HEADS: i32 = 4;
const KV: i32 = 2;
const HD: i32 = 16;
const FF: i32 = 96;

fn block(bits: i32) -> Block {
    let shapes = [
        (HEADS * HD, DIM),
        (KV * HD, DIM),
        (KV * HD, DIM),
        (DIM, HEADS * HD),
        (FF, DIM),
        (FF, DIM),
        (DIM, FF),
    ];
    let lin = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| quantized(n, k, bits, 32, Dtype::Float32, 100 + i as u64))
        .collect();
    let bias = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, _))| normal(&[n], 200 + i as u64).mul(0.1f32).unwrap())
        .collect();
    let w = |n, seed| normal(&[n], seed).mul(0.1f32).unwrap().add(1.0f32).unwrap();
    let freqs = Array::from_vec(&(0..HD / 2).map(|i| 1.5f32.powi(i)).collect::<Vec<_>>()).unwrap();
    Block {
        norms: [w(DIM, 1), w(DIM, 2)],
        lin,
        bias,
        qk: [w(HD, 3), w(HD, 4)],
        freqs,
    }
}

fn layer<'a>(
    b: &'a Block,
    traditional: bool,
    with_bias: bool,
    qk: bool,
    freqs: bool,
) -> mlx::quantization::DecodeLayer<'a> {
    use mlx::quantization::{DecodeLayer, DecodeLinear};
    let l = |i: usize| DecodeLinear {
        q: &b.lin[i],
        bias: with_bias.then(|| &b.bias[i]),
    };
    DecodeLayer {
        n_heads: HEADS,
        n_kv_heads: KV,
        head_dim: HD,
        eps: 1e-5,
        attn_scale: (HD as f32).powf(-0.5),
        rope_dims: HD,
        rope_traditional: traditional,
        rope_base: 10000.0,
        rope_scale: 1.0,
        rope_freqs: freqs.then_some(&b.freqs),
        input_norm: &b.norms[0],
        post_norm: &b.norms[1],
        qk_norm: qk.then(|| (&b.qk[0], &b.qk[1])),
        linears: [l(0), l(1), l(2), l(3), l(4), l(5), l(6)],
    }
}

/// The block as mlx-lm computes it, op by op with MLX's own kernels.
fn reference(
    x: &Array,
    keys: &Array,
    values: &Array,
    offset: i32,
    d: &mlx::quantization::DecodeLayer<'_>,
) -> (Array, Array, Array) {
    use mlx::fast::{AttentionMask, RopeOffset, rms_norm, rope, scaled_dot_product_attention};
    let lin = |i: usize, x: &Array| {
        let y = quantized_matmul_reference(x, d.linears[i].q, true).unwrap();
        match d.linears[i].bias {
            Some(b) => y.add(b).unwrap(),
            None => y,
        }
    };
    let heads = |y: Array, n: i32, norm: Option<&Array>| {
        let mut y = y.reshape(&[1, 1, n, HD]).unwrap();
        if let Some(w) = norm {
            y = rms_norm(&y, Some(w), d.eps).unwrap();
        }
        let y = y.transpose(&[0, 2, 1, 3]).unwrap();
        let (base, freqs) = match d.rope_freqs {
            Some(f) => (None, Some(f)),
            None => (Some(d.rope_base), None),
        };
        rope(
            &y,
            HD,
            d.rope_traditional,
            base,
            d.rope_scale,
            RopeOffset::Fixed(offset),
            freqs,
        )
        .unwrap()
    };
    let n = rms_norm(x, Some(d.input_norm), d.eps).unwrap();
    let q = heads(lin(0, &n), HEADS, d.qk_norm.map(|p| p.0));
    let k = heads(lin(1, &n), KV, d.qk_norm.map(|p| p.1));
    let v = lin(2, &n)
        .reshape(&[1, 1, KV, HD])
        .unwrap()
        .transpose(&[0, 2, 1, 3])
        .unwrap();
    let cap = keys.dim(2);
    let keys = keys
        .slice_update(
            &k,
            &[0, 0, offset, 0],
            &[1, KV, offset + 1, HD],
            &[1, 1, 1, 1],
        )
        .unwrap();
    let values = values
        .slice_update(
            &v,
            &[0, 0, offset, 0],
            &[1, KV, offset + 1, HD],
            &[1, 1, 1, 1],
        )
        .unwrap();
    let (ks, vs) = (
        keys.slice_axis(2, 0, offset + 1).unwrap(),
        values.slice_axis(2, 0, offset + 1).unwrap(),
    );
    let o = scaled_dot_product_attention(&q, &ks, &vs, d.attn_scale, AttentionMask::None).unwrap();
    let o = o
        .transpose(&[0, 2, 1, 3])
        .unwrap()
        .reshape(&[1, 1, -1])
        .unwrap();
    let h = x.add(lin(3, &o)).unwrap();
    let n = rms_norm(&h, Some(d.post_norm), d.eps).unwrap();
    let act = lin(4, &n).silu().unwrap().multiply(lin(5, &n)).unwrap();
    let y = h.add(lin(6, &act)).unwrap();
    assert_eq!(keys.dim(2), cap);
    (y, keys, values)
}

/// `decode_layer` for one sequence.
fn decode_one(
    x: &Array,
    keys: &Array,
    values: &Array,
    offset: i32,
    copy_cache: bool,
    d: &mlx::quantization::DecodeLayer<'_>,
) -> mlx::Result<(Array, Array, Array)> {
    let row = mlx::quantization::DecodeRow {
        keys,
        values,
        offset,
        copy_cache,
    };
    let (y, mut c) = mlx::quantization::decode_layer(x, &[row], d)?;
    let (k, v) = c.remove(0);
    Ok((y, k, v))
}

#[test]
fn decode_layer_equals_the_blocks_ops() {
    on_cpu();
    use mlx::quantization::decode_layer_calls;
    let _switch = KERNEL_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let (cap, offset) = (32, 9);
    // Both kernels (the SIMD and the portable attention and products).
    for (bits, traditional, bias, qk, freqs, portable) in [
        (4, false, false, false, false, false),
        (8, true, true, false, false, false),
        (4, false, true, true, true, false),
        (4, false, false, false, false, true),
        (8, true, true, true, true, true),
    ] {
        force_portable_kernel(portable);
        let b = block(bits);
        let d = layer(&b, traditional, bias, qk, freqs);
        let x = normal(&[1, 1, DIM], 7);
        // Positions before `offset` hold earlier keys and values; the rest garbage.
        let keys = normal(&[1, KV, cap, HD], 8);
        let values = normal(&[1, KV, cap, HD], 9);
        mlx::eval([&x, &keys, &values]).unwrap();
        let (ry, rk, rv) = reference(&x, &keys, &values, offset, &d);
        let what = format!(
            "bits {bits} traditional {traditional} bias {bias} qk {qk} freqs {freqs} portable {portable}"
        );

        // copy_cache: the inputs stay as they were.
        let before = decode_layer_calls();
        let keys_before = vals(&keys);
        let (y, k, v) = decode_one(&x, &keys, &values, offset, true, &d).unwrap();
        assert_matches(&y, &ry, &what);
        assert_matches(&k, &rk, &what);
        assert_matches(&v, &rv, &what);
        assert_eq!(
            vals(&keys),
            keys_before,
            "{what}: copy_cache wrote its input"
        );
        assert!(
            decode_layer_calls() > before,
            "{what}: the fused node did not run"
        );

        // In place: the returned cache is the input buffer, written.
        let (y, k, _) = decode_one(&x, &keys, &values, offset, false, &d).unwrap();
        assert_matches(&y, &ry, &what);
        assert_matches(&k, &rk, &what);
        assert_matches(&keys, &rk, &what);
    }
    force_portable_kernel(false);
}

#[test]
fn decode_layer_rows_each_compute_what_they_compute_alone() {
    on_cpu();
    use mlx::quantization::{DecodeRow, decode_layer};
    let b = block(4);
    let d = layer(&b, false, true, true, false);
    let x = normal(&[3, 1, DIM], 11);
    let caps_offsets = [(16, 0), (32, 20), (48, 47)];
    let caches: Vec<(Array, Array)> = caps_offsets
        .iter()
        .enumerate()
        .map(|(i, &(cap, _))| {
            let k = normal(&[1, KV, cap, HD], 30 + i as u64);
            let v = normal(&[1, KV, cap, HD], 40 + i as u64);
            mlx::eval([&k, &v]).unwrap();
            (k, v)
        })
        .collect();
    let rows: Vec<DecodeRow<'_>> = caches
        .iter()
        .zip(caps_offsets)
        .map(|((keys, values), (_, offset))| DecodeRow {
            keys,
            values,
            offset,
            copy_cache: true,
        })
        .collect();
    let (y, written) = decode_layer(&x, &rows, &d).unwrap();
    assert_eq!(written.len(), 3);
    for (i, ((keys, values), (_, offset))) in caches.iter().zip(caps_offsets).enumerate() {
        let xi = x.slice_axis(0, i as i32, i as i32 + 1).unwrap();
        let (ry, rk, rv) = reference(&xi, keys, values, offset, &d);
        let what = format!("row {i}");
        assert_matches(
            &y.slice_axis(0, i as i32, i as i32 + 1).unwrap(),
            &ry,
            &what,
        );
        assert_matches(&written[i].0, &rk, &what);
        assert_matches(&written[i].1, &rv, &what);
    }
}

#[test]
fn decode_layer_rejects_bad_inputs() {
    on_cpu();
    let decode_layer = decode_one;
    let b = block(4);
    let d = layer(&b, false, false, false, false);
    let x = normal(&[1, 1, DIM], 7);
    let cache = mlx::zeros(&[1, KV, 16, HD], Dtype::Float32).unwrap();
    let bad_cache = mlx::zeros(&[1, KV + 1, 16, HD], Dtype::Float32).unwrap();
    let half_cache = mlx::zeros(&[1, KV, 16, HD], Dtype::Float16).unwrap();
    let short_x = normal(&[1, 1, DIM - 1], 7);
    let mut wrong = layer(&b, false, false, false, false);
    wrong.linears.swap(1, 4);
    type Outcome = mlx::Result<(Array, Array, Array)>;
    let cases: Vec<(&str, Outcome)> = vec![
        (
            "no rows",
            mlx::quantization::decode_layer(&x, &[], &d).map(|(y, _)| (y.clone(), y.clone(), y)),
        ),
        (
            "offset past the cache",
            decode_layer(&x, &cache, &cache, 16, false, &d),
        ),
        (
            "negative offset",
            decode_layer(&x, &cache, &cache, -1, false, &d),
        ),
        (
            "kv heads",
            decode_layer(&x, &bad_cache, &bad_cache, 0, false, &d),
        ),
        (
            "cache dtype",
            decode_layer(&x, &half_cache, &half_cache, 0, false, &d),
        ),
        (
            "x size",
            decode_layer(&short_x, &cache, &cache, 0, false, &d),
        ),
        (
            "weight shapes",
            decode_layer(&x, &cache, &cache, 0, false, &wrong),
        ),
    ];
    for (what, r) in cases {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.to_string().contains("decode_layer"), "{what}: {e}");
    }
    // And a good call still works after the errors.
    let (y, _, _) = decode_layer(&x, &cache, &cache, 0, true, &d).unwrap();
    assert_eq!(y.shape(), vec![1, 1, DIM]);
    y.eval().unwrap();
}

#[test]
fn thread_pool_runs_every_chunk_once_across_back_to_back_jobs() {
    on_cpu();
    // Jobs of changing sizes back to back, from two callers at once (two streams): a
    // late worker of one job once claimed a chunk of the next against the new chunk
    // count, ran it twice and the caller then waited forever (the decode test hung).
    let callers: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| cpu_pool_self_check(200_000)))
        .collect();
    for c in callers {
        assert_eq!(c.join().unwrap(), 0, "chunks that did not run exactly once");
    }
}
