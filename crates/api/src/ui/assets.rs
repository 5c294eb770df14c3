//! The UI's CSS and JavaScript, embedded in the binary (`include_str!`) and
//! served with a strong ETag (a hash of the content). Pages link them with
//! `?v=<hash>`, so a browser may keep them for a long time; a request with a
//! matching `If-None-Match` gets `304 Not Modified`.

use crate::error::ApiError;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::extract::ApiPath;
use hub::error::HubError;

const CSS: &str = include_str!("static/app.css");
const JS: &str = include_str!("static/app.js");

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
    url: String,
}

fn assets() -> &'static [Asset; 2] {
    static ASSETS: OnceLock<[Asset; 2]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let make = |name: &str, body: &'static str, content_type| {
            let hash = hex::encode(Sha256::digest(body.as_bytes()));
            Asset {
                body,
                content_type,
                etag: format!("\"{}\"", &hash[..16]),
                url: format!("/ui/assets/{name}?v={}", &hash[..16]),
            }
        };
        [
            make("app.css", CSS, "text/css; charset=utf-8"),
            make("app.js", JS, "text/javascript; charset=utf-8"),
        ]
    })
}

/// The stylesheet's URL (with its content hash).
pub fn css_url() -> &'static str {
    &assets()[0].url
}

/// The script's URL (with its content hash).
pub fn js_url() -> &'static str {
    &assets()[1].url
}

pub(crate) async fn serve(
    ApiPath(file): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let a = match file.as_str() {
        "app.css" => &assets()[0],
        "app.js" => &assets()[1],
        _ => {
            return Err(HubError::RouteNotFound {
                method: "GET".into(),
                path: format!("/ui/assets/{file}"),
            }
            .into());
        }
    };
    let etag = HeaderValue::from_str(&a.etag).expect("hex is a valid header");
    let cache = HeaderValue::from_static("public, max-age=86400, must-revalidate");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        a.body,
    )
        .into_response())
}
