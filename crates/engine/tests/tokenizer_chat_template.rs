//! Chat templates: rendered like Hugging Face transformers (Jinja2 with trim_blocks,
//! lstrip_blocks, loop controls, Python-style `tojson`, `raise_exception`,
//! `strftime_now`, Python string/dict methods), and tokenizer_config.json handling.
//!
//! `tests/fixtures/text/chat_cases.json` holds the expected renderings, produced by
//! `scripts/ref_chat_template.py` with Python's Jinja2 set up as transformers sets it up.

use std::path::Path;

use engine::tokenizer::{ChatTemplate, Tokenizer, TokenizerError, TokenizerFiles};
use serde_json::{Map, Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/text");

/// A one-token word-level tokenizer: enough to carry special tokens and templates.
fn tiny_tokenizer_json() -> String {
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true},
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "hi": 3},
                  "unk_token": "<unk>"},
    })
    .to_string()
}

fn tokenizer_with(config: Value, chat_template: Option<String>) -> Tokenizer {
    Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: tiny_tokenizer_json(),
        tokenizer_config: Some(config),
        chat_template,
        config_eos_token_ids: vec![],
    })
    .unwrap()
}

#[test]
fn renders_like_transformers_jinja2() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURES).join("chat_cases.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let template =
            std::fs::read_to_string(Path::new(FIXTURES).join(case["template"].as_str().unwrap()))
                .unwrap();
        let mut config = case["special_tokens"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        config.insert("chat_template".into(), Value::String(template));
        let t = tokenizer_with(Value::Object(config), None);
        let messages = case["messages"].as_array().unwrap();
        let tools = case
            .get("tools")
            .and_then(Value::as_array)
            .map(Vec::as_slice);
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = t.apply_chat_template(messages, add, tools);
        match (case.get("expected"), case.get("expected_error")) {
            (Some(Value::String(want)), _) => assert_eq!(got.unwrap(), *want, "case {name}"),
            (_, Some(Value::String(want))) => match got {
                Err(TokenizerError::TemplateException(msg)) => assert_eq!(msg, *want, "{name}"),
                other => panic!("case {name}: expected exception {want:?}, got {other:?}"),
            },
            _ => panic!("case {name} has no expectation"),
        }
    }
}

fn render(src: &str, ctx: Value) -> Result<String, TokenizerError> {
    ChatTemplate::new(src)?.render_json(&ctx)
}

#[test]
fn tojson_follows_python_json_dumps() {
    let ctx = json!({"x": {"b": [1, 2.0, "é"], "a": null, "t": true}});
    // Without preserve_order, serde_json sorts keys: a, b, t.
    assert_eq!(
        render("{{ x | tojson }}", ctx.clone()).unwrap(),
        r#"{"a": null, "b": [1, 2.0, "é"], "t": true}"#
    );
    assert_eq!(
        render("{{ x | tojson(ensure_ascii=True) }}", ctx.clone()).unwrap(),
        r#"{"a": null, "b": [1, 2.0, "\u00e9"], "t": true}"#
    );
    assert_eq!(
        render("{{ x.b | tojson(indent=1) }}", ctx.clone()).unwrap(),
        "[\n 1,\n 2.0,\n \"é\"\n]"
    );
    assert_eq!(
        render("{{ x | tojson(separators=(',', ':')) }}", ctx.clone()).unwrap(),
        r#"{"a":null,"b":[1,2.0,"é"],"t":true}"#
    );
    // No HTML escaping (minijinja's own tojson would escape < > & ').
    assert_eq!(
        render("{{ s | tojson }}", json!({"s": "<a href='x'>&</a> 🦀"})).unwrap(),
        r#""<a href='x'>&</a> 🦀""#
    );
    assert_eq!(
        render("{{ 'a\u{1}b\tc' | tojson }}", json!({})).unwrap(),
        r#""a\u0001b\tc""#
    );
}

#[test]
fn python_methods_and_whitespace_control() {
    let src = "{% for m in messages %}\n  {% if m.content.strip().startswith('x') %}\n{{ m.content.split(',') | join('|') }}\n  {% endif %}\n{% endfor %}";
    let ctx = json!({"messages": [{"content": " x,y,z "}, {"content": "no"}]});
    // trim_blocks drops the newline after each block tag, lstrip_blocks the indentation
    // before it; the text line keeps its newline.
    assert_eq!(render(src, ctx).unwrap(), " x|y|z \n");
    let src = "{{ d.get('k', 'dflt') }} {{ d.get('z', 'dflt') }} {% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %} {{ 'ab'.upper() }} {{ 'Hello'.endswith('lo') }} {{ '  a '.rstrip() }}|";
    assert_eq!(
        render(src, json!({"d": {"k": 1, "m": 2}})).unwrap(),
        "1 dflt k1m2 AB True   a|"
    );
}

#[test]
fn strftime_now_and_generation_tags() {
    let year = render("{{ strftime_now('%Y') }}", json!({})).unwrap();
    let now = chrono_free_year();
    assert!(
        year.parse::<i32>().unwrap() >= now,
        "{year} vs at least {now}"
    );
    let d = render("{{ strftime_now('%d %b %Y') }}", json!({})).unwrap();
    assert_eq!(d.len(), 11, "{d}");
    assert!(matches!(
        render("{{ strftime_now('%Q') }}", json!({})).unwrap_err(),
        TokenizerError::TemplateRender { .. }
    ));
    // transformers' `{% generation %}` blocks render their body.
    assert_eq!(
        render(
            "{% for m in messages %}{% generation %}[{{ m }}]{% endgeneration %}{% endfor %}",
            json!({"messages": ["a", "b"]})
        )
        .unwrap(),
        "[a][b]"
    );
}

/// The current year from the system clock, without chrono: seconds / 365.2425 days.
fn chrono_free_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    1970 + (secs / (365.2425 * 86400.0)) as i32
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let err = ChatTemplate::new("line one\n{% if %}\n").unwrap_err();
    match err {
        TokenizerError::TemplateSyntax { line, .. } => assert_eq!(line, Some(2)),
        other => panic!("{other:?}"),
    }
    let t = tokenizer_with(
        json!({"chat_template": "ok\n\n{{ raise_exception('no system role') }}"}),
        None,
    );
    let err = t.apply_chat_template(&[], true, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "chat template raised an exception: no system role"
    );
    // A template that doesn't compile fails when used, not when the tokenizer loads.
    let t = tokenizer_with(json!({"chat_template": "{% for %}"}), None);
    assert!(matches!(
        t.apply_chat_template(&[], true, None).unwrap_err(),
        TokenizerError::TemplateSyntax { .. }
    ));
    let t = tokenizer_with(json!({}), None);
    assert!(!t.has_chat_template());
    assert!(matches!(
        t.apply_chat_template(&[], true, None).unwrap_err(),
        TokenizerError::NoChatTemplate
    ));
}

#[test]
fn tokenizer_config_special_tokens_and_template_forms() {
    // AddedToken objects and plain strings; a list of named templates.
    let cfg = json!({
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "add_bos_token": true,
        "chat_template": [
            {"name": "default", "template": "D{{ bos_token }}{{ messages | length }}{{ eos_token }}"},
            {"name": "tool_use", "template": "T{{ tools | length }}"},
            {"name": "rag", "template": "R"},
        ],
    });
    let t = tokenizer_with(cfg, None);
    assert_eq!(t.bos(), Some(("<s>", 1)));
    assert_eq!(t.eos_token(), Some("</s>"));
    assert_eq!(t.eos_token_ids(), &[2]);
    assert_eq!(t.add_bos_token(), Some(true));
    let msgs = [json!({"role": "user", "content": "hi"})];
    assert_eq!(
        t.apply_chat_template(&msgs, true, None).unwrap(),
        "D<s>1</s>"
    );
    let tools = [json!({}), json!({})];
    assert_eq!(
        t.apply_chat_template(&msgs, true, Some(&tools)).unwrap(),
        "T2"
    );
    assert_eq!(
        t.apply_chat_template_with(&msgs, true, None, Some("rag"), &Map::new())
            .unwrap(),
        "R"
    );
    let err = t
        .apply_chat_template_with(&msgs, true, None, Some("nope"), &Map::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no chat template named `nope` (available: default, rag, tool_use)"
    );
    // Extra variables reach the template.
    let t = tokenizer_with(
        json!({"chat_template": "{{ 'think' if enable_thinking else 'fast' }}"}),
        None,
    );
    let mut extra = Map::new();
    extra.insert("enable_thinking".into(), json!(true));
    assert_eq!(
        t.apply_chat_template_with(&msgs, true, None, None, &extra)
            .unwrap(),
        "think"
    );
    assert_eq!(t.apply_chat_template(&msgs, true, None).unwrap(), "fast");

    // Wrong types name the key.
    let err = Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: tiny_tokenizer_json(),
        tokenizer_config: Some(json!({"eos_token": 2})),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tokenizer_config.json: key `eos_token` has the wrong type: expected a string or an \
         AddedToken object, found a number"
    );
    let err = Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: tiny_tokenizer_json(),
        tokenizer_config: Some(json!({"chat_template": 3})),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, TokenizerError::WrongType { ref key, .. } if key == "chat_template"));
    let err = Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: "{\"version\": \"1.0\",\n \"model\": 5}".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }), "{err}");
    let err = Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: "{\n\n oops".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, TokenizerError::Json { line: 3, .. }), "{err}");
}

#[test]
fn folder_loading_jinja_file_wins_and_eos_union() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    std::fs::write(
        p.join("tokenizer_config.json"),
        json!({"eos_token": "</s>", "bos_token": "<s>", "chat_template": "from config"})
            .to_string(),
    )
    .unwrap();
    let t = Tokenizer::from_dir(p).unwrap();
    assert_eq!(
        t.apply_chat_template(&[], false, None).unwrap(),
        "from config"
    );
    assert_eq!(t.eos_token_ids(), &[2]);

    std::fs::write(
        p.join("chat_template.jinja"),
        "from jinja {{ bos_token }}\n",
    )
    .unwrap();
    std::fs::write(p.join("config.json"), r#"{"eos_token_id": [7, 2]}"#).unwrap();
    let t = Tokenizer::from_dir(p).unwrap();
    assert_eq!(
        t.apply_chat_template(&[], false, None).unwrap(),
        "from jinja <s>"
    );
    assert_eq!(t.eos_token_ids(), &[2, 7]);
    // generation_config.json's eos wins over config.json's; the tokenizer's eos stays.
    std::fs::write(p.join("generation_config.json"), r#"{"eos_token_id": 9}"#).unwrap();
    let t = Tokenizer::from_dir(p).unwrap();
    assert_eq!(t.eos_token_ids(), &[2, 9]);

    // A missing tokenizer.json names the file.
    let empty = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(empty.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn llama_tokenizer_class_applies_add_bos_and_add_eos() {
    let cfg = |add_bos: bool, add_eos: bool| {
        json!({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
               "add_bos_token": add_bos, "add_eos_token": add_eos})
    };
    assert_eq!(
        tokenizer_with(cfg(true, false), None)
            .encode("hi", true)
            .unwrap(),
        vec![1, 3]
    );
    assert_eq!(
        tokenizer_with(cfg(true, true), None)
            .encode("hi", true)
            .unwrap(),
        vec![1, 3, 2]
    );
    assert_eq!(
        tokenizer_with(cfg(false, false), None)
            .encode("hi", true)
            .unwrap(),
        vec![3]
    );
    assert_eq!(
        tokenizer_with(cfg(true, false), None)
            .encode("hi", false)
            .unwrap(),
        vec![3]
    );
}
