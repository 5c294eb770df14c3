//! A `train.jsonl` through the hub's registration check, then through the
//! trainer's loader (validation + chat-template tokenization).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use engine::tokenizer::Tokenizer;
use engine::train::data::{DataOptions, parse_split};
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| mlx_hub_fuzz::tiny_tokenizer(mlx_hub_fuzz::QWEN_TEMPLATE))
}

fuzz_target!(|data: &[u8]| {
    let _ = hub::dataset_import::validate_split_bytes("train.jsonl", data, None);
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("train.jsonl");
        for mask_prompt in [false, true] {
            let opts = DataOptions {
                mask_prompt,
                ..DataOptions::default()
            };
            let _ = parse_split(path, text, tokenizer(), &opts);
        }
    }
});
