//! `POST /api/models/pull` `{repo, revision?, name?, file?, alias?, description?}`:
//! pulls a repository from the Hugging Face Hub into the shared cache and
//! registers it (201 new version, 200 when the snapshot was registered
//! already). Hub settings come from the server's environment (`HF_ENDPOINT`,
//! `HF_TOKEN`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE`, `HF_HOME`), or from an
//! `Extension<HfSettings>` layered on the router (tests, embedding).

use crate::error::ApiResult;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::extract::{ApiJson, detached};
use hub::hf::{HfSettings, PullModelRequest};
use hub::service::Hub;

pub(crate) async fn pull(
    State(hub): State<Hub>,
    settings: Option<Extension<HfSettings>>,
    ApiJson(req): ApiJson<PullModelRequest>,
) -> ApiResult<Response> {
    let settings = match settings {
        Some(Extension(s)) => s,
        None => hub.config.hf.clone(),
    };
    // detached: a client that goes away does not cut a download half-way
    let report = detached(async move { hub.pull_model(&req, settings, None).await }).await?;
    let status = if report.reused_version {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(report)).into_response())
}
