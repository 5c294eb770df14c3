//! What the HTTP handlers and the UI's pages share: extractors whose
//! rejections are [`ApiError`]s (the one error body), and response helpers.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hub::error::{HubError, HubResult};

use crate::error::{ApiError, ApiResult};

/// JSON body extractor whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path extractor whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query extractor whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Runs `work` on its own task, so it finishes even when the request's
/// future is dropped (client gone): multi-step writes are never cut short.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = HubResult<T>> + Send + 'static,
) -> ApiResult<T> {
    Ok(tokio::spawn(work)
        .await
        .map_err(|e| HubError::Internal(format!("request task failed: {e}")))??)
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

/// Percent-encodes a path segment (model names may hold `/`).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
