//! The hub's services: registry, datasets, artifacts, jobs and their runner,
//! tracking (MLflow), serving pool, Hugging Face pulls. Talks to models only
//! through the `engine` crate, to the database only through the `store` crate;
//! the HTTP face is the `api` crate.
//!
//! - `store` (re-exported): metadata in SQLite or PostgreSQL; [`artifacts`]:
//!   content-addressed files; [`paths`]: user-supplied path checks.
//! - [`config`]: flags > `MLX_HUB_*` > `mlx-hub.toml` > defaults, read once.
//! - [`error`]: the services' error type (its codes: `errors::Code`).
//! - [`service::Hub`]: the façade shared by the HTTP API and the CLI, with
//!   [`registry`] (model folders), [`dataset_import`] (JSONL datasets) and
//!   [`jobs`] (submission, admission, the runner).
//! - [`observability`]: training figures, log format and OTLP export.

#![forbid(unsafe_code)]

pub mod artifacts;
pub mod config;
pub mod dataset_import;
pub mod error;
pub mod hf;
pub mod host;
pub mod jobs;
pub mod mlflow;
pub mod observability;
pub mod owner;
pub mod paths;
pub mod recovery;
pub mod registry;
pub mod secret;
pub mod service;
pub mod serving;
pub use store;

/// Makes ring the process's default rustls provider (idempotent). reqwest 0.13
/// (object_store's and the OTLP exporter's HTTP client) is built without a
/// provider of its own and panics without one; ring, like the rest of the hub.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use artifacts::{ArtifactStore, Artifacts, LocalArtifactStore, LocalBlob, PutOutcome, Tier};
pub use config::{ConfigOverrides, HubConfig};
pub use error::{HubError, HubResult};
pub use service::Hub;
pub use store::{Store, StoreError, StoreOptions, StoreResult};
