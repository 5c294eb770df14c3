//! Writing a model folder the way mlx-lm's `save_model` / `save_config` do, into a
//! staging folder that is renamed into place only when everything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use mlx::Array;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{ConvertError, ConvertEvent, ConvertReport, Result};

/// mlx-lm's `MAX_FILE_SIZE_GB` (5) in bytes: the largest shard.
pub const MAX_SHARD_BYTES: u64 = 5 << 30;

pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A temporary folder beside the output; removed on drop unless committed.
pub(crate) struct Staging {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

/// Fails when `out` exists (as mlx-lm's convert does).
pub(crate) fn check_output_free(out: &Path) -> Result<()> {
    if out.exists() || out.symlink_metadata().is_ok() {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    Ok(())
}

impl Staging {
    /// `tag` tells apart several staging folders for one output.
    pub(crate) fn new(out: &Path, tag: &str) -> Result<Staging> {
        check_output_free(out)?;
        let name = out
            .file_name()
            .ok_or_else(|| ConvertError::Invalid(format!("{}: not a folder name", out.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| io_err(&parent, e))?;
        let tmp = parent.join(format!(".{name}.{tag}-{}", std::process::id()));
        if tmp.exists() {
            // A leftover of an earlier run of this same process id: ours to remove.
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
        Ok(Staging {
            tmp,
            out: out.to_path_buf(),
            committed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the staging folder to the output (refusing if the output appeared).
    pub(crate) fn commit(mut self) -> Result<PathBuf> {
        check_output_free(&self.out)?;
        std::fs::rename(&self.tmp, &self.out).map_err(|e| io_err(&self.out, e))?;
        self.committed = true;
        if let Some(parent) = self.out.parent()
            && let Ok(d) = File::open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
        {
            let _ = d.sync_all();
        }
        Ok(self.out.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// JSON as Python's `json.dump(..., indent=4)` lays it out.
pub(crate) fn to_json_indent4(v: &impl Serialize) -> Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser)
        .map_err(|e| ConvertError::Invalid(format!("cannot encode JSON: {e}")))?;
    String::from_utf8(buf).map_err(|e| ConvertError::Invalid(e.to_string()))
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| io_err(path, e))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, e))
}

/// Writes `config.json` like mlx-lm's `save_config`: `quantization_config` mirrors
/// `quantization`, top-level keys sorted, 4-space indent.
pub(crate) fn write_config(dir: &Path, config: &Map<String, Value>) -> Result<()> {
    let mut sorted: BTreeMap<&str, &Value> = BTreeMap::new();
    for (k, v) in config {
        if k != "_name_or_path" && k != "vision_config" && k != "quantization_config" {
            sorted.insert(k, v);
        }
    }
    if let Some(q) = config.get("quantization") {
        sorted.insert("quantization_config", q);
    }
    write_file(&dir.join("config.json"), &to_json_indent4(&sorted)?)
}

/// mlx-lm's `get_total_parameters`: a quantized module counts `weight.size * 32 / bits`
/// (+ its bias), anything else the sizes of all its tensors.
pub(crate) fn total_parameters(
    tensors: &BTreeMap<String, Array>,
    bits_of: &dyn Fn(&str) -> Option<u32>,
) -> u64 {
    let mut modules: BTreeSet<&str> = BTreeSet::new();
    for name in tensors.keys() {
        modules.insert(name.rsplit_once('.').map_or(name.as_str(), |(m, _)| m));
    }
    let mut n = 0u64;
    for m in modules {
        let scales = format!("{m}.scales");
        let bits = if tensors.contains_key(&scales) {
            bits_of(m)
        } else {
            None
        };
        match bits {
            Some(bits) => {
                if let Some(w) = tensors.get(&format!("{m}.weight")) {
                    n += w.size() as u64 * 32 / u64::from(bits.max(1));
                }
                if let Some(b) = tensors.get(&format!("{m}.bias")) {
                    n += b.size() as u64;
                }
            }
            None => {
                let prefix = format!("{m}.");
                n += tensors
                    .iter()
                    .filter(|(k, _)| {
                        k.strip_prefix(&prefix)
                            .is_some_and(|rest| !rest.contains('.'))
                    })
                    .map(|(_, a)| a.size() as u64)
                    .sum::<u64>();
            }
        }
    }
    n
}

/// mlx-lm's `make_shards`: in order, a new shard when the next tensor would push the
/// current one past the limit (a tensor larger than the limit gets a shard of its own).
pub(crate) fn make_shards(tensors: &BTreeMap<String, Array>, max_bytes: u64) -> Vec<Vec<&str>> {
    let mut shards: Vec<Vec<&str>> = Vec::new();
    let mut size = 0u64;
    for (k, v) in tensors {
        let nb = v.nbytes() as u64;
        if shards.is_empty() || size + nb > max_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("a shard").push(k);
        size += nb;
    }
    shards
}

/// Writes the weights (shards + index) and `config.json` into `dir`, then renames
/// nothing: the caller commits the staging folder. Returns the report (without
/// `output`, which the caller fills in).
pub(crate) fn write_weights(
    dir: &Path,
    tensors: &BTreeMap<String, Array>,
    total_parameters: u64,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<(u64, Vec<String>)> {
    let shards = make_shards(tensors, MAX_SHARD_BYTES);
    let count = shards.len();
    let metadata = BTreeMap::from([("format".to_string(), "mlx".to_string())]);
    let total_size: u64 = tensors.values().map(|a| a.nbytes() as u64).sum();
    let mut weight_map = BTreeMap::new();
    let mut files = Vec::new();
    for (i, names) in shards.iter().enumerate() {
        let file = if count > 1 {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, count)
        } else {
            "model.safetensors".to_string()
        };
        let bytes = names.iter().map(|n| tensors[*n].nbytes() as u64).sum();
        progress(ConvertEvent::Shard {
            index: i + 1,
            count,
            name: file.clone(),
            bytes,
        });
        mlx::io::save_safetensors(
            dir.join(&file),
            names.iter().map(|n| (*n, &tensors[*n])),
            &metadata,
        )?;
        for n in names {
            weight_map.insert(n.to_string(), Value::String(file.clone()));
        }
        files.push(file);
    }
    // Key order as mlx-lm writes it: metadata {total_size, total_parameters}, weight_map.
    #[derive(Serialize)]
    struct Index<'a> {
        metadata: IndexMeta,
        weight_map: &'a BTreeMap<String, Value>,
    }
    #[derive(Serialize)]
    struct IndexMeta {
        total_size: u64,
        total_parameters: u64,
    }
    let index = Index {
        metadata: IndexMeta {
            total_size,
            total_parameters,
        },
        weight_map: &weight_map,
    };
    write_file(
        &dir.join("model.safetensors.index.json"),
        &to_json_indent4(&index)?,
    )?;
    files.push("model.safetensors.index.json".into());
    Ok((total_size, files))
}

/// Lists the files of a finished output folder, sorted.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(files)
}

pub(crate) fn report(
    output: PathBuf,
    tensors: &BTreeMap<String, Array>,
    total_size: u64,
    total_parameters: u64,
    config: &Map<String, Value>,
) -> Result<ConvertReport> {
    Ok(ConvertReport {
        files: list_files(&output)?,
        output,
        tensors: tensors.len(),
        total_size,
        total_parameters,
        quantization: config.get("quantization").cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros(n: i32) -> Array {
        mlx::zeros(&[n], mlx::Dtype::Float32).unwrap()
    }

    #[test]
    fn shards_split_like_mlx_lm() {
        // 4-byte floats: sizes 40, 40, 200 (over the limit alone), 8.
        let t = BTreeMap::from([
            ("a".to_string(), zeros(10)),
            ("b".to_string(), zeros(10)),
            ("c".to_string(), zeros(50)),
            ("d".to_string(), zeros(2)),
        ]);
        assert_eq!(make_shards(&t, 100), [vec!["a", "b"], vec!["c"], vec!["d"]]);
        assert_eq!(make_shards(&t, 1000), [vec!["a", "b", "c", "d"]]);
    }

    #[test]
    fn quantized_modules_count_unpacked_parameters() {
        let t = BTreeMap::from([
            (
                "q.weight".to_string(),
                mlx::zeros(&[4, 2], mlx::Dtype::Uint32).unwrap(),
            ),
            ("q.scales".to_string(), zeros(4)),
            ("q.biases".to_string(), zeros(4)),
            ("q.bias".to_string(), zeros(4)),
            ("norm.weight".to_string(), zeros(16)),
        ]);
        // 8 packed words × 32 / 4 bits = 64, + 4 bias, + 16 norm.
        assert_eq!(total_parameters(&t, &|m| (m == "q").then_some(4)), 84);
    }
}
