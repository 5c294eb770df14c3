//! GGUF metadata → config.json / tokenizer.json / tokenizer_config.json, checked on the
//! real SmolLM2-135M-Instruct Q4_1 GGUF (fetched by `scripts/fetch-smollm2.sh`).
//!
//! The expected token ids come from `scripts/ref_bpe_tokens.py`: a plain Python
//! byte-level BPE over the GGUF's own vocabulary and merges (no `tokenizers`, no
//! llama.cpp), so they check both the generated tokenizer.json and its loading.

use std::path::PathBuf;
use std::sync::OnceLock;

use engine::config::ModelConfig;
use engine::gguf_meta::{
    self, GgufConfigOptions, GgufError, GgufFile, GgufMetadata, GgufValue, read_gguf,
};
use engine::tokenizer::{Tokenizer, TokenizerFiles};
use serde_json::json;

/// The SmolLM2 GGUF (skip, or fail under CI).
fn smollm2_gguf() -> Option<PathBuf> {
    test_support::require("SmolLM2", test_support::smollm2_gguf())
}

struct Smol {
    file: GgufFile,
    tokenizer: Tokenizer,
    tokenizer_json: String,
}

fn smol() -> Option<&'static Smol> {
    static CELL: OnceLock<Option<Smol>> = OnceLock::new();
    CELL.get_or_init(|| {
        let path = smollm2_gguf()?;
        let file = read_gguf(&path).expect("read GGUF metadata");
        let tokenizer_json = gguf_meta::tokenizer_json_from_gguf(&file.metadata).unwrap();
        let tokenizer_config = gguf_meta::tokenizer_config_from_gguf(&file.metadata).unwrap();
        let tokenizer = Tokenizer::from_parts(TokenizerFiles {
            tokenizer_json: tokenizer_json.clone(),
            tokenizer_config: Some(tokenizer_config),
            chat_template: None,
            config_eos_token_ids: vec![2],
        })
        .expect("load generated tokenizer.json");
        Some(Smol {
            file,
            tokenizer,
            tokenizer_json,
        })
    })
    .as_ref()
}

#[test]
fn reads_smollm2_metadata_and_tensor_directory() {
    let Some(s) = smol() else { return };
    let m = &s.file.metadata;
    assert_eq!(s.file.version, 3);
    assert_eq!(m["general.architecture"], GgufValue::Str("llama".into()));
    assert_eq!(m["llama.block_count"], GgufValue::Int(30));
    assert_eq!(m["llama.embedding_length"], GgufValue::Int(576));
    assert_eq!(m["llama.attention.head_count_kv"], GgufValue::Int(3));
    assert_eq!(m["llama.rope.freq_base"], GgufValue::Float(100000.0));
    // f32 1e-5 is widened through its shortest decimal form.
    assert_eq!(
        m["llama.attention.layer_norm_rms_epsilon"],
        GgufValue::Float(1e-5)
    );
    assert_eq!(m["tokenizer.ggml.add_bos_token"], GgufValue::Bool(false));
    match &m["tokenizer.ggml.tokens"] {
        GgufValue::StrList(t) => {
            assert_eq!(t.len(), 49152);
            assert_eq!(t[0], "<|endoftext|>");
            assert_eq!(t[1], "<|im_start|>");
            assert_eq!(t[2], "<|im_end|>");
        }
        other => panic!("tokens: {other:?}"),
    }
    match &m["tokenizer.ggml.merges"] {
        GgufValue::StrList(t) => {
            assert_eq!(t.len(), 48900);
            assert_eq!(t[0], "Ġ t");
        }
        other => panic!("merges: {other:?}"),
    }
    assert_eq!(s.file.tensors.len(), 272);
    let emb = s
        .file
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(emb.dims, vec![576, 49152]);
    assert_eq!(emb.type_name(), "Q8_0");
    let down = s
        .file
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_down.weight")
        .unwrap();
    assert_eq!(down.type_name(), "Q4_1");
    assert_eq!(down.dims, vec![1536, 576]);
    assert!(!s.file.tensors.iter().any(|t| t.name == "output.weight"));
    assert_eq!(s.file.data_offset % 32, 0);
    assert_eq!(
        gguf_meta::special_token_ids(m)
            .into_iter()
            .collect::<Vec<_>>(),
        (0..17).collect::<Vec<u32>>()
    );
}

#[test]
fn builds_a_config_that_parses_as_llama() {
    let Some(s) = smol() else { return };
    let opts = GgufConfigOptions::from_tensors(&s.file.tensors, false);
    assert!(opts.tie_word_embeddings);
    let v = gguf_meta::config_json_from_gguf(&s.file.metadata, opts).unwrap();
    assert_eq!(v["model_type"], "llama");
    assert_eq!(v["rms_norm_eps"], json!(1e-5));
    let c = ModelConfig::from_json_value(&v).unwrap();
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.num_hidden_layers, 30);
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.num_attention_heads, 9);
    assert_eq!(c.num_key_value_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100000.0);
    assert!(!c.rope_traditional);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.max_position_embeddings, Some(8192));
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]);
    assert!(c.quantization.is_none());
}

#[test]
fn builds_tokenizer_config_with_special_tokens_and_template() {
    let Some(s) = smol() else { return };
    let c = gguf_meta::tokenizer_config_from_gguf(&s.file.metadata).unwrap();
    assert_eq!(c["bos_token"], "<|im_start|>");
    assert_eq!(c["eos_token"], "<|im_end|>");
    assert_eq!(c["pad_token"], "<|im_end|>");
    assert_eq!(c["unk_token"], "<|endoftext|>");
    assert_eq!(c["add_bos_token"], false);
    assert_eq!(c["model_max_length"], 8192);
    assert!(
        c["chat_template"]
            .as_str()
            .unwrap()
            .starts_with("{% for message in messages %}")
    );
    let t = &s.tokenizer;
    assert_eq!(t.bos(), Some(("<|im_start|>", 1)));
    assert_eq!(t.eos_token(), Some("<|im_end|>"));
    assert_eq!(t.eos_token_ids(), &[2]);
    assert_eq!(t.vocab_size(), 49152);
}

/// (text, ids from scripts/ref_bpe_tokens.py)
const REFERENCE: &[(&str, &[u32])] = &[
    ("Hello, world!", &[19556, 28, 905, 17]),
    (
        "The capital of France is Paris.",
        &[504, 3575, 282, 4649, 314, 7042, 30],
    ),
    (
        "I ❤️ Rust 🦀🚀!",
        &[
            57, 4636, 247, 114, 31752, 36828, 15107, 116, 218, 10813, 244, 218, 17,
        ],
    ),
    (
        "日本語のテキストと中文。",
        &[
            23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100,
            226, 7365, 118, 28589, 29184, 19076,
        ],
    ),
    (
        "fn main() {\n    println!(\"{}\", 12345 * 67);\n}\n",
        &[
            7853, 1085, 1000, 1662, 472, 1628, 34115, 17, 43331, 1002, 216, 33, 34, 35, 36, 37,
            1672, 216, 38, 39, 4258, 198, 109, 198,
        ],
    ),
    (
        "  multiple   spaces\t\ttabs\n\n\nnewlines  ",
        &[
            216, 2701, 256, 5600, 197, 197, 100, 7366, 1116, 198, 2241, 5110, 256,
        ],
    ),
    ("don't you'll I'M", &[12420, 982, 346, 3060, 339, 23, 61]),
    (
        "Ünïcödé naïve café – “quotes” …",
        &[
            142, 246, 94, 25972, 83, 7466, 84, 2756, 15486, 46494, 37366, 816, 619, 385, 2346, 573,
            5548,
        ],
    ),
];

const CHAT_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
<|im_start|>assistant\n";

const CHAT_IDS: &[u32] = &[
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198,
];

#[test]
fn encodes_exactly_like_the_reference_bpe() {
    let Some(s) = smol() else { return };
    for (text, ids) in REFERENCE {
        assert_eq!(s.tokenizer.encode(text, true).unwrap(), *ids, "{text:?}");
        assert_eq!(s.tokenizer.decode(ids, false).unwrap(), *text, "{text:?}");
    }
}

#[test]
fn chat_template_renders_and_encodes_like_the_reference() {
    let Some(s) = smol() else { return };
    let messages = [json!({"role": "user", "content": "What is 2+2?"})];
    let prompt = s
        .tokenizer
        .apply_chat_template(&messages, true, None)
        .unwrap();
    assert_eq!(prompt, CHAT_PROMPT);
    assert_eq!(s.tokenizer.encode(&prompt, false).unwrap(), CHAT_IDS);
    assert_eq!(
        s.tokenizer.encode_chat(&messages, true, None).unwrap(),
        CHAT_IDS
    );
    // With a system message, the default system prompt is not added.
    let messages = [
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "Hi"}),
        json!({"role": "assistant", "content": "Hello!"}),
    ];
    let prompt = s
        .tokenizer
        .apply_chat_template(&messages, false, None)
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n"
    );
    // Special tokens are skipped on request.
    assert_eq!(
        s.tokenizer.decode(CHAT_IDS, true).unwrap(),
        "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\n\
         user\nWhat is 2+2?\nassistant\n"
    );
}

#[test]
fn every_token_string_maps_back_to_its_id() {
    let Some(s) = smol() else { return };
    let GgufValue::StrList(tokens) = &s.file.metadata["tokenizer.ggml.tokens"] else {
        panic!("tokens")
    };
    for (id, tok) in tokens.iter().enumerate() {
        assert_eq!(s.tokenizer.token_to_id(tok), Some(id as u32), "{tok:?}");
        assert_eq!(
            s.tokenizer.id_to_token(id as u32).as_deref(),
            Some(tok.as_str())
        );
    }
}

#[test]
fn round_trips_varied_text() {
    let Some(s) = smol() else { return };
    let texts = [
        "",
        " ",
        "a",
        "Mixed 123 numbers 4.56e-7 and 1,000,000",
        "Tabs\tand\r\nCRLF\n",
        "Ελληνικά, русский, العربية, हिन्दी, 한국어",
        "emoji 👩‍👩‍👧‍👦 flags 🇫🇷 skin 👍🏽",
        "<|im_start|>user\nspecial tokens inline<|im_end|>",
        "def f(x):\n\treturn x ** 2  # comment\n",
        "\u{0}\u{1}control\u{7f}",
    ];
    for text in texts {
        let ids = s.tokenizer.encode(text, true).unwrap();
        assert_eq!(s.tokenizer.decode(&ids, false).unwrap(), text, "{text:?}");
    }
}

#[test]
fn streaming_detokenizer_never_emits_broken_utf8_with_byte_level_tokens() {
    let Some(s) = smol() else { return };
    for text in [
        "I ❤️ Rust 🦀🚀!",
        "日本語のテキストと中文。",
        "emoji 👩‍👩‍👧‍👦 and 한국어 text",
    ] {
        let ids = s.tokenizer.encode(text, false).unwrap();
        // The text must really split characters across tokens for this to test anything.
        let broken = ids
            .iter()
            .filter(|id| {
                s.tokenizer
                    .decode(&[**id], false)
                    .unwrap()
                    .contains('\u{FFFD}')
            })
            .count();
        assert!(broken > 0, "{text:?} has no token that splits a character");
        let mut d = s.tokenizer.detokenizer(false);
        let mut pieces = Vec::new();
        for id in &ids {
            if let Some(p) = d.add_token(*id).unwrap() {
                assert!(!p.contains('\u{FFFD}'), "{p:?} in {text:?}");
                pieces.push(p);
            }
        }
        if let Some(p) = d.flush().unwrap() {
            pieces.push(p);
        }
        assert_eq!(pieces.concat(), text);
        assert_eq!(d.text(), text);
        assert!(pieces.len() > 1);
    }
}

#[test]
fn generated_files_load_from_a_folder() {
    let Some(s) = smol() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), &s.tokenizer_json).unwrap();
    let tc = gguf_meta::tokenizer_config_from_gguf(&s.file.metadata).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tc).unwrap(),
    )
    .unwrap();
    let opts = GgufConfigOptions::from_tensors(&s.file.tensors, false);
    let cfg = gguf_meta::config_json_from_gguf(&s.file.metadata, opts).unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [2, 0]}"#,
    )
    .unwrap();
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(t.eos_token_ids(), &[0, 2]);
    assert_eq!(
        t.encode("Hello, world!", true).unwrap(),
        vec![19556, 28, 905, 17]
    );
    let c = ModelConfig::from_dir(dir.path()).unwrap();
    assert_eq!(c.eos_token_ids, vec![2, 0]);
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let Some(path) = smollm2_gguf() else { return };
    let mut head = vec![0u8; 200_000];
    {
        use std::io::Read;
        std::fs::File::open(&path)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
    }
    for cut in [3usize, 10, 30, 1000, 199_999] {
        let err = gguf_meta::parse_gguf(&head[..cut], Some(cut as u64)).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. } | GgufError::TooLarge { .. }
            ),
            "cut {cut}: {err}"
        );
    }
    // Unknown total length: still an error, not a panic.
    let err = gguf_meta::parse_gguf(&head[..], None).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn synthetic_header_errors_name_the_problem() {
    // Bad magic.
    let err = gguf_meta::parse_gguf(&b"GGML\x03\x00\x00\x00"[..], Some(8)).unwrap_err();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
    // Version 1 is not supported.
    let mut v1 = b"GGUF".to_vec();
    v1.extend(1u32.to_le_bytes());
    v1.extend(0u64.to_le_bytes());
    v1.extend(0u64.to_le_bytes());
    let err = gguf_meta::parse_gguf(&v1[..], Some(v1.len() as u64)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported GGUF version 1 (supported: 2, 3)"
    );
    // A key whose string length is absurd.
    let mut bad = b"GGUF".to_vec();
    bad.extend(3u32.to_le_bytes());
    bad.extend(0u64.to_le_bytes());
    bad.extend(1u64.to_le_bytes());
    bad.extend(u64::MAX.to_le_bytes());
    bad.extend([0u8; 16]);
    let err = gguf_meta::parse_gguf(&bad[..], Some(bad.len() as u64)).unwrap_err();
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
    // A value of an unknown type names the key.
    let mut unk = b"GGUF".to_vec();
    unk.extend(3u32.to_le_bytes());
    unk.extend(0u64.to_le_bytes());
    unk.extend(1u64.to_le_bytes());
    unk.extend(3u64.to_le_bytes());
    unk.extend(b"abc");
    unk.extend(99u32.to_le_bytes());
    unk.extend([0u8; 8]);
    let err = gguf_meta::parse_gguf(&unk[..], Some(unk.len() as u64)).unwrap_err();
    assert_eq!(err.to_string(), "GGUF key `abc` has unknown value type 99");
    // A well-formed minimal file.
    let mut ok = b"GGUF".to_vec();
    ok.extend(3u32.to_le_bytes());
    ok.extend(0u64.to_le_bytes());
    ok.extend(2u64.to_le_bytes());
    ok.extend(3u64.to_le_bytes());
    ok.extend(b"n.i");
    ok.extend(5u32.to_le_bytes()); // i32
    ok.extend((-7i32).to_le_bytes());
    ok.extend(3u64.to_le_bytes());
    ok.extend(b"n.a");
    ok.extend(9u32.to_le_bytes()); // array
    ok.extend(6u32.to_le_bytes()); // of f32
    ok.extend(2u64.to_le_bytes());
    ok.extend(0.5f32.to_le_bytes());
    ok.extend(0.1f32.to_le_bytes());
    let f = gguf_meta::parse_gguf(&ok[..], Some(ok.len() as u64)).unwrap();
    assert_eq!(f.metadata["n.i"], GgufValue::Int(-7));
    assert_eq!(f.metadata["n.a"], GgufValue::FloatList(vec![0.5, 0.1]));
    assert!(f.tensors.is_empty());
}

fn meta(pairs: &[(&str, GgufValue)]) -> GgufMetadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn unsupported_architecture_and_tokenizer_are_named() {
    let m = meta(&[("general.architecture", GgufValue::Str("falcon".into()))]);
    let opts = GgufConfigOptions {
        tie_word_embeddings: true,
        rope_traditional: false,
    };
    let err = gguf_meta::config_json_from_gguf(&m, opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported GGUF architecture `falcon` (supported: llama)"
    );
    let m = meta(&[
        ("tokenizer.ggml.model", GgufValue::Str("llama".into())),
        (
            "tokenizer.ggml.tokens",
            GgufValue::StrList(vec!["a".into()]),
        ),
    ]);
    let err = gguf_meta::tokenizer_json_from_gguf(&m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported GGUF tokenizer model `llama` (supported: gpt2)"
    );
    let m = meta(&[
        ("tokenizer.ggml.model", GgufValue::Str("gpt2".into())),
        (
            "tokenizer.ggml.pre",
            GgufValue::Str("deepseek-coder".into()),
        ),
        (
            "tokenizer.ggml.tokens",
            GgufValue::StrList(vec!["a".into()]),
        ),
    ]);
    let err = gguf_meta::tokenizer_json_from_gguf(&m).unwrap_err();
    assert!(matches!(err, GgufError::UnsupportedPreTokenizer(ref p) if p == "deepseek-coder"));
    // Missing and wrongly typed keys name the key.
    let m = meta(&[
        ("general.architecture", GgufValue::Str("llama".into())),
        ("llama.embedding_length", GgufValue::Str("576".into())),
    ]);
    let err = gguf_meta::config_json_from_gguf(&m, opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GGUF metadata `llama.embedding_length`: expected an integer, found string"
    );
    let m = meta(&[
        ("general.architecture", GgufValue::Str("llama".into())),
        ("llama.embedding_length", GgufValue::Int(64)),
    ]);
    let err = gguf_meta::config_json_from_gguf(&m, opts).unwrap_err();
    assert_eq!(err.to_string(), "GGUF metadata has no `llama.block_count`");
}

/// A tiny byte-level vocabulary for the pre-tokenizer variants (no GGUF file needed).
fn tiny_bpe(pre: &str, add_bos: bool) -> GgufMetadata {
    // All 256 byte symbols, then a few merges.
    let mut tokens: Vec<String> = vec!["<s>".into(), "</s>".into()];
    let mut bytes: Vec<char> = Vec::new();
    for b in 0u32..256 {
        let c = match b {
            0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => char::from_u32(b).unwrap(),
            _ => {
                let n = (0u32..b)
                    .filter(|x| !matches!(x, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff))
                    .count() as u32;
                char::from_u32(256 + n).unwrap()
            }
        };
        bytes.push(c);
    }
    tokens.extend(bytes.iter().map(|c| c.to_string()));
    tokens.extend(["Ġh", "Ġhi", "12", "123"].map(String::from));
    let mut types = vec![3, 3];
    types.extend(std::iter::repeat_n(1, tokens.len() - 2));
    meta(&[
        ("tokenizer.ggml.model", GgufValue::Str("gpt2".into())),
        ("tokenizer.ggml.pre", GgufValue::Str(pre.into())),
        ("tokenizer.ggml.tokens", GgufValue::StrList(tokens)),
        ("tokenizer.ggml.token_type", GgufValue::IntList(types)),
        (
            "tokenizer.ggml.merges",
            GgufValue::StrList(["Ġ h", "Ġh i", "1 2", "12 3"].map(String::from).to_vec()),
        ),
        ("tokenizer.ggml.bos_token_id", GgufValue::Int(0)),
        ("tokenizer.ggml.eos_token_id", GgufValue::Int(1)),
        ("tokenizer.ggml.add_bos_token", GgufValue::Bool(add_bos)),
    ])
}

fn load(m: &GgufMetadata) -> Tokenizer {
    Tokenizer::from_parts(TokenizerFiles {
        tokenizer_json: gguf_meta::tokenizer_json_from_gguf(m).unwrap(),
        tokenizer_config: Some(gguf_meta::tokenizer_config_from_gguf(m).unwrap()),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn pre_tokenizer_variants_split_digits_as_their_models_do() {
    // ids: <s>=0 </s>=1, bytes 2..258 (byte b at 2+index in the GPT-2 byte order),
    // "Ġh"=258, "Ġhi"=259, "12"=260, "123"=261.
    let id = |t: &Tokenizer, s: &str| t.token_to_id(s).unwrap();
    // smollm: every digit alone, so "123" never merges.
    let t = load(&tiny_bpe("smollm", false));
    let ids = t.encode(" hi 123", true).unwrap();
    assert_eq!(
        ids,
        vec![
            id(&t, "Ġhi"),
            id(&t, "Ġ"),
            id(&t, "1"),
            id(&t, "2"),
            id(&t, "3")
        ]
    );
    // default (GPT-2 regex): " 123" is one piece; "Ġ" + "123".
    let t = load(&tiny_bpe("default", false));
    assert_eq!(
        t.encode(" hi 123", true).unwrap(),
        vec![id(&t, "Ġhi"), id(&t, "Ġ"), id(&t, "123")]
    );
    // llama-bpe: digits in groups of up to three, spaces apart.
    let t = load(&tiny_bpe("llama-bpe", false));
    assert_eq!(
        t.encode(" hi 1234", true).unwrap(),
        vec![id(&t, "Ġhi"), id(&t, "Ġ"), id(&t, "123"), id(&t, "4")]
    );
    // qwen2: digits one by one.
    let t = load(&tiny_bpe("qwen2", false));
    assert_eq!(
        t.encode(" hi 123", true).unwrap(),
        vec![
            id(&t, "Ġhi"),
            id(&t, "Ġ"),
            id(&t, "1"),
            id(&t, "2"),
            id(&t, "3")
        ]
    );
    // add_bos_token puts <s> first only when special tokens are requested.
    let t = load(&tiny_bpe("default", true));
    assert_eq!(t.encode(" hi", true).unwrap(), vec![0, id(&t, "Ġhi")]);
    assert_eq!(t.encode(" hi", false).unwrap(), vec![id(&t, "Ġhi")]);
    assert_eq!(t.add_bos_token(), Some(true));
    // Control tokens written in the text are recognised as such.
    assert_eq!(
        t.encode("<s> hi</s>", false).unwrap(),
        vec![0, id(&t, "Ġhi"), 1]
    );
}

#[test]
fn named_chat_templates_become_a_list() {
    let mut m = tiny_bpe("default", false);
    m.insert(
        "tokenizer.chat_template".into(),
        GgufValue::Str("{{ messages[0]['content'] }}".into()),
    );
    m.insert(
        "tokenizer.chat_template.tool_use".into(),
        GgufValue::Str("tools: {{ tools | length }}".into()),
    );
    let c = gguf_meta::tokenizer_config_from_gguf(&m).unwrap();
    assert_eq!(
        c["chat_template"],
        json!([
            {"name": "default", "template": "{{ messages[0]['content'] }}"},
            {"name": "tool_use", "template": "tools: {{ tools | length }}"},
        ])
    );
    let t = load(&m);
    let msgs = [json!({"role": "user", "content": "hey"})];
    assert_eq!(t.apply_chat_template(&msgs, false, None).unwrap(), "hey");
    let tools = [json!({"type": "function"})];
    assert_eq!(
        t.apply_chat_template(&msgs, false, Some(&tools)).unwrap(),
        "tools: 1"
    );
}
