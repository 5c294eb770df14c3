//! Content-addressed artifact storage.
//!
//! Layout under the storage root (`<data_dir>/storage`):
//! `active/<sha[0..2]>/<sha>`, `archive/<sha[0..2]>/<sha>`, and `tmp/` for
//! writes in progress. A blob is written to a temporary file on the same file
//! system, fsynced, made read-only, renamed (without replacing) to its final
//! name and the directory fsynced: a reader sees the whole file or nothing,
//! and identical content is stored once.
//!
//! Each process writes its temporary files in its own `tmp/<pid>-<n>/`
//! folder, holding an exclusive lock on `tmp/<pid>-<n>/.lock` while it lives.
//! At start-up, folders whose lock can be taken belong to dead processes and
//! are removed (crash clean-up), while those of live processes sharing the
//! data directory are left alone.
//!
//! [`Artifacts`] is the store the hub uses: this local store, or the
//! S3-compatible one ([`s3::S3ArtifactStore`], `--artifact-store s3://…`) with
//! its local read-through cache ([`cache::BlobCache`]).

pub mod cache;
pub mod checkout;
pub mod s3;

use crate::store::Entity;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{StoreError, StoreResult};

pub use crate::store::Tier;

/// Result of a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutOutcome {
    pub sha256: String,
    pub size_bytes: u64,
    /// False when identical content was already stored (nothing written).
    pub created: bool,
}

/// A blob available as a local file. While it lives, a cached copy stays
/// pinned (the cache does not evict it).
#[derive(Debug)]
pub struct LocalBlob {
    pub path: PathBuf,
    pub(crate) _pin: Option<cache::PinnedBlob>,
}

/// Where blobs live: local files, or an S3-compatible bucket.
#[async_trait]
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Stores a copy of the file at `path` (already resolved and checked by
    /// the caller); returns its sha256.
    async fn put_file(&self, path: &Path) -> StoreResult<PutOutcome>;
    /// Stores `bytes`.
    async fn put_bytes(&self, bytes: Vec<u8>) -> StoreResult<PutOutcome>;
    /// The tier holding `sha256`, if any.
    async fn locate(&self, sha256: &str) -> StoreResult<Option<Tier>>;
    /// Opens a blob for reading (either tier). `NotFound` if absent.
    async fn open(&self, sha256: &str) -> StoreResult<tokio::fs::File>;
    /// A local path to the blob, for memory-mapping (a remote store downloads
    /// it into its cache first). `None` if the store does not hold it.
    async fn local_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>>;
    /// Like [`ArtifactStore::local_path`], pinned in the cache while the
    /// returned value lives (use it to link or copy the file out).
    async fn local_blob(&self, sha256: &str) -> StoreResult<Option<LocalBlob>> {
        Ok(self
            .local_path(sha256)
            .await?
            .map(|path| LocalBlob { path, _pin: None }))
    }
    /// Moves a blob to the archive tier (idempotent).
    async fn archive(&self, sha256: &str) -> StoreResult<()>;
    /// Moves a blob back to the active tier (idempotent).
    async fn restore(&self, sha256: &str) -> StoreResult<()>;
    /// Removes a blob from whichever tier holds it. `NotFound` if absent.
    async fn delete(&self, sha256: &str) -> StoreResult<()>;
}

/// The local-filesystem artifact store.
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// This process's temp folder, and its held lock file.
    tmp: PathBuf,
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

/// Checks that `sha` is 64 lowercase hex digits (so it is a safe file name).
pub(crate) fn check_sha(sha: &str) -> StoreResult<()> {
    if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "sha256",
            "must be 64 lowercase hexadecimal digits",
        ))
    }
}

/// fsyncs a directory, so a rename or create inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// sha256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> StoreResult<(String, u64)> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// sha256 of bytes, lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl LocalArtifactStore {
    /// Opens (creating) the store rooted at `root` (usually
    /// `<data_dir>/storage`) and removes temp files left by dead processes.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root: PathBuf = root.into();
        for d in [root.join("active"), root.join("archive"), root.join("tmp")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let root = root.canonicalize().map_err(io_err(&root))?;
        let removed = cleanup_dead_temp_dirs(&root.join("tmp"))?;
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by a dead process");
        }
        let (tmp, lock) = make_private_tmp(&root.join("tmp"))?;
        Ok(LocalArtifactStore {
            inner: Arc::new(Inner {
                root,
                tmp,
                _lock: lock,
            }),
        })
    }

    /// The (canonical) storage root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// This process's private temporary folder (on the same file system as
    /// the store, removed at exit and by the next start-up after a crash).
    pub fn tmp_dir(&self) -> &Path {
        &self.inner.tmp
    }

    /// Final path of a blob in `tier`.
    pub fn blob_path(&self, tier: Tier, sha: &str) -> PathBuf {
        self.inner
            .root
            .join(tier.as_str())
            .join(&sha[..2])
            .join(sha)
    }

    /// Synchronous [`ArtifactStore::locate`].
    pub fn locate_sync(&self, sha: &str) -> StoreResult<Option<Tier>> {
        check_sha(sha)?;
        for tier in [Tier::Active, Tier::Archive] {
            let p = self.blob_path(tier, sha);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() => return Ok(Some(tier)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(p, e)),
            }
        }
        Ok(None)
    }

    /// Synchronous [`ArtifactStore::put_file`].
    pub fn put_file_sync(&self, path: &Path) -> StoreResult<PutOutcome> {
        let mut src = File::open(path).map_err(io_err(path))?;
        self.put_reader(&mut src, path)
    }

    /// Synchronous [`ArtifactStore::put_bytes`].
    pub fn put_bytes_sync(&self, bytes: &[u8]) -> StoreResult<PutOutcome> {
        let mut r = bytes;
        self.put_reader(&mut r, Path::new("<bytes>"))
    }

    /// Streams `src` into the store: temp file + hash, fsync, read-only,
    /// rename without replacing, fsync the directory.
    pub fn put_reader(&self, src: &mut dyn Read, what: &Path) -> StoreResult<PutOutcome> {
        let tmp_dir = &self.inner.tmp;
        let mut tmp = tempfile::Builder::new()
            .prefix(".put-")
            .tempfile_in(tmp_dir)
            .map_err(io_err(tmp_dir))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io(what, e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_err(tmp_dir))?;
            size += n as u64;
        }
        let sha = hex::encode(hasher.finalize());
        match self.locate_sync(&sha)? {
            Some(Tier::Active) => {
                return Ok(PutOutcome {
                    sha256: sha,
                    size_bytes: size,
                    created: false,
                });
            }
            Some(Tier::Archive) => {
                // the content is wanted again: bring it back
                self.move_blob(&sha, Tier::Archive, Tier::Active)?;
                return Ok(PutOutcome {
                    sha256: sha,
                    size_bytes: size,
                    created: false,
                });
            }
            None => {}
        }
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        set_read_only(tmp.path())?;
        let final_path = self.blob_path(Tier::Active, &sha);
        let shard = final_path.parent().expect("blob path has a parent");
        ensure_dir(shard)?;
        let created = match tmp.persist_noclobber(&final_path) {
            Ok(_) => true,
            // another writer stored the same content meanwhile
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(StoreError::io(&final_path, e.error)),
        };
        sync_dir(shard)?;
        Ok(PutOutcome {
            sha256: sha,
            size_bytes: size,
            created,
        })
    }

    /// Synchronous [`ArtifactStore::open`].
    pub fn open_sync(&self, sha: &str) -> StoreResult<File> {
        match self.locate_sync(sha)? {
            Some(tier) => {
                let p = self.blob_path(tier, sha);
                File::open(&p).map_err(io_err(&p))
            }
            None => Err(StoreError::not_found(Entity::Artifact, sha)),
        }
    }

    /// Moves a blob to `tier` (idempotent). `NotFound` if absent.
    pub fn set_tier_sync(&self, sha: &str, tier: Tier) -> StoreResult<()> {
        match self.locate_sync(sha)? {
            None => Err(StoreError::not_found(Entity::Artifact, sha)),
            Some(t) if t == tier => Ok(()),
            Some(t) => self.move_blob(sha, t, tier),
        }
    }

    fn move_blob(&self, sha: &str, from: Tier, to: Tier) -> StoreResult<()> {
        let src = self.blob_path(from, sha);
        let dst = self.blob_path(to, sha);
        let dst_dir = dst.parent().expect("blob path has a parent");
        ensure_dir(dst_dir)?;
        // the destination may exist (a concurrent move, or a crash between
        // rename and clean-up): then the source is a duplicate
        if dst.exists() {
            match fs::remove_file(&src) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&src, e)),
            }
        } else {
            fs::rename(&src, &dst).map_err(io_err(&src))?;
        }
        sync_dir(dst_dir)?;
        sync_dir(src.parent().expect("blob path has a parent"))?;
        Ok(())
    }

    /// Synchronous [`ArtifactStore::delete`].
    pub fn delete_sync(&self, sha: &str) -> StoreResult<()> {
        match self.locate_sync(sha)? {
            None => Err(StoreError::not_found(Entity::Artifact, sha)),
            Some(tier) => {
                let p = self.blob_path(tier, sha);
                fs::remove_file(&p).map_err(io_err(&p))?;
                sync_dir(p.parent().expect("blob path has a parent"))
            }
        }
    }

    /// Re-hashes a blob: true if its content still matches its name.
    pub fn verify_sync(&self, sha: &str) -> StoreResult<bool> {
        match self.locate_sync(sha)? {
            None => Err(StoreError::not_found(Entity::Artifact, sha)),
            Some(tier) => Ok(sha256_file(&self.blob_path(tier, sha))?.0 == sha),
        }
    }

    /// Every blob in a tier (sha256s, sorted).
    pub fn list_sync(&self, tier: Tier) -> StoreResult<Vec<String>> {
        let dir = self.inner.root.join(tier.as_str());
        let mut out = Vec::new();
        for shard in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let shard = shard.map_err(io_err(&dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let name = f.map_err(io_err(&shard))?.file_name();
                if let Some(n) = name.to_str()
                    && check_sha(n).is_ok()
                {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&LocalArtifactStore) -> StoreResult<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError::io("<artifact store task>", io::Error::other(e)))?
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifactStore {
    async fn put_file(&self, path: &Path) -> StoreResult<PutOutcome> {
        let path = path.to_path_buf();
        self.blocking(move |s| s.put_file_sync(&path)).await
    }

    async fn put_bytes(&self, bytes: Vec<u8>) -> StoreResult<PutOutcome> {
        self.blocking(move |s| s.put_bytes_sync(&bytes)).await
    }

    async fn locate(&self, sha256: &str) -> StoreResult<Option<Tier>> {
        let sha = sha256.to_string();
        self.blocking(move |s| s.locate_sync(&sha)).await
    }

    async fn open(&self, sha256: &str) -> StoreResult<tokio::fs::File> {
        let sha = sha256.to_string();
        let f = self.blocking(move |s| s.open_sync(&sha)).await?;
        Ok(tokio::fs::File::from_std(f))
    }

    async fn local_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>> {
        Ok(self
            .locate(sha256)
            .await?
            .map(|tier| self.blob_path(tier, sha256)))
    }

    async fn archive(&self, sha256: &str) -> StoreResult<()> {
        let sha = sha256.to_string();
        self.blocking(move |s| s.set_tier_sync(&sha, Tier::Archive))
            .await
    }

    async fn restore(&self, sha256: &str) -> StoreResult<()> {
        let sha = sha256.to_string();
        self.blocking(move |s| s.set_tier_sync(&sha, Tier::Active))
            .await
    }

    async fn delete(&self, sha256: &str) -> StoreResult<()> {
        let sha = sha256.to_string();
        self.blocking(move |s| s.delete_sync(&sha)).await
    }
}

pub(crate) fn ensure_dir(dir: &Path) -> StoreResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(dir.parent().expect("shard dir has a parent")),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

pub(crate) fn set_read_only(path: &Path) -> StoreResult<()> {
    let mut perms = fs::metadata(path).map_err(io_err(path))?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms).map_err(io_err(path))
}

/// Creates `tmp/<pid>-<n>/` with a locked `.lock` file inside.
pub(crate) fn make_private_tmp(tmp_root: &Path) -> StoreResult<(PathBuf, File)> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", std::process::id()))
        .tempdir_in(tmp_root)
        .map_err(io_err(tmp_root))?
        .keep();
    // Locked under another name, then renamed: a `.lock` that exists is always held
    // by its owner, so another process starting now (cleanup_dead_temp_dirs) can never
    // take it in the instant between its creation and its locking and remove a live
    // folder. The lock belongs to the open file, so it survives the rename.
    let (new_path, lock_path) = (dir.join(".lock-new"), dir.join(".lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&new_path)
        .map_err(io_err(&new_path))?;
    lock_exclusive(&lock).map_err(io_err(&new_path))?;
    fs::rename(&new_path, &lock_path).map_err(io_err(&lock_path))?;
    Ok((dir, lock))
}

/// Removes the temp folders of processes that are gone (their lock is free),
/// and stray files directly in `tmp/`. Returns how many entries it removed.
pub(crate) fn cleanup_dead_temp_dirs(tmp_root: &Path) -> StoreResult<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(tmp_root).map_err(io_err(tmp_root))? {
        let path = entry.map_err(io_err(tmp_root))?.path();
        if path.is_dir() {
            let lock_path = path.join(".lock");
            let owner_alive = match OpenOptions::new().write(true).open(&lock_path) {
                Ok(f) => !try_lock_exclusive(&f),
                // no lock file: a folder being created right now, or debris;
                // leave it unless it is old
                Err(_) => !is_older_than(&path, std::time::Duration::from_secs(3600)),
            };
            if !owner_alive {
                remove_unless_gone(fs::remove_dir_all(&path)).map_err(io_err(&path))?;
                removed += 1;
            }
        } else {
            remove_unless_gone(fs::remove_file(&path)).map_err(io_err(&path))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(tmp_root)?;
    }
    Ok(removed)
}

/// Another process's clean-up, or the owner's own at exit, may remove the same entry
/// at the same moment: gone is as good as removed.
fn remove_unless_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn is_older_than(path: &Path, age: std::time::Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

// `File::lock` is stable since Rust 1.89; sqlx 0.9 needs 1.94 anyway.
fn lock_exclusive(f: &File) -> io::Result<()> {
    f.lock()
}

fn try_lock_exclusive(f: &File) -> bool {
    f.try_lock().is_ok()
}

/// The artifact store the hub runs with. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Artifacts {
    /// Files under the data directory (the default).
    Local(LocalArtifactStore),
    /// An S3-compatible bucket, read through a local cache.
    S3(s3::S3ArtifactStore),
}

impl From<LocalArtifactStore> for Artifacts {
    fn from(s: LocalArtifactStore) -> Self {
        Artifacts::Local(s)
    }
}

impl From<s3::S3ArtifactStore> for Artifacts {
    fn from(s: s3::S3ArtifactStore) -> Self {
        Artifacts::S3(s)
    }
}

impl Artifacts {
    /// Opens the store `url` names (`None`: local files under `data_dir`;
    /// `s3://bucket/prefix`: S3, settings from the AWS environment variables
    /// `env` returns).
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
        cache_max_bytes: u64,
        env: impl Fn(&str) -> Option<String>,
    ) -> StoreResult<Artifacts> {
        let settings = url.map(|u| s3::S3Settings::from_url(u, env)).transpose()?;
        Self::open_with(settings, data_dir, cache_max_bytes).await
    }

    /// Opens the artifact store: S3 with `settings` (see
    /// [`crate::HubConfig::s3`]), else files under `data_dir`.
    pub async fn open_with(
        settings: Option<s3::S3Settings>,
        data_dir: &Path,
        cache_max_bytes: u64,
    ) -> StoreResult<Artifacts> {
        match settings {
            None => Ok(Artifacts::Local(LocalArtifactStore::open(data_dir)?)),
            Some(settings) => Ok(Artifacts::S3(
                s3::S3ArtifactStore::open(settings, data_dir, cache_max_bytes).await?,
            )),
        }
    }

    fn dyn_store(&self) -> &dyn ArtifactStore {
        match self {
            Artifacts::Local(s) => s,
            Artifacts::S3(s) => s,
        }
    }

    /// The local store, if that is the backend.
    pub fn local(&self) -> Option<&LocalArtifactStore> {
        match self {
            Artifacts::Local(s) => Some(s),
            Artifacts::S3(_) => None,
        }
    }

    /// The S3 store, if that is the backend.
    pub fn s3(&self) -> Option<&s3::S3ArtifactStore> {
        match self {
            Artifacts::S3(s) => Some(s),
            Artifacts::Local(_) => None,
        }
    }

    /// `local` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self {
            Artifacts::Local(_) => "local",
            Artifacts::S3(_) => "s3",
        }
    }

    /// This process's private temporary folder (same file system as the
    /// blobs or the cache; removed at exit and after a crash).
    pub fn tmp_dir(&self) -> &Path {
        match self {
            Artifacts::Local(s) => s.tmp_dir(),
            Artifacts::S3(s) => s.tmp_dir(),
        }
    }

    /// Local store: the blob's file in `tier`. S3: where the blob is cached
    /// on this machine (whatever the tier).
    pub fn blob_path(&self, tier: Tier, sha: &str) -> PathBuf {
        match self {
            Artifacts::Local(s) => s.blob_path(tier, sha),
            Artifacts::S3(s) => s.cache().path(sha),
        }
    }

    /// Local store: every blob of a tier. S3: refused (use [`Artifacts::list`]).
    pub fn list_sync(&self, tier: Tier) -> StoreResult<Vec<String>> {
        match self {
            Artifacts::Local(s) => s.list_sync(tier),
            Artifacts::S3(_) => Err(StoreError::invalid(
                "artifact_store",
                "listing an S3 store is asynchronous: use Artifacts::list",
            )),
        }
    }

    /// Every blob of a tier (sha256s, sorted).
    pub async fn list(&self, tier: Tier) -> StoreResult<Vec<String>> {
        match self {
            Artifacts::Local(s) => {
                let s = s.clone();
                s.blocking(move |s| s.list_sync(tier)).await
            }
            Artifacts::S3(s) => s.list(tier).await,
        }
    }

    /// Makes a registered dataset folder available to workers on other
    /// machines (S3: uploads its files and manifest; local: nothing to do).
    pub async fn publish_dataset(&self, content_hash: &str, dir: &Path) -> StoreResult<()> {
        match self {
            Artifacts::Local(_) => Ok(()),
            Artifacts::S3(s) => s.publish_dataset(content_hash, dir).await,
        }
    }

    /// Makes sure a dataset's folder exists on this machine: `recorded` when
    /// it is there, else (S3) fetched into `<data_dir>/datasets/<content_hash>`.
    pub async fn ensure_dataset(
        &self,
        content_hash: &str,
        recorded: &Path,
    ) -> StoreResult<PathBuf> {
        if recorded.is_dir() {
            return Ok(recorded.to_path_buf());
        }
        match self {
            Artifacts::Local(_) => Err(StoreError::io(
                recorded,
                io::Error::new(io::ErrorKind::NotFound, "the dataset folder is missing"),
            )),
            Artifacts::S3(s) => {
                let dest = s.data_dir().join("datasets").join(content_hash);
                s.fetch_dataset(content_hash, &dest).await?;
                Ok(dest)
            }
        }
    }
}

#[async_trait]
impl ArtifactStore for Artifacts {
    async fn put_file(&self, path: &Path) -> StoreResult<PutOutcome> {
        self.dyn_store().put_file(path).await
    }
    async fn put_bytes(&self, bytes: Vec<u8>) -> StoreResult<PutOutcome> {
        self.dyn_store().put_bytes(bytes).await
    }
    async fn locate(&self, sha256: &str) -> StoreResult<Option<Tier>> {
        self.dyn_store().locate(sha256).await
    }
    async fn open(&self, sha256: &str) -> StoreResult<tokio::fs::File> {
        self.dyn_store().open(sha256).await
    }
    async fn local_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>> {
        self.dyn_store().local_path(sha256).await
    }
    async fn local_blob(&self, sha256: &str) -> StoreResult<Option<LocalBlob>> {
        self.dyn_store().local_blob(sha256).await
    }
    async fn archive(&self, sha256: &str) -> StoreResult<()> {
        self.dyn_store().archive(sha256).await
    }
    async fn restore(&self, sha256: &str) -> StoreResult<()> {
        self.dyn_store().restore(sha256).await
    }
    async fn delete(&self, sha256: &str) -> StoreResult<()> {
        self.dyn_store().delete(sha256).await
    }
}
