//! Which process owns an in-flight registration, and whether it still lives.
//!
//! Each hub process holds an exclusive lock on its own
//! `<data-dir>/owners/<pid>-<uuid>.lock` for as long as it runs, and records
//! `<host>/<pid>-<uuid>` as the owner of the versions it registers. At
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

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| "localhost".into())
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
            id: format!("{}/{name}", host_name()),
            _lock: lock,
        })
    }

    /// `<host>/<pid>-<uuid>`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Whether the process that recorded `owner` still runs.
pub fn owner_state(data_dir: &Path, owner: &str) -> OwnerState {
    let Some((host, name)) = owner.split_once('/') else {
        return OwnerState::Unknown;
    };
    if host != host_name() || name.is_empty() || name.contains(['/', '.']) {
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
        // a staging file may be between its creation and its lock
        if path.extension().is_some_and(|x| x == "new")
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
