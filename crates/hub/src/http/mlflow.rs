//! `GET /api/mlflow/status`: whether MLflow sync is on and what is behind.

use axum::Json;
use axum::extract::State;

use crate::error::HubResult;
use crate::service::Hub;

pub(crate) async fn status(State(hub): State<Hub>) -> HubResult<Json<serde_json::Value>> {
    let outbox = hub.store.mlflow_status().await?;
    Ok(Json(serde_json::json!({
        "enabled": hub.config.mlflow_uri.is_some(),
        "tracking_uri": hub.config.mlflow_uri.as_deref().map(crate::config::redact_url),
        "in_sync": outbox.pending == 0,
        "outbox": outbox,
    })))
}
