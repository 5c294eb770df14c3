//! Affine quantization: the reconstruction error bound and quantized matmul.
mod common;
use common::*;
use mlx::quantization::{QuantSpec, dequantize, quantize, quantized_matmul};
use mlx::{Axes, Dtype, random};

#[test]
fn quantize_dequantize_error_within_one_step() {
    let key = random::Key::new(3).unwrap();
    let w = random::normal(&[64, 256], Dtype::Float32, 0.0, 1.0, Some(&key)).unwrap();
    for bits in [4, 8] {
        for group in [32, 64, 128] {
            let spec = QuantSpec::new(group, bits).unwrap();
            let q = quantize(&w, spec).unwrap();
            assert_eq!(q.weight.dtype(), Dtype::Uint32);
            assert_eq!(q.weight.shape(), vec![64, 256 * bits / 32]);
            assert_eq!(q.scales.shape(), vec![64, 256 / group]);
            assert_eq!(q.biases.shape(), vec![64, 256 / group]);
            let back = dequantize(&q, None).unwrap();
            // Each group's step is its scale. Rounding errs by half a step, but MLX makes
            // the group's larger-magnitude extreme exact (the bias), which can clip the
            // other end: so the bound is one step.
            let err = back
                .sub(&w)
                .unwrap()
                .abs()
                .unwrap()
                .reshape(&[64, 256 / group, group])
                .unwrap();
            let bound = q
                .scales
                .abs()
                .unwrap()
                .mul(1.0001f32)
                .unwrap()
                .add(1e-6f32)
                .unwrap()
                .expand_dims(&[-1])
                .unwrap();
            let ok = err
                .less_equal(&bound)
                .unwrap()
                .all(Axes::All, false)
                .unwrap();
            let ratio = err
                .div(q.scales.abs().unwrap().expand_dims(&[-1]).unwrap())
                .unwrap()
                .max(Axes::All, false)
                .unwrap()
                .item::<f32>()
                .unwrap();
            assert!(
                ok.item::<bool>().unwrap(),
                "bits {bits} group {group}: worst error {ratio} steps"
            );
            let max_err = err.max(Axes::All, false).unwrap().item::<f32>().unwrap();
            let limit = if bits == 4 { 0.5 } else { 0.03 };
            assert!(
                max_err < limit,
                "bits {bits} group {group}: max error {max_err}"
            );
        }
    }
    assert!(QuantSpec::new(48, 4).is_err());
    assert!(QuantSpec::new(64, 9).is_err());
    // A last axis that is not a multiple of the group size is an MLX error, not a crash.
    let odd = random::normal(&[4, 40], Dtype::Float32, 0.0, 1.0, Some(&key)).unwrap();
    assert!(quantize(&odd, QuantSpec::default()).is_err());
}

#[test]
fn quantized_matmul_equals_matmul_with_dequantized_weight() {
    let key = random::Key::new(4).unwrap();
    let (kw, kx) = key.split().unwrap();
    let w = random::normal(&[96, 128], Dtype::Float32, 0.0, 0.5, Some(&kw)).unwrap();
    let x = random::normal(&[5, 128], Dtype::Float32, 0.0, 1.0, Some(&kx)).unwrap();
    for (bits, group) in [(4, 64), (8, 32), (4, 128), (2, 64)] {
        let q = quantize(&w, QuantSpec::new(group, bits).unwrap()).unwrap();
        let deq = dequantize(&q, None).unwrap();
        let want = x.matmul(&deq.t().unwrap()).unwrap();
        let got = quantized_matmul(&x, &q, true).unwrap();
        assert_eq!(got.shape(), vec![5, 96]);
        assert_close(&vals(&got), &vals(&want), 1e-4);
        // transpose=false: x [5, 96] against the same weight used as [96, 128].
        let x2 = random::normal(&[5, 96], Dtype::Float32, 0.0, 1.0, Some(&kx)).unwrap();
        let got = quantized_matmul(&x2, &q, false).unwrap();
        assert_close(&vals(&got), &vals(&x2.matmul(&deq).unwrap()), 1e-4);
    }
    let half = dequantize(
        &quantize(&w, QuantSpec::default()).unwrap(),
        Some(Dtype::Float16),
    )
    .unwrap();
    assert_eq!(half.dtype(), Dtype::Float16);
}
