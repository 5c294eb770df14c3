//! Loading a model folder's weights (`model.safetensors`, or shards
//! `model-*.safetensors` with or without `model.safetensors.index.json`), and taking
//! them tensor by tensor with shape checks, so that a missing, extra or misshapen
//! tensor is an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mlx::Array;

use crate::config::ConfigError;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Mlx(#[from] mlx::Error),
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("no weights in {}: expected model.safetensors or model-*.safetensors", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("tensor `{name}` is in more than one weight file")]
    DuplicateTensor { name: String },
    #[error("missing tensor `{name}`")]
    MissingTensor { name: String },
    #[error("unexpected tensor `{name}` (not used by the model)")]
    UnexpectedTensor { name: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<i32>,
        found: Vec<i32>,
    },
    #[error("tensor `{name}` has dtype {found}, expected {expected}")]
    DtypeMismatch {
        name: String,
        expected: String,
        found: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// The safetensors files holding a model folder's weights, sorted by name.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::Io {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // mlx-lm: glob("model*.safetensors").
        if name.starts_with("model") && name.ends_with(".safetensors") {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// A bag of named tensors that a model takes from as it builds itself; whatever is
/// left at the end is an error ([`Weights::finish`]).
#[derive(Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Array>,
}

impl Weights {
    pub fn from_map(tensors: BTreeMap<String, Array>) -> Weights {
        Weights { tensors }
    }

    /// Loads every weight file of a model folder (lazily: nothing is read until used).
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Weights> {
        let mut tensors = BTreeMap::new();
        for file in weight_files(dir.as_ref())? {
            let st = mlx::io::load_safetensors(&file)?;
            for (name, a) in st.tensors {
                if tensors.insert(name.clone(), a).is_some() {
                    return Err(ModelError::DuplicateTensor { name });
                }
            }
        }
        Ok(Weights { tensors })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Drops a tensor if present (weights the model ignores, as mlx-lm's `sanitize`).
    pub fn discard(&mut self, name: &str) {
        self.tensors.remove(name);
    }

    /// Drops every tensor whose name contains `pattern`.
    pub fn discard_matching(&mut self, pattern: &str) {
        self.tensors.retain(|k, _| !k.contains(pattern));
    }

    /// Takes a tensor, which must exist and have shape `expected`.
    pub fn take(&mut self, name: &str, expected: &[i32]) -> Result<Array> {
        let a = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        check_shape(name, &a, expected)?;
        Ok(a)
    }

    /// Takes a tensor if present, checking its shape.
    pub fn take_opt(&mut self, name: &str, expected: &[i32]) -> Result<Option<Array>> {
        if self.contains(name) {
            self.take(name, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Errors on the first tensor nobody took.
    pub fn finish(self) -> Result<()> {
        match self.tensors.into_keys().next() {
            Some(name) => Err(ModelError::UnexpectedTensor { name }),
            None => Ok(()),
        }
    }
}

pub fn check_shape(name: &str, a: &Array, expected: &[i32]) -> Result<()> {
    let found = a.shape();
    if found != expected {
        return Err(ModelError::ShapeMismatch {
            name: name.to_string(),
            expected: expected.to_vec(),
            found,
        });
    }
    Ok(())
}
