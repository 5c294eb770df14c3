#![allow(dead_code)]
use mlx::Array;

pub fn arr(data: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(data, shape).unwrap()
}

pub fn vals(a: &Array) -> Vec<f32> {
    a.to_f32_vec().unwrap()
}

#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "lengths differ: {actual:?} vs {expected:?}"
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let ok = (a - e).abs() <= tol * (1.0 + e.abs()) || (a.is_nan() && e.is_nan());
        assert!(
            ok,
            "element {i}: {a} != {e} (tol {tol})\nactual   {actual:?}\nexpected {expected:?}"
        );
    }
}

/// Runs MLX on the CPU device from here on (process-wide): what our CPU kernels need.
/// MLX's default device is the GPU on a Mac; tests of CPU-only paths pin the CPU.
pub fn on_cpu() {
    mlx::system::set_default_device(mlx::system::Device::Cpu).unwrap();
}

/// MLX computes float64 only on the CPU: true (with a printed reason) when a float64
/// check must be left out because the default device is the GPU.
pub fn skip_float64_on_gpu(what: &str) -> bool {
    let gpu = mlx::system::default_device() == mlx::system::Device::Gpu;
    if gpu {
        eprintln!("SKIPPED on the GPU (MLX's float64 is CPU-only): {what}");
    }
    gpu
}
