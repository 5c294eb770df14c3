//! `mlx-hub serve`: applies migrations, cleans temporary files left by dead
//! processes, serves the HTTP API until Ctrl-C / SIGTERM.

use std::path::PathBuf;

use hub::ConfigOverrides;

use super::{HubArgs, load_config, runtime};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Address to listen on; a non-loopback one needs an API token
    /// (MLX_HUB_API_TOKEN or MLX_HUB_API_TOKEN_FILE) [env: MLX_HUB_HOST] [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port [env: MLX_HUB_PORT] [default: 8000]
    #[arg(long)]
    pub port: Option<u16>,
    /// Folders registered over the API must be inside this one
    /// [env: MLX_HUB_IMPORT_ROOT] [default: <data-dir>/import]
    #[arg(long, value_name = "DIR")]
    pub import_root: Option<PathBuf>,
    /// MLflow tracking server to mirror runs, metrics and versions to
    /// [env: MLX_HUB_MLFLOW_URI or MLFLOW_TRACKING_URI] [default: none]
    #[arg(long, value_name = "URL")]
    pub mlflow_uri: Option<String>,
    /// Refuse jobs whose estimated peak memory exceeds this many GiB
    /// [env: MLX_HUB_MEMORY_BUDGET_BYTES (bytes)] [default: no limit]
    #[arg(long, value_name = "GIB")]
    pub memory_budget_gb: Option<f64>,
    /// Allow browsers on this origin to call the API (CORS), e.g.
    /// https://app.example.com; repeatable; `*` allows any
    /// [env: MLX_HUB_CORS_ORIGINS (comma-separated)] [default: none, CORS closed]
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Do not run a queue worker in this process (run `mlx-hub worker`s instead).
    #[arg(long)]
    pub no_worker: bool,
    /// Lease of a job claimed by the in-process worker.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_seconds: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    init_tracing();
    let config = load_config(ConfigOverrides {
        host: args.host,
        port: args.port,
        import_root: args.import_root,
        mlflow_uri: args.mlflow_uri,
        cors_origins: args.cors_origins,
        memory_budget_bytes: match args.memory_budget_gb {
            Some(g) if g.is_finite() && g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
            Some(g) => anyhow::bail!("--memory-budget-gb must be positive, got {g}"),
            None => None,
        },
        ..args.hub.overrides()
    })?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        device = mlx::system::default_device().name(),
        database = %config.database_url_redacted(),
        artifact_store = config.artifact_store.as_deref().unwrap_or("local"),
        import_root = %config.import_root.display(),
        auth = config.api_token.is_some(),
        mlflow = config.mlflow_uri.is_some(),
        worker = !args.no_worker,
        "starting mlx-hub"
    );
    let options = api::server::ServeOptions {
        worker: (!args.no_worker).then(|| api::server::WorkerOptions {
            lease: std::time::Duration::from_secs(args.lease_seconds),
            provenance: hub::jobs::Provenance::detect(),
            ..Default::default()
        }),
    };
    runtime()?.block_on(async move {
        api::server::serve_with(config, options, api::server::shutdown_signal(), |url| {
            tracing::info!(%url, "mlx-hub API listening");
            eprintln!("mlx-hub listening on {url}");
        })
        .await
    })?;
    tracing::info!("mlx-hub stopped");
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
