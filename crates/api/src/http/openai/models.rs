//! `GET /v1/models` and `GET /v1/models/{id}`: the registered models, as
//! OpenAI model objects (`id` is the name to send as `model`).

use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use hub::service::Hub;
use hub::store::ModelFilter;

fn object(id: &str, created_ms: i64) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": created_ms.max(0) / 1000,
        "owned_by": "mlx-hub",
    })
}

pub(crate) async fn list(State(hub): State<Hub>) -> Result<Json<Value>, ApiError> {
    let mut data = Vec::new();
    let mut filter = ModelFilter::default();
    loop {
        let page = hub.store.list_models(&filter).await?;
        let n = page.len() as i64;
        data.extend(page.iter().map(|m| object(&m.name, m.created_at_ms)));
        if n < filter.limit {
            break;
        }
        filter.offset += n;
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `id` may hold `/` (`org/name`) and a version (`name:3`, `name@alias`).
pub(crate) async fn show(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (m, _) = hub.serving.resolve(&id).await?;
    Ok(Json(object(&id, m.created_at_ms)))
}
