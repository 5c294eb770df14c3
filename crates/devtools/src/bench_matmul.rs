//! `mlx-hub bench-matmul` (hidden; `scripts/perf-report` runs it): the products a
//! Linear layer computes, `x[M,K] @ W[N,K]ᵀ`, at a few shapes, stock against ours:
//!
//! - float32: MLX's matmul on the MLX wheel's reference BLAS (this binary re-run with
//!   it preloaded, as `bench --blas` does) against the BLAS linked into this binary;
//! - 4-bit affine (groups of 32, as SmolLM2's GGUF): MLX's own `quantized_matmul`
//!   against our CPU kernel (`HubQuantizedMatmul`), both in this process.
//!
//! Each figure is the best of `--repeats` timed batches; a batch runs the product
//! until `--min-ms` have passed, so small shapes are timed over many calls.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mlx::quantization::{self, QuantSpec};
use mlx::{Array, Dtype, random};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Shapes as MxKxN: M rows of activations, K inputs, N outputs.
    #[arg(long, value_delimiter = ',', default_values_t = [
        "1x576x576".to_string(), "1x576x49152".to_string(),
        "128x576x1536".to_string(), "512x576x1536".to_string()])]
    shapes: Vec<String>,
    /// Timed batches per figure (the best is kept).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Minimum length of one timed batch, in milliseconds.
    #[arg(long, default_value_t = 200)]
    min_ms: u64,
    /// Bits of the quantized weights (4 or 8).
    #[arg(long, default_value_t = 4)]
    bits: i32,
    /// Group size of the quantized weights.
    #[arg(long, default_value_t = 32)]
    group_size: i32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: print the float32 figures only, space-separated (the stock-BLAS run).
    #[arg(long, hide = true)]
    f32_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    m: i32,
    k: i32,
    n: i32,
}

fn parse_shape(s: &str) -> anyhow::Result<Shape> {
    let dims: Vec<i32> = s
        .split('x')
        .map(|d| d.trim().parse::<i32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--shapes: {s:?} is not MxKxN"))?;
    match dims[..] {
        [m, k, n] if m > 0 && k > 0 && n > 0 => Ok(Shape { m, k, n }),
        _ => bail!("--shapes: {s:?} is not MxKxN with positive sizes"),
    }
}

#[derive(Serialize)]
struct Row {
    shape: String,
    m: i32,
    k: i32,
    n: i32,
    f32_stock_gflops: Option<f64>,
    f32_ours_gflops: f64,
    quantized_mlx_gflops: f64,
    quantized_ours_gflops: f64,
}

/// Best seconds per call of `f` over `repeats` batches of at least `min` each.
fn time_per_call(
    repeats: usize,
    min: Duration,
    mut f: impl FnMut() -> mlx::Result<()>,
) -> mlx::Result<f64> {
    f()?; // warm-up: allocations, thread pools, caches
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < min {
            f()?;
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(calls));
    }
    Ok(best)
}

fn gflops(s: Shape, secs: f64) -> f64 {
    2.0 * f64::from(s.m) * f64::from(s.k) * f64::from(s.n) / secs / 1e9
}

fn operands(s: Shape) -> mlx::Result<(Array, Array)> {
    let (kx, kw) = random::Key::new(0)?.split()?;
    let x = random::normal(&[s.m, s.k], Dtype::Float32, 0.0, 1.0, Some(&kx))?;
    let w = random::normal(&[s.n, s.k], Dtype::Float32, 0.0, 0.05, Some(&kw))?;
    mlx::eval([&x, &w])?;
    Ok((x, w))
}

fn f32_gflops(s: Shape, args: &Args) -> mlx::Result<f64> {
    let (x, w) = operands(s)?;
    let wt = w.t()?;
    let secs = time_per_call(args.repeats, Duration::from_millis(args.min_ms), || {
        x.matmul(&wt)?.eval()
    })?;
    Ok(gflops(s, secs))
}

/// (MLX's quantized matmul, ours), GFLOP/s of the dense-equivalent product.
fn quantized_gflops(s: Shape, spec: QuantSpec, args: &Args) -> mlx::Result<(f64, f64)> {
    let (x, w) = operands(s)?;
    let q = quantization::quantize(&w, spec)?;
    mlx::eval([&q.weight, &q.scales, &q.biases])?;
    let min = Duration::from_millis(args.min_ms);
    let theirs = time_per_call(args.repeats, min, || {
        quantization::quantized_matmul_reference(&x, &q, true)?.eval()
    })?;
    let ours = time_per_call(args.repeats, min, || {
        quantization::quantized_matmul(&x, &q, true)?.eval()
    })?;
    Ok((gflops(s, theirs), gflops(s, ours)))
}

/// The float32 figures with the wheel's reference BLAS preloaded; `None` when the
/// wheel ships none (macOS, or a libmlx not from a wheel).
fn stock_f32(args: &Args) -> anyhow::Result<Option<(String, Vec<f64>)>> {
    let (shapes, repeats, min_ms) = (
        args.shapes.join(","),
        args.repeats.to_string(),
        args.min_ms.to_string(),
    );
    let figures = mlx::system::run_self_with_reference_blas(&[
        "bench-matmul",
        "--f32-only",
        "--shapes",
        &shapes,
        "--repeats",
        &repeats,
        "--min-ms",
        &min_ms,
    ])
    .map_err(anyhow::Error::msg)?;
    if let Some((_, values)) = &figures
        && values.len() != args.shapes.len()
    {
        bail!("stock-BLAS run printed {} figures", values.len());
    }
    Ok(figures)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = QuantSpec::new(args.group_size, args.bits)
        .map_err(|e| anyhow::anyhow!("--bits/--group-size: {e}"))?;
    if !matches!(args.bits, 4 | 8) {
        bail!("--bits: our kernel covers 4 and 8 bits, not {}", args.bits);
    }
    if let Some(s) = shapes.iter().find(|s| s.k % args.group_size != 0) {
        bail!(
            "--shapes: K = {} is not a multiple of the group size {}",
            s.k,
            args.group_size
        );
    }
    if args.f32_only {
        let figures = shapes
            .iter()
            .map(|&s| Ok(f32_gflops(s, &args)?.to_string()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!("{} {}", mlx::system::blas().kind, figures.join(" "));
        return Ok(());
    }
    let stock = stock_f32(&args)?;
    let mut rows = Vec::with_capacity(shapes.len());
    for (i, (&s, name)) in shapes.iter().zip(&args.shapes).enumerate() {
        let (quantized_mlx_gflops, quantized_ours_gflops) = quantized_gflops(s, spec, &args)?;
        rows.push(Row {
            shape: name.trim().to_string(),
            m: s.m,
            k: s.k,
            n: s.n,
            f32_stock_gflops: stock.as_ref().map(|(_, v)| v[i]),
            f32_ours_gflops: f32_gflops(s, &args)?,
            quantized_mlx_gflops,
            quantized_ours_gflops,
        });
    }
    let blas = mlx::system::blas();
    let kernel = quantization::cpu_kernel();
    if args.json {
        let report = serde_json::json!({
            "mlx_version": mlx::system::version(),
            "bits": args.bits,
            "group_size": args.group_size,
            "linked_blas": blas.kind,
            "linked_blas_threads": blas.threads,
            "stock_blas": stock.as_ref().map(|(k, _)| k),
            "quantized_kernel": kernel.name,
            "quantized_threads": kernel.threads,
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "MLX {} | float32: {} BLAS ({} threads) vs {} | {}-bit g{}: {} kernel ({} threads) vs MLX's",
        mlx::system::version(),
        blas.kind,
        blas.threads,
        stock.as_ref().map_or("no stock BLAS found", |(k, _)| k),
        args.bits,
        args.group_size,
        kernel.name,
        kernel.threads
    );
    println!(
        "{:>14} {:>12} {:>12} {:>12} {:>12}   (GFLOP/s)",
        "MxKxN", "f32 stock", "f32 ours", "quant MLX", "quant ours"
    );
    for r in &rows {
        let stock = r
            .f32_stock_gflops
            .map_or_else(|| "n/a".to_string(), |g| format!("{g:.2}"));
        println!(
            "{:>14} {:>12} {:>12.2} {:>12.2} {:>12.2}",
            r.shape, stock, r.f32_ours_gflops, r.quantized_mlx_gflops, r.quantized_ours_gflops
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_reject_bad_input() {
        assert_eq!(
            parse_shape("128x576x1536").unwrap(),
            Shape {
                m: 128,
                k: 576,
                n: 1536
            }
        );
        for bad in ["", "1x2", "1x2x3x4", "0x576x576", "ax576x576", "-1x5x5"] {
            let e = parse_shape(bad).unwrap_err().to_string();
            assert!(e.contains("--shapes"), "{bad}: {e}");
        }
    }
}
