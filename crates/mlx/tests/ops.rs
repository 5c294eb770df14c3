//! Every op family against hand-computed values.
mod common;
use common::*;
use mlx::{Array, Axes, Dtype};

#[test]
fn creation_and_readback() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(a.shape(), vec![2, 3]);
    assert_eq!(a.ndim(), 2);
    assert_eq!(a.size(), 6);
    assert_eq!(a.dtype(), Dtype::Float32);
    assert_eq!(a.nbytes(), 24);
    assert_eq!(a.dim(-1), 3);
    assert_eq!(
        a.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert!(matches!(
        a.to_vec::<i32>(),
        Err(mlx::Error::DtypeMismatch { .. })
    ));
    assert!(Array::from_slice(&[1.0f32, 2.0], &[3]).is_err());
    assert_eq!(Array::scalar(7i32).unwrap().item::<i32>().unwrap(), 7);
    let b = Array::from_slice(&[true, false, true], &[3]).unwrap();
    assert_eq!(b.to_vec::<bool>().unwrap(), vec![true, false, true]);
    let h = Array::from_vec(&[half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]).unwrap();
    assert_eq!(h.dtype(), Dtype::Float16);
    assert_eq!(vals(&h), vec![1.5, -2.0]);
    let bf = arr(&[1.0, 3.0], &[2]).as_type(Dtype::Bfloat16).unwrap();
    assert_eq!(
        bf.to_vec::<half::bf16>().unwrap()[1],
        half::bf16::from_f32(3.0)
    );
    for (dt, v) in [
        (Dtype::Int8, -3.0),
        (Dtype::Uint8, 200.0),
        (Dtype::Int64, 1e12),
        (Dtype::Uint32, 7.0),
    ] {
        let s = Array::scalar_as(v, dt).unwrap();
        assert_eq!(s.dtype(), dt);
        if !skip_float64_on_gpu("scalars read back as float64") {
            assert_eq!(s.as_type(Dtype::Float64).unwrap().item::<f64>().unwrap(), v);
        }
    }
    assert_eq!(
        vals(&mlx::zeros(&[2], Dtype::Float32).unwrap()),
        vec![0.0, 0.0]
    );
    assert_eq!(
        vals(&mlx::ones(&[2, 1], Dtype::Float16).unwrap()),
        vec![1.0, 1.0]
    );
    assert_eq!(
        vals(&mlx::arange(0.0, 5.0, 2.0, Dtype::Int32).unwrap()),
        vec![0.0, 2.0, 4.0]
    );
    assert_eq!(
        vals(&mlx::eye(2, 3, 1, Dtype::Float32).unwrap()),
        vec![0., 1., 0., 0., 0., 1.]
    );
    assert_eq!(
        vals(&mlx::linspace(0.0, 1.0, 3, Dtype::Float32).unwrap()),
        vec![0.0, 0.5, 1.0]
    );
    // Transposed (non-contiguous) arrays read back in logical row-major order.
    assert_eq!(vals(&a.t().unwrap()), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert!(format!("{a:?}").contains("[[1, 2, 3],"));
}

#[test]
fn elementwise_with_broadcasting() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let row = arr(&[10.0, 20.0], &[2]);
    assert_eq!(vals(&a.add(&row).unwrap()), vec![11., 22., 13., 24.]);
    assert_eq!(vals(&a.sub(&row).unwrap()), vec![-9., -18., -7., -16.]);
    assert_eq!(vals(&a.mul(2.0f32).unwrap()), vec![2., 4., 6., 8.]);
    assert_eq!(vals(&a.div(&row).unwrap()), vec![0.1, 0.1, 0.3, 0.2]);
    assert_eq!(vals(&a.maximum(2.5f32).unwrap()), vec![2.5, 2.5, 3., 4.]);
    assert_eq!(vals(&a.minimum(2.5f32).unwrap()), vec![1., 2., 2.5, 2.5]);
    assert_eq!(vals(&a.power(2.0f32).unwrap()), vec![1., 4., 9., 16.]);
    assert_eq!(vals(&a.neg().unwrap()), vec![-1., -2., -3., -4.]);
    assert_eq!(vals(&a.remainder(3.0f32).unwrap()), vec![1., 2., 0., 1.]);
    // Scalars keep a half-precision array's dtype, like Python scalars in MLX.
    let h = a.as_type(Dtype::Float16).unwrap();
    assert_eq!(h.mul(0.5f32).unwrap().dtype(), Dtype::Float16);
    let x = arr(&[-1.0, 0.0, 1.0, 2.0], &[4]);
    assert_close(
        &vals(&x.exp().unwrap()),
        &[0.36787945, 1.0, 2.7182817, 7.389056],
        1e-6,
    );
    assert_close(
        &vals(&x.add(2.0f32).unwrap().log().unwrap()),
        &[0.0, std::f32::consts::LN_2, 1.0986123, 1.3862944],
        1e-6,
    );
    assert_close(
        &vals(&x.sigmoid().unwrap()),
        &[0.26894143, 0.5, 0.7310586, 0.8807971],
        1e-6,
    );
    assert_close(
        &vals(&x.silu().unwrap()),
        &[-0.26894143, 0.0, 0.7310586, 1.7615942],
        1e-6,
    );
    assert_close(
        &vals(&x.gelu().unwrap()),
        &[-0.15865526, 0.0, 0.8413447, 1.9544997],
        1e-5,
    );
    assert_close(
        &vals(&x.gelu_approx().unwrap()),
        &[-0.15880801, 0.0, 0.841192, 1.9545977],
        1e-5,
    );
    assert_close(
        &vals(&x.tanh().unwrap()),
        &[-0.7615942, 0.0, 0.7615942, 0.9640276],
        1e-6,
    );
    assert_close(&vals(&x.relu().unwrap()), &[0.0, 0.0, 1.0, 2.0], 0.0);
    let p = arr(&[1.0, 4.0, 16.0], &[3]);
    assert_close(&vals(&p.sqrt().unwrap()), &[1.0, 2.0, 4.0], 1e-6);
    assert_close(&vals(&p.rsqrt().unwrap()), &[1.0, 0.5, 0.25], 1e-6);
    assert_close(&vals(&x.abs().unwrap()), &[1.0, 0.0, 1.0, 2.0], 0.0);
    assert_close(&vals(&x.square().unwrap()), &[1.0, 0.0, 1.0, 4.0], 0.0);
    assert_close(&vals(&arr(&[0.5], &[1]).erf().unwrap()), &[0.5204999], 1e-6);
}

#[test]
fn comparisons_and_where() {
    let a = arr(&[1.0, 2.0, 3.0], &[3]);
    let b = arr(&[3.0, 2.0, 1.0], &[3]);
    assert_eq!(
        a.less(&b).unwrap().to_vec::<bool>().unwrap(),
        vec![true, false, false]
    );
    assert_eq!(
        a.less_equal(&b).unwrap().to_vec::<bool>().unwrap(),
        vec![true, true, false]
    );
    assert_eq!(
        a.greater(&b).unwrap().to_vec::<bool>().unwrap(),
        vec![false, false, true]
    );
    assert_eq!(
        a.equal(&b).unwrap().to_vec::<bool>().unwrap(),
        vec![false, true, false]
    );
    assert_eq!(
        a.not_equal(&b).unwrap().to_vec::<bool>().unwrap(),
        vec![true, false, true]
    );
    let c = a.greater_equal(2.0f32).unwrap();
    assert_eq!(vals(&mlx::where_(&c, &a, &b).unwrap()), vec![3.0, 2.0, 3.0]);
    let nan = arr(&[f32::NAN, 1.0, f32::INFINITY], &[3]);
    assert_eq!(
        nan.is_nan().unwrap().to_vec::<bool>().unwrap(),
        vec![true, false, false]
    );
    assert_eq!(
        nan.is_inf().unwrap().to_vec::<bool>().unwrap(),
        vec![false, false, true]
    );
    assert_eq!(
        nan.is_finite().unwrap().to_vec::<bool>().unwrap(),
        vec![false, true, false]
    );
}

#[test]
fn matmul_and_reductions() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = arr(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
    assert_eq!(vals(&a.matmul(&b).unwrap()), vec![4., 5., 10., 11.]);
    // Batched matmul broadcasts the batch axis.
    let batch = mlx::stack(&[&a, &a.mul(2.0f32).unwrap()], 0).unwrap();
    assert_eq!(batch.matmul(&b).unwrap().shape(), vec![2, 2, 2]);
    let c = arr(&[1.0, 1.0, 1.0, 1.0], &[2, 2]);
    assert_eq!(
        vals(&mlx::addmm(&c, &a, &b, 2.0, 0.5).unwrap()),
        vec![8.5, 10.5, 20.5, 22.5]
    );
    assert_eq!(vals(&a.sum(Axes::All, false).unwrap()), vec![21.0]);
    assert_eq!(vals(&a.sum(0, false).unwrap()), vec![5., 7., 9.]);
    assert_eq!(a.sum(1, true).unwrap().shape(), vec![2, 1]);
    assert_eq!(vals(&a.mean(1, false).unwrap()), vec![2.0, 5.0]);
    assert_eq!(vals(&a.max(-1, false).unwrap()), vec![3.0, 6.0]);
    assert_eq!(vals(&a.min([0, 1], false).unwrap()), vec![1.0]);
    assert_eq!(vals(&a.prod(1, false).unwrap()), vec![6.0, 120.0]);
    assert_eq!(
        a.argmax(Some(1), false).unwrap().to_vec::<u32>().unwrap(),
        vec![2, 2]
    );
    assert_eq!(
        a.argmin(None, false).unwrap().to_vec::<u32>().unwrap(),
        vec![0]
    );
    let lse = vals(&a.logsumexp(1, false).unwrap());
    let expect = |r: [f32; 3]| r.iter().map(|x| x.exp()).sum::<f32>().ln();
    assert_close(&lse, &[expect([1., 2., 3.]), expect([4., 5., 6.])], 1e-6);
    let sm = vals(&arr(&[1.0, 2.0, 3.0], &[3]).softmax(&[-1], true).unwrap());
    assert_close(&sm, &[0.09003057, 0.24472848, 0.66524094], 1e-6);
    assert_close(
        &vals(&a.var(&[1], false, 0).unwrap()),
        &[2.0 / 3.0, 2.0 / 3.0],
        1e-6,
    );
    assert_eq!(
        vals(&arr(&[1.0, 2.0, 3.0], &[3]).cumsum(0, false, true).unwrap()),
        vec![1., 3., 6.]
    );
    assert_eq!(
        vals(&arr(&[1.0, 2.0, 3.0], &[3]).cumsum(0, true, true).unwrap()),
        vec![6., 5., 3.]
    );
    assert_eq!(
        vals(&arr(&[1.0, 2.0, 3.0], &[3]).cumsum(0, false, false).unwrap()),
        vec![0., 1., 3.]
    );
    let t = arr(&[1.0, 0.0], &[2]).as_type(Dtype::Bool).unwrap();
    assert!(t.any(Axes::All, false).unwrap().item::<bool>().unwrap());
    assert!(!t.all(Axes::All, false).unwrap().item::<bool>().unwrap());
}

#[test]
fn shapes_slices_and_joins() {
    let a = mlx::arange(0.0, 12.0, 1.0, Dtype::Float32)
        .unwrap()
        .reshape(&[3, 4])
        .unwrap();
    assert_eq!(vals(&a.transpose(&[1, 0]).unwrap())[..4], [0., 4., 8., 1.]);
    assert_eq!(a.transpose(&[]).unwrap().shape(), vec![4, 3]);
    assert_eq!(a.expand_dims(&[0]).unwrap().shape(), vec![1, 3, 4]);
    assert_eq!(
        a.expand_dims(&[0]).unwrap().squeeze(None).unwrap().shape(),
        vec![3, 4]
    );
    assert_eq!(a.reshape(&[2, -1]).unwrap().shape(), vec![2, 6]);
    assert_eq!(a.flatten(0, -1).unwrap().shape(), vec![12]);
    assert_eq!(
        vals(&a.slice(&[1, 1], &[3, 4], &[1, 2]).unwrap()),
        vec![5., 7., 9., 11.]
    );
    assert_eq!(
        vals(&a.slice_axis(1, -2, 4).unwrap()),
        vec![2., 3., 6., 7., 10., 11.]
    );
    let upd = mlx::zeros(&[1, 4], Dtype::Float32).unwrap();
    let b = a.slice_update(&upd, &[1, 0], &[2, 4], &[1, 1]).unwrap();
    assert_eq!(vals(&b)[4..8], [0., 0., 0., 0.]);
    assert_eq!(
        vals(&a)[4..8],
        [4., 5., 6., 7.],
        "slice_update does not change its source"
    );
    let c = mlx::concatenate(&[&a, &a], 0).unwrap();
    assert_eq!(c.shape(), vec![6, 4]);
    assert_eq!(mlx::stack(&[&a, &a], 1).unwrap().shape(), vec![3, 2, 4]);
    let parts = a.split(2, 1).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(vals(&parts[1]), vec![2., 3., 6., 7., 10., 11.]);
    let parts = a.split_at(&[1], 0).unwrap();
    assert_eq!(parts[0].shape(), vec![1, 4]);
    assert_eq!(parts[1].shape(), vec![2, 4]);
    assert_eq!(
        arr(&[1.0, 2.0], &[1, 2])
            .broadcast_to(&[3, 2])
            .unwrap()
            .shape(),
        vec![3, 2]
    );
    let p = arr(&[1.0, 2.0], &[2])
        .pad(&[0], &[1], &[2], &Array::scalar(9.0f32).unwrap())
        .unwrap();
    assert_eq!(vals(&p), vec![9., 1., 2., 9., 9.]);
    assert_eq!(
        vals(&arr(&[1.0, 2.0], &[2]).repeat(2, 0).unwrap()),
        vec![1., 1., 2., 2.]
    );
    assert_eq!(
        vals(&arr(&[1.0, 2.0], &[2]).tile(&[2]).unwrap()),
        vec![1., 2., 1., 2.]
    );
    let sq = arr(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(vals(&sq.tril(0).unwrap()), vec![1., 0., 3., 4.]);
    assert_eq!(vals(&sq.triu(1).unwrap()), vec![0., 2., 0., 0.]);
}

#[test]
fn gather_scatter_and_sorting() {
    let a = arr(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0], &[3, 2]);
    let idx = Array::from_vec(&[2i32, 0]).unwrap();
    assert_eq!(
        vals(&a.take(&idx, Some(0)).unwrap()),
        vec![50., 60., 10., 20.]
    );
    assert_eq!(vals(&a.take(&idx, None).unwrap()), vec![30., 10.]);
    let along = Array::from_slice(&[1i32, 0, 1], &[3, 1]).unwrap();
    assert_eq!(
        vals(&a.take_along_axis(&along, 1).unwrap()),
        vec![20., 30., 60.]
    );
    let values = arr(&[-1.0, -2.0, -3.0], &[3, 1]);
    assert_eq!(
        vals(&a.put_along_axis(&along, &values, 1).unwrap()),
        vec![10., -1., -2., 40., 50., -3.]
    );
    let z = mlx::zeros(&[4], Dtype::Float32).unwrap();
    let i = Array::from_vec(&[1i32, 1, 3]).unwrap();
    let v = arr(&[1.0, 2.0, 5.0], &[3]);
    assert_eq!(
        vals(&z.scatter_add_axis(&i, &v, 0).unwrap()),
        vec![0., 3., 0., 5.]
    );
    let s = arr(&[3.0, 1.0, 4.0, 1.5, 9.0, 2.0], &[6]);
    assert_eq!(vals(&s.sort(0).unwrap()), vec![1., 1.5, 2., 3., 4., 9.]);
    assert_eq!(
        s.argsort(0).unwrap().to_vec::<u32>().unwrap(),
        vec![1, 3, 5, 0, 2, 4]
    );
    let mut top = vals(&s.topk(2, 0).unwrap());
    top.sort_by(f32::total_cmp);
    assert_eq!(top, vec![4.0, 9.0]);
    let part = s.argpartition(3, 0).unwrap().to_vec::<u32>().unwrap();
    let sv = vals(&s);
    let kth = sv[part[3] as usize];
    assert_eq!(kth, 3.0);
    assert!(part[..3].iter().all(|&j| sv[j as usize] <= kth));
    assert!(part[4..].iter().all(|&j| sv[j as usize] >= kth));
    assert_eq!(vals(&s.partition(3, 0).unwrap())[3], 3.0);
}

#[test]
fn type_conversion() {
    let a = arr(&[1.7, -2.2], &[2]);
    assert_eq!(
        a.as_type(Dtype::Int32).unwrap().to_vec::<i32>().unwrap(),
        vec![1, -2]
    );
    assert_eq!(vals(&a.round(0).unwrap()), vec![2.0, -2.0]);
    assert_eq!(vals(&a.floor().unwrap()), vec![1.0, -3.0]);
    let lo = Array::scalar(0.0f32).unwrap();
    assert_eq!(vals(&a.clip(Some(&lo), None).unwrap()), vec![1.7, 0.0]);
    assert_eq!(Dtype::parse("bf16"), Some(Dtype::Bfloat16));
    assert_eq!(Dtype::Float16.size(), 2);
}
