//! The flags every command with a data directory shares ([`HubArgs`], global:
//! accepted anywhere after the command, e.g. `models register NAME DIR
//! --data-dir D`) and the helpers local commands use: they work on the
//! database directly, no server needed.

use std::path::PathBuf;

use hub::{ConfigOverrides, Hub, HubConfig};

/// Where the hub's data lives (flags > `MLX_HUB_*` > `mlx-hub.toml` > defaults).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HubArgs {
    /// Data directory (database, artifacts, datasets) [env: MLX_HUB_DATA_DIR] [default: ./storage]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://… or postgres://… [env: MLX_HUB_DATABASE_URL]
    /// [default: sqlite://<data-dir>/hub.db]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Artifact store: s3://bucket/prefix (credentials, region and endpoint from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL,
    /// AWS_ALLOW_HTTP) [env: MLX_HUB_ARTIFACT_STORE] [default: files under the data dir]
    #[arg(long, global = true, value_name = "URL")]
    pub artifact_store: Option<String>,
    /// Bound of this machine's cache of an S3 artifact store, in bytes
    /// [env: MLX_HUB_CACHE_MAX_BYTES] [default: 21474836480 (20 GiB)]
    #[arg(long, global = true, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_max_bytes: Option<u64>,
}

impl HubArgs {
    pub fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            data_dir: self.data_dir.clone(),
            device: super::device_flag(),
            database_url: self.database_url.clone(),
            artifact_store: self.artifact_store.clone(),
            cache_max_bytes: self.cache_max_bytes,
            ..ConfigOverrides::default()
        }
    }

    /// Loads the configuration (host checks do not apply to local commands).
    pub fn config(&self) -> anyhow::Result<HubConfig> {
        load_config(ConfigOverrides {
            host: Some(hub::config::DEFAULT_HOST.to_string()),
            ..self.overrides()
        })
    }
}

/// Loads the configuration and makes its device MLX's default (the data dir's
/// `mlx-hub.toml` may name one that `main` could not know).
pub fn load_config(overrides: ConfigOverrides) -> anyhow::Result<HubConfig> {
    let config = HubConfig::load(overrides)?;
    config.device.apply().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Opens the hub (migrating) for a local command.
pub async fn open_hub(args: &HubArgs) -> anyhow::Result<Hub> {
    Ok(Hub::open(args.config()?).await?)
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
