//! The engine: model families, tokenizers and chat templates, generation, LoRA and
//! training, quantization and conversion — pure Rust over the `mlx` crate. It knows
//! nothing of databases or HTTP.

pub mod batch;
pub mod config;
pub mod convert;
pub mod generate;
pub mod gguf_meta;
pub mod models;
pub mod nn;
pub mod sampling;
pub mod tokenizer;
pub mod train;
pub mod weights;
