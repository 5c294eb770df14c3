//! The S3-compatible artifact store (AWS S3, MinIO, any server speaking the
//! S3 API), with a local read-through cache ([`super::cache::BlobCache`]).
//!
//! Object layout under `s3://<bucket>/<prefix>`:
//!
//! - `<prefix>/blobs/sha256/<sha[0..2]>/<sha>`: the blob, named by its content;
//! - `<prefix>/tiers/archive/<sha>`: an empty marker object: the blob is in
//!   the archive tier. Tiers are markers, not moves, so archiving a 10 GB blob
//!   copies nothing (a bucket lifecycle rule may move archived blobs to a
//!   colder storage class by listing the markers);
//! - `<prefix>/datasets/<content_hash>.json`: the manifest of a registered
//!   dataset (file name → blob sha256), so workers on other machines can
//!   materialise it.
//!
//! Publication is atomic: a blob is uploaded first (one PUT, or a multipart
//! upload completed at the end, invisible until then) and only then recorded
//! in the database by the caller. Re-putting existing content is a HEAD and
//! nothing else. Every download is streamed into a temp file while hashed and
//! refused ([`StoreError::IntegrityMismatch`]) if the hash is not its name.
//!
//! Settings come from the standard AWS environment variables:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (MinIO or another
//! local server: path-style addressing is then used) and `AWS_ALLOW_HTTP=true`
//! to allow a plain-http endpoint. Secrets are never logged.

use crate::store::Entity;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{BlobCache, PinnedBlob};
use super::{ArtifactStore, LocalBlob, PutOutcome, Tier, check_sha};
use crate::secret::Secret;
use crate::store::{StoreError, StoreResult};

/// Multipart part size (S3's minimum is 5 MiB); smaller blobs are one PUT.
const PART_BYTES: usize = 16 << 20;

/// Where and how to reach the bucket. `Debug` redacts the secrets.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub region: String,
    /// `AWS_ENDPOINT_URL`: a non-AWS server (path-style addressing).
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// `AWS_ALLOW_HTTP=true`: plain http to the endpoint is allowed.
    pub allow_http: bool,
}

impl S3Settings {
    /// Parses `s3://bucket[/prefix]` and reads the AWS variables from `env`.
    pub fn from_url(url: &str, env: impl Fn(&str) -> Option<String>) -> StoreResult<S3Settings> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let bad = |why: &str| {
            StoreError::invalid(
                "artifact_store",
                format!("{url:?}: {why} (expected s3://bucket or s3://bucket/prefix)"),
            )
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'));
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|seg| seg == "." || seg == ".." || (seg.is_empty() && !prefix.is_empty()))
            || prefix.contains(['?', '#', '\\'])
            || prefix.chars().any(char::is_control)
        {
            return Err(bad("the prefix must be plain path segments"));
        }
        let allow_http = match env("AWS_ALLOW_HTTP").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" || v == "1" => true,
            Some(v) if v == "false" || v == "0" => false,
            Some(v) => {
                return Err(StoreError::invalid(
                    "AWS_ALLOW_HTTP",
                    format!("{v:?}: expected true or false"),
                ));
            }
        };
        let endpoint = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"));
        if let Some(e) = &endpoint {
            if e.starts_with("http://") && !allow_http {
                return Err(StoreError::invalid(
                    "AWS_ENDPOINT_URL",
                    format!("{e}: plain http needs AWS_ALLOW_HTTP=true"),
                ));
            }
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(StoreError::invalid(
                    "AWS_ENDPOINT_URL",
                    format!("{e:?}: expected http://host:port or https://host"),
                ));
            }
        }
        Ok(S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_string()),
            endpoint,
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
            allow_http,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The S3 artifact store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3ArtifactStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Arc<AmazonS3>,
    settings: S3Settings,
    cache: BlobCache,
    data_dir: PathBuf,
    /// This process's temp folder (`<data_dir>/tmp/<pid>-<n>`), and its lock.
    tmp: PathBuf,
    _lock: File,
    /// One download per blob at a time in this process.
    downloads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn remote_err(
    op: &'static str,
    key: &ObjectPath,
) -> impl FnOnce(object_store::Error) -> StoreError + use<> {
    let key = key.to_string();
    move |e| match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            entity: Entity::Artifact,
            key,
        },
        other => StoreError::ObjectStore {
            op,
            key,
            message: other.to_string(),
        },
    }
}

impl S3ArtifactStore {
    /// Connects to the bucket of `settings`; the cache and the temp folder go
    /// under `data_dir`. Checks that the bucket answers.
    pub async fn open(
        settings: S3Settings,
        data_dir: &Path,
        cache_max_bytes: u64,
    ) -> StoreResult<S3ArtifactStore> {
        crate::install_tls_provider();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_allow_http(settings.allow_http)
            .with_disable_tagging(true)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(settings.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    // big blobs take long: bound the silence, not the transfer
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(60)),
            );
        if let Some(e) = &settings.endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &settings.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &settings.secret_access_key {
            b = b.with_secret_access_key(s.expose());
        }
        if let Some(t) = &settings.session_token {
            b = b.with_token(t.expose());
        }
        let client = b.build().map_err(|e| {
            StoreError::invalid("artifact_store", format!("{}: {e}", settings.url()))
        })?;

        let tmp_root = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_root).map_err(|e| StoreError::io(&tmp_root, e))?;
        let removed = super::cleanup_dead_temp_dirs(&tmp_root)?;
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by a dead process");
        }
        let (tmp, lock) = super::make_private_tmp(&tmp_root)?;
        let cache = BlobCache::open(data_dir.join("cache").join("blobs"), cache_max_bytes)?;
        let store = S3ArtifactStore {
            inner: Arc::new(Inner {
                client: Arc::new(client),
                settings,
                cache,
                data_dir: data_dir.to_path_buf(),
                tmp,
                _lock: lock,
                downloads: Mutex::new(HashMap::new()),
            }),
        };
        store.check_bucket().await?;
        tracing::info!(
            store = %store.inner.settings.url(),
            endpoint = store.inner.settings.endpoint.as_deref().unwrap_or("aws"),
            cache_max_bytes,
            "S3 artifact store"
        );
        Ok(store)
    }

    /// A listing of the prefix: fails early on a missing bucket or bad keys.
    async fn check_bucket(&self) -> StoreResult<()> {
        let p = self.key("blobs");
        self.inner
            .client
            .list_with_delimiter(Some(&p))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::ObjectStore {
                op: "list",
                key: self.inner.settings.url(),
                message: e.to_string(),
            })
    }

    pub fn settings(&self) -> &S3Settings {
        &self.inner.settings
    }

    /// The local data directory (cache, temp files, fetched datasets).
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn cache(&self) -> &BlobCache {
        &self.inner.cache
    }

    /// This process's private temporary folder (same file system as the cache).
    pub fn tmp_dir(&self) -> &Path {
        &self.inner.tmp
    }

    fn key(&self, rest: &str) -> ObjectPath {
        if self.inner.settings.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.inner.settings.prefix))
        }
    }

    /// The object key of a blob.
    pub fn blob_key(&self, sha: &str) -> ObjectPath {
        self.key(&format!("blobs/sha256/{}/{sha}", &sha[..2]))
    }

    fn archive_marker(&self, sha: &str) -> ObjectPath {
        self.key(&format!("tiers/archive/{sha}"))
    }

    fn dataset_manifest_key(&self, content_hash: &str) -> ObjectPath {
        self.key(&format!("datasets/{content_hash}.json"))
    }

    async fn exists(&self, key: &ObjectPath) -> StoreResult<bool> {
        match self.inner.client.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote_err("head", key)(e)),
        }
    }

    /// Uploads `path` as `sha` (multipart past [`PART_BYTES`]).
    async fn upload_file(&self, path: &Path, key: &ObjectPath) -> StoreResult<()> {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::io(path, e))?;
        let client: Arc<dyn ObjectStore> = self.inner.client.clone();
        let mut w = BufWriter::with_capacity(client, key.clone(), PART_BYTES);
        let result = async {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf)
                    .await
                    .map_err(|e| StoreError::io(path, e))?;
                if n == 0 {
                    break;
                }
                w.put(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .map_err(remote_err("put", key))?;
            }
            w.shutdown().await.map_err(|e| StoreError::ObjectStore {
                op: "put",
                key: key.to_string(),
                message: e.to_string(),
            })
        }
        .await;
        if result.is_err() {
            let _ = w.abort().await;
        }
        result
    }

    async fn put_local_file(&self, path: &Path) -> StoreResult<PutOutcome> {
        let p = path.to_path_buf();
        let (sha, size) = tokio::task::spawn_blocking(move || super::sha256_file(&p))
            .await
            .map_err(|e| StoreError::io(path, io::Error::other(e)))??;
        let key = self.blob_key(&sha);
        let created = if self.exists(&key).await? {
            false
        } else {
            self.upload_file(path, &key).await?;
            true
        };
        // content wanted again is active again
        self.set_tier(&sha, Tier::Active).await?;
        Ok(PutOutcome {
            sha256: sha,
            size_bytes: size,
            created,
        })
    }

    async fn set_tier(&self, sha: &str, tier: Tier) -> StoreResult<()> {
        let marker = self.archive_marker(sha);
        match tier {
            Tier::Archive => self
                .inner
                .client
                .put(&marker, PutPayload::default())
                .await
                .map(|_| ())
                .map_err(remote_err("put", &marker)),
            Tier::Active => match self.inner.client.delete(&marker).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(remote_err("delete", &marker)(e)),
            },
        }
    }

    /// Downloads `sha` into the cache (hash-checked) unless it is there, and
    /// pins it.
    pub async fn fetch(&self, sha: &str) -> StoreResult<PinnedBlob> {
        check_sha(sha)?;
        if let Some(p) = self.pin_blocking(sha).await? {
            return Ok(p);
        }
        let gate = {
            let mut m = self.inner.downloads.lock().expect("downloads lock");
            m.entry(sha.to_string()).or_default().clone()
        };
        let _one = gate.lock().await;
        let out = match self.pin_blocking(sha).await? {
            Some(p) => Ok(p),
            None => self.download(sha).await,
        };
        {
            let mut m = self.inner.downloads.lock().expect("downloads lock");
            if Arc::strong_count(&gate) <= 2 {
                m.remove(sha);
            }
        }
        out
    }

    async fn pin_blocking(&self, sha: &str) -> StoreResult<Option<PinnedBlob>> {
        let (cache, sha) = (self.inner.cache.clone(), sha.to_string());
        tokio::task::spawn_blocking(move || cache.pin(&sha))
            .await
            .map_err(|e| StoreError::io("<blob cache task>", io::Error::other(e)))?
    }

    async fn download(&self, sha: &str) -> StoreResult<PinnedBlob> {
        let key = self.blob_key(sha);
        let got = self
            .inner
            .client
            .get(&key)
            .await
            .map_err(remote_err("get", &key))?;
        let tmp_dir = self.inner.tmp.clone();
        let mut tmp = tempfile::Builder::new()
            .prefix(".get-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| StoreError::io(&tmp_dir, e))?;
        let mut hasher = Sha256::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(remote_err("get", &key))?;
            hasher.update(&chunk);
            tmp.write_all(&chunk)
                .map_err(|e| StoreError::io(tmp.path(), e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha {
            // `tmp` is deleted on drop: nothing reaches the cache
            tracing::error!(sha256 = sha, key = %key, actual = %actual, "downloaded blob is corrupt");
            return Err(StoreError::IntegrityMismatch {
                sha256: sha.to_string(),
                key: key.to_string(),
                actual,
            });
        }
        let cache = self.inner.cache.clone();
        let sha_owned = sha.to_string();
        tokio::task::spawn_blocking(move || {
            let pin = cache.insert(&sha_owned, tmp)?;
            match cache.evict() {
                Ok(ev) if !ev.evicted.is_empty() => {
                    tracing::info!(
                        evicted = ev.evicted.len(),
                        freed_bytes = ev.freed_bytes,
                        remaining_bytes = ev.remaining_bytes,
                        "blob cache eviction"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "blob cache eviction failed"),
            }
            Ok(pin)
        })
        .await
        .map_err(|e| StoreError::io("<blob cache task>", io::Error::other(e)))?
    }

    /// Every blob of a tier in the bucket (sha256s, sorted).
    pub async fn list(&self, tier: Tier) -> StoreResult<Vec<String>> {
        let archived = self.list_keys(&self.key("tiers/archive")).await?;
        let archived: std::collections::HashSet<String> = archived.into_iter().collect();
        let mut out: Vec<String> = self
            .list_keys(&self.key("blobs/sha256"))
            .await?
            .into_iter()
            .filter(|sha| archived.contains(sha) == (tier == Tier::Archive))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The sha-named last segments of every key under `prefix`.
    async fn list_keys(&self, prefix: &ObjectPath) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        let mut s = self.inner.client.list(Some(prefix));
        while let Some(meta) = s.next().await {
            let meta = meta.map_err(|e| StoreError::ObjectStore {
                op: "list",
                key: prefix.to_string(),
                message: e.to_string(),
            })?;
            if let Some(name) = meta.location.filename()
                && check_sha(name).is_ok()
            {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// Uploads a dataset folder's files as blobs plus its manifest, so other
    /// machines can materialise it ([`S3ArtifactStore::fetch_dataset`]).
    pub async fn publish_dataset(&self, content_hash: &str, dir: &Path) -> StoreResult<()> {
        check_sha(content_hash)?;
        let manifest_key = self.dataset_manifest_key(content_hash);
        if self.exists(&manifest_key).await? {
            return Ok(());
        }
        let mut files = std::collections::BTreeMap::new();
        let mut rd = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| StoreError::io(dir, e))?;
        while let Some(e) = rd.next_entry().await.map_err(|e| StoreError::io(dir, e))? {
            let ft = e
                .file_type()
                .await
                .map_err(|er| StoreError::io(e.path(), er))?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !ft.is_file() || name.starts_with('.') {
                continue;
            }
            let put = self.put_local_file(&e.path()).await?;
            files.insert(name, put.sha256);
        }
        let body = serde_json::to_vec(&serde_json::json!({ "files": files })).expect("plain data");
        self.inner
            .client
            .put(&manifest_key, PutPayload::from(body))
            .await
            .map_err(remote_err("put", &manifest_key))?;
        Ok(())
    }

    /// Materialises a published dataset into `dest` (built beside, renamed).
    /// `NotFound` if it was never published.
    pub async fn fetch_dataset(&self, content_hash: &str, dest: &Path) -> StoreResult<()> {
        check_sha(content_hash)?;
        if dest.is_dir() {
            return Ok(());
        }
        let manifest_key = self.dataset_manifest_key(content_hash);
        let body = self
            .inner
            .client
            .get(&manifest_key)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StoreError::NotFound {
                    entity: Entity::Dataset,
                    key: content_hash.to_string(),
                },
                other => remote_err("get", &manifest_key)(other),
            })?
            .bytes()
            .await
            .map_err(remote_err("get", &manifest_key))?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| StoreError::Corrupt {
                entity: "dataset manifest",
                field: "files",
                message: format!("{manifest_key}: {e}"),
            })?;
        let files = manifest["files"]
            .as_object()
            .ok_or_else(|| StoreError::Corrupt {
                entity: "dataset manifest",
                field: "files",
                message: format!("{manifest_key}: no files"),
            })?;
        let parent = dest
            .parent()
            .expect("dataset dir has a parent")
            .to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| StoreError::io(&parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&parent)
            .map_err(|e| StoreError::io(&parent, e))?;
        for (name, sha) in files {
            let sha = sha.as_str().unwrap_or_default();
            if name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(StoreError::Corrupt {
                    entity: "dataset manifest",
                    field: "files",
                    message: format!("{manifest_key}: bad file name {name:?}"),
                });
            }
            let pin = self.fetch(sha).await?;
            let dst = staging.path().join(name);
            let src = pin.path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::hard_link(&src, &dst)
                    .or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))
                    .map_err(|e| StoreError::io(&dst, e))
            })
            .await
            .map_err(|e| StoreError::io(dest, io::Error::other(e)))??;
        }
        let staged = staging.keep();
        match std::fs::rename(&staged, dest) {
            Ok(()) => Ok(()),
            // another process materialised it meanwhile
            Err(_) if dest.is_dir() => {
                let _ = std::fs::remove_dir_all(&staged);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                Err(StoreError::io(dest, e))
            }
        }
    }
}

#[async_trait::async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn put_file(&self, path: &Path) -> StoreResult<PutOutcome> {
        self.put_local_file(path).await
    }

    async fn put_bytes(&self, bytes: Vec<u8>) -> StoreResult<PutOutcome> {
        let sha = super::sha256_bytes(&bytes);
        let size = bytes.len() as u64;
        let key = self.blob_key(&sha);
        let created = if self.exists(&key).await? {
            false
        } else {
            self.inner
                .client
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(remote_err("put", &key))?;
            true
        };
        self.set_tier(&sha, Tier::Active).await?;
        Ok(PutOutcome {
            sha256: sha,
            size_bytes: size,
            created,
        })
    }

    async fn locate(&self, sha256: &str) -> StoreResult<Option<Tier>> {
        check_sha(sha256)?;
        if !self.exists(&self.blob_key(sha256)).await? {
            return Ok(None);
        }
        Ok(Some(if self.exists(&self.archive_marker(sha256)).await? {
            Tier::Archive
        } else {
            Tier::Active
        }))
    }

    async fn open(&self, sha256: &str) -> StoreResult<tokio::fs::File> {
        let pin = self.fetch(sha256).await?;
        // the open file keeps the data even if the name is evicted later
        let f = pin.file().map_err(|e| StoreError::io(&pin.path, e))?;
        Ok(tokio::fs::File::from_std(f))
    }

    async fn local_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>> {
        Ok(self.local_blob(sha256).await?.map(|b| b.path))
    }

    async fn local_blob(&self, sha256: &str) -> StoreResult<Option<LocalBlob>> {
        match self.fetch(sha256).await {
            Ok(pin) => Ok(Some(LocalBlob {
                path: pin.path.clone(),
                _pin: Some(pin),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn archive(&self, sha256: &str) -> StoreResult<()> {
        if self.locate(sha256).await?.is_none() {
            return Err(StoreError::not_found(Entity::Artifact, sha256));
        }
        self.set_tier(sha256, Tier::Archive).await
    }

    async fn restore(&self, sha256: &str) -> StoreResult<()> {
        if self.locate(sha256).await?.is_none() {
            return Err(StoreError::not_found(Entity::Artifact, sha256));
        }
        self.set_tier(sha256, Tier::Active).await
    }

    async fn delete(&self, sha256: &str) -> StoreResult<()> {
        check_sha(sha256)?;
        let key = self.blob_key(sha256);
        if !self.exists(&key).await? {
            return Err(StoreError::not_found(Entity::Artifact, sha256));
        }
        self.inner
            .client
            .delete(&key)
            .await
            .map_err(remote_err("delete", &key))?;
        self.set_tier(sha256, Tier::Active).await?;
        let (cache, sha) = (self.inner.cache.clone(), sha256.to_string());
        let _ = tokio::task::spawn_blocking(move || cache.forget(&sha)).await;
        Ok(())
    }
}
