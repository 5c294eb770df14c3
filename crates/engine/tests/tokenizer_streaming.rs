//! Streaming detokenization with a SentencePiece-style byte-fallback tokenizer
//! (`<0xE2>` tokens, `▁` spaces, a decoder that strips the first leading space), built
//! in the test. The byte-level (GPT-2) case runs on SmolLM2 in tokenizer_gguf.rs.

use engine::tokenizer::{Tokenizer, TokenizerFiles};
use serde_json::{Map, json};

/// Llama-2-style tokenizer.json: byte fallback, Metaspace handled by normalizer and
/// decoder as in tokenizers >= 0.14 Llama files.
fn byte_fallback_tokenizer() -> Tokenizer {
    let mut vocab = Map::new();
    vocab.insert("<unk>".into(), json!(0));
    vocab.insert("<s>".into(), json!(1));
    vocab.insert("</s>".into(), json!(2));
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    let pieces = ["▁", "H", "i", "▁H", "▁Hi", "!", "a", "▁a", "é"];
    for (i, p) in pieces.iter().enumerate() {
        vocab.insert((*p).into(), json!(259 + i as u32));
    }
    let tj = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ]},
        "pre_tokenizer": null,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab,
            "merges": [["▁", "H"], ["▁H", "i"], ["▁", "a"]],
        },
    });
    Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: tj.to_string(),
        tokenizer_config: Some(json!({"bos_token": "<s>", "eos_token": "</s>"})),
        ..Default::default()
    })
    .unwrap()
}

fn stream(t: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut d = t.detokenizer(skip_special);
    let mut out = Vec::new();
    for id in ids {
        if let Some(p) = d.add_token(*id).unwrap() {
            out.push(p);
        }
    }
    if let Some(p) = d.flush().unwrap() {
        out.push(p);
    }
    assert_eq!(d.text(), out.concat());
    assert_eq!(d.tokens(), ids);
    out
}

#[test]
fn byte_fallback_pieces_never_split_a_character() {
    let t = byte_fallback_tokenizer();
    let text = "Hi 🦀 é 日本!";
    let ids = t.encode(text, true).unwrap();
    // <s> ▁Hi ▁ <0xF0><0x9F><0xA6><0x80> ▁ é ▁ <0xE6><0x97><0xA5> <0xE6><0x9C><0xAC> !
    assert_eq!(ids[0], 1);
    assert_eq!(t.id_to_token(ids[1]).as_deref(), Some("▁Hi"));
    assert_eq!(t.id_to_token(ids[3]).as_deref(), Some("<0xF0>"));
    assert_eq!(ids.len(), 1 + 1 + 1 + 4 + 1 + 1 + 1 + 6 + 1);
    // Decoding one byte token alone gives U+FFFD: the detokenizer must hold it back.
    assert_eq!(t.decode(&ids[3..4], false).unwrap(), "\u{FFFD}");
    assert_eq!(t.decode(&ids, true).unwrap(), text);

    let pieces = stream(&t, &ids, true);
    assert_eq!(pieces.concat(), text);
    for p in &pieces {
        assert!(!p.contains('\u{FFFD}'), "{pieces:?}");
    }
    // Each multi-byte character arrives whole, with its leading space where it has one.
    assert_eq!(pieces, ["Hi", " ", "🦀", " ", "é", " ", "日", "本", "!"]);

    // Keeping special tokens shows the bos, exactly as a full decode does.
    let pieces = stream(&t, &ids, false);
    assert_eq!(pieces.concat(), t.decode(&ids, false).unwrap());
    assert!(pieces[0].starts_with("<s>"));
}

#[test]
fn flush_emits_an_incomplete_tail_and_reset_starts_over() {
    let t = byte_fallback_tokenizer();
    let crab = t.encode("🦀", false).unwrap(); // ▁ (prepended) + 4 byte tokens
    assert_eq!(crab.len(), 5);
    let mut d = t.detokenizer(true);
    let mut emitted = String::new();
    for id in &crab[..4] {
        if let Some(p) = d.add_token(*id).unwrap() {
            emitted.push_str(&p);
        }
    }
    // The prepended space is stripped at the start of the text; the three bytes of the
    // crab are held.
    assert_eq!(emitted, "");
    // Generation stops here: the broken tail comes out as replacement characters.
    let tail = d.flush().unwrap().unwrap();
    assert!(tail.contains('\u{FFFD}'), "{tail:?}");
    assert_eq!(d.flush().unwrap(), None);
    d.reset();
    assert_eq!(d.text(), "");
    let mut whole = String::new();
    for id in &crab {
        if let Some(p) = d.add_token(*id).unwrap() {
            whole.push_str(&p);
        }
    }
    assert_eq!(whole, "🦀");
}

#[test]
fn text_is_identical_to_a_full_decode() {
    let t = byte_fallback_tokenizer();
    for text in ["a", " a a", "Hi!Hi!", "ééé 🦀🦀 Hi", "日本 Hi 🦀!"] {
        let ids = t.encode(text, false).unwrap();
        let full = t.decode(&ids, false).unwrap();
        let pieces = stream(&t, &ids, false);
        assert_eq!(pieces.concat(), full, "{text:?}");
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }
}
