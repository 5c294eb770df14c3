//! The local read-through cache of a remote artifact store:
//! `<data_dir>/cache/blobs/<sha[0..2]>/<sha>`, bounded in bytes.
//!
//! - A blob enters the cache whole: it is downloaded into the store's private
//!   temp folder (same file system) while hashed, checked, fsynced, made
//!   read-only and renamed (without replacing) into place.
//! - A user of a cached blob *pins* it: it holds a shared `flock` on the file
//!   for as long as it needs the name (materialising, reading). `flock`s
//!   conflict between open files even within one process, so the same lock
//!   protects against evictors in this and in other processes sharing the
//!   directory.
//! - Eviction (after every insert, when the total exceeds the bound) removes
//!   the least recently used blobs first, by access time (set explicitly at
//!   every pin, so `noatime` mounts do not matter), skipping pinned ones: it
//!   takes an exclusive `flock` without waiting and unlinks only if it got it.
//!   One evictor at a time (`.evict.lock`); the others skip their pass.
//!
//! A served or trained model hard-links its files out of the cache (or copies
//! them), so evicting a blob never pulls the data from under a mapped model:
//! the cache only forgets its own name for it.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::{StoreError, StoreResult};

/// Default bound of the cache: 20 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 20 << 30;

/// The blob cache of one machine (shared by its processes).
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
    max_bytes: u64,
}

/// A cached blob, pinned (not evictable) while this value lives.
#[derive(Debug)]
pub struct PinnedBlob {
    pub path: PathBuf,
    /// Open, with a shared lock held: the pin.
    file: File,
}

impl PinnedBlob {
    /// The pinned file, opened for reading (a new handle).
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

/// What an eviction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eviction {
    pub evicted: Vec<String>,
    pub freed_bytes: u64,
    /// Bytes left in the cache after the pass.
    pub remaining_bytes: u64,
    /// Blobs that would have gone but were pinned.
    pub skipped_pinned: usize,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

impl BlobCache {
    /// Opens (creating) the cache at `root` (usually `<data_dir>/cache/blobs`).
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> StoreResult<BlobCache> {
        let root: PathBuf = root.into();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let root = root.canonicalize().map_err(io_err(&root))?;
        Ok(BlobCache { root, max_bytes })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where `sha` is (or would be) cached.
    pub fn path(&self, sha: &str) -> PathBuf {
        self.root.join(&sha[..2]).join(sha)
    }

    /// Pins `sha` if it is cached (and marks it used now).
    pub fn pin(&self, sha: &str) -> StoreResult<Option<PinnedBlob>> {
        let path = self.path(sha);
        loop {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            f.lock_shared().map_err(io_err(&path))?;
            // an evictor may have unlinked the name between our open and lock
            let held = f.metadata().map_err(io_err(&path))?;
            match fs::metadata(&path) {
                Ok(m) if same_file(&m, &held) => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io(&path, e)),
            }
            let now = SystemTime::now();
            if let Err(e) = f.set_times(FileTimes::new().set_accessed(now)) {
                tracing::debug!(path = %path.display(), error = %e, "cannot set the access time");
            }
            return Ok(Some(PinnedBlob { path, file: f }));
        }
    }

    /// Moves a fully written, verified temp file into the cache as `sha`
    /// (no-op if another writer got there first) and pins it.
    pub fn insert(&self, sha: &str, tmp: tempfile::NamedTempFile) -> StoreResult<PinnedBlob> {
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        super::set_read_only(tmp.path())?;
        let path = self.path(sha);
        let shard = path.parent().expect("cache path has a parent");
        super::ensure_dir(shard)?;
        match tmp.persist_noclobber(&path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(&path, e.error)),
        }
        super::sync_dir(shard)?;
        // a concurrent evictor could only take it if it is the oldest entry and
        // unpinned; then fetch again
        self.pin(sha)?.ok_or_else(|| {
            StoreError::io(
                &path,
                io::Error::other("evicted right after download; the cache is too small"),
            )
        })
    }

    /// Every cached blob: (sha, size, last access).
    fn entries(&self) -> StoreResult<Vec<(String, u64, SystemTime)>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let shard = shard.map_err(io_err(&self.root))?.path();
            if !shard.is_dir() {
                continue;
            }
            let rd = match fs::read_dir(&shard) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&shard, e)),
            };
            for f in rd {
                let f = f.map_err(io_err(&shard))?;
                let Some(name) = f.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if super::check_sha(&name).is_err() {
                    continue;
                }
                let Ok(m) = f.metadata() else { continue };
                let used = m
                    .accessed()
                    .or_else(|_| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((name, m.len(), used));
            }
        }
        Ok(out)
    }

    /// Cached blobs (sha256s, sorted).
    pub fn list(&self) -> StoreResult<Vec<String>> {
        let mut v: Vec<String> = self.entries()?.into_iter().map(|e| e.0).collect();
        v.sort();
        Ok(v)
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> StoreResult<u64> {
        Ok(self.entries()?.iter().map(|e| e.1).sum())
    }

    /// Drops `sha` from the cache unless it is pinned. True if removed.
    pub fn remove(&self, sha: &str) -> StoreResult<bool> {
        let path = self.path(sha);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if f.try_lock().is_err() {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Drops `sha` from the cache even if pinned (the blob was deleted from
    /// the store; holders keep their open files and links).
    pub fn forget(&self, sha: &str) -> StoreResult<()> {
        let path = self.path(sha);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Evicts least recently used, unpinned blobs until the cache holds at
    /// most its bound. Skips the pass if another process is evicting.
    pub fn evict(&self) -> StoreResult<Eviction> {
        let lock_path = self.root.join(".evict.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Ok(Eviction::default());
        }
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut out = Eviction::default();
        if total > self.max_bytes {
            entries.sort_by_key(|e| e.2);
            for (sha, size, _) in entries {
                if total <= self.max_bytes {
                    break;
                }
                if self.remove(&sha)? {
                    total -= size;
                    out.freed_bytes += size;
                    out.evicted.push(sha);
                } else {
                    out.skipped_pinned += 1;
                }
            }
            if total > self.max_bytes {
                tracing::warn!(
                    cached_bytes = total,
                    max_bytes = self.max_bytes,
                    "the blob cache is over its bound: the rest is in use"
                );
            }
        }
        out.remaining_bytes = total;
        Ok(out)
    }
}
