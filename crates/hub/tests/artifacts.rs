//! Content-addressed artifact store and user-path checks (file system only).

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hub::artifacts::{ArtifactStore, LocalArtifactStore, Tier, sha256_bytes};
use hub::paths::{resolve_new_within, resolve_within};
use hub::store::StoreError;
use tokio::io::AsyncReadExt;

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Temp files of this store: everything under tmp/ except the lock files.
fn temp_files(root: &Path) -> Vec<std::path::PathBuf> {
    files_under(&root.join("tmp"))
        .into_iter()
        .filter(|p| p.file_name().unwrap() != ".lock")
        .collect()
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(dir.path().join("storage")).unwrap();
    let a = store.put_bytes(b"hello weights".to_vec()).await.unwrap();
    assert!(a.created);
    assert_eq!(a.sha256, sha256_bytes(b"hello weights"));
    assert_eq!(a.size_bytes, 13);
    let b = store.put_bytes(b"hello weights".to_vec()).await.unwrap();
    assert!(!b.created);
    assert_eq!(a.sha256, b.sha256);

    // from a file: same content, same blob
    let src = dir.path().join("w.bin");
    fs::write(&src, b"hello weights").unwrap();
    let c = store.put_file(&src).await.unwrap();
    assert_eq!((c.sha256.as_str(), c.created), (a.sha256.as_str(), false));

    let path = store.blob_path(Tier::Active, &a.sha256);
    assert!(path.ends_with(format!("active/{}/{}", &a.sha256[..2], a.sha256)));
    assert_eq!(files_under(&store.root().join("active")).len(), 1);
    assert!(fs::metadata(&path).unwrap().permissions().readonly());
    assert!(temp_files(store.root()).is_empty());

    let mut content = String::new();
    store
        .open(&a.sha256)
        .await
        .unwrap()
        .read_to_string(&mut content)
        .await
        .unwrap();
    assert_eq!(content, "hello weights");
    assert!(store.verify_sync(&a.sha256).unwrap());

    // a large file is streamed
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(dir.path().join("big.bin"), &big).unwrap();
    let big_put = store.put_file(&dir.path().join("big.bin")).await.unwrap();
    assert_eq!(big_put.sha256, sha256_bytes(&big));
    assert_eq!(big_put.size_bytes, 5_000_000);
    assert_eq!(store.list_sync(Tier::Active).unwrap().len(), 2);
}

#[tokio::test]
async fn archive_restore_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(dir.path().join("storage")).unwrap();
    let a = store.put_bytes(b"adapter".to_vec()).await.unwrap();
    store.archive(&a.sha256).await.unwrap();
    store.archive(&a.sha256).await.unwrap(); // idempotent
    assert_eq!(store.locate(&a.sha256).await.unwrap(), Some(Tier::Archive));
    assert!(!store.blob_path(Tier::Active, &a.sha256).exists());
    // still readable from the archive
    assert!(store.open(&a.sha256).await.is_ok());
    let p = store.local_path(&a.sha256).await.unwrap().unwrap();
    assert!(p.starts_with(store.root().join("archive")));

    store.restore(&a.sha256).await.unwrap();
    assert_eq!(store.locate(&a.sha256).await.unwrap(), Some(Tier::Active));

    // putting archived content again brings it back to active
    store.archive(&a.sha256).await.unwrap();
    let again = store.put_bytes(b"adapter".to_vec()).await.unwrap();
    assert!(!again.created);
    assert_eq!(store.locate(&a.sha256).await.unwrap(), Some(Tier::Active));

    store.delete(&a.sha256).await.unwrap();
    assert_eq!(store.locate(&a.sha256).await.unwrap(), None);
    let e = store.open(&a.sha256).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let e = store.archive(&a.sha256).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    // names that are not sha256 are refused before touching the disk
    for bad in ["../../etc/passwd", "ABC", ""] {
        let e = store.open(bad).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::InvalidInput {
                    field: "sha256",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

/// A reader that yields `n` bytes then fails, like a client that goes away
/// or a disk error in the middle of a copy.
struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("connection reset"));
        }
        let n = buf.len().min(self.left).min(4096);
        buf[..n].fill(b'x');
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(dir.path().join("storage")).unwrap();
    let e = store
        .put_reader(&mut FailingReader { left: 100_000 }, Path::new("upload"))
        .unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
    assert!(files_under(&store.root().join("active")).is_empty());
    assert!(temp_files(store.root()).is_empty(), "temp file left behind");
}

#[test]
fn readers_never_see_a_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(dir.path().join("storage")).unwrap();
    let content: Vec<u8> = (0..20_000_000u32).map(|i| (i % 253) as u8).collect();
    let sha = sha256_bytes(&content);
    let final_path = store.blob_path(Tier::Active, &sha);
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, final_path, len) = (done.clone(), final_path.clone(), content.len() as u64);
        std::thread::spawn(move || {
            let mut seen = 0;
            while !done.load(Ordering::SeqCst) {
                if let Ok(m) = fs::metadata(&final_path) {
                    assert_eq!(m.len(), len, "a partial blob was visible");
                    seen += 1;
                }
            }
            seen
        })
    };
    let out = store.put_bytes_sync(&content).unwrap();
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(out.sha256, sha);
    assert_eq!(fs::read(&final_path).unwrap(), content);
}

#[test]
fn concurrent_puts_of_the_same_content_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(dir.path().join("storage")).unwrap();
    let content = Arc::new(vec![42u8; 3_000_000]);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, c) = (store.clone(), content.clone());
            std::thread::spawn(move || s.put_bytes_sync(&c).unwrap())
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outs.iter().all(|o| o.sha256 == outs[0].sha256));
    assert!(outs.iter().filter(|o| o.created).count() <= 1);
    assert_eq!(files_under(&store.root().join("active")).len(), 1);
    assert!(temp_files(store.root()).is_empty());
}

#[test]
fn startup_removes_temp_files_of_dead_processes_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let live = LocalArtifactStore::open(&root).unwrap();
    // a live store's in-flight temp file
    let live_tmp = files_under(&root.join("tmp"))
        .into_iter()
        .find(|p| p.file_name().unwrap() == ".lock")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    fs::write(live_tmp.join(".put-inflight"), b"partial").unwrap();
    // debris of a crashed process: its folder's lock is free
    let dead = root.join("tmp").join("99999-crashed");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join(".lock"), b"").unwrap();
    fs::write(dead.join(".put-abc"), b"half a safetensors").unwrap();
    fs::write(root.join("tmp").join("stray"), b"x").unwrap();

    let second = LocalArtifactStore::open(&root).unwrap();
    assert!(!dead.exists(), "the dead process's temp files remain");
    assert!(!root.join("tmp").join("stray").exists());
    assert!(
        live_tmp.join(".put-inflight").exists(),
        "a live process's temp file was removed"
    );
    drop(second);
    drop(live);
    // a clean shutdown removes its own folder
    assert!(!live_tmp.exists());
}

/// Processes starting together on one data dir (three workers, say): one's start-up
/// clean-up never removes the private temp folder another is creating. Each open
/// creates its folder while others clean up; every folder must still be there after.
#[test]
fn concurrent_start_ups_never_remove_a_live_temp_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    LocalArtifactStore::open(&root).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut lost = 0;
                for _ in 0..150 {
                    let store = LocalArtifactStore::open(&root).unwrap();
                    if !store.tmp_dir().is_dir() {
                        lost += 1;
                    }
                    std::thread::yield_now();
                    if !store.tmp_dir().is_dir() {
                        lost += 1;
                    }
                }
                lost
            })
        })
        .collect();
    let lost: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        lost, 0,
        "live temp folders removed by a concurrent start-up"
    );
}

#[test]
fn user_paths_cannot_escape_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("models/a")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(root.join("models/a/config.json"), b"{}").unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();

    // inside: fine, canonical
    let ok = resolve_within(&root, Path::new("models/a/config.json")).unwrap();
    assert_eq!(
        ok,
        root.canonicalize().unwrap().join("models/a/config.json")
    );
    let ok2 = resolve_within(&root, Path::new("models/a/../a/./config.json")).unwrap();
    assert_eq!(ok, ok2);
    // absolute path inside the root is fine too
    assert!(resolve_within(&root, &root.join("models")).is_ok());

    let escapes = |p: &Path| {
        let e = resolve_within(&root, p).unwrap_err();
        assert!(
            matches!(e, StoreError::PathEscapesRoot { .. }),
            "{p:?}: {e:?}"
        );
    };
    escapes(Path::new("../outside/secret"));
    escapes(Path::new("models/../../outside/secret"));
    escapes(&outside.join("secret"));
    escapes(Path::new("/etc/passwd"));
    escapes(Path::new(".."));

    // symlinks: one pointing out is refused, one pointing in is fine
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("file-link-out")).unwrap();
        std::os::unix::fs::symlink(root.join("models"), root.join("link-in")).unwrap();
        escapes(Path::new("link-out/secret"));
        escapes(Path::new("link-out"));
        escapes(Path::new("file-link-out"));
        assert!(resolve_within(&root, Path::new("link-in/a/config.json")).is_ok());
        // a new path under a symlink that points out
        let e = resolve_new_within(&root, Path::new("link-out/new-file")).unwrap_err();
        assert!(matches!(e, StoreError::PathEscapesRoot { .. }), "{e:?}");
    }

    // missing paths: an error, not a 500 (the caller checks existence)
    let e = resolve_within(&root, Path::new("models/missing")).unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput { .. }), "{e:?}");
    // a percent-encoded `..` is just a (missing) name here: URL decoding is the
    // HTTP layer's job, before this check
    let e = resolve_within(&root, Path::new("%2e%2e/outside")).unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput { .. }), "{e:?}");

    // paths that do not exist yet (outputs)
    let new = resolve_new_within(&root, Path::new("models/b/adapters.safetensors")).unwrap();
    assert!(new.starts_with(root.canonicalize().unwrap()));
    for bad in [
        "../x",
        "models/../../x",
        "models/new/../../../x",
        "/tmp/x",
        "models/../..",
    ] {
        let e = resolve_new_within(&root, Path::new(bad)).unwrap_err();
        assert!(
            matches!(e, StoreError::PathEscapesRoot { .. }),
            "{bad}: {e:?}"
        );
    }
}
