//! The pool's own endpoints: `GET /api/ps` (loaded models, size, expiry,
//! active requests), `POST /api/models/{name}/load` (body optional:
//! `{keep_alive}`) and `POST /api/models/{name}/unload`. `{name}` may carry a
//! version (`name:3`, `name@alias`; percent-encode a `/`).

use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};

use super::Fields;
use crate::extract::ApiPath;
use hub::error::HubError;
use hub::service::Hub;
use hub::serving::KeepAlive;

pub(crate) async fn ps(State(hub): State<Hub>) -> Json<Value> {
    Json(json!({ "models": hub.serving.ps() }))
}

pub(crate) async fn load(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let keep_alive = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(&body).map_err(|e| HubError::BadRequest {
            code: hub::error::Code::MalformedJson,
            message: e.to_string(),
        })?;
        let f = Fields::new(v)?;
        match f.raw("keep_alive") {
            None => None,
            Some(v) => Some(
                KeepAlive::parse(v)
                    .map_err(|e| HubError::invalid("keep_alive", format!("`keep_alive`: {e}")))?,
            ),
        }
    };
    let info = hub.serving.load(&name, keep_alive).await?;
    Ok(Json(json!(info)))
}

pub(crate) async fn unload(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let was = hub.serving.unload(&name).await?;
    Ok(Json(json!({"unloaded": was.is_some(), "model": was})))
}
