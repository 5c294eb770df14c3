//! The committed seed corpus of a fuzz target, read by the replay tests of the
//! crates that own the entry points (`engine/tests/fuzz_corpus.rs`,
//! `hub/tests/fuzz_regressions.rs`, both `#[path]`-include this file).

use std::path::{Path, PathBuf};

/// Every seed of `fuzz/corpus/<target>/`, sorted by path, with its bytes.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// `fuzz/corpus`, from the including crate's directory (`crates/<name>`).
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}
