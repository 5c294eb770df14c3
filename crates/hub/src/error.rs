//! The hub services' error type. Its row of the one error table
//! ([`errors::Code`]: status, type, stable code) is [`ErrorCode::error_code`];
//! store and Hugging Face errors keep their own rows (`#[from]`), engine
//! errors stay typed.
//!
//! 5xx bodies never carry internal details beyond the error's own message.

use std::path::PathBuf;

use engine::config::ConfigError;
pub use errors::{Code, ErrorBody, ErrorCode, storage_fault};

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
        estimate_bytes: u64,
        budget_bytes: u64,
    },

    /// The request could not be decoded (bad JSON, bad query string, bad path).
    #[error("{message}")]
    BadRequest { code: Code, message: String },

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
    Unauthorized { code: Code, message: String },

    /// Authenticated, but the request is refused (e.g. a cookie session's
    /// state-changing request without its CSRF token).
    #[error("{message}")]
    Forbidden { code: Code, message: String },

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

    /// The engine could not load a stored model or its adapter (the engine's
    /// error kept typed: it says whether the model or the adapter failed).
    #[error("cannot load {what}: {source}")]
    Load {
        what: String,
        #[source]
        source: engine::models::LoadError,
    },

    /// Pulling from the Hugging Face Hub failed (see [`crate::hf::HfError`]).
    #[error(transparent)]
    Hf(#[from] crate::hf::HfError),
}

impl HubError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        HubError::Store(StoreError::InvalidInput {
            field,
            message: message.into(),
        })
    }

    pub fn status(&self) -> u16 {
        self.error_code().status()
    }

    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}

impl ErrorCode for HubError {
    fn error_code(&self) -> Code {
        match self {
            HubError::Store(e) => e.error_code(),
            HubError::ModelConfig { source, .. } => match source {
                ConfigError::UnsupportedModelType { .. } => Code::UnsupportedModelType,
                ConfigError::Io { .. } => Code::MissingModelConfig,
                _ => Code::InvalidModelConfig,
            },
            HubError::InvalidModelFolder { .. } => Code::InvalidModelFolder,
            HubError::DatasetLine { .. } => Code::InvalidDatasetLine,
            HubError::InvalidDataset { .. } => Code::InvalidDataset,
            HubError::OverMemoryBudget { .. } => Code::OverMemoryBudget,
            HubError::BadRequest { code, .. }
            | HubError::Unauthorized { code, .. }
            | HubError::Forbidden { code, .. } => *code,
            HubError::UnprocessableBody { .. } => Code::InvalidBody,
            HubError::UnsupportedMediaType(_) => Code::UnsupportedMediaType,
            HubError::PayloadTooLarge(_) => Code::PayloadTooLarge,
            HubError::RequestTimeout(_) => Code::RequestTimeout,
            HubError::RouteNotFound { .. } => Code::RouteNotFound,
            HubError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            HubError::Overloaded { .. } => Code::ServerOverloaded,
            HubError::InsufficientMemory { .. } => Code::InsufficientMemory,
            HubError::Config(_) => Code::InvalidConfig,
            HubError::Internal(_) => Code::Internal,
            HubError::Storage(e) => errors::io_code(e),
            HubError::Hf(e) => e.error_code(),
            HubError::Load { .. } => Code::Internal,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            HubError::Overloaded {
                retry_after_secs, ..
            } => Some((*retry_after_secs).max(1)),
            _ => self.error_code().default_retry_after_secs(),
        }
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
            assert_eq!(
                (e.status(), e.error_code().kind(), e.code()),
                (507, "insufficient_storage", code),
                "{e}"
            );
            let e = HubError::from(os(errno));
            assert_eq!(
                (e.status(), e.error_code().kind(), e.code()),
                (507, "insufficient_storage", code),
                "{e}"
            );
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
                (e.status(), e.error_code().kind(), e.code()),
                (503, "unavailable", "database_unavailable"),
                "{e}"
            );
            assert_eq!(
                e.retry_after_secs(),
                Some(errors::DATABASE_RETRY_AFTER_SECS)
            );
        }
        let e = HubError::Store(StoreError::Database(sqlx::Error::RowNotFound));
        assert_eq!(
            (e.status(), e.error_code().kind(), e.code()),
            (500, "internal", "database_error")
        );
        assert_eq!(e.retry_after_secs(), None);
    }
}
