//! value_and_grad against central finite differences; compile against eager runs.
mod common;
use common::*;
use mlx::{Array, Axes, Dtype, Params};
use std::cell::Cell;
use std::collections::BTreeMap;

/// Mean softmax cross-entropy of `silu(x W + b)` against integer labels. In float32:
/// MLX computes some float64 functions (sigmoid) at float32 precision anyway.
fn loss(p: &Params, args: &[Array]) -> mlx::Result<Vec<Array>> {
    let (x, labels) = (&args[0], &args[1]);
    let logits = x.matmul(&p["w"])?.add(&p["b"])?.silu()?;
    let lse = logits.logsumexp(-1, true)?;
    let picked = logits.take_along_axis(labels, -1)?;
    Ok(vec![lse.sub(&picked)?.mean(Axes::All, false)?])
}

fn f64s(data: &[f64], shape: &[i32]) -> Array {
    let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    Array::from_slice(&v, shape).unwrap()
}

fn read(a: &Array) -> Vec<f64> {
    a.to_f32_vec().unwrap().into_iter().map(f64::from).collect()
}

#[test]
fn value_and_grad_matches_finite_differences() {
    let w: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3).collect();
    let b = vec![0.1, -0.2, 0.3];
    let x: Vec<f64> = (0..8).map(|i| ((i * 3 % 7) as f64 - 3.0) * 0.25).collect();
    let mut params = BTreeMap::new();
    params.insert("w".to_string(), f64s(&w, &[4, 3]));
    params.insert("b".to_string(), f64s(&b, &[3]));
    let args = vec![
        f64s(&x, &[2, 4]),
        Array::from_slice(&[2i32, 0], &[2, 1]).unwrap(),
    ];

    let (values, grads) = mlx::value_and_grad(loss, &params, &args).unwrap();
    let l0 = values[0].item::<f32>().unwrap();
    assert!(l0.is_finite());
    let eps = 1e-3;
    for name in ["w", "b"] {
        let base = read(&params[name]);
        let shape = params[name].shape();
        let g = read(&grads[name]);
        assert_eq!(
            grads[name].shape(),
            shape,
            "gradient of {name} has the parameter's shape"
        );
        for i in 0..base.len() {
            let eval_at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut p = params.clone();
                p.insert(name.to_string(), f64s(&v, &shape));
                loss(&p, &args).unwrap()[0].item::<f32>().unwrap() as f64
            };
            let fd = (eval_at(eps) - eval_at(-eps)) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 2e-3 * (1.0 + fd.abs()),
                "d{name}[{i}]: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn value_and_grad_vec_and_vjp() {
    // f(x, y) = sum(x² · y): df/dx = 2xy, df/dy = x².
    let x = arr(&[1.0, 2.0, 3.0], &[3]);
    let y = arr(&[4.0, 5.0, 6.0], &[3]);
    let f = |a: &[Array]| Ok(vec![a[0].square()?.mul(&a[1])?.sum(Axes::All, false)?]);
    let (v, g) = mlx::value_and_grad_vec(f, &[x.clone(), y.clone()], &[0, 1]).unwrap();
    assert_eq!(vals(&v[0]), vec![4.0 + 20.0 + 54.0]);
    assert_eq!(vals(&g[0]), vec![8.0, 20.0, 36.0]);
    assert_eq!(vals(&g[1]), vec![1.0, 4.0, 9.0]);
    assert!(mlx::value_and_grad_vec(f, std::slice::from_ref(&x), &[3]).is_err());
    let (out, vj) = mlx::vjp(
        |a: &[Array]| Ok(vec![a[0].exp()?]),
        std::slice::from_ref(&x),
        &[arr(&[1.0, 0.0, 2.0], &[3])],
    )
    .unwrap();
    assert_close(&vals(&out[0]), &[1f32.exp(), 2f32.exp(), 3f32.exp()], 1e-6);
    assert_close(&vals(&vj[0]), &[1f32.exp(), 0.0, 2.0 * 3f32.exp()], 1e-6);
}

#[test]
fn closure_errors_and_panics_come_back_to_rust() {
    let x = arr(&[1.0, 2.0], &[2]);
    // An MLX error inside the closure arrives as Err with MLX's message.
    let bad = |a: &[Array]| Ok(vec![a[0].matmul(&arr(&[1.0, 2.0, 3.0], &[3]))?]);
    let err = mlx::value_and_grad_vec(bad, std::slice::from_ref(&x), &[0]).unwrap_err();
    assert!(err.to_string().contains("matmul"), "{err}");
    // A Rust error is returned as it was raised.
    let custom = |_: &[Array]| -> mlx::Result<Vec<Array>> {
        Err(mlx::Error::InvalidArgument("no labels".into()))
    };
    let err = mlx::value_and_grad_vec(custom, std::slice::from_ref(&x), &[0]).unwrap_err();
    assert!(
        matches!(err, mlx::Error::InvalidArgument(ref m) if m == "no labels"),
        "{err}"
    );
    // A panic unwinds on the Rust side, after MLX has cleaned up.
    let caught = std::panic::catch_unwind(|| {
        let _ = mlx::value_and_grad_vec(
            |_: &[Array]| -> mlx::Result<Vec<Array>> { panic!("boom") },
            std::slice::from_ref(&x),
            &[0],
        );
    });
    assert!(caught.is_err());
    // And everything still works afterwards.
    let (_, g) = mlx::value_and_grad_vec(
        |a: &[Array]| Ok(vec![a[0].sum(Axes::All, false)?]),
        &[x],
        &[0],
    )
    .unwrap();
    assert_eq!(vals(&g[0]), vec![1.0, 1.0]);
}

#[test]
fn compiled_function_equals_eager_and_is_traced_once_per_shape() {
    let traces = Cell::new(0);
    let f = |a: &[Array]| -> mlx::Result<Vec<Array>> {
        let h = a[0].matmul(&a[1])?.gelu()?;
        Ok(vec![
            h.softmax(&[-1], true)?.mul(&a[0].exp()?.sum(-1, true)?)?,
            h.sum(Axes::All, false)?,
        ])
    };
    let counted = |a: &[Array]| {
        traces.set(traces.get() + 1);
        f(a)
    };
    let mut compiled = mlx::compile(counted, false).unwrap();
    for seed in 0..3u64 {
        let key = mlx::random::Key::new(seed).unwrap();
        let (k1, k2) = key.split().unwrap();
        let x = mlx::random::normal(&[3, 4], Dtype::Float32, 0.0, 1.0, Some(&k1)).unwrap();
        let y = mlx::random::normal(&[4, 4], Dtype::Float32, 0.0, 1.0, Some(&k2)).unwrap();
        let got = compiled.call(&[x.clone(), y.clone()]).unwrap();
        let want = f(&[x, y]).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_close(&vals(g), &vals(w), 1e-5);
        }
    }
    assert_eq!(traces.get(), 1, "same shapes reuse the trace");
    let x = mlx::ones(&[5, 4], Dtype::Float32).unwrap();
    let y = mlx::ones(&[4, 4], Dtype::Float32).unwrap();
    compiled.call(&[x, y]).unwrap();
    assert_eq!(traces.get(), 2, "a new shape traces again");
    drop(compiled);

    let shapeless_traces = Cell::new(0);
    let mut g = mlx::compile(
        |a: &[Array]| {
            shapeless_traces.set(shapeless_traces.get() + 1);
            Ok(vec![a[0].exp()?.mul(2.0f32)?])
        },
        true,
    )
    .unwrap();
    for n in [2, 3, 7] {
        let x = mlx::arange(0.0, n as f64, 1.0, Dtype::Float32).unwrap();
        let out = vals(&g.call(&[x]).unwrap()[0]);
        let want: Vec<f32> = (0..n).map(|i| (i as f32).exp() * 2.0).collect();
        assert_close(&out, &want, 1e-6);
    }
    assert_eq!(shapeless_traces.get(), 1, "shapeless compile traces once");
}

/// A two-layer block `tanh(x W1) W2 + x`, trainable weights as explicit inputs.
fn block(xs: &[Array]) -> mlx::Result<Vec<Array>> {
    let (x, w1, w2) = (&xs[0], &xs[1], &xs[2]);
    Ok(vec![x.matmul(w1)?.tanh()?.matmul(w2)?.add(x)?])
}

#[test]
fn checkpoint_gradients_equal_plain_ones() {
    let x = f64s(
        &(0..12).map(|i| (i as f64 - 6.0) * 0.1).collect::<Vec<_>>(),
        &[3, 4],
    );
    let w1 = f64s(
        &(0..20)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.2)
            .collect::<Vec<_>>(),
        &[4, 5],
    );
    let w2 = f64s(
        &(0..20)
            .map(|i| ((i * 3 % 7) as f64 - 3.0) * 0.1)
            .collect::<Vec<_>>(),
        &[5, 4],
    );
    let calls = std::rc::Rc::new(Cell::new(0));
    let counted = calls.clone();
    let ckpt = mlx::checkpoint(move |xs: &[Array]| {
        counted.set(counted.get() + 1);
        block(xs)
    })
    .unwrap();
    // Two stacked blocks sharing weights, then a scalar loss.
    let run = |f: &dyn Fn(&[Array]) -> mlx::Result<Vec<Array>>, xs: &[Array]| {
        let h = f(&[xs[0].clone(), xs[1].clone(), xs[2].clone()])?.remove(0);
        let h = f(&[h, xs[1].clone(), xs[2].clone()])?.remove(0);
        Ok(vec![h.square()?.sum(Axes::All, false)?])
    };
    let inputs = [x, w1, w2];
    let (pv, pg) = mlx::value_and_grad_vec(|xs| run(&block, xs), &inputs, &[0, 1, 2]).unwrap();
    let (cv, cg) =
        mlx::value_and_grad_vec(|xs| run(&|a| ckpt.call(a), xs), &inputs, &[0, 1, 2]).unwrap();
    assert_close(&vals(&cv[0]), &vals(&pv[0]), 1e-6);
    for (i, (c, p)) in cg.iter().zip(&pg).enumerate() {
        assert_eq!(c.shape(), p.shape(), "gradient of input {i}");
        assert_close(&vals(c), &vals(p), 1e-6);
        assert!(
            vals(c).iter().any(|v| *v != 0.0),
            "gradient of input {i} is not zero"
        );
    }
    // Forward twice, and again for each block in backward: the recomputation ran.
    assert_eq!(
        calls.get(),
        4,
        "the checkpointed closure is re-run in backward"
    );

    // An error from the closure during the recomputation comes back as an Err.
    let fails = std::rc::Rc::new(Cell::new(false));
    let flag = fails.clone();
    let bad = mlx::checkpoint(move |xs: &[Array]| {
        if flag.get() {
            return Err(mlx::Error::InvalidArgument("recompute failed".into()));
        }
        block(xs)
    })
    .unwrap();
    let err = mlx::value_and_grad_vec(
        |xs| {
            let out = run(&|a| bad.call(a), xs);
            fails.set(true);
            out
        },
        &inputs,
        &[1],
    )
    .unwrap_err();
    assert!(err.to_string().contains("recompute failed"), "{err}");
}
