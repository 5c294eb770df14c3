//! The engine: model families, tokenizers and chat templates, generation, LoRA and
//! training, quantization and conversion — pure Rust over the `mlx` crate. It knows
//! nothing of databases or HTTP, and reads no environment ([`runtime`] carries the
//! caller's settings). Unsafe code lives in the `mlx` crate only.

#![forbid(unsafe_code)]

pub mod batch;
pub mod config;
pub mod convert;
pub mod decode;
pub mod generate;
pub mod gguf_meta;
pub mod models;
pub mod nn;
pub mod runtime;
pub mod sampling;
pub mod tokenizer;
pub mod train;
pub mod weights;
