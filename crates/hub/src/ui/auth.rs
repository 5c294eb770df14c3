//! Browser sessions when an API token is configured.
//!
//! - `GET /ui/login` is a page with one field; `POST /ui/login` (`{token}`)
//!   compares the token in constant time and sets the cookie
//!   `mlx_hub_session` (HttpOnly, SameSite=Strict, Path=/): an expiry and an
//!   HMAC-SHA256 of it keyed by the token's hash, so the cookie never holds
//!   the token and every session ends when the token changes.
//! - The auth middleware ([`gate`]) accepts that cookie wherever it accepts
//!   the Bearer token. A request authenticated by the cookie that changes
//!   state (any method but GET/HEAD/OPTIONS) must carry `x-csrf-token`: an
//!   HMAC of the cookie, put by each page in `<meta name="csrf-token">` and
//!   sent by `app.js`; without it: 403 `csrf_token_invalid`.
//! - `/health`, the login page and `/ui/assets/*` stay open; a page request
//!   without a session is redirected to the login page.
//!
//! Tokens, cookies and CSRF tokens are never logged.

use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Layout, Session};
use crate::error::HubError;
use crate::http::ApiJson;

/// Name of the session cookie.
pub const COOKIE: &str = "mlx_hub_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_SECS: i64 = 7 * 24 * 3600;

/// sha256 of the configured API token (the HMAC key), in the request's
/// extensions whenever a token is configured.
#[derive(Clone)]
pub struct AuthKey(pub [u8; 32]);

/// The CSRF token of the request's session (in its extensions when it was
/// authenticated by the cookie).
#[derive(Clone)]
pub struct CsrfToken(pub String);

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
        m.update(b"\0");
    }
    hex::encode(m.finalize().into_bytes())
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A new cookie value valid until `expires` (unix seconds).
pub fn session_value(key: &[u8; 32], expires: i64) -> String {
    let e = expires.to_string();
    format!("v1.{e}.{}", mac(key, &[b"session", e.as_bytes()]))
}

/// Whether `value` is a session cookie made with `key` and not expired.
pub fn session_valid(key: &[u8; 32], value: &str) -> bool {
    let mut it = value.splitn(3, '.');
    let (Some("v1"), Some(e), Some(sig)) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    let Ok(expires) = e.parse::<i64>() else {
        return false;
    };
    let want = mac(key, &[b"session", e.as_bytes()]);
    bool::from(want.as_bytes().ct_eq(sig.as_bytes())) && expires > now_secs()
}

/// The CSRF token of a session cookie.
pub fn csrf_for(key: &[u8; 32], cookie: &str) -> String {
    mac(key, &[b"csrf", cookie.as_bytes()])
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// Paths open without a session (besides `/health`).
fn is_open(path: &str) -> bool {
    path == "/ui/login" || path.starts_with("/ui/assets/")
}

/// What the auth middleware does with a request once a token is configured.
pub enum Gate {
    /// Let it through (open path, or a valid cookie session).
    Pass,
    /// Refuse it with this response (cookie session without the CSRF token).
    Refuse(Response),
    /// No cookie session: the Bearer token decides.
    Bearer,
}

/// The cookie half of the auth middleware (the Bearer half is in
/// `crate::http`). A request with an `Authorization` header is left to it.
pub fn gate(req: &mut Request, key: &[u8; 32]) -> Gate {
    req.extensions_mut().insert(AuthKey(*key));
    if req.headers().contains_key(header::AUTHORIZATION) {
        return Gate::Bearer;
    }
    let session = cookie_value(req.headers())
        .filter(|v| session_valid(key, v))
        .map(|v| csrf_for(key, v));
    let Some(csrf) = session else {
        return if is_open(req.uri().path()) {
            Gate::Pass
        } else {
            Gate::Bearer
        };
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(given.ct_eq(csrf.as_bytes())) {
            return Gate::Refuse(
                HubError::Forbidden {
                    code: "csrf_token_invalid",
                    message: format!(
                        "a request authenticated by the session cookie that changes state must \
                         carry the page's `{CSRF_HEADER}` header"
                    ),
                }
                .into_response(),
            );
        }
    }
    req.extensions_mut().insert(CsrfToken(csrf));
    Gate::Pass
}

/// For a browser's page request without a session: a redirect to the login
/// page (API requests get the JSON 401).
pub fn login_redirect(req: &Request) -> Option<Response> {
    let path = req.uri().path();
    let page = req.method() == Method::GET
        && (path == "/" || path == "/ui" || path.starts_with("/ui/"))
        && !path.ends_with(".svg");
    if !page {
        return None;
    }
    let next = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/ui");
    Some(Redirect::to(&format!("/ui/login?next={}", super::enc(next))).into_response())
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    layout: Layout,
    next: String,
    enabled: bool,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// Only local paths are followed after logging in.
fn safe_next(next: Option<String>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui".into(),
    }
}

pub(crate) async fn login_page(session: Session, Query(q): Query<LoginQuery>) -> Response {
    super::html(LoginPage {
        enabled: session.auth,
        layout: Layout::new("Log in", "", &session),
        next: safe_next(q.next),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    token: String,
}

/// `POST /ui/login` `{token}`: 204 and the session cookie, or 401.
pub(crate) async fn login(
    key: Option<axum::extract::Extension<AuthKey>>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, HubError> {
    let Some(axum::extract::Extension(AuthKey(key))) = key else {
        return Err(HubError::BadRequest {
            code: "auth_disabled",
            message: "this hub has no API token configured: there is nothing to log in to".into(),
        });
    };
    let given: [u8; 32] = Sha256::digest(body.token.trim().as_bytes()).into();
    if !bool::from(given.ct_eq(&key)) {
        return Err(HubError::Unauthorized {
            code: "invalid_token",
            message: "the API token is not valid".into(),
        });
    }
    let value = session_value(&key, now_secs() + SESSION_SECS);
    let cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| HubError::Internal(e.to_string()))?,
    );
    Ok(resp)
}

/// `POST /ui/logout`: clears the cookie.
pub(crate) async fn logout() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mlx_hub_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}
