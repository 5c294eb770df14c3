//! `GET /api/mlflow/status`: whether MLflow sync is on and what is behind.

use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;

use hub::service::Hub;

pub(crate) async fn status(State(hub): State<Hub>) -> ApiResult<Json<serde_json::Value>> {
    let outbox = hub.store.mlflow_status().await?;
    Ok(Json(serde_json::json!({
        "enabled": hub.config.mlflow_uri.is_some(),
        "tracking_uri": hub.config.mlflow_uri.as_deref().map(hub::config::redact_url),
        "in_sync": outbox.pending == 0,
        "outbox": outbox,
    })))
}
