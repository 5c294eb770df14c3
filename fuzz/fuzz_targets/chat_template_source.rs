//! An untrusted chat template (a model's `chat_template`), compiled and
//! rendered with fixed messages under the engine's fuel limit.
#![no_main]

use engine::tokenizer::ChatTemplate;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = ChatTemplate::new(source) else {
        return;
    };
    let ctx = json!({
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi 👋 {{ not a tag }}"},
            {"role": "assistant", "content": "Hello.", "meta": {"k": [1, 2.5, null]}},
            {"role": "user", "content": "/cmd two words"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "bos_token": "<s>",
        "eos_token": "</s>",
        "add_generation_prompt": true,
    });
    let _ = t.render_json(&ctx);
});
