//! The JSON HTTP API (axum), as a library: [`router`] or [`RouterBuilder`]
//! give a `Router` to serve or to drive in tests. One file per resource.
//!
//! Every error is a [`HubError`] rendered by the one table in
//! [`crate::error`]: `{"error": {"message", "type", "code"}}`. Extractors
//! ([`ApiJson`], [`ApiPath`], [`ApiQuery`]) turn axum's rejections into the
//! same body. With an API token configured, every route but `/health` needs
//! `Authorization: Bearer <token>` (compared in constant time).
//!
//! | route | methods |
//! |---|---|
//! | `/health` | GET: status, version, database backend (no token needed) |
//! | `/metrics` | GET: Prometheus text exposition (see `crate::observability`) |
//! | `/api/models` | GET `?name_contains=&tag=&limit=&offset=`, POST `{name, description?, tags?}` |
//! | `/api/models/pull` | POST `{repo, revision?, name?, file?, alias?, description?}`: pull from the Hugging Face Hub and register (see `crate::hf`) |
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
//! | `/api/jobs` | GET `?state=&limit=&offset=`, POST (see [`crate::training::SubmitJob`]) |
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
mod exposure;
mod health;
mod jobs;
mod mlflow;
mod models;
mod native;
mod openai;
mod pull;
mod runs;
mod versions;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::error::HubError;
use crate::observability::{self, HttpMetrics};
use crate::service::Hub;

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
pub fn decode_openai_request(endpoint: OpenAiEndpoint, body: &[u8]) -> Result<(), HubError> {
    let Json(v) = Json::<serde_json::Value>::from_bytes(body).map_err(HubError::from)?;
    match endpoint {
        OpenAiEndpoint::Chat => openai::chat::decode(v).map(drop),
        OpenAiEndpoint::Completions => openai::completions::decode(v).map(drop),
    }
}

/// The router over `hub` with default settings (body limit and token from
/// the hub's configuration).
pub fn router(hub: Hub) -> Router {
    RouterBuilder::new(hub).build()
}

/// Builds the API router.
#[derive(Debug, Clone)]
pub struct RouterBuilder {
    hub: Hub,
    body_limit: usize,
    api_token: Option<Secret>,
    cors_origins: Vec<String>,
    body_timeout: std::time::Duration,
}

impl RouterBuilder {
    pub fn new(hub: Hub) -> Self {
        RouterBuilder {
            body_limit: hub.config.max_body_bytes,
            api_token: hub.config.api_token.clone(),
            cors_origins: hub.config.cors_origins.clone(),
            body_timeout: hub.config.body_timeout,
            hub,
        }
    }

    /// Origins allowed to call the API from a browser (CORS); none by default.
    pub fn cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = origins;
        self
    }

    /// Longest wait for the next chunk of a request body (then 408).
    pub fn body_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Largest accepted request body, in bytes.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Requires this bearer token on every route but `/health`.
    pub fn api_token(mut self, token: Option<Secret>) -> Self {
        self.api_token = token;
        self
    }

    pub fn build(self) -> Router {
        let api = Router::new()
            .route("/health", get(health::health))
            .route("/metrics", get(observability::metrics::scrape))
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
            .merge(crate::ui::routes())
            .route_layer(middleware::from_fn(observability::http::mark_route))
            .fallback(route_not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.body_limit));
        let http_metrics = HttpMetrics::default();
        let auth = AuthState {
            token_hash: self
                .api_token
                .as_ref()
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        };
        let mut api = api
            .layer(middleware::from_fn_with_state(auth, require_token))
            .layer(exposure::body_timeout(self.body_timeout));
        if let Some(cors) = exposure::cors(&self.cors_origins) {
            api = api.layer(cors);
        }
        api.layer(Extension(http_metrics.clone()))
            .layer(middleware::from_fn_with_state(
                http_metrics,
                observability::http::observe,
            ))
            .with_state(self.hub)
    }
}

#[derive(Clone)]
struct AuthState {
    /// sha256 of the token (fixed length, so the comparison is constant-time
    /// whatever the length of what the client sent).
    token_hash: Option<[u8; 32]>,
}

async fn require_token(State(auth): State<AuthState>, mut req: Request, next: Next) -> Response {
    let Some(expected) = auth.token_hash else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    // The admin UI's cookie session (CSRF-checked), login page and assets.
    match crate::ui::auth::gate(&mut req, &expected) {
        crate::ui::auth::Gate::Pass => return next.run(req).await,
        crate::ui::auth::Gate::Refuse(resp) => return resp,
        crate::ui::auth::Gate::Bearer => {}
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let err = match given {
        None => HubError::Unauthorized {
            code: "missing_token",
            message: "this hub requires an API token: send `Authorization: Bearer <token>`".into(),
        },
        Some(t) => {
            let h: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            if bool::from(h.ct_eq(&expected)) {
                return next.run(req).await;
            }
            HubError::Unauthorized {
                code: "invalid_token",
                message: "the API token is not valid".into(),
            }
        }
    };
    if let Some(resp) = crate::ui::auth::login_redirect(&req) {
        return resp;
    }
    let mut resp = err.into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn route_not_found(method: Method, uri: Uri) -> HubError {
    HubError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> HubError {
    HubError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.classify();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs();
        if retry_after.is_some() || matches!(self, HubError::InsufficientMemory { .. }) {
            tracing::warn!(error = %self, "request refused");
        } else if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (status, Json(serde_json::json!({ "error": self.body() }))).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

/// JSON body extractor whose rejections are [`HubError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(HubError))]
pub struct ApiJson<T>(pub T);

/// Path extractor whose rejections are [`HubError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(HubError))]
pub struct ApiPath<T>(pub T);

/// Query extractor whose rejections are [`HubError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(HubError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for HubError {
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        if exposure::is_body_timeout(&r) {
            return exposure::timeout_error();
        }
        match r.status().as_u16() {
            413 => HubError::PayloadTooLarge(text),
            415 => HubError::UnsupportedMediaType(text),
            422 => HubError::UnprocessableBody { message: text },
            _ if text.contains("length limit") => HubError::PayloadTooLarge(text),
            _ if matches!(r, JsonRejection::JsonSyntaxError(_)) => HubError::BadRequest {
                code: "malformed_json",
                message: text,
            },
            _ => HubError::BadRequest {
                code: "bad_request",
                message: text,
            },
        }
    }
}

impl From<PathRejection> for HubError {
    fn from(r: PathRejection) -> Self {
        HubError::BadRequest {
            code: "invalid_path_parameter",
            message: r.body_text(),
        }
    }
}

impl From<QueryRejection> for HubError {
    fn from(r: QueryRejection) -> Self {
        HubError::BadRequest {
            code: "invalid_query",
            message: r.body_text(),
        }
    }
}

/// Runs `work` on its own task, so it finishes even when the request's
/// future is dropped (client gone): multi-step writes are never cut short.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = crate::error::HubResult<T>> + Send + 'static,
) -> crate::error::HubResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| HubError::Internal(format!("request task failed: {e}")))?
}

/// `201 Created` with a JSON body.
pub(crate) fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// The envelope every paginated list answers with: `{data, limit, offset}`.
pub(crate) fn page<T: serde::Serialize>(data: T, limit: i64, offset: i64) -> Response {
    Json(serde_json::json!({ "data": data, "limit": limit, "offset": offset })).into_response()
}

pub(crate) fn default_limit() -> i64 {
    100
}
