//! Reading and writing tensors: safetensors (mlx-lm's format) and GGUF (llama.cpp's).
//!
//! Writes are atomic: MLX writes a temporary file beside the target, which is
//! fsynced and renamed into place, so a crash never leaves a half-written file.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::array::{RawStrings, RawVec};
use crate::error::{Error, Result};
use crate::{Array, ffi};

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn c_path(path: &Path) -> Result<CString> {
    let s = path
        .to_str()
        .ok_or_else(|| file_error(path, "path is not valid UTF-8"))?;
    CString::new(s).map_err(|_| file_error(path, "path contains a NUL byte"))
}

fn readable(path: &Path) -> Result<()> {
    File::open(path)
        .map(|_| ())
        .map_err(|e| file_error(path, e.to_string()))
}

/// Tensors (by name) and the header's `__metadata__` of a safetensors file.
#[derive(Debug)]
pub struct Safetensors {
    pub tensors: BTreeMap<String, Array>,
    pub metadata: BTreeMap<String, String>,
}

/// Loads a safetensors file. Tensors are read lazily (on first evaluation), so a
/// large file costs nothing until used; a bad header is reported here.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Safetensors> {
    let path = path.as_ref();
    readable(path)?;
    let cpath = c_path(path)?;
    let names = RawStrings::new();
    let arrays = RawVec::new();
    let keys = RawStrings::new();
    let values = RawStrings::new();
    let status =
        unsafe { ffi::mlxs_load_safetensors(cpath.as_ptr(), names.0, arrays.0, keys.0, values.0) };
    if status != 0 {
        return Err(file_error(path, Error::last().to_string()));
    }
    let tensors = names
        .to_strings()
        .into_iter()
        .zip(arrays.to_arrays()?)
        .collect();
    let metadata = keys
        .to_strings()
        .into_iter()
        .zip(values.to_strings())
        .collect();
    Ok(Safetensors { tensors, metadata })
}

/// Writes tensors (evaluating them) and string metadata to a safetensors file.
pub fn save_safetensors<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a Array)>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_with(
        path.as_ref(),
        "safetensors",
        tensors,
        metadata,
        ffi::mlxs_save_safetensors,
    )
}

type SaveFn = unsafe extern "C" fn(
    *const std::ffi::c_char,
    *const ffi::mlxs_strings,
    *const ffi::mlxs_vec,
    *const ffi::mlxs_strings,
    *const ffi::mlxs_strings,
) -> std::ffi::c_int;

/// Packs tensors and metadata for the shim and writes them atomically with `save`.
fn save_with<'a>(
    path: &Path,
    ext: &str,
    tensors: impl IntoIterator<Item = (&'a str, &'a Array)>,
    metadata: &BTreeMap<String, String>,
    save: SaveFn,
) -> Result<()> {
    let names = RawStrings::new();
    let arrays = RawVec::new();
    for (name, a) in tensors {
        names.push(name);
        arrays.push(a);
    }
    let keys = RawStrings::new();
    let values = RawStrings::new();
    for (k, v) in metadata {
        keys.push(k);
        values.push(v);
    }
    atomic_write(path, ext, |tmp| {
        let c = c_path(tmp)?;
        let status = unsafe { save(c.as_ptr(), names.0, arrays.0, keys.0, values.0) };
        if status != 0 {
            return Err(file_error(path, Error::last().to_string()));
        }
        Ok(())
    })
}

/// Writes via `write(tmp)` to a temporary file beside `path`, fsyncs it, renames it
/// over `path` and fsyncs the folder. On error the temporary file is removed.
/// `ext` is the extension the writer needs to see (MLX appends one if missing).
pub fn atomic_write(path: &Path, ext: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| file_error(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}.{ext}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        let f = File::open(&tmp).map_err(|e| file_error(&tmp, e.to_string()))?;
        f.sync_all().map_err(|e| file_error(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| file_error(path, e.to_string()))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A GGUF metadata value as MLX reads it: numbers (and lists of numbers) come as
/// arrays, strings as strings.
#[derive(Debug, Clone)]
pub enum GgufValue {
    None,
    Array(Array),
    String(String),
    Strings(Vec<String>),
}

/// Tensors and metadata of a GGUF file. Quantized tensors (Q4_0, Q4_1, Q8_0) come
/// as MLX affine triples: `name.weight` (packed), `name.scales`, `name.biases`.
#[derive(Debug)]
pub struct Gguf {
    pub tensors: BTreeMap<String, Array>,
    pub metadata: BTreeMap<String, GgufValue>,
}

fn c_str_at(p: *const std::ffi::c_char, len: usize) -> String {
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Loads a GGUF file.
pub fn load_gguf(path: impl AsRef<Path>) -> Result<Gguf> {
    let path = path.as_ref();
    readable(path)?;
    let cpath = c_path(path)?;
    let g = unsafe { ffi::mlxs_load_gguf(cpath.as_ptr()) };
    if g.is_null() {
        return Err(file_error(path, Error::last().to_string()));
    }
    struct Guard(*mut ffi::mlxs_gguf);
    impl Drop for Guard {
        fn drop(&mut self) {
            unsafe { ffi::mlxs_gguf_free(self.0) }
        }
    }
    let g = Guard(g);
    let mut tensors = BTreeMap::new();
    for i in 0..unsafe { ffi::mlxs_gguf_n_tensors(g.0) } {
        let name = unsafe { CStr::from_ptr(ffi::mlxs_gguf_tensor_name(g.0, i)) }
            .to_string_lossy()
            .into_owned();
        tensors.insert(
            name,
            Array::from_raw(unsafe { ffi::mlxs_gguf_tensor(g.0, i) })?,
        );
    }
    let mut metadata = BTreeMap::new();
    for i in 0..unsafe { ffi::mlxs_gguf_n_meta(g.0) } {
        let key = unsafe { CStr::from_ptr(ffi::mlxs_gguf_meta_key(g.0, i)) }
            .to_string_lossy()
            .into_owned();
        let value = match unsafe { ffi::mlxs_gguf_meta_kind(g.0, i) } {
            1 => GgufValue::Array(Array::from_raw(unsafe {
                ffi::mlxs_gguf_meta_array(g.0, i)
            })?),
            2 => {
                let mut len = 0;
                let p = unsafe { ffi::mlxs_gguf_meta_string(g.0, i, &mut len) };
                GgufValue::String(c_str_at(p, len))
            }
            3 => {
                let n = unsafe { ffi::mlxs_gguf_meta_strings_len(g.0, i) };
                GgufValue::Strings(
                    (0..n)
                        .map(|j| {
                            let mut len = 0;
                            let p = unsafe { ffi::mlxs_gguf_meta_strings_get(g.0, i, j, &mut len) };
                            c_str_at(p, len)
                        })
                        .collect(),
                )
            }
            _ => GgufValue::None,
        };
        metadata.insert(key, value);
    }
    Ok(Gguf { tensors, metadata })
}

/// Writes unquantized tensors and string metadata as GGUF (for tests and export).
pub fn save_gguf<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a Array)>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_with(
        path.as_ref(),
        "gguf",
        tensors,
        metadata,
        ffi::mlxs_save_gguf,
    )
}
