//! The hub service: registry, datasets, artifacts, jobs and workers, tracking,
//! serving, UI. Talks to models only through the `engine` crate.
//!
//! This crate so far holds the storage layer: [`store`] (metadata in SQLite or
//! PostgreSQL), [`artifacts`] (content-addressed files) and [`paths`]
//! (user-supplied path checks).

pub mod artifacts;
pub mod paths;
pub mod store;

pub use artifacts::{ArtifactStore, LocalArtifactStore, PutOutcome, Tier};
pub use store::{Store, StoreError, StoreOptions, StoreResult};
