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
