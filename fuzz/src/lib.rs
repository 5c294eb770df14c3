//! Shared pieces of the fuzz targets: a tiny byte-level BPE tokenizer (no
//! weights, no files) built through the same GGUF → tokenizer.json path the
//! importer uses, carrying a chat template.

use std::collections::BTreeMap;

use engine::gguf_meta::{
    GgufMetadata, GgufValue, tokenizer_config_from_gguf, tokenizer_json_from_gguf,
};
use engine::tokenizer::{Tokenizer, TokenizerFiles};

/// The Qwen2.5-style chat template of the engine's test fixtures.
pub const QWEN_TEMPLATE: &str =
    include_str!("../../crates/engine/tests/fixtures/text/qwen2_5_style.jinja");
/// The fixture template that exercises loop controls, pycompat methods, `tojson`.
pub const FEATURES_TEMPLATE: &str =
    include_str!("../../crates/engine/tests/fixtures/text/features.jinja");

/// GPT-2's byte → printable character table (the byte-level alphabet).
fn byte_chars() -> Vec<char> {
    let mut chars: BTreeMap<u32, u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .map(|b| (b, b))
        .collect();
    let mut n = 0;
    for b in 0..256u32 {
        if !chars.contains_key(&b) {
            chars.insert(b, 256 + n);
            n += 1;
        }
    }
    chars
        .values()
        .map(|&c| char::from_u32(c).expect("valid char"))
        .collect()
}

/// A 256-byte vocabulary (+ `<|im_start|>`, `<|im_end|>`) with a few merges.
pub fn tiny_tokenizer(chat_template: &str) -> Tokenizer {
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let mut types = vec![1i64; tokens.len()];
    for special in ["<|im_start|>", "<|im_end|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    let merges = ["h e", "l l", "o Ġ"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    let mut m = GgufMetadata::new();
    m.insert("tokenizer.ggml.model".into(), GgufValue::Str("gpt2".into()));
    m.insert("tokenizer.ggml.tokens".into(), GgufValue::StrList(tokens));
    m.insert(
        "tokenizer.ggml.token_type".into(),
        GgufValue::IntList(types),
    );
    m.insert(
        "tokenizer.ggml.merges".into(),
        GgufValue::StrList(merges.iter().map(|s| s.to_string()).collect()),
    );
    m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::Int(257));
    m.insert("tokenizer.ggml.bos_token_id".into(), GgufValue::Int(256));
    m.insert(
        "tokenizer.chat_template".into(),
        GgufValue::Str(chat_template.into()),
    );
    Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: tokenizer_json_from_gguf(&m).expect("tokenizer.json"),
        tokenizer_config: Some(tokenizer_config_from_gguf(&m).expect("tokenizer_config")),
        chat_template: None,
        config_eos_token_ids: Vec::new(),
    })
    .expect("the tiny tokenizer loads")
}
