//! `mlx-hub bench --model PATH`: model throughput (see `bench_model`).
//!
//! `mlx-hub bench --blas`: matmul GFLOP/s with the BLAS linked into this binary
//! against the MLX wheel's reference BLAS, from one run. The comparison re-runs this
//! same binary with the reference library preloaded, which makes the dynamic loader
//! bind libmlx's `cblas_*` calls to it.

use anyhow::bail;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Compare matmul throughput of the linked BLAS with the wheel's reference BLAS.
    #[arg(long)]
    blas: bool,
    #[command(flatten)]
    model: super::bench_model::Args,
    /// Matrix sizes (n for n×n float32 matmuls).
    #[arg(long, value_delimiter = ',', default_values_t = [256, 512, 1024])]
    sizes: Vec<i32>,
    /// Timed repetitions per size (the best is kept).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: measure and print the figures only (used for the stock-BLAS run).
    #[arg(long, hide = true)]
    measure_only: bool,
}

#[derive(Serialize)]
struct Row {
    n: i32,
    linked_gflops: f64,
    stock_gflops: Option<f64>,
    ratio: Option<f64>,
}

fn measure(args: &Args) -> anyhow::Result<Vec<f64>> {
    args.sizes
        .iter()
        .map(|&n| Ok(mlx::system::matmul_gflops(n, args.repeats)?))
        .collect()
}

fn stock_run(args: &Args) -> anyhow::Result<Option<(String, Vec<f64>)>> {
    let sizes: Vec<String> = args.sizes.iter().map(|n| n.to_string()).collect();
    let repeats = args.repeats.to_string();
    mlx::system::run_self_with_reference_blas(&[
        "bench",
        "--blas",
        "--measure-only",
        "--repeats",
        &repeats,
        "--sizes",
        &sizes.join(","),
    ])
    .map_err(anyhow::Error::msg)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = args.model.model.clone() {
        return super::bench_model::run(args.model, &dir, args.json);
    }
    if !args.blas {
        bail!("nothing to benchmark: pass --model PATH or --blas");
    }
    let linked = measure(&args)?;
    if args.measure_only {
        let figures: Vec<String> = linked.iter().map(|g| g.to_string()).collect();
        println!("{} {}", mlx::system::blas().kind, figures.join(" "));
        return Ok(());
    }
    let blas = mlx::system::blas();
    let stock = stock_run(&args)?;
    let rows: Vec<Row> = args
        .sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let s = stock.as_ref().map(|(_, v)| v[i]);
            Row {
                n,
                linked_gflops: linked[i],
                stock_gflops: s,
                ratio: s.map(|s| linked[i] / s),
            }
        })
        .collect();
    let mlx_version = hub::host::HostInfo::detect().mlx_version;
    if args.json {
        let report = serde_json::json!({
            "mlx_version": mlx_version,
            "linked_blas": blas.kind,
            "linked_library": blas.library,
            "stock_blas": stock.as_ref().map(|(k, _)| k),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "MLX {} | linked BLAS: {} ({})",
        mlx_version, blas.kind, blas.library
    );
    println!(
        "{:>6} {:>15} {:>14} {:>7}",
        "n", "linked GFLOP/s", "stock GFLOP/s", "ratio"
    );
    for r in &rows {
        match (r.stock_gflops, r.ratio) {
            (Some(s), Some(ratio)) => {
                println!(
                    "{:>6} {:>15.1} {:>14.1} {:>6.1}x",
                    r.n, r.linked_gflops, s, ratio
                )
            }
            _ => println!(
                "{:>6} {:>15.1} {:>14} {:>7}",
                r.n, r.linked_gflops, "n/a", "n/a"
            ),
        }
    }
    match &stock {
        Some((kind, _)) => println!("stock run: {kind} BLAS (the MLX wheel's, preloaded)"),
        None => {
            println!("the MLX wheel's reference BLAS was not found beside libmlx: no comparison")
        }
    }
    Ok(())
}
