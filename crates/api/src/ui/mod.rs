//! The admin UI: server-rendered pages (askama templates, checked at compile
//! time) under `/ui/...`, one file per page. Pages read the registry through
//! the same service the API uses; every action (register, upload, start or
//! cancel a job, set an alias, unload a model, chat) is a `fetch` to the JSON
//! API from `static/app.js`, so the API stays the one source of truth. Live
//! parts poll the JSON API; charts are SVG drawn by `plotters` on the server.
//!
//! | route | page |
//! |---|---|
//! | `/` | redirect to `/ui` |
//! | `/ui`, `/ui/models`, `/ui/models/{name}` | models (search), a model: versions, aliases, tags, lineage |
//! | `/ui/datasets`, `/ui/datasets/{name}` | datasets (register from a path or by upload), a dataset with preview |
//! | `/ui/jobs`, `/ui/jobs/{id}` | jobs by state, start a job; a job: progress, log, charts |
//! | `/ui/runs`, `/ui/runs/{id}`, `/ui/runs/compare?runs=1,2&key=` | runs, charts, comparison |
//! | `/ui/runs/{id}/charts/{key}.svg`, `/ui/runs/compare.svg?runs=1,2&key=` | SVG charts |
//! | `/ui/playground` | chat with streamed tokens |
//! | `/ui/system` | loaded models, MLX device, BLAS, memory, queue, versions |
//! | `/ui/login`, `/ui/logout` | the session cookie when an API token is configured (see [`auth`]) |
//! | `/ui/assets/{file}` | CSS and JS, embedded, with ETags |

pub mod assets;
pub mod charts;
mod datasets;
mod jobs;
mod login;
mod models;
mod playground;
mod runs;
mod system;

use askama::Template;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use hub::error::HubError;
use hub::service::Hub;

/// The UI's routes (merged into the API router by [`crate::router::RouterBuilder`]).
pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(models::list))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/models", get(models::list))
        .route("/ui/models/{name}", get(models::show))
        .route("/ui/datasets", get(datasets::list))
        .route("/ui/datasets/{name}", get(datasets::show))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/{id}", get(jobs::show))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/compare", get(runs::compare))
        .route("/ui/runs/compare.svg", get(runs::compare_svg))
        .route("/ui/runs/{id}", get(runs::show))
        .route("/ui/runs/{id}/charts/{file}", get(runs::chart_svg))
        .route("/ui/playground", get(playground::page))
        .route("/ui/system", get(system::page))
        .route("/ui/login", get(login::login_page).post(login::login))
        .route("/ui/logout", post(login::logout))
        .route("/ui/assets/{file}", get(assets::serve))
}

/// What every page's frame needs: its title, the active tab, the CSRF token
/// (empty without an API token) and the asset URLs.
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub csrf: String,
    pub auth: bool,
    pub css: &'static str,
    pub js: &'static str,
}

impl Layout {
    pub fn new(title: impl Into<String>, nav: &'static str, session: &Session) -> Layout {
        Layout {
            title: title.into(),
            nav,
            csrf: session.csrf.clone(),
            auth: session.auth,
            css: assets::css_url(),
            js: assets::js_url(),
        }
    }

    /// `aria-current` for a nav tab.
    pub fn current(&self, tab: &str) -> &'static str {
        if self.nav == tab { "page" } else { "false" }
    }
}

/// The request's session as the auth gate saw it.
pub struct Session {
    pub auth: bool,
    pub csrf: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let csrf = parts
            .extensions
            .get::<crate::auth::CsrfToken>()
            .map(|c| c.0.clone());
        Ok(Session {
            auth: parts.extensions.get::<crate::auth::AuthKey>().is_some(),
            csrf: csrf.unwrap_or_default(),
        })
    }
}

/// An error page (the API's error, as HTML, with its status).
pub struct PageError(HubError);

impl From<HubError> for PageError {
    fn from(e: HubError) -> Self {
        PageError(e)
    }
}

impl From<crate::error::ApiError> for PageError {
    fn from(e: crate::error::ApiError) -> Self {
        PageError(e.0)
    }
}

impl From<hub::store::StoreError> for PageError {
    fn from(e: hub::store::StoreError) -> Self {
        PageError(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "page failed");
        }
        let page = ErrorPage {
            layout: Layout::new(
                format!("Error {}", status.as_u16()),
                "",
                &Session {
                    auth: false,
                    csrf: String::new(),
                },
            ),
            status: status.as_u16(),
            message: self.0.to_string(),
        };
        match page.render() {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, self.0.to_string()).into_response(),
        }
    }
}

pub type PageResult<T> = Result<T, PageError>;

/// A rendered page (askama_web's axum integration answers `text/html`, or
/// a 500 if rendering fails).
pub(crate) fn html(t: impl IntoResponse) -> Response {
    t.into_response()
}

/// `1.5 GB`, `12.0 MB`, `512 B`.
pub fn fmt_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A UTC time like `2026-11-26 08:30:12`.
pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub use crate::extract::enc;
