//! The engine's fuzz entry points (see `fuzz/`, `scripts/fuzz.sh`) on their
//! committed seed corpora: every seed ends in a value or a clean error, never
//! a panic.

use engine::config::ModelConfig;
use engine::gguf_meta::{self, GgufConfigOptions};
use engine::tokenizer::ChatTemplate;
use serde_json::{Value, json};

#[path = "../../../fuzz/seeds.rs"]
mod seeds;
use seeds::corpus;

#[test]
fn gguf_seeds() {
    let mut parsed = 0;
    for (p, b) in corpus("gguf_metadata") {
        let Ok(file) = gguf_meta::parse_gguf(&b[..], Some(b.len() as u64)) else {
            continue;
        };
        parsed += 1;
        let m = &file.metadata;
        let r = engine::convert::check_tensor_directory(&p, &file, b.len() as u64);
        eprintln!(
            "{}: tensors {:?}",
            p.display(),
            r.map_err(|e| e.to_string())
        );
        let _ = gguf_meta::config_json_from_gguf(
            m,
            GgufConfigOptions::from_tensors(&file.tensors, false),
        );
        let _ = gguf_meta::tokenizer_json_from_gguf(m);
        let _ = gguf_meta::tokenizer_config_from_gguf(m);
    }
    assert!(parsed >= 3, "the valid seeds parse");
}

#[test]
fn config_seeds() {
    for (p, b) in corpus("config_json") {
        let r = ModelConfig::from_json_str(std::str::from_utf8(&b).unwrap());
        eprintln!("{}: {:?}", p.display(), r.as_ref().map(|c| c.architecture));
    }
}

#[test]
fn chat_template_seeds() {
    let ctx = json!({
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    });
    let mut templates = Vec::new();
    for (p, b) in corpus("chat_template_source") {
        let t = ChatTemplate::new(String::from_utf8(b).unwrap()).expect("seed templates compile");
        eprintln!(
            "{}: {:?}",
            p.display(),
            t.render_json(&ctx).map(|s| s.len())
        );
        templates.push(t);
    }
    for (p, b) in corpus("chat_template_messages") {
        let v: Value = serde_json::from_slice(&b).unwrap();
        let messages = match &v {
            Value::Array(_) => v.clone(),
            _ => v["messages"].clone(),
        };
        let ctx = json!({"messages": messages, "tools": v.get("tools"),
                         "add_generation_prompt": true, "eos_token": "</s>"});
        for t in &templates {
            let _ = t.render_json(&ctx);
        }
        eprintln!("{}: rendered", p.display());
    }
}
