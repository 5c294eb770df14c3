//! The UI's login page, login and logout (the session itself: [`crate::auth`]).

use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hub::error::HubError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Layout, Session};
use crate::auth::{AuthKey, COOKIE, SESSION_SECS, now_secs, session_value};
use crate::error::ApiError;
use crate::extract::ApiJson;

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
) -> Result<Response, ApiError> {
    let Some(axum::extract::Extension(AuthKey(key))) = key else {
        return Err(HubError::BadRequest {
            code: hub::error::Code::AuthDisabled,
            message: "this hub has no API token configured: there is nothing to log in to".into(),
        }
        .into());
    };
    let given: [u8; 32] = Sha256::digest(body.token.trim().as_bytes()).into();
    if !bool::from(given.ct_eq(&key)) {
        return Err(HubError::Unauthorized {
            code: hub::error::Code::InvalidToken,
            message: "the API token is not valid".into(),
        }
        .into());
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
