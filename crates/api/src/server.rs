//! Running the API: bind, serve, shut down gracefully.

use std::future::Future;

use tokio::net::TcpListener;

use hub::config::HubConfig;
use hub::error::{HubError, HubResult};
use hub::jobs::{JobRunner, Provenance};
use hub::mlflow::MlflowSync;
use hub::service::Hub;

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
            id: hub::jobs::default_worker_id(),
            lease: hub::jobs::DEFAULT_LEASE,
            poll_interval: hub::jobs::DEFAULT_POLL_INTERVAL,
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
        .recover_stale_registrations(hub::recovery::DEFAULT_STALE_AFTER)
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
        tracing::info!(uri = %hub::config::redact_url(uri), "MLflow sync on");
        tasks.push(sync.spawn(stop_rx.clone()));
    }
    if let Some(w) = options.worker {
        let worker = JobRunner::for_hub(&hub, w.id)
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
    let header_timeout = hub.config.header_timeout;
    let app = crate::router::router(hub);
    serve_connections(listener, app, header_timeout, shutdown).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    store.close().await;
    Ok(())
}

/// Accepts connections until `shutdown`, then waits for the open ones to
/// finish their requests. Unlike `axum::serve` (no timer, so hyper's header
/// read timeout is off), a client gets `header_timeout` to send its request
/// headers, and the connection is closed past it (slowloris).
async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // out of file descriptors and the like: back off, keep serving
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
