//! `GET /health`: liveness, versions, database backend. Never needs a token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use hub::service::Hub;
use hub::store::Store;

pub(crate) async fn health(State(hub): State<Hub>) -> Response {
    let db_ok = hub.store.ping().await;
    let body = serde_json::json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": {
            "backend": hub.store.backend(),
            "ok": db_ok,
            "schema_version": Store::migration_versions().last(),
        },
        "auth": hub.config.api_token.is_some(),
    });
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
