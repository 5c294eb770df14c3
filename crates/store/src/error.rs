//! The one error type of the storage layer. Each variant's row of the error
//! table is [`ErrorCode::error_code`] (the doc of each variant says which).

use std::path::PathBuf;

use errors::{Code, ErrorCode};

/// What a [`StoreError`] is about; its `Display` is the word used in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Model,
    Version,
    VersionFile,
    Alias,
    Dataset,
    Job,
    Run,
    Artifact,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Model => "model",
            Entity::Version => "model version",
            Entity::VersionFile => "version file",
            Entity::Alias => "alias",
            Entity::Dataset => "dataset",
            Entity::Job => "job",
            Entity::Run => "run",
            Entity::Artifact => "artifact",
        }
    }

    /// The 404 code of a missing `self`.
    pub fn not_found_code(self) -> Code {
        match self {
            Entity::Model => Code::ModelNotFound,
            Entity::Version => Code::VersionNotFound,
            Entity::Alias => Code::AliasNotFound,
            Entity::Dataset => Code::DatasetNotFound,
            Entity::Job => Code::JobNotFound,
            Entity::Run => Code::RunNotFound,
            Entity::Artifact => Code::ArtifactNotFound,
            Entity::VersionFile => Code::NotFound,
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result alias for the storage layer.
pub type StoreResult<T> = Result<T, StoreError>;

/// Errors of the store (database) and of the artifact store (files).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record. HTTP 404.
    #[error("{entity} {key} not found")]
    NotFound { entity: Entity, key: String },

    /// A uniqueness rule was violated (name taken, alias taken, ...), or the
    /// record is referenced and cannot be deleted. HTTP 409; `code` says
    /// which conflict (`conflict` when nothing more precise applies).
    #[error("{entity} {key}: {message}")]
    Conflict {
        entity: Entity,
        key: String,
        message: String,
        code: Code,
    },

    /// The request itself is wrong: a field is missing, malformed or out of
    /// range, or refers to something that does not exist. HTTP 422.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },

    /// A state machine (job, model version, run) does not allow this move.
    /// HTTP 409.
    #[error("{entity} {key}: cannot go from {from} to {to}")]
    IllegalTransition {
        entity: Entity,
        key: String,
        from: String,
        to: String,
    },

    /// The record is immutable (a model version once `ready`). HTTP 409.
    #[error("{entity} {key} is immutable")]
    Immutable { entity: Entity, key: String },

    /// The caller does not hold the job's lease (it lapsed and was reaped, or
    /// another worker holds it). The worker must stop working on the job.
    /// HTTP 409.
    #[error("job {job_id}: worker {worker_id} does not hold the lease")]
    LeaseNotHeld { job_id: i64, worker_id: String },

    /// A user-supplied path resolves outside the root it must stay in. HTTP 422
    /// (or 403), never a 500.
    #[error("path {path:?} is outside of {root:?}")]
    PathEscapesRoot { path: PathBuf, root: PathBuf },

    /// A file-system error on the given path. HTTP 500.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Stored data could not be decoded (corrupt JSON in a column, unknown
    /// enum value). HTTP 500.
    #[error("corrupt stored data in {entity}.{field}: {message}")]
    Corrupt {
        entity: &'static str,
        field: &'static str,
        message: String,
    },

    /// A blob downloaded from the object store does not hash to its name: the
    /// download was discarded (nothing cached, nothing registered from it).
    /// HTTP 502.
    #[error(
        "artifact {sha256} failed its integrity check: object {key} has sha256 {actual}; \
         the download was discarded"
    )]
    IntegrityMismatch {
        sha256: String,
        key: String,
        actual: String,
    },

    /// The object store (S3) refused or failed a request. HTTP 502.
    #[error("object store: {op} {key}: {message}")]
    ObjectStore {
        op: &'static str,
        key: String,
        message: String,
    },

    /// Migrations could not be applied. HTTP 500.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Any other database error (connection lost, timeout, ...). HTTP 500/503.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub fn conflict(entity: Entity, key: impl ToString, message: impl Into<String>) -> Self {
        StoreError::Conflict {
            entity,
            key: key.to_string(),
            message: message.into(),
            code: Code::Conflict,
        }
    }

    pub fn not_found(entity: Entity, key: impl ToString) -> Self {
        StoreError::NotFound {
            entity,
            key: key.to_string(),
        }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            field,
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

impl ErrorCode for StoreError {
    fn error_code(&self) -> Code {
        match self {
            StoreError::NotFound { entity, .. } => entity.not_found_code(),
            StoreError::Conflict { code, .. } => *code,
            StoreError::IllegalTransition { .. } => Code::IllegalTransition,
            StoreError::Immutable { .. } => Code::VersionImmutable,
            StoreError::LeaseNotHeld { .. } => Code::LeaseNotHeld,
            StoreError::InvalidInput { .. } => Code::InvalidInput,
            StoreError::PathEscapesRoot { .. } => Code::PathEscapesRoot,
            StoreError::Io { source, .. } => errors::io_code(source),
            StoreError::Corrupt { .. } => Code::CorruptData,
            StoreError::IntegrityMismatch { .. } => Code::ArtifactCorrupt,
            StoreError::ObjectStore { .. } => Code::ObjectStoreError,
            StoreError::Migrate(_) => Code::MigrationFailed,
            StoreError::Database(e) if database_unreachable(e) => Code::DatabaseUnavailable,
            StoreError::Database(_) => Code::DatabaseError,
        }
    }
}

/// True when the database cannot be reached right now — no pooled
/// connection in time, the connection refused, reset or cut, the server
/// shutting down (`57P01`..`57P03`) or a connection exception (`08…`) —
/// so the request can be retried: a 503, not a 500.
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        // PostgreSQL's wire protocol cut mid-message (the server went away).
        sqlx::Error::Protocol(m) => m.contains("EOF") || m.contains("closed"),
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// What kind of constraint a database error violated, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    Unique,
    ForeignKey,
    Check,
    NotNull,
    Immutable,
    IllegalStatus,
}

/// Classifies a database error (works for SQLite and PostgreSQL through Any).
pub(crate) fn violation(err: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let msg = db.message();
    if msg.contains("hub: model version is immutable") {
        return Some(Violation::Immutable);
    }
    if msg.contains("hub: illegal model version status transition") {
        return Some(Violation::IllegalStatus);
    }
    // SQLite reports ON DELETE RESTRICT failures as a trigger constraint
    if msg.contains("FOREIGN KEY constraint failed") {
        return Some(Violation::ForeignKey);
    }
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => Some(Violation::Unique),
        sqlx::error::ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey),
        sqlx::error::ErrorKind::CheckViolation => Some(Violation::Check),
        sqlx::error::ErrorKind::NotNullViolation => Some(Violation::NotNull),
        _ => None,
    }
}
