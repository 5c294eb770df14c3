//! config.json parsing: per-architecture defaults as in mlx-lm, rope scaling,
//! quantization blocks, generation_config eos override, and clear errors.

use engine::config::{
    Architecture, ConfigError, LayerQuantization, Llama3RopeScaling, ModelConfig, QuantParams,
    RopeScaling, llama3_rope_freqs,
};
use serde_json::{Value, json};

fn base(model_type: &str) -> Value {
    json!({
        "model_type": model_type,
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "rms_norm_eps": 1e-5,
        "vocab_size": 49152,
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn parse(v: &Value) -> Result<ModelConfig, ConfigError> {
    ModelConfig::from_json_value(v)
}

#[test]
fn llama_defaults_match_mlx_lm() {
    let c = parse(&base("llama")).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.num_key_value_heads, 9);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.rope_theta, 10000.0);
    assert!(!c.rope_traditional);
    assert!(
        c.tie_word_embeddings,
        "mlx-lm's llama ties embeddings by default"
    );
    assert!(!c.attention_qkv_bias && !c.attention_out_bias && !c.mlp_bias && !c.qk_norm);
    assert_eq!(c.max_position_embeddings, None);
    assert_eq!(c.rope_scaling, None);
    assert_eq!(c.quantization, None);
    assert!(c.eos_token_ids.is_empty());
    assert_eq!(c.rope_scale(), 1.0);
    assert_eq!(c.rope_freqs(), None);
}

#[test]
fn mistral_is_llama_and_explicit_values_win() {
    let v = with(
        base("mistral"),
        json!({
            "num_key_value_heads": 3, "head_dim": 128, "rope_theta": 1000000,
            "rope_traditional": true, "tie_word_embeddings": false,
            "attention_bias": true, "mlp_bias": true, "max_position_embeddings": 8192,
            "bos_token_id": 1, "eos_token_id": [2, 7], "some_unknown_key": {"x": [1, 2]},
            "rope_scaling": null
        }),
    );
    let c = parse(&v).unwrap();
    assert_eq!(c.model_type, "mistral");
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.num_key_value_heads, 3);
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.rope_theta, 1e6);
    assert!(c.rope_traditional);
    assert!(!c.tie_word_embeddings);
    assert!(c.attention_qkv_bias && c.attention_out_bias && c.mlp_bias);
    assert_eq!(c.max_position_embeddings, Some(8192));
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2, 7]);
    assert_eq!(c.raw["some_unknown_key"], json!({"x": [1, 2]}));
}

#[test]
fn qwen2_defaults_match_mlx_lm() {
    let v = with(
        base("qwen2"),
        json!({"num_key_value_heads": 3, "head_dim": 999, "eos_token_id": 151645}),
    );
    let c = parse(&v).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(c.head_dim, 64, "mlx-lm's qwen2 ignores head_dim");
    assert_eq!(c.rope_theta, 1_000_000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.max_position_embeddings, Some(32768));
    assert!(c.attention_qkv_bias);
    assert!(!c.attention_out_bias && !c.mlp_bias && !c.qk_norm);
    assert_eq!(c.eos_token_ids, vec![151645]);
    // num_key_value_heads is required for qwen2.
    let err = parse(&base("qwen2")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.json: missing required key `num_key_value_heads` for model_type `qwen2`"
    );
}

#[test]
fn qwen3_requires_what_mlx_lm_requires() {
    let full = with(
        base("qwen3"),
        json!({
            "num_key_value_heads": 3, "head_dim": 128, "rope_theta": 1000000,
            "tie_word_embeddings": true, "max_position_embeddings": 40960,
            "rope_traditional": true
        }),
    );
    let c = parse(&full).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen3);
    assert_eq!(c.head_dim, 128);
    assert!(c.qk_norm);
    assert!(
        !c.rope_traditional,
        "qwen3 always uses non-traditional rope"
    );
    assert!(!c.attention_qkv_bias);
    for key in [
        "head_dim",
        "rope_theta",
        "tie_word_embeddings",
        "max_position_embeddings",
        "num_key_value_heads",
    ] {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(key);
        let err = parse(&v).unwrap_err();
        assert!(
            matches!(&err, ConfigError::MissingKey { key: k, model_type, .. }
                if k == key && model_type == "qwen3"),
            "{key}: {err}"
        );
    }
    // rope_parameters.rope_theta (newer configs) replaces rope_theta.
    let mut v = full.clone();
    v.as_object_mut().unwrap().remove("rope_theta");
    v["rope_parameters"] = json!({"rope_theta": 5000000.0, "rope_type": "default"});
    assert_eq!(parse(&v).unwrap().rope_theta, 5e6);
}

#[test]
fn missing_wrong_and_unsupported_are_clear_errors() {
    let mut v = base("llama");
    v.as_object_mut().unwrap().remove("vocab_size");
    assert_eq!(
        parse(&v).unwrap_err().to_string(),
        "config.json: missing required key `vocab_size` for model_type `llama`"
    );
    let v = with(base("llama"), json!({"hidden_size": "576"}));
    assert_eq!(
        parse(&v).unwrap_err().to_string(),
        "config.json: key `hidden_size` has the wrong type: expected a non-negative integer, \
         found string \"576\""
    );
    let v = with(base("llama"), json!({"num_attention_heads": 9.5}));
    assert_eq!(
        parse(&v).unwrap_err().to_string(),
        "config.json: key `num_attention_heads` has the wrong type: expected a non-negative \
         integer, found float 9.5"
    );
    let v = with(base("llama"), json!({"tie_word_embeddings": "yes"}));
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::WrongType { key, expected: "a boolean", .. } if key == "tie_word_embeddings"
    ));
    let v = with(base("llama"), json!({"eos_token_id": [2, "x"]}));
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::WrongType { key, .. } if key == "eos_token_id"
    ));
    let v = with(base("gpt_neox"), json!({}));
    assert_eq!(
        parse(&v).unwrap_err().to_string(),
        "config.json: unsupported model_type `gpt_neox` (supported: llama, mistral, qwen2, qwen3)"
    );
    let mut v = base("llama");
    v.as_object_mut().unwrap().remove("model_type");
    assert!(
        matches!(parse(&v).unwrap_err(), ConfigError::MissingKey { key, .. } if key == "model_type")
    );
    let v = with(base("llama"), json!({"num_key_value_heads": 4}));
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::InvalidValue { key, .. } if key == "num_key_value_heads"
    ));
    assert!(matches!(
        ModelConfig::from_json_str("{\"model_type\": \"llama\",\n  oops}").unwrap_err(),
        ConfigError::Json { line: 2, .. }
    ));
    assert!(matches!(
        ModelConfig::from_json_str("[1, 2]").unwrap_err(),
        ConfigError::NotAnObject { .. }
    ));
}

#[test]
fn rope_scaling_types() {
    let v = with(
        base("llama"),
        json!({"rope_scaling": {"type": "linear", "factor": 4.0}}),
    );
    let c = parse(&v).unwrap();
    assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 4.0 }));
    assert_eq!(c.rope_scale(), 0.25);
    // HF's `rope_type` key works too; unspecified llama3 parameters take mlx-lm's defaults.
    let v = with(
        base("llama"),
        json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
    );
    assert_eq!(
        parse(&v).unwrap().rope_scaling,
        Some(RopeScaling::Llama3(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }))
    );
    let v = with(
        base("llama"),
        json!({"rope_scaling": {"rope_type": "default"}}),
    );
    assert_eq!(parse(&v).unwrap().rope_scaling, None);
    let v = with(
        base("llama"),
        json!({"rope_scaling": {"type": "yarn", "factor": 4.0}}),
    );
    assert_eq!(
        parse(&v).unwrap_err().to_string(),
        "config.json: unsupported rope_scaling type `yarn` (supported: default, linear, llama3)"
    );
    let v = with(base("llama"), json!({"rope_scaling": {"type": "linear"}}));
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::MissingKey { key, .. } if key == "rope_scaling.factor"
    ));
    let v = with(
        base("llama"),
        json!({"rope_scaling": {"type": "linear", "factor": "2"}}),
    );
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::WrongType { key, .. } if key == "rope_scaling.factor"
    ));
}

/// Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original 8192.
/// Expected values computed with numpy in float32, step by step as mlx-lm does:
///   freqs = 500000 ** (arange(0,128,2)/128); wavelens = 2*pi*freqs
///   freqs = where(wavelens > 8192, freqs*8, freqs)
///   medium = (wavelens > 2048) & (wavelens < 8192)
///   smooth = (8192/wavelens - 1)/(4-1); smooth_freqs = freqs/((1-smooth)/8 + smooth)
///   freqs = where(medium, smooth_freqs, freqs)
const LLAMA31_EXPECTED: &[(usize, f32)] = &[
    (0, 1.0),
    (1, 1.227_570_4),
    (20, 60.384_87),
    (27, 253.660_57),
    (28, 311.386_2),
    (29, 461.558_93), // medium band: 29..=34
    (30, 728.919_56),
    (31, 1_167.199_6),
    (32, 1_905.320_4),
    (33, 3_198.017_6),
    (34, 5_601.996_6),
    (35, 10_464.396), // low band: multiplied by the factor
    (40, 29_170.658),
    (63, 3_258_469.0),
];

#[test]
fn llama3_rope_frequencies_match_numpy() {
    let s = Llama3RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let f = llama3_rope_freqs(128, 500000.0, &s);
    assert_eq!(f.len(), 64);
    for &(i, want) in LLAMA31_EXPECTED {
        let rel = ((f[i] - want) / want).abs();
        assert!(rel < 2e-6, "freq[{i}] = {} expected {want}", f[i]);
    }
    // Through the config as well.
    let v = with(
        base("llama"),
        json!({"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0,
               "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3"}}),
    );
    assert_eq!(parse(&v).unwrap().rope_freqs().unwrap(), f);
}

#[test]
fn quantization_block_with_per_layer_overrides() {
    let v = with(
        base("llama"),
        json!({"quantization": {
            "group_size": 64, "bits": 4,
            "model.embed_tokens": {"group_size": 32, "bits": 8},
            "lm_head": false,
            "model.layers.0.mlp.down_proj": {"bits": 8},
            "model.layers.1.self_attn.q_proj": true
        }}),
    );
    let q = parse(&v).unwrap().quantization.unwrap();
    assert_eq!(q.default, QuantParams::affine_default());
    assert_eq!(
        q.for_module("model.embed_tokens"),
        Some(QuantParams {
            group_size: 32,
            bits: 8,
            mode: "affine".into()
        })
    );
    assert_eq!(q.for_module("lm_head"), None);
    assert_eq!(q.overrides["lm_head"], LayerQuantization::Skip);
    // Missing keys in an override take mlx's defaults for the mode (64, 4), not the block's.
    assert_eq!(
        q.for_module("model.layers.0.mlp.down_proj")
            .unwrap()
            .group_size,
        64
    );
    assert_eq!(
        q.for_module("model.layers.1.self_attn.q_proj"),
        Some(QuantParams::affine_default())
    );
    assert_eq!(
        q.for_module("model.layers.5.mlp.up_proj"),
        Some(QuantParams::affine_default())
    );

    let v = with(
        base("llama"),
        json!({"quantization": {"group_size": 32, "bits": 8, "mode": "mxfp4"}}),
    );
    let q = parse(&v).unwrap().quantization.unwrap();
    assert_eq!(q.default.mode, "mxfp4");
    assert_eq!(q.default.group_size, 32);

    let v = with(base("llama"), json!({"quantization": {"bits": 4}}));
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::MissingKey { key, .. } if key == "quantization.group_size"
    ));
    let v = with(
        base("llama"),
        json!({"quantization": {"group_size": 64, "bits": 4, "lm_head": {"bits": "8"}}}),
    );
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::WrongType { key, .. } if key == "quantization.lm_head.bits"
    ));
    // mlx-lm also writes `quantization_config`; alone it is read the same way.
    let v = with(
        base("llama"),
        json!({"quantization_config": {"group_size": 128, "bits": 8}}),
    );
    assert_eq!(
        parse(&v).unwrap().quantization.unwrap().default.group_size,
        128
    );
    let v = with(
        base("llama"),
        json!({"quantization_config": {"quant_method": "gptq", "bits": 4}}),
    );
    assert!(matches!(
        parse(&v).unwrap_err(),
        ConfigError::UnsupportedQuantization { method, .. } if method == "gptq"
    ));
}

#[test]
fn generation_config_eos_wins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with(base("llama"), json!({"eos_token_id": 2}));
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    assert_eq!(
        ModelConfig::from_dir(dir.path()).unwrap().eos_token_ids,
        vec![2]
    );
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [128001, 128008, 128009], "temperature": 0.6}"#,
    )
    .unwrap();
    let c = ModelConfig::from_dir(dir.path()).unwrap();
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    assert_eq!(c.raw["eos_token_id"], json!([128001, 128008, 128009]));
    // A single int works too.
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": 7}"#,
    )
    .unwrap();
    assert_eq!(
        ModelConfig::from_dir(dir.path()).unwrap().eos_token_ids,
        vec![7]
    );
    // Like mlx-lm: a falsy eos (null, 0, []) or an unparsable file leaves config.json's.
    for text in [
        r#"{"eos_token_id": null}"#,
        r#"{"eos_token_id": []}"#,
        "{oops",
    ] {
        std::fs::write(dir.path().join("generation_config.json"), text).unwrap();
        assert_eq!(
            ModelConfig::from_dir(dir.path()).unwrap().eos_token_ids,
            vec![2],
            "{text}"
        );
    }
    // A wrong type is an error naming generation_config.json.
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": "2"}"#,
    )
    .unwrap();
    let err = ModelConfig::from_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("generation_config.json: key `eos_token_id`"),
        "{err}"
    );
    // A missing config.json names the path.
    let empty = tempfile::tempdir().unwrap();
    let err = ModelConfig::from_dir(empty.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("config.json"));
}
