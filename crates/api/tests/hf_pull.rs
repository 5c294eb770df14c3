//! `hub::hf` against a local server that behaves like the Hugging Face Hub's
//! file resolution: `GET /api/models/{repo}/revision/{rev}` (commit and file
//! list), `HEAD|GET /{repo}/resolve/{rev}/{path}` with `ETag`,
//! `X-Repo-Commit`, `X-Linked-Etag`/`X-Linked-Size` and a 302 to a "CDN"
//! route for LFS files, `Range` requests, and 401/404 with `X-Error-Code`.
//! It serves the tiny parity fixture (a real mlx-lm model folder), so the
//! pulled version is loaded and its greedy tokens compared with mlx-lm's.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use common::http::{TestHub, assert_error, tiny_model};
use hub::hf::{HfError, HfSettings, PullModelRequest, scan_cache};
use hub::{Hub, HubError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token";

struct FakeFile {
    content: Vec<u8>,
    lfs: bool,
}

struct FakeRepo {
    files: BTreeMap<String, FakeFile>,
    gated: bool,
}

#[derive(Default)]
struct Behaviour {
    /// Paths whose next CDN download is cut after this many bytes.
    cut_after: HashMap<String, usize>,
    /// Paths served with one byte flipped.
    corrupt: HashSet<String>,
}

struct FakeHub {
    repos: HashMap<String, FakeRepo>,
    behaviour: Mutex<Behaviour>,
    /// `METHOD path [range]` of every request, in order.
    log: Mutex<Vec<String>>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Git's blob id, the ETag the Hub gives files outside LFS.
fn git_etag(b: &[u8]) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    sha1::Digest::update(&mut h, format!("blob {}\0", b.len()).as_bytes());
    sha1::Digest::update(&mut h, b);
    hex::encode(h.finalize())
}

impl FakeHub {
    fn log(&self, method: &Method, path: &str, headers: &HeaderMap) {
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        self.log
            .lock()
            .unwrap()
            .push(format!("{method} {path}{range}"));
    }

    fn entries(&self, prefix: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The repository, or the error response the Hub gives.
    fn repo(&self, id: &str, headers: &HeaderMap) -> Result<&FakeRepo, Box<Response>> {
        let Some(r) = self.repos.get(id) else {
            return Err(Box::new(hub_error(StatusCode::NOT_FOUND, "RepoNotFound")));
        };
        let authorized = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if r.gated && !authorized {
            return Err(Box::new(hub_error(StatusCode::UNAUTHORIZED, "GatedRepo")));
        }
        Ok(r)
    }
}

fn hub_error(status: StatusCode, code: &'static str) -> Response {
    let mut r = (status, format!("{{\"error\":\"{code}\"}}")).into_response();
    r.headers_mut()
        .insert("x-error-code", HeaderValue::from_static(code));
    r
}

fn resolve_rev(rev: &str) -> Option<&'static str> {
    (rev == "main" || rev == COMMIT).then_some(COMMIT)
}

async fn revision_info(
    State(s): State<Arc<FakeHub>>,
    UrlPath((org, name, rev)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    s.log(
        &Method::GET,
        &format!("/api/models/{org}/{name}/revision/{rev}"),
        &headers,
    );
    let repo = match s.repo(&format!("{org}/{name}"), &headers) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let Some(commit) = resolve_rev(&rev) else {
        return hub_error(StatusCode::NOT_FOUND, "RevisionNotFound");
    };
    let siblings: Vec<Value> = repo
        .files
        .keys()
        .map(|p| json!({ "rfilename": p }))
        .collect();
    axum::Json(json!({ "id": format!("{org}/{name}"), "sha": commit, "siblings": siblings }))
        .into_response()
}

async fn resolve(
    State(s): State<Arc<FakeHub>>,
    method: Method,
    UrlPath((org, name, rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    s.log(
        &method,
        &format!("/{org}/{name}/resolve/{rev}/{path}"),
        &headers,
    );
    let repo = match s.repo(&format!("{org}/{name}"), &headers) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let Some(commit) = resolve_rev(&rev) else {
        return hub_error(StatusCode::NOT_FOUND, "RevisionNotFound");
    };
    let Some(f) = repo.files.get(&path) else {
        return hub_error(StatusCode::NOT_FOUND, "EntryNotFound");
    };
    let mut h = HeaderMap::new();
    h.insert("x-repo-commit", commit.parse().unwrap());
    h.insert(
        header::ETAG,
        format!("\"{}\"", git_etag(&f.content)).parse().unwrap(),
    );
    if f.lfs {
        // large files: metadata here, content from the CDN after a redirect
        let sha = sha256_hex(&f.content);
        h.insert("x-linked-etag", format!("\"{sha}\"").parse().unwrap());
        h.insert("x-linked-size", f.content.len().into());
        // another host name for the same server, as the Hub's CDN is another host
        let port = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.rsplit(':').next())
            .unwrap_or("80")
            .to_string();
        h.insert(
            header::LOCATION,
            format!("http://localhost:{port}/cdn/{org}/{name}/{sha}?path={path}")
                .parse()
                .unwrap(),
        );
        return (StatusCode::FOUND, h).into_response();
    }
    h.insert(header::CONTENT_LENGTH, f.content.len().into());
    if method == Method::HEAD {
        return (StatusCode::OK, h).into_response();
    }
    let mut content = f.content.clone();
    if s.behaviour.lock().unwrap().corrupt.contains(&path) {
        content[0] ^= 0x55;
    }
    (StatusCode::OK, h, content).into_response()
}

#[derive(serde::Deserialize)]
struct CdnQuery {
    path: String,
}

async fn cdn(
    State(s): State<Arc<FakeHub>>,
    UrlPath((org, name, _sha)): UrlPath<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<CdnQuery>,
    headers: HeaderMap,
) -> Response {
    s.log(
        &Method::GET,
        &format!("/cdn/{org}/{name}/{}", q.path),
        &headers,
    );
    // the CDN never sees the Hub token
    assert!(
        headers.get(header::AUTHORIZATION).is_none(),
        "the token was sent to another host"
    );
    let repo = &s.repos[&format!("{org}/{name}")];
    let mut content = repo.files[&q.path].content.clone();
    let (cut, corrupt) = {
        let mut b = s.behaviour.lock().unwrap();
        (b.cut_after.remove(&q.path), b.corrupt.contains(&q.path))
    };
    if corrupt {
        let mid = content.len() / 2;
        content[mid] ^= 0x55;
    }
    let total = content.len();
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    let (status, body, mut h) = match start {
        Some(s) if s >= total => {
            return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        }
        Some(s) => {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{total}", total - 1).parse().unwrap(),
            );
            (StatusCode::PARTIAL_CONTENT, content[s..].to_vec(), h)
        }
        None => (StatusCode::OK, content, HeaderMap::new()),
    };
    h.insert(header::CONTENT_LENGTH, body.len().into());
    match cut {
        Some(n) => {
            // send n bytes, then drop the connection
            let first = Bytes::copy_from_slice(&body[..n.min(body.len())]);
            // (a pause, so the bytes are on the wire before the cut)
            use futures_util::StreamExt;
            let stream =
                futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(first) })
                    .chain(futures_util::stream::once(async {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        Err(std::io::Error::other("connection cut by the test"))
                    }));
            (status, h, Body::from_stream(stream)).into_response()
        }
        None => (status, h, body).into_response(),
    }
}

/// Starts the fake Hub on a free port; returns its URL.
async fn start(fake: Arc<FakeHub>) -> String {
    let app = Router::new()
        .route(
            "/api/models/{org}/{name}/revision/{rev}",
            get(revision_info),
        )
        .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve))
        .route("/cdn/{org}/{name}/{sha}", get(cdn))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn model_repo(dir: &Path, gated: bool) -> FakeRepo {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let lfs = name.ends_with(".safetensors");
        files.insert(
            name,
            FakeFile {
                content: std::fs::read(&p).unwrap(),
                lfs,
            },
        );
    }
    files.insert(
        ".gitattributes".into(),
        FakeFile {
            content: b"*.safetensors filter=lfs\n".to_vec(),
            lfs: false,
        },
    );
    FakeRepo { files, gated }
}

struct Fixture {
    th: TestHub,
    fake: Arc<FakeHub>,
    url: String,
    cache: tempfile::TempDir,
    model_dir: PathBuf,
}

impl Fixture {
    fn settings(&self) -> HfSettings {
        HfSettings {
            endpoint: self.url.clone(),
            token: None,
            cache_dir: self.cache.path().to_path_buf(),
            offline: false,
            max_parallel: 3,
        }
    }

    fn hub(&self) -> &Hub {
        &self.th.hub
    }
}

async fn fixture(test: &str) -> Option<Fixture> {
    fixture_with(test, Vec::new()).await
}

async fn fixture_with(test: &str, extra: Vec<(String, FakeRepo)>) -> Option<Fixture> {
    let model_dir = tiny_model(test)?;
    let mut repos: HashMap<String, FakeRepo> = extra.into_iter().collect();
    repos.insert("test-org/tiny".to_string(), model_repo(&model_dir, false));
    repos.insert("test-org/gated".to_string(), model_repo(&model_dir, true));
    let mut torch = BTreeMap::new();
    for (name, content) in [
        (
            "config.json",
            std::fs::read(model_dir.join("config.json")).unwrap(),
        ),
        ("pytorch_model.bin", vec![0u8; 64]),
    ] {
        torch.insert(
            name.to_string(),
            FakeFile {
                content,
                lfs: false,
            },
        );
    }
    repos.insert(
        "test-org/torch-only".to_string(),
        FakeRepo {
            files: torch,
            gated: false,
        },
    );
    let fake = Arc::new(FakeHub {
        repos,
        behaviour: Mutex::default(),
        log: Mutex::default(),
    });
    let url = start(fake.clone()).await;
    let th = TestHub::new(common::sqlite().await);
    Some(Fixture {
        th,
        fake,
        url,
        cache: tempfile::tempdir().unwrap(),
        model_dir,
    })
}

fn req(repo: &str) -> PullModelRequest {
    PullModelRequest {
        repo: repo.into(),
        name: Some("tiny".into()),
        ..PullModelRequest::default()
    }
}

fn hf_err(e: HubError) -> HfError {
    match e {
        HubError::Hf(e) => e,
        other => panic!("expected a Hugging Face error, got {other}"),
    }
}

/// Resume after a cut connection, the cache layout, registration (linked),
/// reuse by a second pull, offline mode, and the model loading and
/// generating mlx-lm's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_resumes_registers_reuses_and_loads() {
    let Some(f) = fixture("pull_resumes_registers_reuses_and_loads").await else {
        return;
    };
    let weights = std::fs::read(f.model_dir.join("model.safetensors")).unwrap();
    let cut = 100_000;
    f.fake
        .behaviour
        .lock()
        .unwrap()
        .cut_after
        .insert("model.safetensors".into(), cut);

    let r = f
        .hub()
        .pull_model(&req("test-org/tiny"), f.settings(), None)
        .await;
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.reused_version);
    assert_eq!(r.snapshot.commit, COMMIT);
    // the cut download was resumed from where it stopped
    let cdn = f.fake.entries("GET /cdn/test-org/tiny/model.safetensors");
    assert_eq!(cdn.len(), 2, "{:#?}", f.fake.log.lock().unwrap());
    assert_eq!(cdn[0], "GET /cdn/test-org/tiny/model.safetensors");
    let resumed_at: usize = cdn[1]
        .strip_prefix("GET /cdn/test-org/tiny/model.safetensors bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a resumed request: {}", cdn[1]));
    assert!(
        resumed_at > 0 && resumed_at <= cut,
        "resumed at {resumed_at}"
    );
    // every byte came over the network once, plus nothing: the cut part was kept
    let small: u64 = r
        .snapshot
        .files
        .iter()
        .filter(|x| x.path != "model.safetensors")
        .map(|x| x.size_bytes)
        .sum();
    assert_eq!(r.snapshot.downloaded_bytes, small + weights.len() as u64);

    // the Hugging Face cache layout
    let repo_dir = f.cache.path().join("models--test-org--tiny");
    let sha = sha256_hex(&weights);
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(&sha)).unwrap(),
        weights
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let link = repo_dir
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert!(
        !repo_dir
            .join("snapshots")
            .join(COMMIT)
            .join("README.md")
            .exists()
    );
    assert!(
        !repo_dir
            .join("snapshots")
            .join(COMMIT)
            .join(".gitattributes")
            .exists()
    );
    let no_partials = std::fs::read_dir(repo_dir.join("blobs")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".incomplete")
    });
    assert!(no_partials);

    // registered linked to the snapshot, with the files' sha256
    let v = &r.version;
    assert_eq!(v.status.to_string(), "ready");
    assert_eq!(
        v.artifact_uri.as_deref(),
        Some(
            format!(
                "file://{}",
                repo_dir
                    .join("snapshots")
                    .join(COMMIT)
                    .canonicalize()
                    .unwrap()
                    .display()
            )
            .as_str()
        )
    );
    let files = f.hub().store.version_files(v.id).await.unwrap();
    let w = files
        .iter()
        .find(|x| x.path == "model.safetensors")
        .unwrap();
    assert_eq!(w.sha256, sha);
    assert_eq!(f.th.blobs(hub::Tier::Active).len(), 0, "linked, not copied");

    // a second pull downloads nothing and registers nothing new
    let before = f.fake.entries("GET /").len();
    let r2 = f
        .hub()
        .pull_model(&req("test-org/tiny"), f.settings(), None)
        .await
        .unwrap();
    assert!(r2.reused_version);
    assert_eq!(r2.version.id, v.id);
    assert_eq!(r2.snapshot.downloaded_bytes, 0);
    assert!(r2.snapshot.files.iter().all(|x| x.reused));
    let gets: Vec<String> = f.fake.entries("GET /")[before..]
        .iter()
        .filter(|l| !l.starts_with("GET /api/"))
        .cloned()
        .collect();
    assert!(gets.is_empty(), "second pull downloaded {gets:?}");

    // offline: served from the cache without a request, even with the server gone
    let n = f.fake.log.lock().unwrap().len();
    let offline = HfSettings {
        offline: true,
        endpoint: "http://127.0.0.1:9".into(),
        ..f.settings()
    };
    let r3 = f
        .hub()
        .pull_model(&req("test-org/tiny"), offline.clone(), None)
        .await
        .unwrap();
    assert!(r3.snapshot.offline && r3.reused_version);
    assert_eq!(f.fake.log.lock().unwrap().len(), n);
    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/other"), offline, None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::OfflineNotCached { .. }), "{e}");
    assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");

    // the cache listing
    let listed = scan_cache(f.cache.path()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo, "test-org/tiny");
    assert_eq!(listed[0].refs, [("main".to_string(), COMMIT.to_string())]);

    // the pulled model loads and generates mlx-lm's greedy tokens
    let reference: Value = serde_json::from_slice(
        &std::fs::read(f.model_dir.with_file_name("llama-tied-f32.reference.json")).unwrap(),
    )
    .unwrap();
    let chat = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat")
        .unwrap();
    let (st, b) =
        f.th.call(
            "POST",
            "/v1/chat/completions",
            Some(json!({
                "model": "tiny",
                "messages": chat["messages"],
                "temperature": 0,
                "max_tokens": 8,
                "return_token_ids": true,
            })),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let got: Vec<u64> = b["choices"][0]["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = chat["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(!got.is_empty());
    assert_eq!(got, want[..got.len()], "tokens differ from mlx-lm's");
}

/// Huggingface_hub (Python) reads what we wrote: same layout, same cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_huggingface_hub_reads_our_cache() {
    let Some(f) = fixture("python_huggingface_hub_reads_our_cache").await else {
        return;
    };
    f.hub()
        .pull_model(&req("test-org/tiny"), f.settings(), None)
        .await
        .unwrap();
    let script = "import sys\nfrom huggingface_hub import snapshot_download\n\
                  p = snapshot_download('test-org/tiny', cache_dir=sys.argv[1], local_files_only=True, \
                  allow_patterns=['*.json', 'model*.safetensors'])\nprint(p)";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(f.cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .output();
    let Some(out) = test_support::require(
        "python_huggingface_hub_reads_our_cache",
        out.map_err(|e| format!("python3: {e}")),
    ) else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(path.ends_with(&format!("snapshots/{COMMIT}")), "{path}");
}

/// A corrupted download is refused and removed; nothing is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_refused() {
    let Some(f) = fixture("corrupted_blob_is_refused").await else {
        return;
    };
    f.fake
        .behaviour
        .lock()
        .unwrap()
        .corrupt
        .insert("model.safetensors".into());
    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/tiny"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let blobs = f.cache.path().join("models--test-org--tiny/blobs");
    let sha = sha256_hex(&std::fs::read(f.model_dir.join("model.safetensors")).unwrap());
    assert!(!blobs.join(&sha).exists());
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    assert!(f.hub().store.get_model_by_name("tiny").await.is_err());

    // a small file outside LFS is checked against its git blob id
    // (from an empty cache: the first pull kept the small files it had)
    std::fs::remove_dir_all(&blobs).unwrap();
    {
        let mut b = f.fake.behaviour.lock().unwrap();
        b.corrupt.clear();
        b.corrupt.insert("config.json".into());
    }
    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/tiny"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("config.json"), "{e}");
    let git_id = git_etag(&std::fs::read(f.model_dir.join("config.json")).unwrap());
    assert!(!blobs.join(&git_id).exists());
    assert!(f.hub().store.get_model_by_name("tiny").await.is_err());
}

/// Two pulls of one repo at once (as two processes would) take turns per
/// blob: each file is downloaded once, and both register their model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_pulls_download_each_blob_once() {
    let Some(f) = fixture("simultaneous_pulls_download_each_blob_once").await else {
        return;
    };
    let first = req("test-org/tiny");
    let mut other = req("test-org/tiny");
    other.name = Some("tiny-twin".into());
    let (a, b) = tokio::join!(
        f.hub().pull_model(&first, f.settings(), None),
        f.hub().pull_model(&other, f.settings(), None),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.snapshot.commit, b.snapshot.commit);
    let gets: Vec<String> = f
        .fake
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("GET /cdn/") || l.starts_with("GET /test-org/tiny/resolve/"))
        .cloned()
        .collect();
    let unique: HashSet<&String> = gets.iter().collect();
    assert_eq!(
        gets.len(),
        unique.len(),
        "a blob was downloaded twice: {gets:#?}"
    );
    let locks = f.cache.path().join(".locks/models--test-org--tiny");
    assert!(locks.is_dir(), "huggingface_hub's lock folder is used");
}

/// 404, 401 (gated, with and without token), unknown revision, not loadable,
/// and the same through `POST /api/models/pull`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_is_wrong() {
    let Some(f) = fixture("errors_say_what_is_wrong").await else {
        return;
    };
    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/missing"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::RepoNotFound { .. }), "{e}");
    assert!(e.to_string().contains("test-org/missing"), "{e}");

    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/gated"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(e, HfError::AccessDenied { status: 401, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");
    let with_token = HfSettings {
        token: Some(TOKEN.into()),
        ..f.settings()
    };
    let r = f
        .hub()
        .pull_model(
            &PullModelRequest {
                name: Some("gated".into()),
                ..req("test-org/gated")
            },
            with_token,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.version.number, 1);

    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/tiny@v9"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::RevisionNotFound { .. }), "{e}");
    assert!(e.to_string().contains("\"v9\""), "{e}");

    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/torch-only"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::NotLoadable { .. }), "{e}");
    assert!(e.to_string().contains("PyTorch"), "{e}");

    // the HTTP route: same errors as JSON, then a pull that registers
    let app = f.th.app.clone().layer(Extension(f.settings()));
    let (st, b) = post(&app, json!({"repo": "test-org/missing"})).await;
    assert_error(st, &b, 404, "hf_repo_not_found");
    let (st, b) = post(&app, json!({"repo": "test-org/gated"})).await;
    assert_error(st, &b, 403, "hf_access_denied");
    let (st, b) = post(&app, json!({"repo": "bad//id"})).await;
    assert_error(st, &b, 422, "invalid_repo_id");
    let (st, b) = post(
        &app,
        json!({"repo": "test-org/tiny", "name": "tiny-http", "alias": "prod"}),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["model"], "tiny-http");
    assert_eq!(b["version"]["aliases"], json!(["prod"]));
    let (st, b) = post(&app, json!({"repo": "test-org/tiny", "name": "tiny-http"})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["reused_version"], true);
}

/// `POST /api/models/pull` through the router.
async fn post(app: &Router, body: Value) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/models/pull")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A GGUF repository: without --file the choice is refused (two files), with
/// it the file is pulled (LFS, checked) and imported by the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gguf_repo_pulls_one_file_and_imports_it() {
    let gguf = test_support::require!(test_support::smollm2_gguf());
    let mut files = BTreeMap::new();
    files.insert(
        "SmolLM2-135M-Instruct-Q4_1.gguf".to_string(),
        FakeFile {
            content: std::fs::read(&gguf).unwrap(),
            lfs: true,
        },
    );
    files.insert(
        "SmolLM2-135M-Instruct-Q8_0.gguf".to_string(),
        FakeFile {
            content: b"not pulled".to_vec(),
            lfs: true,
        },
    );
    let repo = FakeRepo {
        files,
        gated: false,
    };
    let Some(f) = fixture_with(
        "gguf_repo_pulls_one_file_and_imports_it",
        vec![("test-org/smol-gguf".to_string(), repo)],
    )
    .await
    else {
        return;
    };
    let e = hf_err(
        f.hub()
            .pull_model(&req("test-org/smol-gguf"), f.settings(), None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, HfError::NotLoadable { .. }), "{e}");
    assert!(e.to_string().contains("--file"), "{e}");
    let r = f
        .hub()
        .pull_model(
            &PullModelRequest {
                file: Some("SmolLM2-135M-Instruct-Q4_1.gguf".into()),
                name: Some("smol".into()),
                ..req("test-org/smol-gguf")
            },
            f.settings(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.snapshot.files.len(), 1);
    assert_eq!(r.version.architecture.as_deref(), Some("llama"));
    assert_eq!(r.version.parameter_count, Some(134_515_008));
    let uri = r.version.artifact_uri.clone().unwrap();
    assert!(uri.contains("/imports/gguf-"), "{uri}");
    // a second pull: nothing downloaded, no second conversion, same version
    let r2 = f
        .hub()
        .pull_model(
            &PullModelRequest {
                file: Some("SmolLM2-135M-Instruct-Q4_1.gguf".into()),
                name: Some("smol".into()),
                ..req("test-org/smol-gguf")
            },
            f.settings(),
            None,
        )
        .await
        .unwrap();
    assert!(r2.reused_version);
    assert_eq!(r2.snapshot.downloaded_bytes, 0);
}
