//! Running the API: bind, serve, shut down gracefully.

use std::future::Future;

use tokio::net::TcpListener;

use crate::config::HubConfig;
use crate::error::{HubError, HubResult};
use crate::http;
use crate::service::Hub;

/// Opens the hub (migrations, temp clean-up) and serves the API on the
/// configured address until `shutdown` completes. `on_listen` gets the URL.
pub async fn serve(
    config: HubConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(&str),
) -> HubResult<()> {
    config.validate()?;
    let hub = Hub::open(config).await?;
    hub.import_root()?;
    let addr = hub.config.bind_addr();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| HubError::Config(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    on_listen(&format!("http://{local}"));
    serve_on(hub, listener, shutdown).await
}

/// Serves `hub` on an already-bound listener.
pub async fn serve_on(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> HubResult<()> {
    let store = hub.store.clone();
    let app = http::router(hub);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    store.close().await;
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
