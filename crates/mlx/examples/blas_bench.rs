//! Matmul GFLOP/s with the BLAS linked into this binary against the MLX wheel's
//! reference BLAS, from one run: the comparison re-runs this same binary with the
//! reference library preloaded, which makes the loader bind libmlx's cblas_* to it.
//!
//!     cargo run --release -p mlx --example blas_bench

use std::process::Command;

const SIZES: [i32; 3] = [256, 512, 1024];

fn measure() -> mlx::Result<Vec<f64>> {
    SIZES
        .iter()
        .map(|&n| mlx::system::matmul_gflops(n, 5))
        .collect()
}

fn main() -> mlx::Result<()> {
    if std::env::var_os("MLX_HUB_BENCH_CHILD").is_some() {
        let g = measure()?;
        let kind = mlx::system::blas().kind;
        println!(
            "{kind} {}",
            g.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(());
    }
    let blas = mlx::system::blas();
    println!(
        "MLX {} | linked BLAS: {} ({})",
        mlx::system::version(),
        blas.kind,
        blas.library
    );
    let linked = measure()?;
    let stock = mlx::system::reference_blas_library().and_then(|lib| {
        let out = Command::new(std::env::current_exe().ok()?)
            .env("MLX_HUB_BENCH_CHILD", "1")
            .env("LD_PRELOAD", &lib)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut parts = text.split_whitespace();
        let kind = parts.next()?.to_string();
        let values: Vec<f64> = parts.filter_map(|p| p.parse().ok()).collect();
        (values.len() == SIZES.len()).then_some((kind, values))
    });
    println!(
        "{:>6} {:>14} {:>14} {:>7}",
        "n", "linked GFLOP/s", "stock GFLOP/s", "ratio"
    );
    for (i, n) in SIZES.iter().enumerate() {
        match &stock {
            Some((_, s)) => println!(
                "{n:>6} {:>14.1} {:>14.1} {:>6.1}x",
                linked[i],
                s[i],
                linked[i] / s[i]
            ),
            None => println!("{n:>6} {:>14.1} {:>14} {:>7}", linked[i], "n/a", "n/a"),
        }
    }
    if let Some((kind, _)) = &stock {
        println!("stock run used: {kind} BLAS (the wheel's, preloaded)");
    } else {
        println!("stock BLAS not found beside libmlx: comparison skipped");
    }
    Ok(())
}
