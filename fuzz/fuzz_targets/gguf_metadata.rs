//! A GGUF file's header, metadata and tensor directory, then everything the
//! importer builds from them before MLX loads a tensor: config.json,
//! tokenizer.json, tokenizer_config.json, the tensor checks, and the tokenizer.
#![no_main]

use std::path::Path;

use engine::config::ModelConfig;
use engine::gguf_meta::{self, GgufConfigOptions};
use engine::tokenizer::{Tokenizer, TokenizerFiles};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = gguf_meta::parse_gguf(data, Some(data.len() as u64)) else {
        return;
    };
    let m = &file.metadata;
    let _ = gguf_meta::special_token_ids(m);
    let _ =
        engine::convert::check_tensor_directory(Path::new("fuzz.gguf"), &file, data.len() as u64);
    if let Ok(config) =
        gguf_meta::config_json_from_gguf(m, GgufConfigOptions::from_tensors(&file.tensors, false))
    {
        let _ = ModelConfig::from_json_value(&config);
    }
    let tokenizer_config = gguf_meta::tokenizer_config_from_gguf(m);
    if let (Ok(tokenizer_json), Ok(tokenizer_config)) =
        (gguf_meta::tokenizer_json_from_gguf(m), tokenizer_config)
        && let Ok(tok) = Tokenizer::from_parts(TokenizerFiles {
            tokenizer_json,
            tokenizer_config: Some(tokenizer_config),
            chat_template: None,
            config_eos_token_ids: Vec::new(),
        })
    {
        let msgs = [serde_json::json!({"role": "user", "content": "hello"})];
        let _ = tok.encode_chat(&msgs, true, None);
        let _ = tok.encode("hello world", true);
    }
});
