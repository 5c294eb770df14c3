//! THE way a version's files land in a folder (serving, training, evaluation):
//! each file resolved — a blob of the artifact store (a remote store's blob
//! fetched into its cache and pinned until linked), or the registered folder's
//! own file for a linked version (checked against its recorded size) — then
//! hard-linked (or copied) into a temporary folder beside `dir`, which is renamed
//! into place with a `.complete` marker: a folder is either whole or absent.

use std::path::{Path, PathBuf};

use super::{ArtifactStore, Artifacts, LocalBlob};
use crate::error::{HubError, HubResult};
use crate::store::{Entity, ModelVersion, Store, StoreError, VersionFile, check_relative_path};

/// Marks a folder whose checkout finished.
const COMPLETE: &str = ".complete";

/// Checks `version`'s files out into `dir` (nothing to link when it is already
/// complete) and returns the version's files, so callers need not read them again.
pub async fn checkout_version(
    store: &Store,
    artifacts: &Artifacts,
    version: &ModelVersion,
    dir: &Path,
) -> HubResult<Vec<VersionFile>> {
    let files = store.version_files(version.id).await?;
    if dir.join(COMPLETE).is_file() {
        return Ok(files);
    }
    let linked_root = version
        .artifact_uri
        .as_deref()
        .and_then(|u| u.strip_prefix("file://"))
        .map(PathBuf::from);
    // resolved (and pinned) before the blocking part links them
    let mut sources = Vec::with_capacity(files.len());
    let mut pins: Vec<LocalBlob> = Vec::new();
    for f in &files {
        check_relative_path(&f.path)?;
        let src = match &linked_root {
            Some(root) => Source::Linked(root.join(&f.path)),
            None => {
                let blob = artifacts.local_blob(&f.sha256).await?.ok_or_else(|| {
                    HubError::from(StoreError::not_found(Entity::Artifact, &f.sha256))
                })?;
                let path = blob.path.clone();
                pins.push(blob);
                Source::Blob(path)
            }
        };
        sources.push((f.clone(), src));
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || link_all(&dir, &sources))
        .await
        .map_err(|e| HubError::Internal(format!("checkout task failed: {e}")))??;
    drop(pins);
    Ok(files)
}

enum Source {
    Blob(PathBuf),
    /// A linked version's file, in the folder it was registered from.
    Linked(PathBuf),
}

fn link_all(dir: &Path, files: &[(VersionFile, Source)]) -> HubResult<()> {
    let parent = dir.parent().ok_or_else(|| {
        HubError::Internal(format!("checkout folder {} has no parent", dir.display()))
    })?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.tmp-",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("version")
        ))
        .tempdir_in(parent)?;
    for (f, src) in files {
        let dest = tmp.path().join(&f.path);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        let src = match src {
            Source::Blob(p) => p.clone(),
            Source::Linked(p) => {
                let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX);
                if len != f.size_bytes as u64 {
                    return Err(HubError::Internal(format!(
                        "{} changed since it was registered (size {len}, recorded {})",
                        p.display(),
                        f.size_bytes
                    )));
                }
                // the HF cache's files are relative symlinks: link their targets
                std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())
            }
        };
        if std::fs::hard_link(&src, &dest).is_err() {
            std::fs::copy(&src, &dest)?;
        }
    }
    std::fs::write(tmp.path().join(COMPLETE), b"")?;
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // another checkout of the same version won the race
        Err(_) if dir.join(COMPLETE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(_) => {
            // a stale, incomplete folder: replace it
            std::fs::remove_dir_all(dir)?;
            std::fs::rename(&tmp, dir)?;
            Ok(())
        }
    }
}

/// The version whose weights `v` runs on, and `v` itself when it is an
/// adapter (which runs over its base version's weights).
pub async fn weights_and_adapter(
    store: &Store,
    v: &ModelVersion,
) -> HubResult<(ModelVersion, Option<ModelVersion>)> {
    if v.format != crate::store::ADAPTER_FORMAT {
        return Ok((v.clone(), None));
    }
    let base_id = v.lineage.base_version_id.ok_or_else(|| {
        HubError::invalid(
            "model",
            format!("adapter version {} records no base version", v.number),
        )
    })?;
    Ok((store.get_version(base_id).await?, Some(v.clone())))
}
