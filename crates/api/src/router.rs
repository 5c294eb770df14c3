//! The router: the JSON API's routes ([`crate::http`]) and the UI's pages
//! ([`crate::ui`]) under one auth layer (the bearer token, or the UI's
//! session cookie with its CSRF token), request spans and metrics, CORS, the
//! body limit and read timeout, and the JSON 404/405 fallbacks.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::{Method, Uri};
use axum::middleware;
use hub::config::Secret;
use hub::error::HubError;
use hub::service::Hub;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::observability::HttpMetrics;

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
            .merge(crate::http::routes())
            .merge(crate::ui::routes())
            .route_layer(middleware::from_fn(crate::observability::http::mark_route))
            .fallback(route_not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.body_limit));
        let http_metrics = HttpMetrics::default();
        let auth = crate::auth::AuthState {
            token_hash: self
                .api_token
                .as_ref()
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        };
        let mut api = api
            .layer(middleware::from_fn_with_state(
                auth,
                crate::auth::require_token,
            ))
            .layer(crate::exposure::body_timeout(self.body_timeout));
        if let Some(cors) = crate::exposure::cors(&self.cors_origins) {
            api = api.layer(cors);
        }
        api.layer(Extension(http_metrics.clone()))
            .layer(middleware::from_fn_with_state(
                http_metrics,
                crate::observability::http::observe,
            ))
            .with_state(self.hub)
    }
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    HubError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into()
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    HubError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into()
}
