//! The hub's HTTP face: the JSON API ([`http`]), the admin UI's pages ([`ui`]),
//! `/metrics` and request spans ([`observability`]), serving it all
//! ([`server`]). Knows the services only through `hub::Hub`; every error is
//! rendered by [`error::ApiError`] from the one table in `errors::Code`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
mod exposure;
pub mod extract;
pub mod http;
pub mod observability;
pub mod router;
pub mod server;
pub mod ui;

pub use error::{ApiError, ApiResult};
pub use router::{RouterBuilder, router};
