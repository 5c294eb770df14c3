//! Start-up recovery: versions left `registering` by a process that died
//! mid-registration are marked `failed`, and blobs only they referenced are
//! deleted (temporary files of dead processes are removed when the artifact
//! store opens).
//!
//! A version is stale when the job that registers it is no longer running
//! (its worker died; the job was re-queued or failed), or, for a version not
//! made by a job (an API or CLI registration), when the process that owns it
//! (see [`crate::owner`]) is dead — at once, without waiting. A version whose
//! owner lives is never touched; one whose owner can't be checked (another
//! host, or recorded by an older hub) is stale when it has not changed for
//! `stale_after`: another live process may still be copying files.

use std::time::Duration;

use serde::Serialize;

use crate::error::HubResult;
use crate::owner::{OwnerState, owner_state};
use crate::service::Hub;
use crate::store::{JobState, VersionStatus};

/// Versions registered by hand may take this long before being called stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);

/// What [`Hub::recover_stale_registrations`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Versions moved `registering → failed`.
    pub failed_versions: Vec<i64>,
    /// Blobs deleted because no live version referenced them any more.
    pub deleted_blobs: usize,
}

impl Hub {
    pub async fn recover_stale_registrations(&self, stale_after: Duration) -> HubResult<Recovery> {
        let mut out = Recovery::default();
        let now = self.store.now_ms();
        for id in self.store.registering_version_ids().await? {
            let v = self.store.get_version(id).await?;
            if v.status != VersionStatus::Registering {
                continue;
            }
            let stale = match v.lineage.job_id {
                Some(job_id) => match self.store.get_job(job_id).await {
                    Ok(job) => job.state != JobState::Running,
                    Err(e) if e.is_not_found() => true,
                    Err(e) => return Err(e.into()),
                },
                None => {
                    let owner = self.store.registration_owner(id).await?;
                    match owner.map(|o| owner_state(&self.config.data_dir, &o)) {
                        Some(OwnerState::Dead) => true,
                        Some(OwnerState::Alive) => false,
                        Some(OwnerState::Unknown) | None => {
                            now - v.updated_at_ms > stale_after.as_millis() as i64
                        }
                    }
                }
            };
            if !stale {
                continue;
            }
            let files = self.store.version_files(id).await?;
            match self
                .store
                .mark_version_failed(id, "registration interrupted: found unfinished at start-up")
                .await
            {
                Ok(_) => {}
                // Finished (or failed) by its owner meanwhile.
                Err(crate::store::StoreError::IllegalTransition { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            tracing::warn!(
                version_id = id,
                "version left registering by a dead process: failed"
            );
            out.failed_versions.push(id);
            for f in files {
                if self.store.live_references(&f.sha256).await? == 0 {
                    let _ = self.store.delete_artifact_record(&f.sha256).await;
                    if crate::artifacts::ArtifactStore::delete(&self.artifacts, &f.sha256)
                        .await
                        .is_ok()
                    {
                        out.deleted_blobs += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}
