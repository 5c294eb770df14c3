//! The JSON HTTP API (axum), as a library: [`router`] or [`RouterBuilder`]
//! give a `Router` to serve or to drive in tests. One file per resource.
//!
//! Every error is a [`HubError`] rendered by the one table in
//! [`hub::error`]: `{"error": {"message", "type", "code"}}`. Extractors
//! ([`ApiJson`], [`ApiPath`], [`ApiQuery`]) turn axum's rejections into the
//! same body. With an API token configured, every route but `/health` needs
//! `Authorization: Bearer <token>` (compared in constant time).
//!
//! | route | methods |
//! |---|---|
//! | `/health` | GET: status, version, database backend (no token needed) |
//! | `/metrics` | GET: Prometheus text exposition (see `crate::observability`) |
//! | `/api/models` | GET `?name_contains=&tag=&limit=&offset=`, POST `{name, description?, tags?}` |
//! | `/api/models/pull` | POST `{repo, revision?, name?, file?, alias?, description?}`: pull from the Hugging Face Hub and register (see `hub::hf`) |
//! | `/api/models/{name}` | GET (with versions and aliases), PATCH `{description?, tags?}`, DELETE (409 while versions exist) |
//! | `/api/models/{name}/versions` | GET `?status=`, POST `{path, link?, description?, tags?, alias?}` (a folder inside the import root) |
//! | `/api/models/{name}/versions/{v}` | GET (files, lineage, base version), PATCH (description/tags; content only while registering) — `v` = number, `vN`, `latest` or alias |
//! | `/api/models/{name}/versions/{v}/archive`, `…/restore` | POST |
//! | `/api/models/{name}/versions/{v}/tags` | GET, PUT `{tags}` (any status: tags are not content) |
//! | `/api/models/{name}/aliases` | GET |
//! | `/api/models/{name}/aliases/{alias}` | PUT `{version}`, DELETE |
//! | `/api/datasets` | GET `?name=`, POST `{name, path, description?}` (201 new, 200 same content) |
//! | `/api/datasets/{name}` | GET `?version=` |
//! | `/api/datasets/{name}/upload` | POST: the body is `train.jsonl`, streamed to disk (cap `MLX_HUB_MAX_UPLOAD_BYTES`, 1 GiB), validated, registered (201 new, 200 same content) |
//! | `/api/datasets/{name}/preview` | GET `?split=train&limit=10&offset=&version=`: parsed rows with line numbers |
//! | `/api/jobs` | GET `?state=&limit=&offset=`, POST (see [`hub::jobs::SubmitJob`]) |
//! | `/api/jobs/{id}` | GET (with runs) |
//! | `/api/jobs/{id}/cancel` | POST |
//! | `/api/workers` | GET — registered workers and their capabilities |
//! | `/api/runs/{id}` | GET (with metric keys and latest values) |
//! | `/api/runs/{id}/metrics` | GET `?key=&from=&to=` (steps, inclusive) |
//! | `/api/mlflow/status` | GET: MLflow sync on/off, outbox backlog and recent errors |
//! | `/api/ps`, `/api/models/{name}/load`, `…/unload` | GET; POST; POST — the serving pool (see `openai`) |
//! | `/v1/models`, `/v1/chat/completions`, `/v1/completions` | OpenAI-compatible (see `openai`) |
//! | `/api/generate`, `/api/chat` | POST — hub-native, NDJSON streams (see `native`) |
//!
//! Every response carries `x-request-id` (the client's, if it sent a valid
//! one, else a new id); each request runs in a tracing span named after its
//! route, continuing the caller's `traceparent` (see `crate::observability::http`).
//!
//! Model names may contain `/`: send it percent-encoded (`org%2Fname`).
//!
//! The admin UI's pages (`/`, `/ui/...`, see [`crate::ui`]) are merged into
//! the same router; with a token, they also accept the UI's session cookie.

mod datasets;
mod health;
mod jobs;
mod mlflow;
mod models;
mod native;
mod openai;
mod pull;
mod runs;
mod versions;

use crate::error::ApiError;
use axum::routing::{get, post, put};
use axum::{Json, Router};

use hub::service::Hub;

/// An OpenAI endpoint whose request decoder [`decode_openai_request`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiEndpoint {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions`
    Completions,
}

/// Decodes and validates an OpenAI request body exactly as the endpoint does
/// (JSON extraction, then field checks), without loading a model. The fuzz
/// targets and regression tests use it.
pub fn decode_openai_request(endpoint: OpenAiEndpoint, body: &[u8]) -> Result<(), ApiError> {
    let Json(v) = Json::<serde_json::Value>::from_bytes(body).map_err(ApiError::from)?;
    match endpoint {
        OpenAiEndpoint::Chat => openai::chat::decode(v).map(drop),
        OpenAiEndpoint::Completions => openai::completions::decode(v).map(drop),
    }
    .map_err(ApiError::from)
}

/// The JSON API's routes (the router adds the UI's pages and the layers).
pub(crate) fn routes() -> Router<Hub> {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(crate::observability::metrics::scrape))
        .route("/api/mlflow/status", get(mlflow::status))
        .route("/api/models", get(models::list).post(models::create))
        .route("/api/models/pull", post(pull::pull))
        .route(
            "/api/models/{name}",
            get(models::show)
                .patch(models::update)
                .delete(models::delete),
        )
        .route(
            "/api/models/{name}/versions",
            get(versions::list).post(versions::register),
        )
        .route(
            "/api/models/{name}/versions/{version}",
            get(versions::show).patch(versions::update),
        )
        .route(
            "/api/models/{name}/versions/{version}/tags",
            get(versions::tags).put(versions::set_tags),
        )
        .route(
            "/api/models/{name}/versions/{version}/archive",
            post(versions::archive),
        )
        .route(
            "/api/models/{name}/versions/{version}/restore",
            post(versions::restore),
        )
        .route("/api/models/{name}/aliases", get(versions::list_aliases))
        .route(
            "/api/models/{name}/aliases/{alias}",
            put(versions::set_alias).delete(versions::remove_alias),
        )
        .route(
            "/api/datasets",
            get(datasets::list).post(datasets::register),
        )
        .route("/api/datasets/{name}", get(datasets::show))
        .route("/api/datasets/{name}/preview", get(datasets::preview))
        .route("/api/datasets/{name}/upload", post(datasets::upload))
        .route("/api/jobs", get(jobs::list).post(jobs::submit))
        .route("/api/jobs/{id}", get(jobs::show))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/workers", get(jobs::workers))
        .route("/api/runs/{id}", get(runs::show))
        .route("/api/runs/{id}/metrics", get(runs::metrics))
        .route("/api/ps", get(openai::ps::ps))
        .route("/api/models/{name}/load", post(openai::ps::load))
        .route("/api/models/{name}/unload", post(openai::ps::unload))
        .route("/v1/models", get(openai::models::list))
        .route("/v1/models/{*id}", get(openai::models::show))
        .route("/v1/chat/completions", post(openai::chat::create))
        .route("/v1/completions", post(openai::completions::create))
        .route("/api/generate", post(native::generate))
        .route("/api/chat", post(native::chat))
}
