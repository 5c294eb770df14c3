//! Fixed chat templates rendered with untrusted messages: the input is a JSON
//! list of messages, or an object `{messages, tools, add_generation_prompt}`.
#![no_main]

use std::sync::OnceLock;

use engine::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn tokenizers() -> &'static [Tokenizer; 2] {
    static TOKS: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    TOKS.get_or_init(|| {
        [
            mlx_hub_fuzz::tiny_tokenizer(mlx_hub_fuzz::QWEN_TEMPLATE),
            mlx_hub_fuzz::tiny_tokenizer(mlx_hub_fuzz::FEATURES_TEMPLATE),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (messages, tools, add_gen) = match v {
        Value::Array(m) => (m, None, true),
        Value::Object(mut o) => {
            let messages = match o.remove("messages") {
                Some(Value::Array(m)) => m,
                _ => return,
            };
            let tools = match o.remove("tools") {
                Some(Value::Array(t)) => Some(t),
                _ => None,
            };
            let add_gen = o.get("add_generation_prompt") == Some(&Value::Bool(true));
            (messages, tools, add_gen)
        }
        _ => return,
    };
    for tok in tokenizers() {
        let _ = tok.encode_chat(&messages, add_gen, tools.as_deref());
    }
});
