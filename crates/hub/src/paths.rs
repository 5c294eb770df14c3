//! Resolving user-supplied paths safely: every path that comes from a user is
//! canonicalised (symlinks followed, `..` resolved) and refused if it ends up
//! outside the root it must stay in.

use std::path::{Component, Path, PathBuf};

use crate::store::{StoreError, StoreResult};

/// Resolves an existing `user_path` (relative to `root`, or absolute) and
/// returns its canonical form, or `PathEscapesRoot` if that lies outside the
/// canonical `root`. Symlinks are followed, so a link pointing out of the root
/// is refused. `NotFound`-style I/O errors come back as `InvalidInput`.
pub fn resolve_within(root: &Path, user_path: &Path) -> StoreResult<PathBuf> {
    let root = canonical_root(root)?;
    let joined = root.join(user_path);
    let resolved = joined
        .canonicalize()
        .map_err(|e| StoreError::invalid("path", format!("{}: {e}", user_path.display())))?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(StoreError::PathEscapesRoot {
            path: user_path.to_path_buf(),
            root,
        })
    }
}

/// Like [`resolve_within`] for a path that may not exist yet (an output):
/// its longest existing ancestor is canonicalised and must be inside `root`,
/// and the rest may only be plain names (no `.`, `..`).
pub fn resolve_new_within(root: &Path, user_path: &Path) -> StoreResult<PathBuf> {
    let root = canonical_root(root)?;
    let joined = root.join(user_path);
    let mut existing = joined.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if existing.symlink_metadata().is_ok() {
            break;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => {
                // `..` or `.` as the last component of a missing path
                return Err(StoreError::PathEscapesRoot {
                    path: user_path.to_path_buf(),
                    root,
                });
            }
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| StoreError::invalid("path", format!("{}: {e}", user_path.display())))?;
    for name in rest.iter().rev() {
        if Path::new(name)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(StoreError::PathEscapesRoot {
                path: user_path.to_path_buf(),
                root,
            });
        }
        resolved.push(name);
    }
    // a missing path may still contain `..` after a missing component
    if joined
        .strip_prefix(existing)
        .map(|tail| {
            tail.components()
                .any(|c| !matches!(c, Component::Normal(_)))
        })
        .unwrap_or(true)
    {
        return Err(StoreError::PathEscapesRoot {
            path: user_path.to_path_buf(),
            root,
        });
    }
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(StoreError::PathEscapesRoot {
            path: user_path.to_path_buf(),
            root,
        })
    }
}

fn canonical_root(root: &Path) -> StoreResult<PathBuf> {
    root.canonicalize().map_err(|e| StoreError::io(root, e))
}
