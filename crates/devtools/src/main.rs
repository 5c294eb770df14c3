//! `mlx-hub-dev`: developer tools behind `scripts/perf-report`, kept out of the
//! product binary (and its plotting and font dependencies).

#![forbid(unsafe_code)]

mod bench_matmul;
mod bench_registry;
mod perf_plot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mlx-hub-dev",
    about = "Developer tools for scripts/perf-report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Matmul GFLOP/s, stock MLX against ours (float32 BLAS, quantized kernel).
    BenchMatmul(bench_matmul::Args),
    /// Registry read latency of a running hub at a fixed rate.
    BenchRegistry(bench_registry::Args),
    /// PNG charts of target/perf/report.json.
    PerfPlot(perf_plot::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BenchMatmul(args) => bench_matmul::run(args),
        Command::BenchRegistry(args) => bench_registry::run(args),
        Command::PerfPlot(args) => perf_plot::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
