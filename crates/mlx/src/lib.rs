//! Safe Rust over Apple's MLX: arrays, operations, fast kernels, quantization,
//! random numbers, automatic differentiation and compilation, safetensors and GGUF.
//!
//! This is the only crate of the hub with `unsafe` code and C++. It talks to a thin
//! C++ shim of our own (`csrc/shim.cpp`) over MLX's C++ API; every MLX exception is
//! caught in the shim and arrives here as [`Error`] — never an abort, never an
//! exception crossing into Rust.
//!
//! # Laziness
//! Operations build a graph and return at once. Work happens on [`Array::eval`],
//! [`eval`], or when values are read ([`Array::to_vec`], [`Array::item`]).
//!
//! # Threads
//! MLX (0.32) gives each thread its own streams: the graph an operation records
//! runs on the stream of the thread that recorded it. What this crate promises, and
//! tests:
//! - Independent graphs can be built and evaluated concurrently on several threads.
//! - [`Array`] is `Send`, not `Sync`. An *evaluated* array is plain data: send it to
//!   another thread and use it there as an input. An *unevaluated* array must be
//!   evaluated on the thread that built it; evaluating it elsewhere returns an
//!   [`Error`] ("no stream in current thread"), never a crash. So: build and run a
//!   model's graphs on one thread (the engine gives each loaded model its own).
//! - [`Compiled`] functions stay on the thread that compiled them (MLX keeps the
//!   compile cache per thread), so they are not `Send`.
//! - Closures given to [`value_and_grad`] or [`compile`] run on the calling thread.

mod array;
mod dtype;
mod error;
pub mod fast;
mod ffi;
pub mod io;
mod ops;
pub mod quantization;
pub mod random;
pub mod system;
mod transforms;

pub use array::{Array, async_eval, eval};
pub use dtype::{Dtype, Element};
pub use error::{Error, Result};
pub use ops::{
    Axes, Operand, addmm, arange, concatenate, eye, full, linspace, ones, stack, where_, zeros,
};
pub use transforms::{
    Checkpointed, Compiled, Params, checkpoint, compile, set_compile_enabled, value_and_grad,
    value_and_grad_vec, vjp,
};
