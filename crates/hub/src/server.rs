//! Running the API: bind, serve, shut down gracefully.

use std::future::Future;

use tokio::net::TcpListener;

use crate::config::HubConfig;
use crate::error::{HubError, HubResult};
use crate::http;
use crate::mlflow::MlflowSync;
use crate::service::Hub;
use crate::worker::{Provenance, Worker};

/// What runs beside the API.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Run a queue worker in this process (`mlx-hub serve` does unless
    /// `--no-worker`).
    pub worker: Option<WorkerOptions>,
}

/// The in-process worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: String,
    pub lease: std::time::Duration,
    pub poll_interval: std::time::Duration,
    pub provenance: Provenance,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            id: crate::worker::default_worker_id(),
            lease: crate::worker::DEFAULT_LEASE,
            poll_interval: crate::worker::DEFAULT_POLL_INTERVAL,
            provenance: Provenance::detect(),
        }
    }
}

/// Opens the hub (migrations, temp clean-up) and serves the API on the
/// configured address until `shutdown` completes. `on_listen` gets the URL.
pub async fn serve(
    config: HubConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(&str),
) -> HubResult<()> {
    serve_with(config, ServeOptions::default(), shutdown, on_listen).await
}

/// [`serve`] with background tasks.
pub async fn serve_with(
    config: HubConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(&str),
) -> HubResult<()> {
    config.validate()?;
    let hub = Hub::open(config).await?;
    hub.import_root()?;
    let recovered = hub
        .recover_stale_registrations(crate::recovery::DEFAULT_STALE_AFTER)
        .await?;
    if !recovered.failed_versions.is_empty() {
        tracing::warn!(?recovered, "recovered versions left registering");
    }
    let addr = hub.config.bind_addr();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| HubError::Config(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    on_listen(&format!("http://{local}"));
    serve_on_with(hub, listener, options, shutdown).await
}

/// Serves `hub` on an already-bound listener.
pub async fn serve_on(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> HubResult<()> {
    serve_on_with(hub, listener, ServeOptions::default(), shutdown).await
}

/// [`serve_on`] with background tasks: the MLflow sync when the hub has an
/// MLflow URI, the in-process worker when asked. Both stop with the server
/// (a job running then goes back to the queue).
pub async fn serve_on_with(
    hub: Hub,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> HubResult<()> {
    let store = hub.store.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(uri) = hub.config.mlflow_uri.as_deref() {
        let sync = MlflowSync::new(hub.store.clone(), uri)
            .map_err(|e| HubError::Config(format!("mlflow_uri: {e}")))?;
        tracing::info!(uri = %crate::config::redact_url(uri), "MLflow sync on");
        tasks.push(sync.spawn(stop_rx.clone()));
    }
    if let Some(w) = options.worker {
        let worker = Worker::for_hub(&hub, w.id)
            .with_lease(w.lease)
            .with_poll_interval(w.poll_interval)
            .with_provenance(w.provenance);
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = worker.run(rx).await {
                tracing::error!(error = %e, "in-process worker stopped");
            }
        }));
    }
    let app = http::router(hub);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    store.close().await;
    served?;
    Ok(())
}

/// Completes on Ctrl-C (and SIGTERM on Unix).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
