//! A model's `config.json`.
#![no_main]

use engine::config::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = ModelConfig::from_json_str(text)
    {
        let _ = c.rope_scale();
    }
});
