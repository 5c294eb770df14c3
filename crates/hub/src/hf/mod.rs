//! Pulling models from the Hugging Face Hub into the shared Hugging Face cache
//! (`models--org--name/{blobs,refs,snapshots}`), the layout `huggingface_hub`
//! and mlx-lm use, so files they fetched are reused and ours are usable by
//! them; then registering the snapshot as a model version (linked, not
//! copied), or importing a `.gguf` through the engine's converter.
//!
//! The client follows the Hub's file-resolution protocol:
//! `GET {endpoint}/api/models/{repo}/revision/{rev}` for the commit and file
//! list, `HEAD {endpoint}/{repo}/resolve/{commit}/{path}` for each file's
//! `ETag` / `X-Linked-Etag` (the sha256 of LFS files) and size, then a `GET`
//! that follows the redirect of large files, resumed with `Range` from a
//! `*.incomplete` blob. Settings come from the same variables as
//! `huggingface_hub`: `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`,
//! `HF_HUB_CACHE`, `HF_HOME`.

pub mod cache;
pub mod download;
pub mod import;

use std::path::PathBuf;

pub use cache::{CachedRepo, HfCache, scan_cache};
pub use download::{PullEvent, PullOptions, Snapshot, pull_snapshot};
pub use import::{PullModelRequest, PullReport};

/// The public Hub; `HF_ENDPOINT` points elsewhere (a mirror, a test server).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The file patterns mlx-lm downloads for a model (`mlx_lm.utils`).
pub const MLX_PATTERNS: &[&str] = &[
    "*.json",
    "model*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
];

/// Result alias of this module.
pub type HfResult<T> = Result<T, HfError>;

/// What can go wrong talking to the Hub or its cache. Every message names the
/// repository, revision or file, and says what to do where there is something.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("invalid repository id {given:?}: {why}")]
    InvalidRepoId { given: String, why: String },

    #[error(
        "repository {repo} not found on {endpoint} (check the name; a private or gated \
         repository also needs HF_TOKEN)"
    )]
    RepoNotFound { repo: String, endpoint: String },

    #[error("repository {repo} is gated or private and {endpoint} refused access ({status}){hint}")]
    AccessDenied {
        repo: String,
        endpoint: String,
        status: u16,
        hint: &'static str,
    },

    #[error("revision {revision:?} not found in repository {repo}")]
    RevisionNotFound { repo: String, revision: String },

    #[error("{path} not found in {repo} at {revision}")]
    EntryNotFound {
        repo: String,
        revision: String,
        path: String,
    },

    #[error("repository {repo} is not a model mlx-lm can load: {why}")]
    NotLoadable { repo: String, why: String },

    #[error(
        "HF_HUB_OFFLINE is set and {repo}@{revision} is not in the Hugging Face cache {cache}: {why}"
    )]
    OfflineNotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        why: String,
    },

    #[error(
        "{path}: downloaded content does not match the Hub's checksum (expected {expected}, got {got}); the file was discarded"
    )]
    Checksum {
        path: String,
        expected: String,
        got: String,
    },

    #[error("{url}: the Hub answered {status}{detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },

    #[error("{url}: {message}")]
    Network { url: String, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HfError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HfError {
        HfError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Upstream auth failures are 403 here: a 401 from the hub means the hub's own token.
impl errors::ErrorCode for HfError {
    fn error_code(&self) -> errors::Code {
        use errors::Code;
        match self {
            HfError::InvalidRepoId { .. } => Code::InvalidRepoId,
            HfError::RepoNotFound { .. } => Code::HfRepoNotFound,
            HfError::AccessDenied { .. } => Code::HfAccessDenied,
            HfError::RevisionNotFound { .. } => Code::HfRevisionNotFound,
            HfError::EntryNotFound { .. } => Code::HfFileNotFound,
            HfError::NotLoadable { .. } => Code::HfNotLoadable,
            HfError::OfflineNotCached { .. } => Code::HfOfflineNotCached,
            HfError::Checksum { .. } => Code::HfChecksumMismatch,
            HfError::Http { .. } => Code::HfHttpError,
            HfError::Network { .. } => Code::HfUnreachable,
            HfError::Io { source, .. } => errors::io_code(source),
        }
    }
}

/// A repository id with an optional revision: `org/name[@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub repo: String,
    pub revision: String,
}

impl RepoRef {
    /// Parses `org/name`, `name` or either with `@revision` (default `main`).
    pub fn parse(given: &str) -> HfResult<RepoRef> {
        let bad = |why: &str| HfError::InvalidRepoId {
            given: given.to_string(),
            why: why.to_string(),
        };
        let (repo, revision) = match given.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (given, "main"),
        };
        if revision.is_empty() || revision.contains("..") || revision.chars().any(char::is_control)
        {
            return Err(bad("the revision after @ is empty or invalid"));
        }
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.is_empty() || parts.len() > 2 {
            return Err(bad("expected ORG/NAME"));
        }
        for p in &parts {
            if p.is_empty()
                || p.len() > 96
                || p.starts_with(['.', '-'])
                || p.contains("--")
                || p.contains("..")
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(bad(
                    "each part may hold letters, digits, '-', '_' and '.', not start with '.' or '-', and not contain '--' or '..'",
                ));
            }
        }
        Ok(RepoRef {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// Where and how to reach the Hub, from the variables `huggingface_hub` reads.
#[derive(Clone)]
pub struct HfSettings {
    pub endpoint: String,
    pub token: Option<String>,
    pub cache_dir: PathBuf,
    pub offline: bool,
    /// Files downloaded at once.
    pub max_parallel: usize,
}

impl std::fmt::Debug for HfSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("max_parallel", &self.max_parallel)
            .finish()
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl HfSettings {
    /// The settings the `huggingface_hub` variables `env` gives (`HF_ENDPOINT`,
    /// `HF_TOKEN`, `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, …; the config
    /// layer passes the process environment).
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> HfSettings {
        let env_nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let home = env_nonempty("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let hf_home = env_nonempty("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                env_nonempty("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join(".cache"))
                    .join("huggingface")
            });
        let cache_dir = env_nonempty("HF_HUB_CACHE")
            .or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        // the token `hf auth login` saved, when HF_TOKEN is not set
        let token = env_nonempty("HF_TOKEN").or_else(|| {
            let path = env_nonempty("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v));
        let max_parallel = env_nonempty("MLX_HUB_HF_PARALLEL")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=64).contains(n))
            .unwrap_or(4);
        HfSettings {
            endpoint: env_nonempty("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            token,
            cache_dir,
            offline,
            max_parallel,
        }
    }
}

/// `*` matches any run of characters, within a file name or across `/`
/// (as `fnmatch`, which mlx-lm's `allow_patterns` use).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether mlx-lm would download `path`.
pub fn wanted_by_mlx(path: &str) -> bool {
    MLX_PATTERNS.iter().any(|p| glob_match(p, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_refs_parse_and_refuse() {
        let r = RepoRef::parse("mlx-community/SmolLM2-135M-Instruct-4bit@v1.0").unwrap();
        assert_eq!(r.repo, "mlx-community/SmolLM2-135M-Instruct-4bit");
        assert_eq!(r.revision, "v1.0");
        assert_eq!(RepoRef::parse("gpt2").unwrap().revision, "main");
        for bad in [
            "", "a/b/c", "../x", "a/..b", "a/b@", "a//b", "a/-b", "a--b/c",
        ] {
            assert!(RepoRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mlx_patterns_select_what_mlx_lm_downloads() {
        for yes in [
            "config.json",
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "tokenizer.model",
            "chat_template.jinja",
            "merges.txt",
            "vocab.tiktoken",
        ] {
            assert!(wanted_by_mlx(yes), "{yes}");
        }
        for no in [
            "pytorch_model.bin",
            "README.md",
            "consolidated.safetensors",
            "x.gguf",
            ".gitattributes",
        ] {
            assert!(!wanted_by_mlx(no), "{no}");
        }
    }
}
