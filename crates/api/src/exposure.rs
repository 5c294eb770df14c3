//! What the API exposes to browsers and slow clients: CORS (closed unless
//! origins are configured) and the request-body read timeout. The header
//! read timeout is the server's (see `crate::server`); body size limits are
//! per route (`DefaultBodyLimit` for JSON routes, the streamed upload cap for
//! `/api/datasets/{name}/upload`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::MapRequestLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutBody};

/// The CORS layer for `origins` (`*` = any), or None: no CORS headers at all,
/// so browsers keep other origins out.
pub(super) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let request_id = HeaderName::from_static("x-request-id");
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                request_id.clone(),
            ])
            .expose_headers([request_id, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

fn plain_body(r: Request<TimeoutBody<Body>>) -> Request {
    r.map(Body::new)
}

type PlainBody = fn(Request<TimeoutBody<Body>>) -> Request;

/// The layer that fails a request body whose next chunk takes longer than
/// `timeout` (the handler then answers 408).
pub(super) type BodyTimeout =
    ServiceBuilder<Stack<MapRequestLayer<PlainBody>, Stack<RequestBodyTimeoutLayer, Identity>>>;

pub(super) fn body_timeout(timeout: Duration) -> BodyTimeout {
    ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(timeout))
        .map_request(plain_body as PlainBody)
}
