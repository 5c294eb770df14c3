//! Configuration, in order of precedence: flags, environment (`MLX_HUB_*`),
//! `<data-dir>/mlx-hub.toml`, defaults. Secrets (the API token) come only from the environment or a
//! token file, never from flags or the TOML file itself, and are never
//! printed (`Debug` redacts them).
//!
//! | setting          | flag               | environment                 | mlx-hub.toml       | default                         |
//! |------------------|--------------------|-----------------------------|--------------------|---------------------------------|
//! | data directory   | `--data-dir`       | `MLX_HUB_DATA_DIR`          | —                  | `./storage` (made absolute at load) |
//! | MLX device       | `--device`         | `MLX_HUB_DEVICE`            | `device`           | `auto` (the GPU when MLX has one) |
//! | database URL     | `--database-url`   | `MLX_HUB_DATABASE_URL`      | `database_url` (no password) | `sqlite://<data-dir>/hub.db` |
//! | host             | `--host`           | `MLX_HUB_HOST`              | `host`             | `127.0.0.1`                     |
//! | port             | `--port`           | `MLX_HUB_PORT`              | `port`             | `8000`                          |
//! | import root      | `--import-root`    | `MLX_HUB_IMPORT_ROOT`       | `import_root`      | `<data-dir>/import`             |
//! | body limit       | —                  | `MLX_HUB_MAX_BODY_BYTES`    | `max_body_bytes`   | 1 MiB                           |
//! | upload limit     | —                  | `MLX_HUB_MAX_UPLOAD_BYTES`  | `max_upload_bytes` | 1 GiB                           |
//! | API token        | —                  | `MLX_HUB_API_TOKEN`, `MLX_HUB_API_TOKEN_FILE` | `api_token_file` | none    |
//! | MLflow server    | `--mlflow-uri`     | `MLX_HUB_MLFLOW_URI`, `MLFLOW_TRACKING_URI` | `mlflow_uri` | none (no sync) |
//! | memory budget    | `--memory-budget-gb` | `MLX_HUB_MEMORY_BUDGET_BYTES` | `memory_budget_bytes` | none (no admission check) |
//! | CORS origins     | `--cors-origin` (repeatable) | `MLX_HUB_CORS_ORIGINS` (comma-separated) | `cors_origins` | none (CORS closed) |
//! | header read timeout | —               | `MLX_HUB_HEADER_TIMEOUT_SECS` | `header_timeout_secs` | 30 |
//! | body read timeout | —                 | `MLX_HUB_BODY_TIMEOUT_SECS` | `body_timeout_secs` | 60 (longest wait between body chunks) |
//! | artifact store   | `--artifact-store` | `MLX_HUB_ARTIFACT_STORE`    | `artifact_store`   | none (files under the data dir) |
//! | blob cache bound | `--cache-max-bytes` | `MLX_HUB_CACHE_MAX_BYTES`  | `cache_max_bytes`  | 20 GiB (S3 store only)          |
//! | database wait    | —                  | `MLX_HUB_DB_ACQUIRE_TIMEOUT_SECS` | `db_acquire_timeout_secs` | 30 (wait for a pooled connection; how long a request waits on an unreachable database before its 503) |
//!
//! The engine's compute settings are environment only, read by [`runtime_settings`] and
//! applied once at start-up (the engine and its kernels read no environment):
//! `MLX_HUB_FUSED_DECODE=0` turns the fused decode step off, `MLX_HUB_CPU_THREADS` sets
//! the CPU kernels' threads (default: the CPUs the process may use), `MLX_HUB_QMM=mlx`
//! runs MLX's own quantized matmul instead of ours.
//!
//! An `s3://bucket/prefix` artifact store reads the standard AWS variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), never the TOML file.
//!
//! Serving reads `MLX_HUB_SERVING_MEMORY_BYTES`, `MLX_HUB_SERVING_QUEUE`,
//! `MLX_HUB_SERVING_MAX_RUNNING`, `MLX_HUB_SERVING_PREFILL_CHUNK`,
//! `MLX_HUB_SERVING_WEIGHTS` (`MLX_HUB_SERVING_DENSE_F32`), `MLX_HUB_PREFIX_CACHE_BYTES`
//! and `MLX_HUB_KEEP_ALIVE` ([`crate::serving::ServingConfig::from_lookup`]; a bad
//! value is a start-up error); Hugging Face pulls read the `huggingface_hub`
//! variables ([`crate::hf::HfSettings::from_lookup`]). This module is the only
//! reader of the environment: everything below gets its settings from [`HubConfig`].
//!
//! A non-loopback host without an API token is refused ([`HubConfig::validate`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{HubError, HubResult};
pub use crate::host::DeviceSetting;
pub use crate::secret::Secret;

pub const CONFIG_FILE: &str = "mlx-hub.toml";
pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// A client has this long to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest wait for the next chunk of a request body.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The engine's compute settings from the environment (see the module docs). Lenient as
/// the kernels always were: a thread count that is not a number ≥ 1 means the default.
pub fn runtime_settings(env: impl Fn(&str) -> Option<String>) -> engine::runtime::RuntimeSettings {
    let threads = env("MLX_HUB_CPU_THREADS").and_then(|v| {
        // C's atoi: leading digits count, the rest is ignored
        let digits: String = v
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<usize>().ok().filter(|&n| n >= 1)
    });
    engine::runtime::RuntimeSettings {
        fused_decode: env("MLX_HUB_FUSED_DECODE").is_none_or(|v| v != "0"),
        cpu_kernels: mlx::quantization::CpuKernelSettings {
            threads,
            mlx_quantized_matmul: env("MLX_HUB_QMM").is_some_and(|v| v == "mlx"),
        },
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Always absolute: paths derived from it (the database, artifacts, datasets) stay
    /// valid whatever the working directory of a later step.
    pub data_dir: PathBuf,
    /// Which device MLX computes on (applied once at start-up, [`DeviceSetting::apply`]).
    pub device: DeviceSetting,
    pub database_url: String,
    pub host: String,
    pub port: u16,
    /// Folders registered over the API must lie inside this root.
    pub import_root: PathBuf,
    pub max_body_bytes: usize,
    /// Dataset uploads (streamed to disk) are refused past this size.
    pub max_upload_bytes: u64,
    pub api_token: Option<Secret>,
    /// MLflow tracking server to mirror runs and versions to (`http://…`).
    pub mlflow_uri: Option<String>,
    /// Jobs whose estimated peak memory exceeds this are refused at submission.
    pub memory_budget_bytes: Option<u64>,
    /// Origins browsers may call the API from (CORS); empty = none.
    pub cors_origins: Vec<String>,
    /// Time a client has to send its request headers.
    pub header_timeout: std::time::Duration,
    /// Longest wait for the next chunk of a request body (408 past it).
    pub body_timeout: std::time::Duration,
    /// `s3://bucket/prefix`, or `None` for local files under the data dir.
    pub artifact_store: Option<String>,
    /// Bound of the local blob cache of a remote artifact store.
    pub cache_max_bytes: u64,
    /// Wait for a pooled database connection (also how long a request waits
    /// while the database is unreachable before its 503).
    pub db_acquire_timeout: std::time::Duration,
    /// The S3 artifact store's settings (from `artifact_store` and the AWS variables).
    pub s3: Option<crate::artifacts::s3::S3Settings>,
    /// The serving pool (`MLX_HUB_SERVING_*`, `MLX_HUB_PREFIX_CACHE_BYTES`, `MLX_HUB_KEEP_ALIVE`).
    pub serving: crate::serving::ServingConfig,
    /// Hugging Face Hub pulls (the `huggingface_hub` variables: `HF_TOKEN`, `HF_HOME`, …).
    pub hf: crate::hf::HfSettings,
}

/// Values given as flags (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    pub data_dir: Option<PathBuf>,
    pub device: Option<DeviceSetting>,
    pub database_url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub import_root: Option<PathBuf>,
    pub mlflow_uri: Option<String>,
    pub memory_budget_bytes: Option<u64>,
    /// `--cors-origin` (empty: not given).
    pub cors_origins: Vec<String>,
    pub artifact_store: Option<String>,
    pub cache_max_bytes: Option<u64>,
}

/// The TOML file's shape. Unknown keys are refused (typos surface).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    device: Option<DeviceSetting>,
    database_url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    import_root: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    max_upload_bytes: Option<u64>,
    api_token_file: Option<PathBuf>,
    mlflow_uri: Option<String>,
    memory_budget_bytes: Option<u64>,
    cors_origins: Option<Vec<String>>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    artifact_store: Option<String>,
    cache_max_bytes: Option<u64>,
    db_acquire_timeout_secs: Option<f64>,
}

impl HubConfig {
    /// Loads the configuration from flags, the process environment, the file.
    pub fn load(overrides: ConfigOverrides) -> HubResult<HubConfig> {
        Self::load_with_env(overrides, |k| std::env::var(k).ok())
    }

    /// Like [`HubConfig::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        overrides: ConfigOverrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> HubResult<HubConfig> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let data_dir = overrides
            .data_dir
            .clone()
            .or_else(|| env("MLX_HUB_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./storage"));
        let data_dir = absolute(&data_dir)?;
        let file_path = data_dir.join(CONFIG_FILE);
        let file: FileConfig = match std::fs::read_to_string(&file_path) {
            Ok(text) => {
                if text.lines().any(|l| {
                    l.trim_start().starts_with("api_token ")
                        || l.trim_start().starts_with("api_token=")
                }) {
                    return Err(HubError::Config(format!(
                        "{}: `api_token` is not read from the config file; set \
                         MLX_HUB_API_TOKEN or point `api_token_file` at a file holding it",
                        file_path.display()
                    )));
                }
                toml::from_str(&text).map_err(|e| {
                    HubError::Config(format!("{}: {}", file_path.display(), e.message()))
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(e) => {
                return Err(HubError::Config(format!("{}: {e}", file_path.display())));
            }
        };
        if let Some(url) = &file.database_url
            && url_has_password(url)
        {
            return Err(HubError::Config(format!(
                "{}: database_url must not carry a password; set MLX_HUB_DATABASE_URL instead",
                file_path.display()
            )));
        }
        let database_url = overrides
            .database_url
            .clone()
            .or_else(|| env("MLX_HUB_DATABASE_URL"))
            .or(file.database_url)
            .unwrap_or_else(|| crate::store::sqlite_url(&data_dir.join("hub.db")));
        let device = DeviceSetting::from_flag_or_env(overrides.device, env)
            .map_err(HubError::Config)?
            .or(file.device)
            .unwrap_or_default();
        let host = overrides
            .host
            .clone()
            .or_else(|| env("MLX_HUB_HOST"))
            .or(file.host)
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let port = match overrides.port {
            Some(p) => p,
            None => match env("MLX_HUB_PORT") {
                Some(p) => p.parse().map_err(|_| {
                    HubError::Config(format!("MLX_HUB_PORT: {p:?} is not a port number"))
                })?,
                None => file.port.unwrap_or(DEFAULT_PORT),
            },
        };
        let import_root = overrides
            .import_root
            .clone()
            .or_else(|| env("MLX_HUB_IMPORT_ROOT").map(PathBuf::from))
            .or(file.import_root)
            .unwrap_or_else(|| data_dir.join("import"));
        let import_root = absolute(&import_root)?;
        let max_body_bytes = match env("MLX_HUB_MAX_BODY_BYTES") {
            Some(v) => v.parse().map_err(|_| {
                HubError::Config(format!("MLX_HUB_MAX_BODY_BYTES: {v:?} is not a number"))
            })?,
            None => file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        };
        let max_upload_bytes = match env("MLX_HUB_MAX_UPLOAD_BYTES") {
            Some(v) => v.parse().map_err(|_| {
                HubError::Config(format!("MLX_HUB_MAX_UPLOAD_BYTES: {v:?} is not a number"))
            })?,
            None => file.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
        };
        let token_file = env("MLX_HUB_API_TOKEN_FILE")
            .map(PathBuf::from)
            .or(file.api_token_file);
        let api_token = match (env("MLX_HUB_API_TOKEN"), token_file) {
            (Some(t), _) => Some(Secret::new(t.trim())),
            (None, Some(path)) => Some(read_token_file(&path)?),
            (None, None) => None,
        };
        let mlflow_uri = overrides
            .mlflow_uri
            .clone()
            .or_else(|| env("MLX_HUB_MLFLOW_URI"))
            .or_else(|| env("MLFLOW_TRACKING_URI"))
            .or(file.mlflow_uri);
        let memory_budget_bytes = match overrides.memory_budget_bytes {
            Some(b) => Some(b),
            None => match env("MLX_HUB_MEMORY_BUDGET_BYTES") {
                Some(v) => Some(v.parse().map_err(|_| {
                    HubError::Config(format!(
                        "MLX_HUB_MEMORY_BUDGET_BYTES: {v:?} is not a number"
                    ))
                })?),
                None => file.memory_budget_bytes,
            },
        };
        let cors_origins = if !overrides.cors_origins.is_empty() {
            overrides.cors_origins.clone()
        } else if let Some(v) = env("MLX_HUB_CORS_ORIGINS") {
            v.split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect()
        } else {
            file.cors_origins.unwrap_or_default()
        };
        let secs = |var: &str, file_value: Option<u64>, default: std::time::Duration| match env(var)
        {
            Some(v) => v
                .parse::<u64>()
                .map(std::time::Duration::from_secs)
                .map_err(|_| HubError::Config(format!("{var}: {v:?} is not a number of seconds"))),
            None => Ok(file_value
                .map(std::time::Duration::from_secs)
                .unwrap_or(default)),
        };
        let header_timeout = secs(
            "MLX_HUB_HEADER_TIMEOUT_SECS",
            file.header_timeout_secs,
            DEFAULT_HEADER_TIMEOUT,
        )?;
        let body_timeout = secs(
            "MLX_HUB_BODY_TIMEOUT_SECS",
            file.body_timeout_secs,
            DEFAULT_BODY_TIMEOUT,
        )?;
        let artifact_store = overrides
            .artifact_store
            .clone()
            .or_else(|| env("MLX_HUB_ARTIFACT_STORE"))
            .or(file.artifact_store);
        // early and clear: a bad URL or AWS variable fails at start-up
        let s3 = artifact_store
            .as_deref()
            .map(|url| crate::artifacts::s3::S3Settings::from_url(url, env))
            .transpose()
            .map_err(|e| HubError::Config(e.to_string()))?;
        let serving = crate::serving::ServingConfig::from_lookup(env).map_err(HubError::Config)?;
        let hf = crate::hf::HfSettings::from_lookup(env);
        let cache_max_bytes = match overrides.cache_max_bytes {
            Some(b) => b,
            None => match env("MLX_HUB_CACHE_MAX_BYTES") {
                Some(v) => v.parse().map_err(|_| {
                    HubError::Config(format!("MLX_HUB_CACHE_MAX_BYTES: {v:?} is not a number"))
                })?,
                None => file
                    .cache_max_bytes
                    .unwrap_or(crate::artifacts::cache::DEFAULT_CACHE_MAX_BYTES),
            },
        };
        let db_acquire_timeout = match env("MLX_HUB_DB_ACQUIRE_TIMEOUT_SECS") {
            Some(v) => Some(v.trim().parse::<f64>().map_err(|_| {
                HubError::Config(format!(
                    "MLX_HUB_DB_ACQUIRE_TIMEOUT_SECS: {v:?} is not a number of seconds"
                ))
            })?),
            None => file.db_acquire_timeout_secs,
        }
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| std::time::Duration::from_secs_f64(s.min(3600.0)))
        .unwrap_or(crate::store::StoreOptions::default().acquire_timeout);
        let config = HubConfig {
            data_dir,
            device,
            database_url,
            host,
            port,
            import_root,
            max_body_bytes,
            max_upload_bytes,
            api_token,
            mlflow_uri,
            memory_budget_bytes,
            cors_origins,
            header_timeout,
            body_timeout,
            artifact_store,
            cache_max_bytes,
            db_acquire_timeout,
            s3,
            serving,
            hf,
        };
        config.validate()?;
        Ok(config)
    }

    /// Defaults rooted at `data_dir` (tests, embedding).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> HubConfig {
        let data_dir = data_dir.into();
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        HubConfig {
            device: DeviceSetting::Auto,
            database_url: crate::store::sqlite_url(&data_dir.join("hub.db")),
            import_root: data_dir.join("import"),
            data_dir,
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            api_token: None,
            mlflow_uri: None,
            memory_budget_bytes: None,
            cors_origins: Vec::new(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            artifact_store: None,
            cache_max_bytes: crate::artifacts::cache::DEFAULT_CACHE_MAX_BYTES,
            db_acquire_timeout: crate::store::StoreOptions::default().acquire_timeout,
            s3: None,
            serving: crate::serving::ServingConfig::default(),
            // where Hugging Face pulls cache is the user's, as huggingface_hub has it
            hf: crate::hf::HfSettings::from_lookup(|k| std::env::var(k).ok()),
        }
    }

    /// The database pool's options from this configuration.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            acquire_timeout: self.db_acquire_timeout,
            ..Default::default()
        }
    }

    /// Refuses a non-loopback host without a token, an empty token, a body
    /// limit of zero.
    pub fn validate(&self) -> HubResult<()> {
        if let Some(t) = &self.api_token
            && t.expose().len() < 16
        {
            return Err(HubError::Config(
                "the API token must be at least 16 characters".into(),
            ));
        }
        if let Some(uri) = &self.mlflow_uri
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return Err(HubError::Config(format!(
                "mlflow_uri {uri:?}: only an MLflow tracking server (http:// or https://) is supported"
            )));
        }
        if self.cache_max_bytes == 0 {
            return Err(HubError::Config("cache_max_bytes must be positive".into()));
        }
        if self.max_body_bytes == 0 {
            return Err(HubError::Config("max_body_bytes must be positive".into()));
        }
        for origin in &self.cors_origins {
            check_cors_origin(origin)?;
        }
        if self.header_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err(HubError::Config(
                "header and body timeouts must be at least 1 second".into(),
            ));
        }
        if !is_loopback_host(&self.host) && self.api_token.is_none() {
            return Err(HubError::Config(format!(
                "host {} is not a loopback address: set an API token \
                 (MLX_HUB_API_TOKEN or MLX_HUB_API_TOKEN_FILE) to listen on it",
                self.host
            )));
        }
        Ok(())
    }

    /// The database URL with any password replaced by `***` (for logs).
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url)
    }

    /// `host:port`, with IPv6 hosts bracketed.
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A CORS origin: `*`, or `scheme://host[:port]` with no path.
fn check_cors_origin(origin: &str) -> HubResult<()> {
    let bad = |why: &str| {
        Err(HubError::Config(format!(
            "CORS origin {origin:?}: {why} (expected e.g. https://app.example.com or http://localhost:3000)"
        )))
    };
    if origin == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return bad("no scheme");
    };
    if !matches!(scheme, "http" | "https") {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', ',']) || rest.contains("..") {
        return bad("an origin is scheme://host[:port], without a path");
    }
    // what an HTTP header value may hold (visible ASCII, space, tab)
    if !origin
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return bad("not a valid header value");
    }
    Ok(())
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `path` against the working directory, without touching the file system.
fn absolute(path: &Path) -> HubResult<PathBuf> {
    std::path::absolute(path).map_err(|e| HubError::Config(format!("{}: {e}", path.display())))
}

fn read_token_file(path: &Path) -> HubResult<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HubError::Config(format!("API token file {}: {e}", path.display())))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(HubError::Config(format!(
            "API token file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(t))
}

fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some((start, start + at))
}

fn url_has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|(s, e)| url[s..e].contains(':'))
}

/// Replaces the password of a URL's user info with `***`.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some((s, e)) => match url[s..e].find(':') {
            Some(colon) => format!("{}***{}", &url[..s + colon + 1], &url[e..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://./a.db"), "sqlite://./a.db");
    }

    #[test]
    fn precedence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "port = 9000\nhost = \"127.0.0.2\"\n",
        )
        .unwrap();
        let o = ConfigOverrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let c = HubConfig::load_with_env(o.clone(), |_| None).unwrap();
        assert_eq!((c.port, c.host.as_str()), (9000, "127.0.0.2"));
        let c = HubConfig::load_with_env(o.clone(), |k| {
            (k == "MLX_HUB_PORT").then(|| "9001".to_string())
        })
        .unwrap();
        assert_eq!(c.port, 9001);
        let c = HubConfig::load_with_env(
            ConfigOverrides {
                port: Some(9002),
                ..o.clone()
            },
            |k| (k == "MLX_HUB_PORT").then(|| "9001".to_string()),
        )
        .unwrap();
        assert_eq!(c.port, 9002);
        assert!(c.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn runtime_settings_from_env() {
        let defaults = runtime_settings(|_| None);
        assert_eq!(defaults, engine::runtime::RuntimeSettings::default());
        let vars = [
            ("MLX_HUB_FUSED_DECODE", "0"),
            ("MLX_HUB_CPU_THREADS", " 3x"),
            ("MLX_HUB_QMM", "mlx"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let s = runtime_settings(env);
        assert!(!s.fused_decode);
        assert_eq!(s.cpu_kernels.threads, Some(3));
        assert!(s.cpu_kernels.mlx_quantized_matmul);
        let s = runtime_settings(|k| (k == "MLX_HUB_CPU_THREADS").then(|| "0".to_string()));
        assert_eq!(s.cpu_kernels.threads, None);
        let s = runtime_settings(|k| (k == "MLX_HUB_FUSED_DECODE").then(|| "1".to_string()));
        assert!(s.fused_decode);
    }

    #[test]
    fn device_precedence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "device = \"cpu\"\n").unwrap();
        let o = ConfigOverrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let c = HubConfig::load_with_env(o.clone(), |_| None).unwrap();
        assert_eq!(c.device, DeviceSetting::Cpu);
        let env = |k: &str| (k == "MLX_HUB_DEVICE").then(|| "gpu".to_string());
        assert_eq!(
            HubConfig::load_with_env(o.clone(), env).unwrap().device,
            DeviceSetting::Gpu
        );
        let flag = ConfigOverrides {
            device: Some(DeviceSetting::Auto),
            ..o.clone()
        };
        assert_eq!(
            HubConfig::load_with_env(flag, env).unwrap().device,
            DeviceSetting::Auto
        );
        let err =
            HubConfig::load_with_env(o, |k| (k == "MLX_HUB_DEVICE").then(|| "tpu".to_string()))
                .unwrap_err();
        assert!(err.to_string().contains("MLX_HUB_DEVICE"), "{err}");
    }

    /// The default `./storage` (or any relative data dir) becomes absolute at load, so
    /// every path derived from it names the same place from any working directory.
    #[test]
    fn relative_data_dir_is_made_absolute() {
        let c = HubConfig::load_with_env(ConfigOverrides::default(), |_| None).unwrap();
        assert!(c.data_dir.is_absolute(), "{}", c.data_dir.display());
        assert!(c.data_dir.ends_with("storage"));
        assert!(c.import_root.is_absolute());
        let cwd = std::env::current_dir().unwrap();
        assert!(c.data_dir.starts_with(&cwd));
        assert!(c.database_url.contains(&*cwd.to_string_lossy()));
    }

    #[test]
    fn token_rules() {
        let dir = tempfile::tempdir().unwrap();
        let o = ConfigOverrides {
            data_dir: Some(dir.path().into()),
            host: Some("0.0.0.0".into()),
            ..Default::default()
        };
        let err = HubConfig::load_with_env(o.clone(), |_| None).unwrap_err();
        assert!(err.to_string().contains("API token"), "{err}");
        let c = HubConfig::load_with_env(o, |k| {
            (k == "MLX_HUB_API_TOKEN").then(|| "0123456789abcdef-token".to_string())
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        std::fs::write(dir.path().join(CONFIG_FILE), "api_token = \"x\"\n").unwrap();
        let err = HubConfig::load_with_env(
            ConfigOverrides {
                data_dir: Some(dir.path().into()),
                ..Default::default()
            },
            |_| None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("MLX_HUB_API_TOKEN"), "{err}");
    }
}
