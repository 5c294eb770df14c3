//! The Hugging Face cache layout, as `huggingface_hub` writes it:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>            file contents (etag = sha256 for LFS, git sha1 otherwise)
//! <cache>/models--org--name/blobs/<etag>.incomplete a download in progress (resumed with Range)
//! <cache>/models--org--name/refs/<revision>         the commit a branch or tag pointed to
//! <cache>/models--org--name/snapshots/<commit>/<path> -> ../../blobs/<etag>
//! <cache>/.locks/models--org--name/<etag>.lock     held while a blob is fetched
//! ```
//!
//! The lock files are `huggingface_hub`'s too (it takes them with `flock`, as
//! `std::fs::File::lock` does on Unix), so a pull here and an mlx-lm download
//! of the same blob wait for each other instead of writing one `.incomplete`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{HfError, HfResult};

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct HfCache {
    pub repo_dir: PathBuf,
    locks_dir: PathBuf,
}

impl HfCache {
    pub fn new(cache_dir: &Path, repo: &str) -> HfCache {
        let folder = format!("models--{}", repo.replace('/', "--"));
        HfCache {
            repo_dir: cache_dir.join(&folder),
            locks_dir: cache_dir.join(".locks").join(folder),
        }
    }

    /// Takes the blob's exclusive lock, waiting for another process (or
    /// task) that holds it; released when the returned file is dropped.
    pub fn lock_blob(&self, etag: &str) -> HfResult<fs::File> {
        fs::create_dir_all(&self.locks_dir).map_err(|e| HfError::io(&self.locks_dir, e))?;
        let path = self.locks_dir.join(format!("{etag}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HfError::io(&path, e))?;
        file.lock().map_err(|e| HfError::io(&path, e))?;
        Ok(file)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.repo_dir.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.repo_dir
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.repo_dir.join("snapshots").join(commit)
    }

    /// The commit `revision` points to: itself when it is a commit with a
    /// snapshot, else what `refs/<revision>` says.
    pub fn resolve_ref(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) && self.snapshot_dir(revision).is_dir() {
            return Some(revision.to_string());
        }
        let text = fs::read_to_string(self.repo_dir.join("refs").join(revision)).ok()?;
        let commit = text.trim().to_string();
        is_commit_hash(&commit).then_some(commit)
    }

    /// Records `refs/<revision> = commit` (atomically), unless the revision
    /// is the commit itself.
    pub fn write_ref(&self, revision: &str, commit: &str) -> HfResult<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.repo_dir.join("refs").join(revision);
        let dir = path.parent().expect("ref has a parent");
        fs::create_dir_all(dir).map_err(|e| HfError::io(dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| HfError::io(dir, e))?;
        tmp.write_all(commit.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| HfError::io(&path, e))?;
        tmp.persist(&path)
            .map_err(|e| HfError::io(&path, e.error))?;
        Ok(())
    }

    /// Points `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative
    /// symlink (replacing what was there), as `huggingface_hub` does.
    pub fn link_snapshot_file(&self, commit: &str, path: &str, etag: &str) -> HfResult<PathBuf> {
        let dest = self.snapshot_dir(commit).join(path);
        let parent = dest.parent().expect("snapshot file has a parent");
        fs::create_dir_all(parent).map_err(|e| HfError::io(parent, e))?;
        let depth = path.matches('/').count() + 2; // snapshots/<commit>/[dirs/]
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        // link under a temporary name, then rename over: never a missing file
        let tmp = parent.join(format!(
            ".{}.{}.link",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        symlink(&target, &tmp).map_err(|e| HfError::io(&tmp, e))?;
        fs::rename(&tmp, &dest).map_err(|e| HfError::io(&dest, e))?;
        Ok(dest)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // no symlinks without privileges: copy, as huggingface_hub does there
    let real = link.parent().unwrap_or(Path::new(".")).join(target);
    fs::copy(real, link).map(|_| ())
}

/// A 40-hex-digit git commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the cache holds for one repository.
#[derive(Debug, Clone, Serialize)]
pub struct CachedRepo {
    pub repo: String,
    pub path: PathBuf,
    /// `revision → commit` from `refs/`.
    pub refs: Vec<(String, String)>,
    /// Commits with a snapshot folder.
    pub snapshots: Vec<String>,
    pub blob_count: usize,
    /// Bytes of complete blobs.
    pub size_bytes: u64,
    /// Bytes of `*.incomplete` downloads.
    pub incomplete_bytes: u64,
}

/// Lists the model repositories in the cache, sorted by name. A missing
/// cache is empty.
pub fn scan_cache(cache_dir: &Path) -> HfResult<Vec<CachedRepo>> {
    let entries = match fs::read_dir(cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HfError::io(cache_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        let repo = rest.replace("--", "/");
        let dir = entry.path();
        let mut refs = Vec::new();
        walk_refs(&dir.join("refs"), "", &mut refs);
        refs.sort();
        let mut snapshots: Vec<String> = fs::read_dir(dir.join("snapshots"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        snapshots.sort();
        let (mut blob_count, mut size_bytes, mut incomplete_bytes) = (0, 0, 0);
        if let Ok(rd) = fs::read_dir(dir.join("blobs")) {
            for b in rd.flatten() {
                let len = b.metadata().map(|m| m.len()).unwrap_or(0);
                if b.file_name().to_string_lossy().ends_with(".incomplete") {
                    incomplete_bytes += len;
                } else {
                    blob_count += 1;
                    size_bytes += len;
                }
            }
        }
        out.push(CachedRepo {
            repo,
            path: dir,
            refs,
            snapshots,
            blob_count,
            size_bytes,
            incomplete_bytes,
        });
    }
    out.sort_by(|a, b| a.repo.cmp(&b.repo));
    Ok(out)
}

fn walk_refs(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let path = e.path();
        if path.is_dir() {
            walk_refs(&path, &format!("{name}/"), out);
        } else if let Ok(text) = fs::read_to_string(&path) {
            out.push((name, text.trim().to_string()));
        }
    }
}
