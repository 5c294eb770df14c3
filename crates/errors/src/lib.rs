//! THE error table. Every error the hub can answer with has one [`Code`]: its
//! HTTP status, its `type` and its stable `code`, as sent in the body
//! `{"error": {"message", "type", "code"}}` (and in a stream's error event).
//! Each domain error (store, hub services, Hugging Face pulls, HTTP) implements
//! [`ErrorCode`] to say which code it is; nothing else chooses a status.
//!
//! `docs/ARCHITECTURE.md` carries the same table; a test compares them.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident => ($status:literal, $kind:literal, $code:literal), )*) => {
        /// A stable error code (see the crate's documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The HTTP status.
            pub const fn status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }

            /// The body's `type`: the family of the error.
            pub const fn kind(self) -> &'static str {
                match self { $(Code::$variant => $kind,)* }
            }

            /// The body's `code`: stable, machine-readable.
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }
        }
    };
}

codes! {
    // 400: the request could not be decoded
    BadRequest => (400, "invalid_request", "bad_request"),
    MalformedJson => (400, "invalid_request", "malformed_json"),
    InvalidPathParameter => (400, "invalid_request", "invalid_path_parameter"),
    InvalidQuery => (400, "invalid_request", "invalid_query"),
    /// A sampling or request parameter out of range.
    InvalidParameter => (400, "invalid_request", "invalid_parameter"),
    /// A parameter the hub does not implement (refused rather than ignored).
    UnsupportedParameter => (400, "invalid_request", "unsupported_parameter"),
    /// Login to a hub without an API token.
    AuthDisabled => (400, "invalid_request", "auth_disabled"),
    // 401 / 403
    MissingToken => (401, "auth", "missing_token"),
    InvalidToken => (401, "auth", "invalid_token"),
    /// A cookie session's state-changing request without its CSRF token.
    CsrfTokenInvalid => (403, "auth", "csrf_token_invalid"),
    HfAccessDenied => (403, "auth", "hf_access_denied"),
    // 404
    NotFound => (404, "not_found", "not_found"),
    ModelNotFound => (404, "not_found", "model_not_found"),
    VersionNotFound => (404, "not_found", "version_not_found"),
    DatasetNotFound => (404, "not_found", "dataset_not_found"),
    JobNotFound => (404, "not_found", "job_not_found"),
    RunNotFound => (404, "not_found", "run_not_found"),
    AliasNotFound => (404, "not_found", "alias_not_found"),
    ArtifactNotFound => (404, "not_found", "artifact_not_found"),
    RouteNotFound => (404, "not_found", "route_not_found"),
    HfRepoNotFound => (404, "not_found", "hf_repo_not_found"),
    HfRevisionNotFound => (404, "not_found", "hf_revision_not_found"),
    HfFileNotFound => (404, "not_found", "hf_file_not_found"),
    // 405, 408, 413, 415
    MethodNotAllowed => (405, "invalid_request", "method_not_allowed"),
    /// The client stopped sending the request body.
    RequestTimeout => (408, "invalid_request", "request_timeout"),
    PayloadTooLarge => (413, "invalid_request", "payload_too_large"),
    UnsupportedMediaType => (415, "invalid_request", "unsupported_media_type"),
    // 409
    Conflict => (409, "conflict", "conflict"),
    ModelAlreadyExists => (409, "conflict", "model_already_exists"),
    ModelHasVersions => (409, "conflict", "model_has_versions"),
    IllegalTransition => (409, "conflict", "illegal_transition"),
    VersionImmutable => (409, "conflict", "version_immutable"),
    LeaseNotHeld => (409, "conflict", "lease_not_held"),
    HfOfflineNotCached => (409, "conflict", "hf_offline_not_cached"),
    // 422: well-formed, but wrong
    InvalidInput => (422, "invalid_request", "invalid_input"),
    /// A JSON body whose shape or values are wrong (serde names the field).
    InvalidBody => (422, "invalid_request", "invalid_body"),
    PathEscapesRoot => (422, "invalid_request", "path_escapes_root"),
    UnsupportedModelType => (422, "invalid_request", "unsupported_model_type"),
    MissingModelConfig => (422, "invalid_request", "missing_model_config"),
    InvalidModelConfig => (422, "invalid_request", "invalid_model_config"),
    InvalidModelFolder => (422, "invalid_request", "invalid_model_folder"),
    InvalidDatasetLine => (422, "invalid_request", "invalid_dataset_line"),
    InvalidDataset => (422, "invalid_request", "invalid_dataset"),
    OverMemoryBudget => (422, "invalid_request", "over_memory_budget"),
    InvalidRepoId => (422, "invalid_request", "invalid_repo_id"),
    HfNotLoadable => (422, "invalid_request", "hf_not_loadable"),
    // 500
    Internal => (500, "internal", "internal"),
    /// Start-up only.
    InvalidConfig => (500, "internal", "invalid_config"),
    IoError => (500, "internal", "io_error"),
    CorruptData => (500, "internal", "corrupt_data"),
    MigrationFailed => (500, "internal", "migration_failed"),
    DatabaseError => (500, "internal", "database_error"),
    // 502: something upstream failed
    /// A blob whose content does not hash to its name.
    ArtifactCorrupt => (502, "upstream", "artifact_corrupt"),
    ObjectStoreError => (502, "upstream", "object_store_error"),
    HfChecksumMismatch => (502, "upstream", "hf_checksum_mismatch"),
    HfHttpError => (502, "upstream", "hf_http_error"),
    HfUnreachable => (502, "upstream", "hf_unreachable"),
    // 503: retry later (with `Retry-After`), or never fits
    ServerOverloaded => (503, "unavailable", "server_overloaded"),
    InsufficientMemory => (503, "unavailable", "insufficient_memory"),
    DatabaseUnavailable => (503, "unavailable", "database_unavailable"),
    // 507: the storage cannot take the write (the server is fine)
    InsufficientStorage => (507, "insufficient_storage", "insufficient_storage"),
    ReadOnlyStorage => (507, "insufficient_storage", "read_only_storage"),
}

/// `Retry-After` of a 503 `database_unavailable`: a restarting database is
/// usually back within seconds.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl Code {
    /// The `Retry-After` this code carries by itself (the serving pool's
    /// overload sets its own).
    pub fn default_retry_after_secs(self) -> Option<u64> {
        match self {
            Code::DatabaseUnavailable => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Looks a code up by its string.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain error that knows its row of the table.
pub trait ErrorCode: std::error::Error {
    fn error_code(&self) -> Code;

    /// `Retry-After` (seconds) of a response to this error, if any.
    fn retry_after_secs(&self) -> Option<u64> {
        self.error_code().default_retry_after_secs()
    }

    /// The body's `error` object.
    fn body(&self) -> ErrorBody {
        ErrorBody::new(self.error_code(), self.to_string())
    }
}

/// The `error` object of an error body (and of a stream's error event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
}

impl ErrorBody {
    pub fn new(code: Code, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            message: message.into(),
            kind: code.kind().to_string(),
            code: code.as_str().to_string(),
        }
    }
}

/// Disk full and read-only storage: 507, never a 500.
pub fn storage_fault(e: &std::io::Error) -> Option<Code> {
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const EDQUOT: i32 = 122;
    match e.raw_os_error() {
        Some(ENOSPC | EDQUOT) => Some(Code::InsufficientStorage),
        Some(EROFS) => Some(Code::ReadOnlyStorage),
        _ => match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Some(Code::InsufficientStorage)
            }
            std::io::ErrorKind::ReadOnlyFilesystem => Some(Code::ReadOnlyStorage),
            _ => None,
        },
    }
}

/// The code of an I/O error: 507 for full or read-only storage, else 500.
pub fn io_code(e: &std::io::Error) -> Code {
    storage_fault(e).unwrap_or(Code::IoError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_match_their_kind() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            let ok = match c.kind() {
                "invalid_request" => (400..500).contains(&c.status()),
                "auth" => matches!(c.status(), 401 | 403),
                "not_found" => c.status() == 404,
                "conflict" => c.status() == 409,
                "internal" => c.status() == 500,
                "upstream" => c.status() == 502,
                "unavailable" => c.status() == 503,
                "insufficient_storage" => c.status() == 507,
                _ => false,
            };
            assert!(ok, "{c}: {} with type {}", c.status(), c.kind());
        }
    }

    #[test]
    fn full_and_read_only_storage_are_507() {
        let os = std::io::Error::from_raw_os_error;
        assert_eq!(io_code(&os(28)), Code::InsufficientStorage);
        assert_eq!(io_code(&os(122)), Code::InsufficientStorage);
        assert_eq!(io_code(&os(30)), Code::ReadOnlyStorage);
        assert_eq!(io_code(&os(13)), Code::IoError);
        assert_eq!(io_code(&os(5)).status(), 500);
    }

    /// The table in docs/ARCHITECTURE.md is this table.
    #[test]
    fn the_documented_table_is_this_table() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ARCHITECTURE.md"),
        )
        .expect("docs/ARCHITECTURE.md");
        let rows: Vec<(u16, String, String)> = doc
            .lines()
            .skip_while(|l| !l.contains("<!-- error-table -->"))
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                let unquote = |s: &str| s.trim_matches('`').to_string();
                (
                    cells[0].parse().unwrap_or_else(|_| panic!("status in {l}")),
                    unquote(cells[1]),
                    unquote(cells[2]),
                )
            })
            .collect();
        let table: Vec<(u16, String, String)> = Code::ALL
            .iter()
            .map(|c| (c.status(), c.kind().to_string(), c.as_str().to_string()))
            .collect();
        assert_eq!(
            rows, table,
            "docs/ARCHITECTURE.md's error table differs from Code"
        );
    }
}
