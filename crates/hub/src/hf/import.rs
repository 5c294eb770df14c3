//! From a pulled snapshot (or any `.gguf` file) to a registered model
//! version. An MLX snapshot is registered linked: the version records the
//! hashes and points at `snapshots/<commit>`, which stays shared with mlx-lm.
//! A GGUF file is converted once by the engine into
//! `<data-dir>/imports/gguf-<sha256 prefix>/` and that folder is linked.
//! A pull whose snapshot (or converted folder) is already a ready version of
//! the model returns that version instead of adding a copy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::download::{Progress, Snapshot, pull_snapshot};
use super::{HfError, HfSettings, PullOptions, RepoRef};
use crate::error::{HubError, HubResult};
use crate::registry::RegisterFolder;
use crate::service::Hub;
use crate::store::{ModelVersion, VersionStatus};

/// `POST /api/models/pull` and `mlx-hub models pull`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullModelRequest {
    /// `org/name`, optionally `@revision` (branch, tag or commit).
    pub repo: String,
    /// The revision, when not given after `@` (default `main`).
    #[serde(default)]
    pub revision: Option<String>,
    /// The local model name (default: the repository id).
    #[serde(default)]
    pub name: Option<String>,
    /// The `.gguf` file to import from a GGUF repository.
    #[serde(default)]
    pub file: Option<String>,
    /// Point this alias at the version.
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub model: String,
    pub version: ModelVersion,
    /// The version existed already (same snapshot): nothing registered.
    pub reused_version: bool,
    pub snapshot: Snapshot,
}

impl PullModelRequest {
    pub fn repo_ref(&self) -> Result<RepoRef, HfError> {
        let mut r = RepoRef::parse(&self.repo)?;
        if let Some(rev) = &self.revision {
            if self.repo.contains('@') && rev != &r.revision {
                return Err(HfError::InvalidRepoId {
                    given: self.repo.clone(),
                    why: format!("it names revision {:?} and revision is {rev:?}", r.revision),
                });
            }
            r = RepoRef::parse(&format!("{}@{rev}", r.repo))?;
        }
        Ok(r)
    }
}

impl Hub {
    /// Pulls the repository into the Hugging Face cache and registers it.
    pub async fn pull_model(
        &self,
        req: &PullModelRequest,
        settings: HfSettings,
        progress: Option<Progress>,
    ) -> HubResult<PullReport> {
        let repo_ref = req.repo_ref()?;
        let name = req.name.clone().unwrap_or_else(|| repo_ref.repo.clone());
        if let Some(a) = &req.alias {
            crate::store::check_alias(a)?;
        }
        let cache_dir = settings.cache_dir.clone();
        let opts = PullOptions {
            settings,
            gguf_file: req.file.clone(),
            progress,
        };
        let snapshot = pull_snapshot(&repo_ref, &opts).await?;
        let description = req.description.clone().unwrap_or_else(|| {
            format!(
                "pulled from the Hugging Face Hub: {}@{}",
                repo_ref.repo, snapshot.commit
            )
        });
        let (version, reused_version) = match &snapshot.gguf {
            Some(gguf) => {
                self.import_gguf(
                    &name,
                    gguf,
                    &engine::convert::ConvertOptions::default(),
                    &description,
                    req.alias.clone(),
                )
                .await?
            }
            None => {
                self.register_linked(
                    &name,
                    &cache_dir,
                    &snapshot.dir,
                    &description,
                    req.alias.clone(),
                )
                .await?
            }
        };
        Ok(PullReport {
            model: name,
            version,
            reused_version,
            snapshot,
        })
    }

    /// Converts `gguf` with the engine (once per file content and options)
    /// and registers the result linked. Returns the version and whether it
    /// existed.
    pub async fn import_gguf(
        &self,
        name: &str,
        gguf: &Path,
        options: &engine::convert::ConvertOptions,
        description: &str,
        alias: Option<String>,
    ) -> HubResult<(ModelVersion, bool)> {
        let imports = self.config.data_dir.join("imports");
        std::fs::create_dir_all(&imports).map_err(|e| HfError::io(&imports, e))?;
        let src = gguf.to_path_buf();
        let imports2 = imports.clone();
        let options = options.clone();
        let out: PathBuf =
            tokio::task::spawn_blocking(move || convert_once(&src, &options, &imports2))
                .await
                .map_err(|e| HubError::Internal(format!("GGUF import task failed: {e}")))??;
        self.register_linked(name, &imports, &out, description, alias)
            .await
    }

    /// Registers `dir` (inside `root`) linked, unless a ready version of
    /// `name` was registered from that folder already.
    async fn register_linked(
        &self,
        name: &str,
        root: &Path,
        dir: &Path,
        description: &str,
        alias: Option<String>,
    ) -> HubResult<(ModelVersion, bool)> {
        let canonical = dir.canonicalize().map_err(|e| HfError::io(dir, e))?;
        if let Some(v) = self
            .version_from_source(name, &canonical.display().to_string())
            .await?
        {
            if let Some(a) = &alias {
                let v2 = self.store.set_alias(v.model_id, a, v.id).await?;
                let _ = v2;
                return Ok((self.store.get_version(v.id).await?, true));
            }
            return Ok((v, true));
        }
        let req = RegisterFolder {
            path: canonical,
            link: true,
            description: description.to_string(),
            tags: Vec::new(),
            alias,
        };
        let v = self
            .register_model_folder_creating(name, &req, root)
            .await?;
        Ok((v, false))
    }

    /// The newest ready version of `name` registered from `source`.
    pub async fn version_from_source(
        &self,
        name: &str,
        source: &str,
    ) -> HubResult<Option<ModelVersion>> {
        let model = match self.store.get_model_by_name(name).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let versions = self
            .store
            .list_versions(model.id, Some(VersionStatus::Ready))
            .await?;
        Ok(versions
            .into_iter()
            .filter(|v| v.lineage.source.as_deref() == Some(source))
            .max_by_key(|v| v.number))
    }
}

/// `<imports>/gguf-<sha256[..16]>[-options]`, converted from `gguf` unless
/// already there (converted into a temporary folder, then renamed: never half).
fn convert_once(
    gguf: &Path,
    options: &engine::convert::ConvertOptions,
    imports: &Path,
) -> HubResult<PathBuf> {
    let (sha, _) = crate::artifacts::sha256_file(gguf)?;
    // other options, another folder
    let tag = if *options == engine::convert::ConvertOptions::default() {
        String::new()
    } else {
        let h = crate::artifacts::sha256_bytes(format!("{options:?}").as_bytes());
        format!("-{}", &h[..8])
    };
    let out = imports.join(format!("gguf-{}{tag}", &sha[..16]));
    if out.join("config.json").is_file() {
        return Ok(out);
    }
    let work = tempfile::Builder::new()
        .prefix(".gguf-import-")
        .tempdir_in(imports)
        .map_err(|e| HfError::io(imports, e))?;
    let tmp = work.path().join("model");
    engine::convert::convert_gguf(gguf, &tmp, options).map_err(|e| {
        HubError::InvalidModelFolder {
            path: gguf.to_path_buf(),
            message: format!("GGUF import failed: {e}"),
        }
    })?;
    match std::fs::rename(&tmp, &out) {
        Ok(()) => Ok(out),
        // converted concurrently by another pull
        Err(_) if out.join("config.json").is_file() => Ok(out),
        Err(e) => Err(HfError::io(&out, e).into()),
    }
}
