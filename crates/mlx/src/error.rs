use std::any::Any;
use std::cell::RefCell;
use std::panic::resume_unwind;
use std::path::PathBuf;

/// Everything that can go wrong in this crate. MLX's own C++ exceptions arrive as
/// [`Error::Mlx`] with MLX's message; nothing aborts and nothing unwinds across FFI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operation rejected by MLX (shape mismatch, bad dtype, …), with MLX's message.
    #[error("{0}")]
    Mlx(String),
    /// A file could not be read or written.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// Arguments rejected on the Rust side before reaching MLX.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The array holds another element type than the one asked for.
    #[error("dtype mismatch: the array is {actual}, {requested} was requested")]
    DtypeMismatch {
        actual: crate::Dtype,
        requested: crate::Dtype,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn last() -> Error {
        // SAFETY: mlxs_last_error returns a valid NUL-terminated thread-local string.
        let msg = unsafe { std::ffi::CStr::from_ptr(crate::ffi::mlxs_last_error()) };
        Error::Mlx(msg.to_string_lossy().into_owned())
    }
}

/// Turns a status code from the shim into a `Result`.
pub(crate) fn check(status: std::ffi::c_int) -> Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(take_pending().unwrap_or_else(Error::last))
    }
}

/// What a Rust closure called back from MLX (see `transforms`) left for the
/// Rust side: its error, or its panic to resume.
pub(crate) enum Pending {
    Error(Error),
    Panic(Box<dyn Any + Send>),
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Parks a closure's failure until the FFI call that ran it returns.
pub(crate) fn park(p: Pending) {
    PENDING.with(|slot| *slot.borrow_mut() = Some(p));
}

/// The error a closure raised during the last FFI call on this thread, if any.
/// A panic in a closure is resumed here, on the Rust side of the boundary.
pub(crate) fn take_pending() -> Option<Error> {
    match PENDING.with(|p| p.borrow_mut().take()) {
        None => None,
        Some(Pending::Error(e)) => Some(e),
        Some(Pending::Panic(payload)) => resume_unwind(payload),
    }
}
