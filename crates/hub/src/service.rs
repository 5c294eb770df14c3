//! [`Hub`]: the service façade the HTTP API and the CLI share: the metadata
//! store, the artifact store and the configuration.

use std::path::PathBuf;
use std::sync::Arc;

use crate::artifacts::{Artifacts, LocalArtifactStore};
use crate::config::HubConfig;
use crate::error::{HubError, HubResult};
use crate::store::{Store, StoreOptions};

/// The hub's services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    pub store: Store,
    pub artifacts: Artifacts,
    pub config: Arc<HubConfig>,
    /// Loaded models and their workers (inference).
    pub serving: crate::serving::Pool,
    /// This process as the owner of the registrations it runs.
    pub owner: Arc<crate::owner::ProcessOwner>,
}

impl Hub {
    /// Opens the hub described by `config`: creates the data directory,
    /// connects to the database, applies migrations, opens the artifact store
    /// (which removes temporary files left by dead processes).
    pub async fn open(config: HubConfig) -> HubResult<Hub> {
        let options = config.store_options();
        Self::open_with(config, options).await
    }

    pub async fn open_with(config: HubConfig, options: StoreOptions) -> HubResult<Hub> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            HubError::Config(format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store = Store::connect_with(&config.database_url, options).await?;
        store.migrate().await?;
        let artifacts =
            Artifacts::open_with(config.s3.clone(), &config.data_dir, config.cache_max_bytes)
                .await?;
        Self::with_artifacts(config, store, artifacts)
    }

    /// A hub over an already-connected (and migrated) store, with local
    /// artifacts (an `s3://` artifact store needs [`Hub::open`] or
    /// [`Hub::with_artifacts`]).
    pub fn with_store(config: HubConfig, store: Store) -> HubResult<Hub> {
        if let Some(url) = &config.artifact_store {
            return Err(HubError::Config(format!(
                "artifact store {url}: open the hub with Hub::open"
            )));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            HubError::Config(format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let artifacts = LocalArtifactStore::open(&config.data_dir)?.into();
        Self::with_artifacts(config, store, artifacts)
    }

    /// A hub over an already-connected (and migrated) store and an opened
    /// artifact store.
    pub fn with_artifacts(config: HubConfig, store: Store, artifacts: Artifacts) -> HubResult<Hub> {
        let owner = crate::owner::ProcessOwner::acquire(&config.data_dir).map_err(|e| {
            HubError::Config(format!(
                "cannot lock this process's owner file in {}: {e}",
                config.data_dir.display()
            ))
        })?;
        std::fs::create_dir_all(datasets_dir(&config))
            .map_err(|e| HubError::Config(format!("cannot create the datasets directory: {e}")))?;
        let serving = crate::serving::Pool::new(
            store.clone(),
            artifacts.clone(),
            &config.data_dir,
            config.serving.clone(),
        );
        Ok(Hub {
            store,
            artifacts,
            config: Arc::new(config),
            serving,
            owner: Arc::new(owner),
        })
    }

    /// The import root, created when missing (folders registered over HTTP
    /// must lie inside it).
    pub fn import_root(&self) -> HubResult<PathBuf> {
        let root = &self.config.import_root;
        std::fs::create_dir_all(root).map_err(|e| {
            HubError::Config(format!(
                "cannot create the import root {}: {e}",
                root.display()
            ))
        })?;
        Ok(root.clone())
    }

    /// Where registered datasets are copied (`<data-dir>/datasets/<hash>/`).
    pub fn datasets_dir(&self) -> PathBuf {
        datasets_dir(&self.config)
    }
}

fn datasets_dir(config: &HubConfig) -> PathBuf {
    config.data_dir.join("datasets")
}
