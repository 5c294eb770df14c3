//! The hub's error type and THE table mapping every domain error to an HTTP
//! status and a stable `{"error": {"message", "type", "code"}}` body.
//!
//! | error                                   | status | type              | code                          |
//! |-----------------------------------------|--------|-------------------|-------------------------------|
//! | `Store(NotFound)` model / version / …   | 404    | `not_found`       | `model_not_found`, `version_not_found`, `dataset_not_found`, `job_not_found`, `run_not_found`, `alias_not_found`, `artifact_not_found` |
//! | `Store(Conflict)`                       | 409    | `conflict`        | `model_already_exists`, `model_has_versions`, `conflict` |
//! | `Store(IllegalTransition)`              | 409    | `conflict`        | `illegal_transition`          |
//! | `Store(Immutable)`                      | 409    | `conflict`        | `version_immutable`           |
//! | `Store(LeaseNotHeld)`                   | 409    | `conflict`        | `lease_not_held`              |
//! | `Store(InvalidInput)`                   | 422    | `invalid_request` | `invalid_input`               |
//! | `Store(PathEscapesRoot)`                | 422    | `invalid_request` | `path_escapes_root`           |
//! | `Store(Io/Corrupt/Migrate/Database)`    | 500    | `internal`        | `io_error`, `corrupt_data`, `migration_failed`, `database_error` |
//! | `Store(IntegrityMismatch)` (sha + object key) | 502 | `upstream`   | `artifact_corrupt`            |
//! | `Store(ObjectStore)` (S3 request failed) | 502   | `upstream`        | `object_store_error`          |
//! | `Store(Io)`, `Storage`: disk full (`ENOSPC`, `EDQUOT`) | 507 | `insufficient_storage` | `insufficient_storage` |
//! | `Store(Io)`, `Storage`: read-only file system (`EROFS`) | 507 | `insufficient_storage` | `read_only_storage` |
//! | `Store(Database)`: database unreachable (pool timed out or closed, connection refused/reset, server shutting down or starting) | 503 | `unavailable` | `database_unavailable` (with `Retry-After`) |
//! | `ModelConfig(UnsupportedModelType)`     | 422    | `invalid_request` | `unsupported_model_type`      |
//! | `ModelConfig(Io)` (no config.json)      | 422    | `invalid_request` | `missing_model_config`        |
//! | `ModelConfig(other)`                    | 422    | `invalid_request` | `invalid_model_config`        |
//! | `InvalidModelFolder`                    | 422    | `invalid_request` | `invalid_model_folder`        |
//! | `DatasetLine` (file + line)             | 422    | `invalid_request` | `invalid_dataset_line`        |
//! | `InvalidDataset`                        | 422    | `invalid_request` | `invalid_dataset`             |
//! | `OverMemoryBudget` (estimate, budget)   | 422    | `invalid_request` | `over_memory_budget`          |
//! | `BadRequest` (malformed JSON, query…)   | 400    | `invalid_request` | `bad_request` / `malformed_json` |
//! | `UnsupportedMediaType`                  | 415    | `invalid_request` | `unsupported_media_type`      |
//! | `PayloadTooLarge`                       | 413    | `invalid_request` | `payload_too_large`           |
//! | `RequestTimeout` (body not sent in time) | 408   | `invalid_request` | `request_timeout`             |
//! | `Unauthorized`                          | 401    | `auth`            | `missing_token` / `invalid_token` |
//! | `Forbidden` (cookie session without its CSRF token) | 403 | `auth` | `csrf_token_invalid` |
//! | `RouteNotFound`                         | 404    | `not_found`       | `route_not_found`             |
//! | `MethodNotAllowed`                      | 405    | `invalid_request` | `method_not_allowed`          |
//! | `Overloaded` (serving queue full, budget held by busy models) | 503 | `unavailable` | `server_overloaded` (with `Retry-After`) |
//! | `InsufficientMemory` (a model larger than the serving budget) | 503 | `unavailable` | `insufficient_memory` |
//! | `Config`                                | 500    | `internal`        | `invalid_config` (start-up only) |
//! | `Internal`                              | 500    | `internal`        | `internal`                    |
//! | `Hf` (Hugging Face pulls)               | 404/403/409/422/502 | see [`crate::hf::HfError::classify`] | `hf_…` |
//!
//! 5xx bodies never carry internal details beyond the error's own message.

use std::path::PathBuf;

use engine::config::ConfigError;
use serde::Serialize;

use crate::store::StoreError;

/// Result alias of the hub's service layer.
pub type HubResult<T> = Result<T, HubError>;

/// Every error the service layer returns.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The model folder's `config.json` is missing or invalid.
    #[error("{path}: {source}")]
    ModelConfig {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },

    /// The model folder is unusable (no weights, not a folder, too many files…).
    #[error("invalid model folder {path}: {message}")]
    InvalidModelFolder { path: PathBuf, message: String },

    /// A dataset row is wrong: names the file, the 1-based line and what.
    #[error("{file} line {line}: {message}")]
    DatasetLine {
        file: String,
        line: u64,
        message: String,
    },

    /// A dataset folder is wrong as a whole (no train.jsonl, mixed formats…).
    #[error("invalid dataset: {message}")]
    InvalidDataset { message: String },

    /// A job's estimated peak memory exceeds the configured budget (the
    /// message gives both, in bytes and GiB, and the estimate's parts).
    #[error("{message}")]
    OverMemoryBudget {
        message: String,
        estimate: crate::admission::MemoryEstimate,
        budget_bytes: u64,
    },

    /// The request could not be decoded (bad JSON, bad query string, bad path).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },

    /// JSON body whose shape or values are wrong (serde names the field).
    #[error("{message}")]
    UnprocessableBody { message: String },

    #[error("{0}")]
    UnsupportedMediaType(String),

    #[error("{0}")]
    PayloadTooLarge(String),

    /// The client stopped sending the request body (slow client).
    #[error("{0}")]
    RequestTimeout(String),

    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },

    /// Authenticated, but the request is refused (e.g. a cookie session's
    /// state-changing request without its CSRF token).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },

    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },

    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },

    /// Serving: a model's waiting queue is full, or the memory budget is held
    /// by models serving requests; retry after `retry_after_secs`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },

    /// Serving: the model can never fit in the memory budget (no `Retry-After`).
    #[error("{message}")]
    InsufficientMemory { message: String },

    /// Invalid configuration (start-up).
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("internal error: {0}")]
    Internal(String),

    /// A file-system error without a path of its own (see [`storage_fault`]
    /// for the ones that are not 500s).
    #[error("storage error: {0}")]
    Storage(std::io::Error),

    /// Pulling from the Hugging Face Hub failed (see [`crate::hf::HfError`]).
    #[error(transparent)]
    Hf(#[from] crate::hf::HfError),
}

/// The `error` object of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
}

impl HubError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        HubError::Store(StoreError::InvalidInput {
            field,
            message: message.into(),
        })
    }

    /// The table: (HTTP status, type, code).
    pub fn classify(&self) -> (u16, &'static str, &'static str) {
        const INVALID: &str = "invalid_request";
        match self {
            HubError::Store(e) => classify_store(e),
            HubError::ModelConfig { source, .. } => match source {
                ConfigError::UnsupportedModelType { .. } => {
                    (422, INVALID, "unsupported_model_type")
                }
                ConfigError::Io { .. } => (422, INVALID, "missing_model_config"),
                _ => (422, INVALID, "invalid_model_config"),
            },
            HubError::InvalidModelFolder { .. } => (422, INVALID, "invalid_model_folder"),
            HubError::DatasetLine { .. } => (422, INVALID, "invalid_dataset_line"),
            HubError::InvalidDataset { .. } => (422, INVALID, "invalid_dataset"),
            HubError::OverMemoryBudget { .. } => (422, INVALID, "over_memory_budget"),
            HubError::BadRequest { code, .. } => (400, INVALID, code),
            HubError::UnprocessableBody { .. } => (422, INVALID, "invalid_body"),
            HubError::UnsupportedMediaType(_) => (415, INVALID, "unsupported_media_type"),
            HubError::PayloadTooLarge(_) => (413, INVALID, "payload_too_large"),
            HubError::RequestTimeout(_) => (408, INVALID, "request_timeout"),
            HubError::Unauthorized { code, .. } => (401, "auth", code),
            HubError::Forbidden { code, .. } => (403, "auth", code),
            HubError::RouteNotFound { .. } => (404, "not_found", "route_not_found"),
            HubError::MethodNotAllowed { .. } => (405, INVALID, "method_not_allowed"),
            HubError::Overloaded { .. } => (503, "unavailable", "server_overloaded"),
            HubError::InsufficientMemory { .. } => (503, "unavailable", "insufficient_memory"),
            HubError::Config(_) => (500, "internal", "invalid_config"),
            HubError::Internal(_) => (500, "internal", "internal"),
            HubError::Storage(e) => storage_fault(e).unwrap_or((500, "internal", "io_error")),
            HubError::Hf(e) => e.classify(),
        }
    }

    /// The `Retry-After` (seconds) of a response to this error, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            HubError::Overloaded {
                retry_after_secs, ..
            } => Some((*retry_after_secs).max(1)),
            _ if self.code() == "database_unavailable" => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    pub fn status(&self) -> u16 {
        self.classify().0
    }

    pub fn code(&self) -> &'static str {
        self.classify().2
    }

    /// The body's `error` object.
    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.classify();
        ErrorBody {
            message: self.to_string(),
            kind: kind.to_string(),
            code: code.to_string(),
        }
    }
}

/// `Retry-After` of a 503 `database_unavailable`: a restarting database is
/// usually back within seconds.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

/// Disk full and read-only storage: 507, never a 500 (the server is fine, the
/// storage cannot take the write).
pub fn storage_fault(e: &std::io::Error) -> Option<(u16, &'static str, &'static str)> {
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const EDQUOT: i32 = 122;
    match e.raw_os_error() {
        Some(ENOSPC | EDQUOT) => Some((507, "insufficient_storage", "insufficient_storage")),
        Some(EROFS) => Some((507, "insufficient_storage", "read_only_storage")),
        _ => match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Some((507, "insufficient_storage", "insufficient_storage"))
            }
            std::io::ErrorKind::ReadOnlyFilesystem => {
                Some((507, "insufficient_storage", "read_only_storage"))
            }
            _ => None,
        },
    }
}

fn classify_store(e: &StoreError) -> (u16, &'static str, &'static str) {
    let status = e.http_status();
    match e {
        StoreError::NotFound { entity, .. } => (
            404,
            "not_found",
            match *entity {
                "model" => "model_not_found",
                "model version" => "version_not_found",
                "dataset" => "dataset_not_found",
                "job" => "job_not_found",
                "run" => "run_not_found",
                "alias" => "alias_not_found",
                "artifact" => "artifact_not_found",
                _ => "not_found",
            },
        ),
        StoreError::Conflict {
            entity, message, ..
        } => (
            409,
            "conflict",
            match *entity {
                "model" if message.contains("already exists") => "model_already_exists",
                "model" if message.contains("versions") => "model_has_versions",
                _ => "conflict",
            },
        ),
        StoreError::IllegalTransition { .. } => (409, "conflict", "illegal_transition"),
        StoreError::Immutable { .. } => (409, "conflict", "version_immutable"),
        StoreError::LeaseNotHeld { .. } => (409, "conflict", "lease_not_held"),
        StoreError::InvalidInput { .. } => (422, "invalid_request", "invalid_input"),
        StoreError::PathEscapesRoot { .. } => (422, "invalid_request", "path_escapes_root"),
        StoreError::Database(_) if status == 503 => (503, "unavailable", "database_unavailable"),
        StoreError::Io { source, .. } => {
            storage_fault(source).unwrap_or((500, "internal", "io_error"))
        }
        StoreError::Corrupt { .. } => (500, "internal", "corrupt_data"),
        StoreError::IntegrityMismatch { .. } => (502, "upstream", "artifact_corrupt"),
        StoreError::ObjectStore { .. } => (502, "upstream", "object_store_error"),
        StoreError::Migrate(_) => (500, "internal", "migration_failed"),
        StoreError::Database(_) => (500, "internal", "database_error"),
    }
}

impl From<std::io::Error> for HubError {
    fn from(e: std::io::Error) -> Self {
        if storage_fault(&e).is_some() {
            return HubError::Storage(e);
        }
        HubError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(code)
    }

    #[test]
    fn full_and_read_only_storage_are_507() {
        for (errno, code) in [
            (28, "insufficient_storage"),
            (122, "insufficient_storage"),
            (30, "read_only_storage"),
        ] {
            let e = HubError::Store(StoreError::Io {
                path: "/data/x".into(),
                source: os(errno),
            });
            assert_eq!(e.classify(), (507, "insufficient_storage", code), "{e}");
            let e = HubError::from(os(errno));
            assert_eq!(e.classify(), (507, "insufficient_storage", code), "{e}");
            assert_eq!(e.retry_after_secs(), None);
        }
        // other I/O errors stay 500s
        let e = HubError::Store(StoreError::Io {
            path: "/data/x".into(),
            source: os(13),
        });
        assert_eq!(e.status(), 500);
        assert_eq!(HubError::from(os(5)).status(), 500);
    }

    #[test]
    fn unreachable_database_is_503_with_retry_after() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
            sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
            sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into()),
        ] {
            let e = HubError::Store(StoreError::Database(e));
            assert_eq!(
                e.classify(),
                (503, "unavailable", "database_unavailable"),
                "{e}"
            );
            assert_eq!(e.retry_after_secs(), Some(DATABASE_RETRY_AFTER_SECS));
        }
        let e = HubError::Store(StoreError::Database(sqlx::Error::RowNotFound));
        assert_eq!(e.classify(), (500, "internal", "database_error"));
        assert_eq!(e.retry_after_secs(), None);
    }
}
