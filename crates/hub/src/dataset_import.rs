//! Registering dataset folders: `train.jsonl` (required), `valid.jsonl`,
//! `test.jsonl`, in one of mlx-lm's formats, detected from the first row of
//! `train.jsonl`:
//!
//! - `completions`: `{"prompt": "...", "completion": "..."}`
//! - `chat`: `{"messages": [{"role": "...", "content": "..."}, ...]}`
//! - `text`: `{"text": "..."}`
//!
//! Detection and the row rules are the engine's ([`engine::train::format`], what
//! training reads), with chat roles held to system, user, assistant and tool; the
//! messages keep the API's wording.
//!
//! Every line of every split is validated (errors name the file, the line and
//! what is wrong) while the file is copied into a private temporary folder;
//! only a fully valid dataset is moved (one rename) to
//! `<data-dir>/datasets/<content-hash>/` and recorded.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use engine::train::format::{RowError, RowRules};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{HubError, HubResult};
use crate::paths::resolve_within;
use crate::service::Hub;
use crate::store::{Dataset, NewDataset, StoreError};

pub const SPLITS: [&str; 3] = ["train", "valid", "test"];
/// Longest accepted line.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// mlx-lm's dataset formats (the engine's: detection and row rules live there).
pub use engine::train::format::DataFormat as DatasetFormat;

/// A request to register a dataset folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDataset {
    pub name: String,
    /// The folder, absolute or relative to the import root.
    pub path: PathBuf,
    #[serde(default)]
    pub description: String,
}

/// The result of validating a folder.
#[derive(Debug)]
pub struct ValidatedDataset {
    pub format: DatasetFormat,
    pub splits: BTreeMap<String, i64>,
    pub content_hash: String,
    pub size_bytes: i64,
    /// The validated copies (in a temporary folder).
    pub staged: tempfile::TempDir,
}

fn line_err(file: &str, line: u64, message: impl Into<String>) -> HubError {
    HubError::DatasetLine {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

/// The engine's check of one line (see [`engine::train::format`]), with the API's
/// wording (JSON's type names, quoted keys, the format and where it came from).
fn check_line(line: &[u8], format: Option<DatasetFormat>) -> Result<DatasetFormat, String> {
    let rules = RowRules {
        known_roles_only: true,
        ..RowRules::default()
    };
    engine::train::format::check_line(line, format, &rules).map_err(|e| {
        let message = registration_message(&e.error);
        match (&e.error, e.format) {
            (
                RowError::NotUtf8(_)
                | RowError::EmptyLine
                | RowError::InvalidJson(_)
                | RowError::UnknownFormat(_),
                _,
            )
            | (_, None) => message,
            (_, Some(f)) => format!(
                "{message} (format {} detected from train.jsonl line 1)",
                f.name()
            ),
        }
    })
}

fn registration_message(e: &RowError) -> String {
    match e {
        RowError::NotUtf8(e) => format!("invalid UTF-8: {e}"),
        RowError::EmptyLine => "empty line".into(),
        RowError::InvalidJson(e) => format!("invalid JSON: {e}"),
        RowError::NotAnObject(k) => format!("expected a JSON object, found {}", k.json_name()),
        RowError::UnknownFormat(_) => {
            "unrecognised row: expected {\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"}"
                .into()
        }
        RowError::MissingKey { key, .. } => format!("missing key \"{key}\""),
        RowError::NotAString { key, found } => {
            format!("\"{key}\" must be a string, found {}", found.json_name())
        }
        RowError::MessagesNotAList { key, found } => {
            format!("\"{key}\" must be an array, found {}", found.json_name())
        }
        RowError::MessagesEmpty { key } => format!("\"{key}\" must not be empty"),
        RowError::MessageNotAnObject { index, found } => {
            format!(
                "messages[{index}] must be an object, found {}",
                found.json_name()
            )
        }
        RowError::RoleMissing { index } => format!("messages[{index}] has no \"role\""),
        RowError::RoleNotAString { index, found } => format!(
            "messages[{index}].role must be a string, found {}",
            found.json_name()
        ),
        RowError::UnknownRole { index, role } => {
            format!("messages[{index}].role {role:?} is not one of system, user, assistant, tool")
        }
        RowError::ContentMissing { index } => format!("messages[{index}] has no \"content\""),
        RowError::ContentNotAString { index, found } => format!(
            "messages[{index}].content must be a string, found {}",
            found.json_name()
        ),
        RowError::ToolsNotAList(found) => {
            format!("\"tools\" must be an array, found {}", found.json_name())
        }
        // not a rule of registration (no prompt masking)
        RowError::MaskedChatEndsWithoutAssistant => e.to_string(),
    }
}

/// Validates a whole split held in memory, line by line as a registration
/// does (the fuzz target and regression tests use it): (rows, format).
pub fn validate_split_bytes(
    file_name: &str,
    bytes: &[u8],
    mut format: Option<DatasetFormat>,
) -> HubResult<(i64, DatasetFormat)> {
    let mut rows = 0i64;
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        if line.len() > MAX_LINE_BYTES {
            return Err(line_err(
                file_name,
                line_no,
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        format = Some(check_line(line, format).map_err(|m| line_err(file_name, line_no, m))?);
        rows += 1;
    }
    match format {
        Some(f) => Ok((rows, f)),
        None => Err(HubError::InvalidDataset {
            message: format!("{file_name} has no rows"),
        }),
    }
}

/// Validates one split file while copying it to `dest`; returns (rows, sha256,
/// size, format) — the format is detected from the first row when `format`
/// is `None`.
fn validate_split(
    file_name: &str,
    src: &Path,
    dest: &Path,
    mut format: Option<DatasetFormat>,
) -> HubResult<(i64, String, u64, DatasetFormat)> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| HubError::Store(StoreError::Io { path: p, source: e })
    };
    let mut reader = BufReader::new(File::open(src).map_err(io(src))?);
    let mut out = File::create(dest).map_err(io(dest))?;
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    let (mut line_no, mut rows, mut size) = (0u64, 0i64, 0u64);
    loop {
        buf.clear();
        let n = Read::take(&mut reader, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io(src))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if n > MAX_LINE_BYTES {
            return Err(line_err(
                file_name,
                line_no,
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        hasher.update(&buf);
        out.write_all(&buf).map_err(io(dest))?;
        size += n as u64;
        format = Some(check_line(&buf, format).map_err(|m| line_err(file_name, line_no, m))?);
        rows += 1;
    }
    out.sync_all().map_err(io(dest))?;
    let Some(format) = format else {
        return Err(HubError::InvalidDataset {
            message: format!("{file_name} has no rows"),
        });
    };
    Ok((rows, hex::encode(hasher.finalize()), size, format))
}

/// Validates the dataset folder `user_path` (inside `root`), staging copies
/// in a temporary folder inside `tmp_parent`. Writes nothing else.
pub fn validate_dataset_folder(
    root: &Path,
    user_path: &Path,
    tmp_parent: &Path,
) -> HubResult<ValidatedDataset> {
    let dir = resolve_within(root, user_path)?;
    if !dir.is_dir() {
        return Err(HubError::InvalidDataset {
            message: format!("{} is not a directory", user_path.display()),
        });
    }
    let staged = tempfile::Builder::new()
        .prefix("dataset-")
        .tempdir_in(tmp_parent)
        .map_err(|e| StoreError::Io {
            path: tmp_parent.to_path_buf(),
            source: e,
        })?;
    let mut format = None;
    let mut splits = BTreeMap::new();
    let mut hash_input = String::from("mlx-hub-dataset-v1\n");
    let mut size_bytes = 0i64;
    for split in SPLITS {
        let file_name = format!("{split}.jsonl");
        let candidate = dir.join(&file_name);
        if candidate.symlink_metadata().is_err() {
            if split == "train" {
                return Err(HubError::InvalidDataset {
                    message: format!("{} has no train.jsonl", user_path.display()),
                });
            }
            continue;
        }
        // a symlinked split must still point inside the root
        let src = resolve_within(root, &candidate)?;
        if !src.is_file() {
            return Err(HubError::InvalidDataset {
                message: format!("{file_name} is not a regular file"),
            });
        }
        let (rows, sha, size, f) =
            validate_split(&file_name, &src, &staged.path().join(&file_name), format)?;
        format = Some(f);
        splits.insert(split.to_string(), rows);
        hash_input += &format!("{split} {sha}\n");
        size_bytes += size as i64;
    }
    Ok(ValidatedDataset {
        format: format.expect("train.jsonl was validated"),
        splits,
        content_hash: crate::artifacts::sha256_bytes(hash_input.as_bytes()),
        size_bytes,
        staged,
    })
}

fn publish(staged: tempfile::TempDir, final_dir: &Path) -> HubResult<()> {
    if final_dir.is_dir() {
        return Ok(()); // identical content is stored once
    }
    let staged = staged.keep();
    match fs::rename(&staged, final_dir) {
        Ok(()) => {}
        Err(_) if final_dir.is_dir() => {
            let _ = fs::remove_dir_all(&staged);
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staged);
            return Err(StoreError::Io {
                path: final_dir.to_path_buf(),
                source: e,
            }
            .into());
        }
    }
    if let Some(parent) = final_dir.parent()
        && let Ok(d) = File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Hub {
    /// Validates and registers a dataset folder. Returns the dataset and
    /// whether a new version was created (false when the newest version of
    /// this name already has the same content).
    pub async fn register_dataset_folder(
        &self,
        req: &RegisterDataset,
        root: &Path,
    ) -> HubResult<(Dataset, bool)> {
        // name checks before touching any file
        crate::store::check_model_name(&req.name)?;
        let (root, path, tmp) = (
            root.to_path_buf(),
            req.path.clone(),
            self.artifacts.tmp_dir().to_path_buf(),
        );
        let validated =
            tokio::task::spawn_blocking(move || validate_dataset_folder(&root, &path, &tmp))
                .await
                .map_err(|e| HubError::Internal(e.to_string()))??;
        match self.store.get_dataset_by_name(&req.name, None).await {
            Ok(d) if d.content_hash == validated.content_hash => return Ok((d, false)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let final_dir = self.datasets_dir().join(&validated.content_hash);
        let new = NewDataset {
            name: req.name.clone(),
            format: validated.format.name().to_string(),
            splits: validated.splits.clone(),
            content_hash: validated.content_hash.clone(),
            location: final_dir.display().to_string(),
            size_bytes: validated.size_bytes,
            description: req.description.clone(),
        };
        let staged = validated.staged;
        let fd = final_dir.clone();
        tokio::task::spawn_blocking(move || publish(staged, &fd))
            .await
            .map_err(|e| HubError::Internal(e.to_string()))??;
        // uploaded before it is recorded: workers on other machines fetch it
        self.artifacts
            .publish_dataset(&validated.content_hash, &final_dir)
            .await?;
        // the folder is content-addressed: if the insert fails, it stays as
        // a cache of identical content (never a half-written one)
        let d = self.store.create_dataset(&new).await?;
        Ok((d, true))
    }
}
