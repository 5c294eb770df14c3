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

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use hub::error::HubError;

use crate::error::ApiError;

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

pub(crate) fn now_secs() -> i64 {
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
                ApiError::from(HubError::Forbidden {
                    code: hub::error::Code::CsrfTokenInvalid,
                    message: format!(
                        "a request authenticated by the session cookie that changes state must \
                         carry the page's `{CSRF_HEADER}` header"
                    ),
                })
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
    Some(Redirect::to(&format!("/ui/login?next={}", crate::extract::enc(next))).into_response())
}

#[derive(Clone)]
pub(crate) struct AuthState {
    /// sha256 of the token (fixed length, so the comparison is constant-time
    /// whatever the length of what the client sent).
    pub(crate) token_hash: Option<[u8; 32]>,
}

pub(crate) async fn require_token(
    State(auth): State<AuthState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(expected) = auth.token_hash else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    // The admin UI's cookie session (CSRF-checked), login page and assets.
    match gate(&mut req, &expected) {
        Gate::Pass => return next.run(req).await,
        Gate::Refuse(resp) => return resp,
        Gate::Bearer => {}
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
            code: hub::error::Code::MissingToken,
            message: "this hub requires an API token: send `Authorization: Bearer <token>`".into(),
        },
        Some(t) => {
            let h: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            if bool::from(h.ct_eq(&expected)) {
                return next.run(req).await;
            }
            HubError::Unauthorized {
                code: hub::error::Code::InvalidToken,
                message: "the API token is not valid".into(),
            }
        }
    };
    if let Some(resp) = login_redirect(&req) {
        return resp;
    }
    let mut resp = ApiError::from(err).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
