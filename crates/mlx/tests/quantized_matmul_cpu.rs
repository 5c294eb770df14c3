//! Our CPU quantized matmul (csrc/qmm.cpp) against MLX's own: shapes, bits, groups,
//! scale dtypes, both kernels (SIMD and portable), lazy inputs, compile and gradients.
mod common;
use common::*;
use mlx::quantization::{
    QuantSpec, Quantized, cpu_kernel, cpu_kernel_calls, force_portable_kernel, quantize,
    quantized_matmul, quantized_matmul_reference,
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
    let k = cpu_kernel();
    assert!(k.threads >= 1);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_eq!(k.name, "avx2-fma");
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(k.name, "neon");
}

#[test]
fn equals_mlx_over_shapes_bits_groups_and_both_kernels() {
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
