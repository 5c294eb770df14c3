//! Which process owns an in-flight registration, and whether it still lives.
//!
//! Each hub process holds an exclusive lock on its own
//! `<data-dir>/owners/<pid>-<uuid>.lock` for as long as it runs, and records
//! `<host>/<data-dir id>/<pid>-<uuid>` as the owner of the versions it
//! registers (the data directory's id, kept in `owners/dir-id`, because lock
//! files are only visible to processes sharing that directory: processes on
//! one host with their own data directories cannot judge each other). At
//! start-up, recovery fails a `registering` version at once when its owner is
//! a dead process of this host (its lock file is gone or can be locked), and
//! never touches one whose owner's lock is held (a live process, e.g. a CLI
//! registration running next to the server). Owners on another host are
//! unknown: their versions wait for the stale window.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

const OWNERS_DIR: &str = "owners";
const LOCK_SUFFIX: &str = ".lock";
const DIR_ID_FILE: &str = "dir-id";

/// This process, as an owner of registrations. Dropping it frees the lock.
#[derive(Debug)]
pub struct ProcessOwner {
    id: String,
    _lock: File,
}

/// What the lock file says about an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    Alive,
    Dead,
    /// Another host's process (or an id this version of the hub can't read).
    Unknown,
}

/// The id of the data directory's owners folder, created on first use
/// (written to a temporary file and renamed, so readers see all or nothing).
fn dir_id(dir: &Path, create: bool) -> Option<String> {
    let path = dir.join(DIR_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        return (!id.is_empty() && !id.contains(['/', '.'])).then_some(id);
    }
    if !create {
        return None;
    }
    let staging = dir.join(format!("{DIR_ID_FILE}.{}.tmp", std::process::id()));
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&staging, &id).ok()?;
    if let Ok(f) = File::open(&staging) {
        let _ = f.sync_all();
    }
    // another process may have won the race: its id stands
    if std::fs::hard_link(&staging, &path).is_err() && !path.exists() {
        let _ = std::fs::remove_file(&staging);
        return None;
    }
    let _ = std::fs::remove_file(&staging);
    dir_id(dir, false)
}

fn lock_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join(OWNERS_DIR)
        .join(format!("{name}{LOCK_SUFFIX}"))
}

impl ProcessOwner {
    /// Takes this process's lock under `data_dir`, removing the lock files of
    /// dead processes first.
    pub fn acquire(data_dir: &Path) -> io::Result<ProcessOwner> {
        let dir = data_dir.join(OWNERS_DIR);
        std::fs::create_dir_all(&dir)?;
        remove_dead(&dir);
        let dir_id = dir_id(&dir, true).ok_or_else(|| {
            io::Error::other(format!("cannot create {}", dir.join(DIR_ID_FILE).display()))
        })?;
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        // Locked under a name the clean-up ignores, then renamed: a lock file
        // is never seen unlocked while its process lives.
        let staging = dir.join(format!("{name}.new"));
        let lock = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&staging)?;
        lock.lock()?;
        std::fs::rename(&staging, lock_path(data_dir, &name))?;
        Ok(ProcessOwner {
            id: format!("{}/{dir_id}/{name}", crate::host::hostname()),
            _lock: lock,
        })
    }

    /// `<host>/<data-dir id>/<pid>-<uuid>`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Whether the process that recorded `owner` still runs.
pub fn owner_state(data_dir: &Path, owner: &str) -> OwnerState {
    let mut parts = owner.splitn(3, '/');
    let (Some(host), Some(dir), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return OwnerState::Unknown;
    };
    if host != crate::host::hostname() || name.is_empty() || name.contains(['/', '.']) {
        return OwnerState::Unknown;
    }
    // another data directory's processes (or one we can't identify)
    if dir_id(&data_dir.join(OWNERS_DIR), false).as_deref() != Some(dir) {
        return OwnerState::Unknown;
    }
    match OpenOptions::new()
        .write(true)
        .open(lock_path(data_dir, name))
    {
        // A lock we can take is nobody's; ours drops with the file.
        Ok(f) if f.try_lock().is_ok() => OwnerState::Dead,
        Ok(_) => OwnerState::Alive,
        Err(e) if e.kind() == io::ErrorKind::NotFound => OwnerState::Dead,
        Err(_) => OwnerState::Unknown,
    }
}

/// Removes the lock files of dead processes (and the staging files of
/// processes that died between creating and renaming theirs).
fn remove_dead(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        if e.file_name() == DIR_ID_FILE {
            continue;
        }
        // a staging file may be between its creation and its lock
        if path.extension().is_some_and(|x| x == "new" || x == "tmp")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() < 60)
        {
            continue;
        }
        let Ok(f) = OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if f.try_lock().is_ok() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
