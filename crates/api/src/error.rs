//! [`ApiError`]: a service error on its way out as an HTTP response, rendered
//! from its row of the one table (`errors::Code`): status, `Retry-After`, and
//! the body `{"error": {"message", "type", "code"}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use errors::{Code, ErrorBody, ErrorCode};
use hub::error::HubError;
use tower_http::timeout::TimeoutError;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// A [`HubError`] as a response.
#[derive(Debug)]
pub struct ApiError(pub HubError);

impl ApiError {
    pub fn status(&self) -> u16 {
        self.0.status()
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    pub fn bad_request(code: Code, message: impl Into<String>) -> ApiError {
        ApiError(HubError::BadRequest {
            code,
            message: message.into(),
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl ErrorCode for ApiError {
    fn error_code(&self) -> Code {
        self.0.error_code()
    }

    fn retry_after_secs(&self) -> Option<u64> {
        self.0.retry_after_secs()
    }

    fn body(&self) -> ErrorBody {
        self.0.body()
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError(e)
    }
}

impl From<hub::store::StoreError> for ApiError {
    fn from(e: hub::store::StoreError) -> Self {
        ApiError(e.into())
    }
}

impl From<hub::hf::HfError> for ApiError {
    fn from(e: hub::hf::HfError) -> Self {
        ApiError(e.into())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error_code();
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs();
        if retry_after.is_some() || code == Code::InsufficientMemory {
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

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        if is_body_timeout(&r) {
            return timeout_error();
        }
        ApiError(match r.status().as_u16() {
            413 => HubError::PayloadTooLarge(text),
            415 => HubError::UnsupportedMediaType(text),
            422 => HubError::UnprocessableBody { message: text },
            _ if text.contains("length limit") => HubError::PayloadTooLarge(text),
            _ if matches!(r, JsonRejection::JsonSyntaxError(_)) => HubError::BadRequest {
                code: Code::MalformedJson,
                message: text,
            },
            _ => HubError::BadRequest {
                code: Code::BadRequest,
                message: text,
            },
        })
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(Code::InvalidPathParameter, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(Code::InvalidQuery, r.body_text())
    }
}

/// Whether `e` (or what caused it) is the body read timeout.
pub(crate) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<TimeoutError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) fn timeout_error() -> ApiError {
    HubError::RequestTimeout(
        "the request body was not received in time (MLX_HUB_BODY_TIMEOUT_SECS)".into(),
    )
    .into()
}
