//! `mlx-hub worker`: claims jobs from the hub's queue and runs them, until
//! Ctrl-C / SIGTERM (a job running then is stopped and put back in the
//! queue), or after one job with `--once`.

use std::time::Duration;

use hub::jobs::{JobRunner, Provenance, default_worker_id};

use super::{HubArgs, open_hub, print_json, runtime};

/// Claim jobs from the hub's queue and run them.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Lease of a claimed job, renewed every third of it; a job whose worker
    /// stops renewing goes back to the queue once it lapses.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_seconds: u64,
    /// Pause between polls of an empty queue, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub poll_ms: u64,
    /// Worker name (unique among the workers of a database) [default: <hostname>-<pid>]
    #[arg(long)]
    pub id: Option<String>,
    /// Run at most one job (if one is queued), print its outcome as JSON, exit.
    #[arg(long)]
    pub once: bool,
    /// Memory this worker advertises, in bytes (jobs needing more are left to
    /// others) [default: the machine's physical memory]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub device_memory_bytes: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    runtime()?.block_on(async move {
        let hub = open_hub(&args.hub).await?;
        // versions a dead worker left registering, their orphan blobs
        let recovered = hub
            .recover_stale_registrations(hub::recovery::DEFAULT_STALE_AFTER)
            .await?;
        if !recovered.failed_versions.is_empty() {
            tracing::warn!(?recovered, "recovered versions left registering");
        }
        let worker = JobRunner::for_hub(&hub, args.id.unwrap_or_else(default_worker_id))
            .with_lease(Duration::from_secs(args.lease_seconds))
            .with_poll_interval(Duration::from_millis(args.poll_ms))
            .with_provenance(Provenance::detect());
        let mut caps = worker.capabilities.clone();
        if let Some(m) = args.device_memory_bytes {
            caps.memory_bytes = m;
        }
        tracing::info!(
            device = caps.device.as_str(),
            memory_bytes = caps.memory_bytes,
            mlx_version = %caps.mlx_version,
            artifact_store = hub.artifacts.kind(),
            "worker capabilities"
        );
        let worker = worker.with_capabilities(caps);
        if args.once {
            match worker.run_once().await? {
                Some(outcome) => print_json(&outcome)?,
                None => eprintln!("no queued job"),
            }
            return Ok(());
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            api::server::shutdown_signal().await;
            let _ = tx.send(true);
        });
        worker.run(rx).await?;
        Ok(())
    })
}
