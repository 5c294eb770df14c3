//! `mlx-hub`: the command line. Thin: parses flags and calls the hub and engine.

#![forbid(unsafe_code)]

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
    /// Log lines on stderr as text or JSON (one object per line, with the
    /// current span's fields, the request id, and the trace and span ids while
    /// spans are exported). Applies to `serve` and `worker`; spans are exported
    /// over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Device MLX computes on: auto (the GPU when MLX has one: Metal on a Mac), cpu or
    /// gpu [env: MLX_HUB_DEVICE] [mlx-hub.toml: device] [default: auto]
    #[arg(long, global = true, value_name = "DEVICE")]
    device: Option<hub::config::DeviceSetting>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// First run: get SmolLM2-135M-Instruct, register an example dataset, fine-tune
    /// it with LoRA and serve it (each step timed; re-runs reuse what exists).
    Quickstart(commands::quickstart::Args),
    /// Run the hub: HTTP API over the registry, datasets, jobs and runs.
    Serve(commands::serve::Args),
    /// Claim and run training jobs from the queue (several may share one database).
    Worker(commands::worker::Args),
    /// Apply database migrations and exit.
    Migrate(commands::migrate::Args),
    /// Register and inspect models and their versions.
    Models(commands::models::Args),
    /// Register and inspect datasets.
    Datasets(commands::datasets::Args),
    /// Inspect and cancel training jobs.
    Jobs(commands::jobs::Args),
    /// Show what this machine gives MLX: version, device, BLAS, memory.
    Doctor(commands::doctor::Args),
    /// Measure performance: a model's prompt and generation throughput (`--model`),
    /// or the BLAS MLX uses (`--blas`).
    Bench(commands::bench::Args),
    /// Generate text with a model, streaming it to stdout.
    Generate(commands::generate::Args),
    /// Fine-tune a model (LoRA, DoRA or full) on a dataset, as mlx_lm.lora does.
    Train(commands::train::Args),
    /// Import a GGUF file, or convert / quantize a model folder (mlx-lm's layout).
    Convert(commands::convert::Args),
    /// Merge trained adapters into their base model (a new mlx-lm folder).
    Fuse(commands::fuse::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The device before anything computes: flag > MLX_HUB_DEVICE > auto here; commands
    // with a data dir apply its mlx-hub.toml's `device` too (commands::load_config).
    commands::set_device_flag(cli.device);
    hub::config::DeviceSetting::from_flag_or_env(cli.device, |k| std::env::var(k).ok())
        .and_then(|d| d.unwrap_or_default().apply())
        .map_err(anyhow::Error::msg)?;
    // The engine's and kernels' settings (MLX_HUB_FUSED_DECODE, MLX_HUB_CPU_THREADS,
    // MLX_HUB_QMM), before any model or kernel runs.
    hub::config::runtime_settings(|k| std::env::var(k).ok()).apply();
    // long-running commands log; the others print their own output only
    let _telemetry = match cli.command {
        Command::Serve(_) | Command::Worker(_) => {
            Some(hub::observability::telemetry::init(match cli.log_format {
                LogFormat::Text => hub::observability::telemetry::LogFormat::Text,
                LogFormat::Json => hub::observability::telemetry::LogFormat::Json,
            })?)
        }
        _ => None,
    };
    match cli.command {
        Command::Quickstart(args) => commands::quickstart::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Migrate(args) => commands::migrate::run(args),
        Command::Models(args) => commands::models::run(args),
        Command::Datasets(args) => commands::datasets::run(args),
        Command::Jobs(args) => commands::jobs::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Fuse(args) => commands::fuse::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's flags are consistent (clap checks names, groups, shorts).
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
