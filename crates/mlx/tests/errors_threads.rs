//! MLX errors come back as Err and leave the process working; threads as promised
//! in the crate docs.
mod common;
use common::*;
use mlx::{Array, Axes, Dtype, random};

#[test]
fn shape_errors_are_err_and_the_process_keeps_working() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = arr(&[1.0, 2.0, 3.0], &[3]);
    for (what, r) in [
        ("matmul", a.matmul(&b.reshape(&[3, 1]).unwrap())),
        ("add", a.add(&b)),
        ("reshape", a.reshape(&[3, 2])),
        ("transpose", a.transpose(&[0, 0])),
        ("concatenate", mlx::concatenate(&[&a, &b], 0)),
        ("sum", a.sum(5, false)),
        ("rms_norm", mlx::fast::rms_norm(&a, Some(&b), 1e-5)),
    ] {
        let err = r.unwrap_err();
        assert!(matches!(err, mlx::Error::Mlx(_)), "{what}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
    assert!(a.slice_axis(4, 0, 1).is_err());
    assert!(a.item::<f32>().is_err());
    // Work goes on as before.
    assert_eq!(vals(&a.matmul(&a).unwrap()), vec![7., 10., 15., 22.]);
}

#[test]
fn independent_graphs_evaluate_concurrently_on_several_threads() {
    // Each thread builds and evaluates its own graphs; results match the same work
    // done on one thread.
    let work = |seed: u64| -> Vec<f32> {
        let key = random::Key::new(seed).unwrap();
        let mut acc = mlx::zeros(&[16], Dtype::Float32).unwrap();
        for k in key.split_n(10).unwrap() {
            let m = random::normal(&[16, 64], Dtype::Float32, 0.0, 1.0, Some(&k)).unwrap();
            let v = m
                .matmul(&m.t().unwrap())
                .unwrap()
                .softmax(&[-1], true)
                .unwrap();
            acc = acc.add(v.sum(0, false).unwrap()).unwrap();
            acc.eval().unwrap();
        }
        vals(&acc)
    };
    let expected: Vec<Vec<f32>> = (0..4).map(work).collect();
    let handles: Vec<_> = (0..4u64)
        .map(|s| std::thread::spawn(move || work(s)))
        .collect();
    for (s, h) in handles.into_iter().enumerate() {
        assert_close(&h.join().unwrap(), &expected[s], 1e-5);
    }
}

#[test]
fn evaluated_arrays_move_between_threads_and_graphs_stay_on_theirs() {
    // An evaluated array is plain data: another thread can use it as an input.
    let a = arr(&[1.0, 2.0, 3.0], &[3]).mul(2.0f32).unwrap();
    a.eval().unwrap();
    let total = std::thread::spawn(move || a.sum(Axes::All, false).unwrap().item::<f32>().unwrap())
        .join()
        .unwrap();
    assert_eq!(total, 12.0);
    let results: Vec<Array> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let r = arr(&[i as f32], &[1]).exp().unwrap();
                r.eval().unwrap();
                r
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    let sum = mlx::concatenate(&results.iter().collect::<Vec<_>>(), 0).unwrap();
    assert_close(&vals(&sum), &[1.0, 1f32.exp(), 2f32.exp()], 1e-6);
    // An unevaluated graph belongs to the thread (stream) that built it: evaluating
    // it elsewhere is an error, not a crash, and the thread keeps working.
    let lazy = arr(&[1.0], &[1]).exp().unwrap();
    let outcome = std::thread::spawn(move || {
        let err = lazy.eval().unwrap_err().to_string();
        let ok = vals(&arr(&[2.0], &[1]).mul(3.0f32).unwrap());
        (err, ok)
    })
    .join()
    .unwrap();
    assert!(outcome.0.contains("Stream"), "{}", outcome.0);
    assert_eq!(outcome.1, vec![6.0]);
}

#[test]
fn system_information() {
    assert_eq!(mlx::system::version(), mlx::system::PINNED_VERSION);
    let blas = mlx::system::blas();
    assert!(["openblas", "accelerate", "reference", "other"].contains(&blas.kind));
    if cfg!(target_os = "linux") && mlx::system::OPENBLAS_LINKED {
        assert_eq!(
            blas.kind, "openblas",
            "OpenBLAS linked ahead of libmlx wins: {blas:?}"
        );
    }
    assert!(mlx::system::Device::Cpu.is_available());
    mlx::system::reset_peak_memory();
    let big = mlx::zeros(&[1024, 1024], Dtype::Float32).unwrap();
    big.eval().unwrap();
    let stats = mlx::system::memory_stats();
    assert!(
        stats.active >= 4 << 20 && stats.peak >= stats.active,
        "{stats:?}"
    );
    drop(big);
    assert!(mlx::system::memory_stats().active < stats.active);
    let gflops = mlx::system::matmul_gflops(128, 1).unwrap();
    assert!(gflops > 0.0);
}

#[test]
fn async_eval_and_memory_limits() {
    let a = arr(&[1.0, 2.0], &[2]).exp().unwrap();
    let b = a.sum(Axes::All, false).unwrap();
    mlx::async_eval([&a, &b]).unwrap();
    assert_close(&vals(&b), &[1f32.exp() + 2f32.exp()], 1e-6);
    let before = mlx::system::set_memory_limit(1 << 30);
    assert_eq!(mlx::system::memory_stats().limit, 1 << 30);
    mlx::system::set_memory_limit(before);
    let cache_before = mlx::system::set_cache_limit(0);
    mlx::system::clear_cache();
    assert_eq!(mlx::system::memory_stats().cache, 0);
    mlx::system::set_cache_limit(cache_before);
}
