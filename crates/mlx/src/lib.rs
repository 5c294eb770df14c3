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
//! What this crate promises, and tests:
//! - [`Array`] is `Send`, not `Sync`: an array can move to another thread and be
//!   used there; two threads must not use the same array at the same time (clone
//!   the handle, which is cheap, and send the clone — a clone shares the graph node,
//!   so evaluating it from two threads at once is still not allowed).
//! - Independent graphs can be built and evaluated concurrently from several
//!   threads (MLX runs each thread's work on its default stream).
//! - [`Compiled`] functions are tied to the thread that compiled them (MLX keeps the
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
    Compiled, Params, compile, set_compile_enabled, value_and_grad, value_and_grad_vec, vjp,
};
