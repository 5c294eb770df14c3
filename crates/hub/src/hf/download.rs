//! Downloading a repository snapshot into the Hugging Face cache: resolve the
//! revision to a commit, choose the files (mlx-lm's patterns, or one GGUF),
//! then fetch each missing blob — at most `max_parallel` at once, resumed
//! with `Range` after a cut connection, checked against the Hub's sha256 —
//! and link it into `snapshots/<commit>/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{HfCache, is_commit_hash};
use super::{HfError, HfResult, HfSettings, RepoRef, glob_match, wanted_by_mlx};

/// Attempts per file when the connection is cut mid-download (each resumes).
const ATTEMPTS: usize = 4;
/// Redirects followed for one file (the Hub sends large files to a CDN).
const MAX_REDIRECTS: usize = 5;

/// Progress of a pull, for bars and logs.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The revision resolved and the files chosen.
    Resolved {
        commit: String,
        files: usize,
        /// Bytes of the chosen files the Hub reported (missing sizes count 0).
        total_bytes: u64,
    },
    /// A download starts (`resumed_from` bytes were already there).
    FileStarted {
        path: String,
        size: Option<u64>,
        resumed_from: u64,
    },
    /// `bytes` more bytes of `path` arrived.
    FileProgress { path: String, bytes: u64 },
    /// `path` is in the snapshot (`reused`: no byte downloaded).
    FileDone { path: String, reused: bool },
}

/// Called for every [`PullEvent`].
pub type Progress = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// What to pull.
#[derive(Clone)]
pub struct PullOptions {
    pub settings: HfSettings,
    /// The `.gguf` file of a GGUF repository to take.
    pub gguf_file: Option<String>,
    pub progress: Option<Progress>,
}

impl PullOptions {
    pub fn new(settings: HfSettings) -> PullOptions {
        PullOptions {
            settings,
            gguf_file: None,
            progress: None,
        }
    }

    fn emit(&self, e: PullEvent) {
        if let Some(p) = &self.progress {
            p(e);
        }
    }
}

/// One file of a pulled snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFile {
    pub path: String,
    pub size_bytes: u64,
    /// The blob's name: the sha256 of LFS files, git's sha1 of others.
    pub etag: String,
    /// Already in the cache: nothing downloaded.
    pub reused: bool,
}

/// A snapshot in the cache, complete for what was chosen.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// `snapshots/<commit>`.
    pub dir: PathBuf,
    pub files: Vec<SnapshotFile>,
    /// The GGUF file chosen (a GGUF repository), inside `dir`.
    pub gguf: Option<PathBuf>,
    /// Bytes that came over the network.
    pub downloaded_bytes: u64,
    /// Served from the cache without a network round trip.
    pub offline: bool,
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Which files of the repository to take, or why none will do.
#[derive(Debug, PartialEq)]
enum Choice {
    /// mlx-lm's patterns: small files first, then the weights.
    Mlx(Vec<String>),
    Gguf(String),
}

fn choose(repo: &str, names: &[String], gguf_file: Option<&str>) -> HfResult<Choice> {
    let not_loadable = |why: String| HfError::NotLoadable {
        repo: repo.to_string(),
        why,
    };
    let ggufs: Vec<&String> = names.iter().filter(|n| n.ends_with(".gguf")).collect();
    if let Some(f) = gguf_file {
        if !f.ends_with(".gguf") {
            return Err(not_loadable(format!("--file {f:?} is not a .gguf file")));
        }
        if !names.iter().any(|n| n == f) {
            return Err(not_loadable(format!(
                "it has no file {f:?}; its .gguf files: {}",
                list(&ggufs)
            )));
        }
        return Ok(Choice::Gguf(f.to_string()));
    }
    let has_config = names.iter().any(|n| n == "config.json");
    let has_weights = names
        .iter()
        .any(|n| !n.contains('/') && glob_match("model*.safetensors", n));
    if has_config && has_weights {
        let mut files: Vec<String> = names.iter().filter(|n| wanted_by_mlx(n)).cloned().collect();
        // small files first: a config the engine can't load stops the pull early
        files.sort_by_key(|n| (n.ends_with(".safetensors"), n.clone()));
        return Ok(Choice::Mlx(files));
    }
    match ggufs.len() {
        1 => return Ok(Choice::Gguf(ggufs[0].clone())),
        n if n > 1 => {
            return Err(not_loadable(format!(
                "it holds {n} .gguf files: choose one with --file ({})",
                list(&ggufs)
            )));
        }
        _ => {}
    }
    let why = if !has_config {
        "it has no config.json".to_string()
    } else if names
        .iter()
        .any(|n| n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".pth"))
    {
        "its weights are PyTorch files (*.bin), not model*.safetensors: convert it with \
         `mlx_lm.convert` or pull an MLX version (e.g. from mlx-community)"
            .to_string()
    } else if names.iter().any(|n| n.ends_with(".safetensors")) {
        "its safetensors weights are not named model*.safetensors (mlx-lm's layout)".to_string()
    } else {
        "it has no model*.safetensors weights and no .gguf file".to_string()
    };
    Err(not_loadable(why))
}

fn list(names: &[&String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent-encodes one URL path segment (keeps RFC 3986's unreserved set).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_path(p: &str) -> String {
    p.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// Pulls `repo_ref` into the cache (or, offline, finds it there).
pub async fn pull_snapshot(repo_ref: &RepoRef, opts: &PullOptions) -> HfResult<Snapshot> {
    if opts.settings.offline {
        return offline_snapshot(repo_ref, opts);
    }
    let ctx = Ctx::new(repo_ref, opts)?;
    let info = ctx.repo_info().await?;
    if !is_commit_hash(&info.sha) {
        return Err(HfError::Http {
            url: ctx.info_url(),
            status: 200,
            detail: format!(": the commit {:?} is not a git commit id", info.sha),
        });
    }
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let choice = choose(&repo_ref.repo, &names, opts.gguf_file.as_deref())?;
    let commit = info.sha;
    let files = match &choice {
        Choice::Mlx(f) => f.clone(),
        Choice::Gguf(f) => vec![f.clone()],
    };
    let heads = ctx.head_all(&commit, &files).await?;
    let total: u64 = heads.iter().map(|h| h.size.unwrap_or(0)).sum();
    opts.emit(PullEvent::Resolved {
        commit: commit.clone(),
        files: heads.len(),
        total_bytes: total,
    });
    let mut done: Vec<(SnapshotFile, u64)> = Vec::new();
    let (small, large): (Vec<Head>, Vec<Head>) = heads
        .into_iter()
        .partition(|h| !h.path.ends_with(".safetensors") && !h.path.ends_with(".gguf"));
    done.extend(ctx.fetch_all(&commit, small).await?);
    if matches!(choice, Choice::Mlx(_)) {
        let dir = ctx.cache.snapshot_dir(&commit);
        let checked =
            tokio::task::spawn_blocking(move || engine::config::ModelConfig::from_dir(&dir))
                .await
                .map_err(|e| HfError::Network {
                    url: ctx.info_url(),
                    message: format!("config check failed: {e}"),
                })?;
        if let Err(e) = checked {
            return Err(HfError::NotLoadable {
                repo: repo_ref.repo.clone(),
                why: format!("config.json: {e}"),
            });
        }
    }
    done.extend(ctx.fetch_all(&commit, large).await?);
    ctx.cache.write_ref(&repo_ref.revision, &commit)?;
    let downloaded_bytes = done.iter().map(|(_, n)| n).sum();
    let mut files: Vec<SnapshotFile> = done.into_iter().map(|(f, _)| f).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let dir = ctx.cache.snapshot_dir(&commit);
    Ok(Snapshot {
        repo: repo_ref.repo.clone(),
        revision: repo_ref.revision.clone(),
        gguf: match choice {
            Choice::Gguf(f) => Some(dir.join(f)),
            Choice::Mlx(_) => None,
        },
        commit,
        dir,
        files,
        downloaded_bytes,
        offline: false,
    })
}

/// `HF_HUB_OFFLINE=1`: the snapshot the cache has for the revision, if the
/// files a pull would choose are all there.
fn offline_snapshot(repo_ref: &RepoRef, opts: &PullOptions) -> HfResult<Snapshot> {
    let cache = HfCache::new(&opts.settings.cache_dir, &repo_ref.repo);
    let missing = |why: String| HfError::OfflineNotCached {
        repo: repo_ref.repo.clone(),
        revision: repo_ref.revision.clone(),
        cache: opts.settings.cache_dir.clone(),
        why,
    };
    let commit = cache.resolve_ref(&repo_ref.revision).ok_or_else(|| {
        missing(format!(
            "no refs/{} and no snapshot of that commit",
            repo_ref.revision
        ))
    })?;
    let dir = cache.snapshot_dir(&commit);
    let mut names = Vec::new();
    list_files(&dir, &dir, &mut names);
    names.sort();
    let choice = choose(&repo_ref.repo, &names, opts.gguf_file.as_deref())
        .map_err(|e| missing(format!("the cached snapshot {commit} is incomplete ({e})")))?;
    let chosen = match &choice {
        Choice::Mlx(f) => f.clone(),
        Choice::Gguf(f) => vec![f.clone()],
    };
    let mut files = Vec::new();
    for path in chosen {
        let full = dir.join(&path);
        let meta = std::fs::metadata(&full)
            .map_err(|e| missing(format!("{path}: {e} (a download was cut short?)")))?;
        let etag = std::fs::read_link(&full)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_default();
        opts.emit(PullEvent::FileDone {
            path: path.clone(),
            reused: true,
        });
        files.push(SnapshotFile {
            path,
            size_bytes: meta.len(),
            etag,
            reused: true,
        });
    }
    Ok(Snapshot {
        repo: repo_ref.repo.clone(),
        revision: repo_ref.revision.clone(),
        gguf: match choice {
            Choice::Gguf(f) => Some(dir.join(f)),
            Choice::Mlx(_) => None,
        },
        commit,
        dir,
        files,
        downloaded_bytes: 0,
        offline: true,
    })
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            list_files(base, &path, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// What `HEAD resolve/<commit>/<path>` said about one file.
#[derive(Debug, Clone)]
struct Head {
    path: String,
    etag: String,
    size: Option<u64>,
}

struct Ctx<'a> {
    client: Client,
    repo_ref: &'a RepoRef,
    opts: &'a PullOptions,
    cache: HfCache,
}

fn header_str<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `W/"abc"` → `abc`.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

impl<'a> Ctx<'a> {
    fn new(repo_ref: &'a RepoRef, opts: &'a PullOptions) -> HfResult<Ctx<'a>> {
        let client = Client::builder()
            .user_agent(concat!("mlx-hub/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            // redirects are followed by hand: the token must not go to another host
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HfError::Network {
                url: opts.settings.endpoint.clone(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Ctx {
            client,
            repo_ref,
            opts,
            cache: HfCache::new(&opts.settings.cache_dir, &repo_ref.repo),
        })
    }

    fn endpoint(&self) -> &str {
        &self.opts.settings.endpoint
    }

    fn info_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint(),
            encode_path(&self.repo_ref.repo),
            encode_segment(&self.repo_ref.revision)
        )
    }

    fn resolve_url(&self, commit: &str, path: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint(),
            encode_path(&self.repo_ref.repo),
            commit,
            encode_path(path)
        )
    }

    fn request(&self, method: Method, url: &str, with_token: bool) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, url);
        if with_token && let Some(t) = &self.opts.settings.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> HfResult<Response> {
        req.send().await.map_err(|e| HfError::Network {
            url: url.to_string(),
            message: describe_reqwest(&e),
        })
    }

    /// Turns an error status into the error that says what it means.
    async fn status_error(&self, resp: Response, url: &str, path: Option<&str>) -> HfError {
        let status = resp.status().as_u16();
        let code = header_str(resp.headers(), "x-error-code").map(str::to_string);
        let message = header_str(resp.headers(), "x-error-message").map(str::to_string);
        let repo = self.repo_ref.repo.clone();
        let endpoint = self.endpoint().to_string();
        let hint = if self.opts.settings.token.is_none() {
            ": set HF_TOKEN to a token that can read it (and accept its terms on the model page)"
        } else {
            ": the HF_TOKEN given cannot read it (accept its terms on the model page, or check the token)"
        };
        match code.as_deref() {
            Some("RepoNotFound") => return HfError::RepoNotFound { repo, endpoint },
            Some("RevisionNotFound") => {
                return HfError::RevisionNotFound {
                    repo,
                    revision: self.repo_ref.revision.clone(),
                };
            }
            Some("EntryNotFound") => {
                return HfError::EntryNotFound {
                    repo,
                    revision: self.repo_ref.revision.clone(),
                    path: path.unwrap_or("?").to_string(),
                };
            }
            Some("GatedRepo") => {
                return HfError::AccessDenied {
                    repo,
                    endpoint,
                    status,
                    hint,
                };
            }
            _ => {}
        }
        match (status, path) {
            (401 | 403, _) => HfError::AccessDenied {
                repo,
                endpoint,
                status,
                hint,
            },
            (404, None) => HfError::RepoNotFound { repo, endpoint },
            (404, Some(p)) => HfError::EntryNotFound {
                repo,
                revision: self.repo_ref.revision.clone(),
                path: p.to_string(),
            },
            _ => {
                let body = match message {
                    Some(m) => m,
                    None => resp.text().await.unwrap_or_default(),
                };
                let body: String = body.chars().take(300).collect();
                HfError::Http {
                    url: url.to_string(),
                    status,
                    detail: if body.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", body.trim())
                    },
                }
            }
        }
    }

    async fn repo_info(&self) -> HfResult<RepoInfo> {
        let url = self.info_url();
        let resp = self
            .send(self.request(Method::GET, &url, true), &url)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &url, None).await);
        }
        let bytes = resp.bytes().await.map_err(|e| HfError::Network {
            url: url.clone(),
            message: describe_reqwest(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| HfError::Http {
            url,
            status: 200,
            detail: format!(": the repository info is not what the Hub sends ({e})"),
        })
    }

    async fn head_all(&self, commit: &str, files: &[String]) -> HfResult<Vec<Head>> {
        let parallel = self.opts.settings.max_parallel.max(1);
        // owned paths: a stream of borrowed ones is not Send-general enough for axum
        let results: Vec<HfResult<Head>> = futures_util::stream::iter(files.to_vec())
            .map(|p| async move { self.head(commit, &p).await })
            .buffered(parallel)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn head(&self, commit: &str, path: &str) -> HfResult<Head> {
        let url = self.resolve_url(commit, path);
        let resp = self
            .send(self.request(Method::HEAD, &url, true), &url)
            .await?;
        let status = resp.status();
        if !(status.is_success() || status.is_redirection()) {
            return Err(self.status_error(resp, &url, Some(path)).await);
        }
        let h = resp.headers();
        let etag = header_str(h, "x-linked-etag")
            .or_else(|| header_str(h, header::ETAG.as_str()))
            .map(normalize_etag)
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\', '.']))
            .ok_or_else(|| HfError::Http {
                url: url.clone(),
                status: status.as_u16(),
                detail: ": no usable ETag (is HF_ENDPOINT a Hugging Face Hub?)".into(),
            })?;
        let size = header_str(h, "x-linked-size")
            .or_else(|| {
                if status.is_redirection() {
                    None
                } else {
                    header_str(h, header::CONTENT_LENGTH.as_str())
                }
            })
            .and_then(|s| s.trim().parse::<u64>().ok());
        Ok(Head {
            path: path.to_string(),
            etag,
            size,
        })
    }

    async fn fetch_all(
        &self,
        commit: &str,
        heads: Vec<Head>,
    ) -> HfResult<Vec<(SnapshotFile, u64)>> {
        let parallel = self.opts.settings.max_parallel.max(1);
        let results: Vec<HfResult<(SnapshotFile, u64)>> = futures_util::stream::iter(heads)
            .map(|h| self.fetch(commit, h))
            .buffer_unordered(parallel)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Makes `snapshots/<commit>/<path>` point at a complete, checked blob;
    /// returns the file and the bytes downloaded.
    async fn fetch(&self, commit: &str, head: Head) -> HfResult<(SnapshotFile, u64)> {
        // One writer per blob across tasks and processes: the second waits,
        // then finds the blob complete and reuses it.
        let cache = self.cache.clone();
        let etag = head.etag.clone();
        let _lock = tokio::task::spawn_blocking(move || cache.lock_blob(&etag))
            .await
            .map_err(|e| {
                HfError::io(&self.cache.repo_dir, std::io::Error::other(e.to_string()))
            })??;
        let blob = self.cache.blob(&head.etag);
        let existing = tokio::fs::metadata(&blob).await.ok();
        let reusable = existing
            .as_ref()
            .is_some_and(|m| m.is_file() && head.size.is_none_or(|s| s == m.len()));
        let mut downloaded = 0;
        if !reusable {
            downloaded = self.download_blob(commit, &head).await?;
        }
        self.cache
            .link_snapshot_file(commit, &head.path, &head.etag)?;
        let size = tokio::fs::metadata(&blob)
            .await
            .map_err(|e| HfError::io(&blob, e))?
            .len();
        self.opts.emit(PullEvent::FileDone {
            path: head.path.clone(),
            reused: reusable,
        });
        Ok((
            SnapshotFile {
                path: head.path,
                size_bytes: size,
                etag: head.etag,
                reused: reusable,
            },
            downloaded,
        ))
    }

    /// Downloads into `blobs/<etag>.incomplete` (resuming what is there),
    /// checks it, and renames it to `blobs/<etag>`.
    async fn download_blob(&self, commit: &str, head: &Head) -> HfResult<u64> {
        let blobs = self.cache.repo_dir.join("blobs");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| HfError::io(&blobs, e))?;
        let part = self.cache.incomplete(&head.etag);
        let url = self.resolve_url(commit, &head.path);
        let mut downloaded = 0u64;
        let mut started = false;
        let mut last_err = None;
        for _ in 0..ATTEMPTS {
            let mut offset = tokio::fs::metadata(&part)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if head.size.is_some_and(|s| offset > s) {
                offset = 0;
            }
            if head.size.is_some_and(|s| s > 0 && offset == s) {
                break; // complete already: only the check is left
            }
            if !started {
                started = true;
                self.opts.emit(PullEvent::FileStarted {
                    path: head.path.clone(),
                    size: head.size,
                    resumed_from: offset,
                });
            }
            match self.download_from(&url, head, &part, offset).await {
                Ok(n) => {
                    downloaded += n;
                    last_err = None;
                    break;
                }
                Err(Interrupted::Retry(n, e)) => {
                    downloaded += n;
                    tracing::info!(path = %head.path, error = %e, "download cut, resuming");
                    last_err = Some(e);
                }
                Err(Interrupted::Fatal(e)) => return Err(e),
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        self.verify(head, &part).await?;
        let blob = self.cache.blob(&head.etag);
        tokio::fs::rename(&part, &blob)
            .await
            .map_err(|e| HfError::io(&blob, e))?;
        Ok(downloaded)
    }

    /// One GET (following redirects) from `offset`; appends to `part`.
    async fn download_from(
        &self,
        url: &str,
        head: &Head,
        part: &Path,
        offset: u64,
    ) -> Result<u64, Interrupted> {
        let mut target = url.to_string();
        let origin = reqwest::Url::parse(url).ok();
        let mut resp = None;
        for _ in 0..=MAX_REDIRECTS {
            let same_host = reqwest::Url::parse(&target).ok().and_then(|u| {
                origin
                    .as_ref()
                    .map(|o| o.host_str() == u.host_str() && o.port() == u.port())
            }) == Some(true);
            let mut req = self.request(Method::GET, &target, same_host);
            if offset > 0 {
                req = req.header(header::RANGE, format!("bytes={offset}-"));
            }
            let r = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(Interrupted::Retry(
                        0,
                        HfError::Network {
                            url: target.clone(),
                            message: describe_reqwest(&e),
                        },
                    ));
                }
            };
            if r.status().is_redirection() {
                let Some(loc) = header_str(r.headers(), header::LOCATION.as_str()) else {
                    return Err(Interrupted::Fatal(HfError::Http {
                        url: target,
                        status: r.status().as_u16(),
                        detail: ": a redirect without Location".into(),
                    }));
                };
                let next = reqwest::Url::parse(&target)
                    .and_then(|base| base.join(loc))
                    .map_err(|e| {
                        Interrupted::Fatal(HfError::Http {
                            url: target.clone(),
                            status: r.status().as_u16(),
                            detail: format!(": bad redirect {loc:?}: {e}"),
                        })
                    })?;
                target = next.to_string();
                continue;
            }
            resp = Some(r);
            break;
        }
        let Some(resp) = resp else {
            return Err(Interrupted::Fatal(HfError::Http {
                url: url.to_string(),
                status: 310,
                detail: format!(": more than {MAX_REDIRECTS} redirects"),
            }));
        };
        let status = resp.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT => {
                let start = header_str(resp.headers(), header::CONTENT_RANGE.as_str())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(offset) {
                    // a range we did not ask for: start over
                    let _ = tokio::fs::remove_file(part).await;
                    return Err(Interrupted::Retry(
                        0,
                        HfError::Http {
                            url: target,
                            status: 206,
                            detail: format!(": answered a range not starting at {offset}"),
                        },
                    ));
                }
                true
            }
            StatusCode::OK => false,
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let _ = tokio::fs::remove_file(part).await;
                return Err(Interrupted::Retry(
                    0,
                    HfError::Http {
                        url: target,
                        status: 416,
                        detail: ": the partial download was longer than the file".into(),
                    },
                ));
            }
            _ => {
                return Err(Interrupted::Fatal(
                    self.status_error(resp, &target, Some(&head.path)).await,
                ));
            }
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(|e| Interrupted::Fatal(HfError::io(part, e)))?;
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| Interrupted::Fatal(HfError::io(part, e)))?;
                    n += bytes.len() as u64;
                    self.opts.emit(PullEvent::FileProgress {
                        path: head.path.clone(),
                        bytes: bytes.len() as u64,
                    });
                }
                Err(e) => {
                    // keep what arrived: the next attempt resumes after it
                    let _ = file.flush().await;
                    let _ = file.sync_all().await;
                    return Err(Interrupted::Retry(
                        n,
                        HfError::Network {
                            url: target,
                            message: format!("connection cut: {}", describe_reqwest(&e)),
                        },
                    ));
                }
            }
        }
        file.flush()
            .await
            .and(file.sync_all().await)
            .map_err(|e| Interrupted::Fatal(HfError::io(part, e)))?;
        Ok(n)
    }

    /// Size against the Hub's, then the content against the ETag: the
    /// sha256 of LFS files, git's blob sha1 of the others. A mismatch
    /// discards the file.
    async fn verify(&self, head: &Head, part: &Path) -> HfResult<()> {
        let len = tokio::fs::metadata(part)
            .await
            .map_err(|e| HfError::io(part, e))?
            .len();
        if let Some(size) = head.size
            && size != len
        {
            let _ = tokio::fs::remove_file(part).await;
            return Err(HfError::Checksum {
                path: head.path.clone(),
                expected: format!("{size} bytes"),
                got: format!("{len} bytes"),
            });
        }
        let hex_len = head.etag.bytes().all(|b| b.is_ascii_hexdigit()) as usize * head.etag.len();
        let digest: fn(&Path) -> std::io::Result<String> = match hex_len {
            64 => sha256_of,
            40 => git_blob_sha1_of,
            _ => return Ok(()), // an ETag that names no content hash (a mirror's)
        };
        let p = part.to_path_buf();
        let got = tokio::task::spawn_blocking(move || digest(&p))
            .await
            .map_err(|e| HfError::io(part, std::io::Error::other(e.to_string())))?
            .map_err(|e| HfError::io(part, e))?;
        if !got.eq_ignore_ascii_case(&head.etag) {
            let _ = tokio::fs::remove_file(part).await;
            return Err(HfError::Checksum {
                path: head.path.clone(),
                expected: head.etag.clone(),
                got,
            });
        }
        Ok(())
    }
}

enum Interrupted {
    /// Worth another attempt (bytes written so far, the error).
    Retry(u64, HfError),
    Fatal(HfError),
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Git's object id of the file as a blob: sha1 of `blob <len>\0` + content,
/// the ETag the Hub gives files not stored in LFS.
fn git_blob_sha1_of(path: &Path) -> std::io::Result<String> {
    use sha1::{Digest as _, Sha1};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// reqwest's message with its causes (the useful part is often the cause).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn choice_explains_unloadable_repos() {
        let mlx = choose(
            "a/b",
            &names(&[
                "config.json",
                "model.safetensors",
                "README.md",
                "tokenizer.json",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            mlx,
            Choice::Mlx(names(&[
                "config.json",
                "tokenizer.json",
                "model.safetensors"
            ]))
        );
        let e = choose("a/b", &names(&["config.json", "pytorch_model.bin"]), None).unwrap_err();
        assert!(e.to_string().contains("PyTorch"), "{e}");
        let e = choose("a/b", &names(&["x-q4.gguf", "x-q8.gguf"]), None).unwrap_err();
        assert!(e.to_string().contains("--file"), "{e}");
        assert_eq!(
            choose(
                "a/b",
                &names(&["x-q4.gguf", "x-q8.gguf"]),
                Some("x-q8.gguf")
            )
            .unwrap(),
            Choice::Gguf("x-q8.gguf".into())
        );
        let e = choose("a/b", &names(&["README.md"]), None).unwrap_err();
        assert!(e.to_string().contains("no config.json"), "{e}");
    }

    #[test]
    fn etags_and_paths_are_normalised() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(encode_path("dir/a b.json"), "dir/a%20b.json");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    }
}
