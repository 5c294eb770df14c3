//! `mlx-hub`: the command line. Thin: parses flags and calls the hub and engine.

mod commands;

use clap::{Parser, Subcommand};

/// Version line: ours, the commit, and the MLX we run on.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MLX_HUB_GIT_COMMIT"),
    ", MLX ",
    env!("MLX_HUB_MLX_PIN_CLI"),
    ")"
);

#[derive(Parser)]
#[command(name = "mlx-hub", version = LONG_VERSION, about = "Register, fine-tune, track and serve MLX models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what this machine gives MLX: version, device, BLAS, memory.
    Doctor(commands::doctor::Args),
    /// Measure performance (BLAS matmul throughput for now).
    Bench(commands::bench::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Bench(args) => commands::bench::run(args),
    }
}
