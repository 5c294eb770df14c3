//! The engine: model families, tokenizers and chat templates, generation, LoRA and
//! training, quantization and conversion — pure Rust over the `mlx` crate. It knows
//! nothing of databases or HTTP.

pub mod config;
pub mod gguf_meta;
pub mod tokenizer;
