//! Registering model folders (mlx-lm / Hugging Face layout) as versions, and
//! archiving / restoring them.
//!
//! Everything a user can get wrong (path outside the import root, no
//! `config.json`, unsupported `model_type`, no weights) is checked by
//! [`scan_model_folder`] BEFORE any row or file is written. Then the version
//! row is created `registering`, every file is hashed and stored
//! content-addressed (or only hashed with `link`), the files are recorded in
//! one transaction and the version moves to `ready`. If anything fails after
//! the row exists, the version is marked `failed` and the blobs this
//! registration created are removed again.

use crate::store::Entity;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use engine::config::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::artifacts::{ArtifactStore, Tier, sha256_file};
use crate::error::{HubError, HubResult};
use crate::paths::resolve_within;
use crate::service::Hub;
use crate::store::{
    Lineage, Model, ModelVersion, NewModel, NewVersion, StoreError, VersionFile, VersionStatus,
    check_relative_path,
};

/// Most files a model folder may hold.
pub const MAX_FOLDER_FILES: usize = 10_000;

/// A request to register a folder as a new version.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFolder {
    /// The folder, absolute or relative to the import root.
    pub path: PathBuf,
    /// Leave the files where they are and record only their hashes.
    #[serde(default)]
    pub link: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Alias to point at the new version once ready.
    #[serde(default)]
    pub alias: Option<String>,
}

/// What a folder scan found (nothing written yet).
#[derive(Debug, Clone, Serialize)]
pub struct FolderScan {
    pub dir: PathBuf,
    /// (relative `/` path, absolute path), sorted by relative path.
    #[serde(skip)]
    pub files: Vec<(String, PathBuf)>,
    pub architecture: String,
    pub model_type: String,
    pub parameter_count: i64,
    pub dtype: Option<String>,
    pub quantization: Option<serde_json::Value>,
}

fn folder_err(path: &Path, message: impl Into<String>) -> HubError {
    HubError::InvalidModelFolder {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Resolves `user_path` inside `root`, checks it is a model folder the engine
/// can load, and lists its files. Writes nothing.
pub fn scan_model_folder(root: &Path, user_path: &Path) -> HubResult<FolderScan> {
    let dir = resolve_within(root, user_path)?;
    if !dir.is_dir() {
        return Err(folder_err(user_path, "not a directory"));
    }
    let config = ModelConfig::from_dir(&dir).map_err(|source| HubError::ModelConfig {
        path: user_path.to_path_buf(),
        source,
    })?;
    let root = root.canonicalize().map_err(|e| StoreError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let mut files = Vec::new();
    walk(&root, &dir, &dir, 0, &mut files)?;
    files.sort();
    let weights: Vec<&PathBuf> = files
        .iter()
        .filter(|(rel, _)| !rel.contains('/') && rel.ends_with(".safetensors"))
        .map(|(_, abs)| abs)
        .collect();
    if weights.is_empty() {
        return Err(folder_err(
            user_path,
            "no *.safetensors weights at the top of the folder",
        ));
    }
    // every safetensors file (shards, adapters too) must be readable: a
    // corrupt header is refused here, not when the version is first loaded
    for (rel, abs) in files
        .iter()
        .filter(|(rel, _)| rel.ends_with(".safetensors"))
    {
        check_safetensors(abs).map_err(|e| folder_err(user_path, format!("{rel}: {e}")))?;
    }
    let quantization = config
        .raw
        .get("quantization")
        .or_else(|| config.raw.get("quantization_config"))
        .cloned();
    let dtype = config
        .raw
        .get("torch_dtype")
        .or_else(|| config.raw.get("dtype"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| weights_dtype(&weights));
    Ok(FolderScan {
        dir,
        files,
        architecture: config.architecture.as_str().to_string(),
        model_type: config.model_type.clone(),
        parameter_count: parameter_count(&config),
        dtype,
        quantization,
    })
}

fn walk(
    root: &Path,
    base: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> HubResult<()> {
    if depth > 8 {
        return Err(folder_err(base, "folders nested more than 8 deep"));
    }
    let entries = fs::read_dir(dir).map_err(|e| StoreError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let Some(n) = name.to_str() else {
            return Err(folder_err(
                base,
                format!("file name {name:?} is not valid UTF-8"),
            ));
        };
        if n.starts_with('.') {
            continue; // .git, .cache, .DS_Store
        }
        let path = dir.join(n);
        // symlinks are followed but must stay inside the import root
        let real = resolve_within(root, &path)?;
        let meta = fs::metadata(&real).map_err(|e| StoreError::Io {
            path: real.clone(),
            source: e,
        })?;
        let rel = path
            .strip_prefix(base)
            .expect("walked path is under its base")
            .to_string_lossy()
            .replace('\\', "/");
        if meta.is_dir() {
            walk(root, base, &path, depth + 1, out)?;
        } else if meta.is_file() {
            check_relative_path(&rel)?;
            out.push((rel, real));
            if out.len() > MAX_FOLDER_FILES {
                return Err(folder_err(
                    base,
                    format!("more than {MAX_FOLDER_FILES} files"),
                ));
            }
        }
    }
    Ok(())
}

/// Parameter count implied by the configuration (embeddings, attention, MLP,
/// norms, biases, untied head), as a float model would hold them.
pub fn parameter_count(c: &ModelConfig) -> i64 {
    let (h, hd, nh, kv, inter, vocab, layers) = (
        c.hidden_size as u128,
        c.head_dim as u128,
        c.num_attention_heads as u128,
        c.num_key_value_heads as u128,
        c.intermediate_size as u128,
        c.vocab_size as u128,
        c.num_hidden_layers as u128,
    );
    let qkv_bias = if c.attention_qkv_bias {
        nh * hd + 2 * kv * hd
    } else {
        0
    };
    let attn = h * nh * hd
        + 2 * h * kv * hd
        + nh * hd * h
        + qkv_bias
        + if c.attention_out_bias { h } else { 0 };
    let mlp = 3 * h * inter + if c.mlp_bias { 2 * inter + h } else { 0 };
    let norms = 2 * h + if c.qk_norm { 2 * hd } else { 0 };
    let total = vocab * h
        + layers * (attn + mlp + norms)
        + h
        + if c.tie_word_embeddings { 0 } else { vocab * h };
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// The dominant floating-point dtype in the safetensors headers.
fn weights_dtype(weights: &[&PathBuf]) -> Option<String> {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for w in weights {
        let Ok((header, _)) = read_safetensors_header(w) else {
            continue;
        };
        let Some(obj) = header.as_object() else {
            continue;
        };
        for (name, t) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dt = match t.get("dtype").and_then(|d| d.as_str()) {
                Some("F32") => "float32",
                Some("F16") => "float16",
                Some("BF16") => "bfloat16",
                _ => continue,
            };
            *counts.entry(dt).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d.to_string())
}

/// Largest safetensors header read (the format's own limit).
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

/// Reads a safetensors header: `(header, data section length)`. Errors say
/// what is wrong with the file.
fn read_safetensors_header(path: &Path) -> Result<(serde_json::Value, u64), String> {
    let mut f = fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut len = [0u8; 8];
    if file_len >= 8 {
        f.read_exact(&mut len).map_err(|e| e.to_string())?;
    }
    let len = safetensors_header_len(len, file_len)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok((parse_safetensors_header(&buf)?, file_len - 8 - len))
}

/// The header length the first 8 bytes declare, checked against the file length.
fn safetensors_header_len(first8: [u8; 8], file_len: u64) -> Result<u64, String> {
    if file_len < 8 {
        return Err(format!(
            "not a safetensors file: {file_len} bytes, shorter than the 8-byte header length"
        ));
    }
    let len = u64::from_le_bytes(first8);
    if len > MAX_SAFETENSORS_HEADER {
        return Err(format!(
            "header length {len} exceeds the limit of {MAX_SAFETENSORS_HEADER} bytes"
        ));
    }
    if len > file_len - 8 {
        return Err(format!(
            "header length {len} runs past the end of the file ({file_len} bytes): truncated?"
        ));
    }
    Ok(len)
}

fn parse_safetensors_header(buf: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(buf).map_err(|e| format!("header is not valid JSON: {e}"))
}

/// [`check_safetensors`] over a whole file held in memory: the same checks,
/// the same messages (the fuzz target and regression tests use it).
pub fn check_safetensors_bytes(bytes: &[u8]) -> Result<(), String> {
    let file_len = bytes.len() as u64;
    let first8 = bytes
        .get(..8)
        .map_or([0u8; 8], |b| b.try_into().expect("8 bytes"));
    let len = safetensors_header_len(first8, file_len)?;
    let header = parse_safetensors_header(&bytes[8..8 + len as usize])?;
    check_safetensors_header(&header, file_len - 8 - len)
}

/// Bytes per element of a safetensors dtype (sub-byte types: None, size not checked).
fn safetensors_dtype_bytes(dtype: &str) -> Option<Option<u64>> {
    Some(Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        "F4" | "F6_E2M3" | "F6_E3M2" => return Some(None),
        _ => return None,
    }))
}

/// Checks a safetensors file's header against the file: a JSON object of
/// tensors, each with a known dtype, a shape and data offsets inside the
/// data section whose length matches the shape.
fn check_safetensors(path: &Path) -> Result<(), String> {
    let (header, data_len) = read_safetensors_header(path)?;
    check_safetensors_header(&header, data_len)
}

fn check_safetensors_header(header: &serde_json::Value, data_len: u64) -> Result<(), String> {
    let obj = header
        .as_object()
        .ok_or("header is not a JSON object of tensors")?;
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor `{name}`: no dtype"))?;
        let size = safetensors_dtype_bytes(dtype)
            .ok_or_else(|| format!("tensor `{name}`: unknown dtype {dtype:?}"))?;
        let shape = t
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|s| s.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| format!("tensor `{name}`: shape is not a list of sizes"))?;
        let offsets = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|s| s.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>())
            .filter(|o| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| format!("tensor `{name}`: data_offsets is not [begin, end]"))?;
        if offsets[1] > data_len {
            return Err(format!(
                "tensor `{name}`: data ends at byte {} of a {data_len}-byte data section \
                 (truncated file?)",
                offsets[1]
            ));
        }
        if let Some(size) = size {
            let want = shape
                .iter()
                .try_fold(size, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?;
            if want != offsets[1] - offsets[0] {
                return Err(format!(
                    "tensor `{name}`: shape {shape:?} of {dtype} needs {want} bytes, \
                     data_offsets hold {}",
                    offsets[1] - offsets[0]
                ));
            }
        }
    }
    Ok(())
}

/// How a registered version goes live once its files are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// `ready` at once (a folder registration).
    Ready,
    /// `ready` in the same transaction that completes the training job that
    /// made it (its worker must hold the lease).
    CompletingJob { job_id: i64, worker_id: String },
}

/// Everything [`register_version`] needs.
#[derive(Debug, Clone)]
pub struct NewRegistration {
    pub model_name: String,
    /// Create the model, with this description, when it does not exist yet
    /// (`None`: it must exist).
    pub create_model: Option<String>,
    pub version: NewVersion,
    /// (relative `/` path in the version, file to read), checked relative.
    pub files: Vec<(String, PathBuf)>,
    /// Record only the files' hashes and leave them where they are.
    pub link: bool,
    /// Alias to point at the version once it is live.
    pub alias: Option<String>,
    /// The process that registers (crash recovery finds its dead owner's rows).
    pub owner: Option<String>,
    pub publish: Publish,
}

/// THE way a version comes to exist: the model found (or created, racing
/// other registrations safely), the version row `registering`, each file
/// stored content-addressed (or hashed, with `link`) and recorded, the version
/// published, the alias set. Past the row, any failure marks the version
/// `failed` and removes the blobs this registration created (unless something
/// else uses them meanwhile): nothing half-registered stays `ready`.
pub async fn register_version(
    store: &crate::store::Store,
    artifacts: &crate::artifacts::Artifacts,
    reg: NewRegistration,
) -> HubResult<ModelVersion> {
    for (rel, _) in &reg.files {
        check_relative_path(rel)?;
    }
    let model = get_or_create_model(store, &reg.model_name, reg.create_model.as_deref()).await?;
    let version = store
        .create_version_owned(model.id, &reg.version, reg.owner.as_deref())
        .await?;
    let mut created: Vec<String> = Vec::new();
    let filled = fill_version(store, artifacts, version.id, &reg, &mut created).await;
    if let Err(e) = filled {
        tracing::warn!(version_id = version.id, error = %e, "registration failed");
        undo_blobs(store, artifacts, &created).await;
        if let Err(e2) = store.mark_version_failed(version.id, &e.to_string()).await {
            tracing::error!(version_id = version.id, error = %e2, "could not mark version failed");
        }
        return Err(e);
    }
    if let Some(alias) = &reg.alias {
        store.set_alias(model.id, alias, version.id).await?;
    }
    Ok(store.get_version(version.id).await?)
}

/// The model `name`; with `create` set, created when missing (a concurrent
/// creation of the same name is not an error).
pub async fn get_or_create_model(
    store: &crate::store::Store,
    name: &str,
    create: Option<&str>,
) -> HubResult<Model> {
    match store.get_model_by_name(name).await {
        Ok(m) => Ok(m),
        Err(e) if e.is_not_found() => {
            let Some(description) = create else {
                return Err(e.into());
            };
            match store
                .create_model(&NewModel {
                    name: name.to_string(),
                    description: description.to_string(),
                    tags: Vec::new(),
                })
                .await
            {
                Ok(m) => Ok(m),
                Err(StoreError::Conflict { .. }) => Ok(store.get_model_by_name(name).await?),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn fill_version(
    store: &crate::store::Store,
    artifacts: &crate::artifacts::Artifacts,
    version_id: i64,
    reg: &NewRegistration,
    created: &mut Vec<String>,
) -> HubResult<()> {
    let mut files = Vec::with_capacity(reg.files.len());
    for (rel, abs) in &reg.files {
        let (sha, size) = if reg.link {
            let p = abs.clone();
            tokio::task::spawn_blocking(move || sha256_file(&p))
                .await
                .map_err(|e| HubError::Internal(e.to_string()))??
        } else {
            let out = artifacts.put_file(abs).await?;
            if out.created {
                created.push(out.sha256.clone());
            }
            let rec = store
                .record_artifact(&out.sha256, out.size_bytes as i64)
                .await?;
            if rec.tier == Tier::Archive {
                store.set_artifact_tier(&out.sha256, Tier::Active).await?;
            }
            (out.sha256, out.size_bytes)
        };
        files.push(VersionFile {
            path: rel.clone(),
            size_bytes: size as i64,
            sha256: sha,
        });
    }
    store.add_version_files(version_id, &files).await?;
    match &reg.publish {
        Publish::Ready => {
            store.mark_version_ready(version_id).await?;
        }
        Publish::CompletingJob { job_id, worker_id } => {
            store
                .complete_with_version(*job_id, worker_id, version_id)
                .await?;
        }
    }
    Ok(())
}

/// Removes blobs a failed registration created, unless something else
/// refers to them meanwhile.
async fn undo_blobs(
    store: &crate::store::Store,
    artifacts: &crate::artifacts::Artifacts,
    created: &[String],
) {
    for sha in created {
        match store.live_references(sha).await {
            Ok(0) => {}
            _ => continue,
        }
        let _ = store.delete_artifact_record(sha).await;
        if let Err(e) = artifacts.delete(sha).await {
            tracing::warn!(sha, error = %e, "could not remove blob of a failed registration");
        }
    }
}

impl Hub {
    /// Registers the folder as the next version of an existing model.
    pub async fn register_model_folder(
        &self,
        model_name: &str,
        req: &RegisterFolder,
        root: &Path,
    ) -> HubResult<ModelVersion> {
        let model = self.store.get_model_by_name(model_name).await?;
        self.precheck(req)?;
        let scan = self.scan_blocking(root, &req.path).await?;
        self.register_scanned(&model.name, None, req, scan).await
    }

    /// Like [`Hub::register_model_folder`], creating the model when missing
    /// (the CLI's `models register`).
    pub async fn register_model_folder_creating(
        &self,
        model_name: &str,
        req: &RegisterFolder,
        root: &Path,
    ) -> HubResult<ModelVersion> {
        // validate everything before creating the model row
        let scan = self.scan_blocking(root, &req.path).await?;
        self.precheck(req)?;
        self.register_scanned(model_name, Some(""), req, scan).await
    }

    fn precheck(&self, req: &RegisterFolder) -> HubResult<()> {
        if let Some(a) = &req.alias {
            crate::store::check_alias(a)?;
        }
        for t in &req.tags {
            if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                return Err(HubError::invalid("tags", format!("invalid tag {t:?}")));
            }
        }
        Ok(())
    }

    async fn scan_blocking(&self, root: &Path, path: &Path) -> HubResult<FolderScan> {
        let (root, path) = (root.to_path_buf(), path.to_path_buf());
        tokio::task::spawn_blocking(move || scan_model_folder(&root, &path))
            .await
            .map_err(|e| HubError::Internal(e.to_string()))?
    }

    async fn register_scanned(
        &self,
        model_name: &str,
        create_model: Option<&str>,
        req: &RegisterFolder,
        scan: FolderScan,
    ) -> HubResult<ModelVersion> {
        let artifact_uri = if req.link {
            format!("file://{}", scan.dir.display())
        } else {
            "cas://".to_string()
        };
        register_version(
            &self.store,
            &self.artifacts,
            NewRegistration {
                model_name: model_name.to_string(),
                create_model: create_model.map(str::to_string),
                version: NewVersion {
                    format: "mlx".into(),
                    architecture: Some(scan.architecture.clone()),
                    parameter_count: Some(scan.parameter_count),
                    dtype: scan.dtype.clone(),
                    quantization: scan.quantization.clone(),
                    artifact_uri: Some(artifact_uri),
                    description: req.description.clone(),
                    tags: req.tags.clone(),
                    lineage: Lineage {
                        source: Some(scan.dir.display().to_string()),
                        ..Lineage::default()
                    },
                },
                files: scan.files,
                link: req.link,
                alias: req.alias.clone(),
                owner: Some(self.owner.id().to_string()),
                publish: Publish::Ready,
            },
        )
        .await
    }

    /// `ready | failed → archived`; blobs no live version uses move to the
    /// archive tier.
    pub async fn archive_version(&self, model_name: &str, vref: &str) -> HubResult<ModelVersion> {
        let model = self.store.get_model_by_name(model_name).await?;
        let v = self.store.resolve_version(model.id, vref).await?;
        let v = self.store.archive_version(v.id).await?;
        if v.artifact_uri.as_deref() == Some("cas://") {
            for f in self.store.version_files(v.id).await? {
                if self.store.live_references(&f.sha256).await? == 0 {
                    self.artifacts.archive(&f.sha256).await?;
                    self.store
                        .set_artifact_tier(&f.sha256, Tier::Archive)
                        .await?;
                }
            }
        }
        Ok(v)
    }

    /// `archived → ready`; its blobs move back to the active tier.
    pub async fn restore_version(&self, model_name: &str, vref: &str) -> HubResult<ModelVersion> {
        let model = self.store.get_model_by_name(model_name).await?;
        let v = self.store.resolve_version(model.id, vref).await?;
        if v.status != VersionStatus::Archived {
            return Err(StoreError::IllegalTransition {
                entity: Entity::Version,
                key: v.id.to_string(),
                from: v.status.to_string(),
                to: "ready".into(),
            }
            .into());
        }
        if v.artifact_uri.as_deref() == Some("cas://") {
            for f in self.store.version_files(v.id).await? {
                self.artifacts.restore(&f.sha256).await?;
                self.store
                    .set_artifact_tier(&f.sha256, Tier::Active)
                    .await?;
            }
        }
        Ok(self.store.restore_version(v.id).await?)
    }
}
