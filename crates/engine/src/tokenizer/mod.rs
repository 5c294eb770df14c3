//! Tokenizer: `tokenizer.json` through the `tokenizers` crate, `tokenizer_config.json`
//! (special tokens, `add_bos_token`, chat template), `chat_template.jinja`, and the
//! eos ids of `generation_config.json` / `config.json`.

mod chat_template;
mod streaming;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

pub use chat_template::ChatTemplate;
pub use streaming::StreamingDetokenizer;

/// Everything that can go wrong loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: cannot load tokenizer: {message}")]
    Load { file: String, message: String },
    #[error("{file}: key `{key}` has the wrong type: expected {expected}, found {found}")]
    WrongType {
        file: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("chat template syntax error{}: {message}", line_suffix(*line))]
    TemplateSyntax {
        line: Option<usize>,
        message: String,
    },
    #[error("chat template error{}: {message}", line_suffix(*line))]
    TemplateRender {
        line: Option<usize>,
        message: String,
    },
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    TemplateException(String),
    #[error(
        "this tokenizer has no chat template (no chat_template.jinja, and no chat_template \
         in tokenizer_config.json)"
    )]
    NoChatTemplate,
    #[error("no chat template named `{name}` (available: {available})")]
    NoSuchChatTemplate { name: String, available: String },
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

const TOKENIZER_FILE: &str = "tokenizer.json";
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
const CHAT_TEMPLATE_JSON_FILE: &str = "chat_template.json";

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn read_json(path: &Path, file: &str) -> Result<Option<Value>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Json {
            file: file.into(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
}

/// The inputs of a tokenizer, as files of a model folder hold them.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    /// The text of `tokenizer.json`.
    pub tokenizer_json: String,
    /// `tokenizer_config.json`, if any.
    pub tokenizer_config: Option<Value>,
    /// `chat_template.jinja` (wins over `tokenizer_config.json`'s template).
    pub chat_template: Option<String>,
    /// eos ids of the model config (`generation_config.json` winning over `config.json`).
    pub config_eos_token_ids: Vec<u32>,
}

/// A chat message list entry is any JSON object (`{"role": …, "content": …}` and
/// whatever else the template reads).
pub type Message = Value;

/// A loaded tokenizer with its special tokens and chat template(s).
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    bos_token: Option<String>,
    bos_token_id: Option<u32>,
    eos_token: Option<String>,
    unk_token: Option<String>,
    pad_token: Option<String>,
    add_bos_token: Option<bool>,
    eos_token_ids: Vec<u32>,
    /// Templates by name; a single template is named "default".
    templates: BTreeMap<String, Result<ChatTemplate, (Option<usize>, String)>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("chat_templates", &self.templates.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A special token in `tokenizer_config.json`: a string, an AddedToken object
/// (`{"content": …}`), or null.
fn special_token(cfg: &Map<String, Value>, key: &str) -> Result<Option<String>, TokenizerError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            other => Err(TokenizerError::WrongType {
                file: TOKENIZER_CONFIG_FILE.into(),
                key: format!("{key}.content"),
                expected: "a string",
                found: other.map(type_name).unwrap_or_else(|| "nothing".into()),
            }),
        },
        Some(other) => Err(TokenizerError::WrongType {
            file: TOKENIZER_CONFIG_FILE.into(),
            key: key.into(),
            expected: "a string or an AddedToken object",
            found: type_name(other),
        }),
    }
}

fn opt_bool(cfg: &Map<String, Value>, key: &str) -> Result<Option<bool>, TokenizerError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(TokenizerError::WrongType {
            file: TOKENIZER_CONFIG_FILE.into(),
            key: key.into(),
            expected: "a boolean",
            found: type_name(other),
        }),
    }
}

/// `chat_template` may be a string or a list of `{name, template}` objects.
fn chat_templates_from_config(
    cfg: &Map<String, Value>,
    file: &str,
) -> Result<BTreeMap<String, String>, TokenizerError> {
    let mut out = BTreeMap::new();
    match cfg.get("chat_template") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("default".to_string(), s.clone());
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let name = item.get("name").and_then(Value::as_str);
                let template = item.get("template").and_then(Value::as_str);
                match (name, template) {
                    (Some(n), Some(t)) => {
                        out.insert(n.to_string(), t.to_string());
                    }
                    _ => {
                        return Err(TokenizerError::WrongType {
                            file: file.into(),
                            key: format!("chat_template[{i}]"),
                            expected: "an object with string `name` and `template`",
                            found: type_name(item),
                        });
                    }
                }
            }
        }
        Some(other) => {
            return Err(TokenizerError::WrongType {
                file: file.into(),
                key: "chat_template".into(),
                expected: "a string or a list of {name, template} objects",
                found: type_name(other),
            });
        }
    }
    Ok(out)
}

/// Hugging Face's LlamaTokenizerFast rebuilds its post-processor from
/// `add_bos_token` (default true) and `add_eos_token` (default false).
fn llama_post_processor(
    tokenizer_json: &mut Value,
    bos: Option<(&str, u32)>,
    eos: Option<(&str, u32)>,
    add_bos: bool,
    add_eos: bool,
) -> Result<(), TokenizerError> {
    let invalid = |message: String| TokenizerError::Invalid {
        file: TOKENIZER_CONFIG_FILE.into(),
        message,
    };
    let bos = if add_bos {
        Some(bos.ok_or_else(|| invalid("add_bos_token is true but there is no bos_token".into()))?)
    } else {
        None
    };
    let eos = if add_eos {
        Some(eos.ok_or_else(|| invalid("add_eos_token is true but there is no eos_token".into()))?)
    } else {
        None
    };
    let mut special_tokens = Map::new();
    for (tok, id) in [bos, eos].into_iter().flatten() {
        special_tokens.insert(
            tok.to_string(),
            json!({"id": tok, "ids": [id], "tokens": [tok]}),
        );
    }
    let (single, pair) =
        crate::gguf_meta::template_pieces(bos.map(|(t, _)| t), eos.map(|(t, _)| t));
    if let Some(obj) = tokenizer_json.as_object_mut() {
        obj.insert(
            "post_processor".into(),
            json!({
                "type": "TemplateProcessing",
                "single": single,
                "pair": pair,
                "special_tokens": special_tokens,
            }),
        );
    }
    Ok(())
}

impl Tokenizer {
    /// Load from a model folder: `tokenizer.json` (required), `tokenizer_config.json`,
    /// `chat_template.jinja` (or `chat_template.json`), and the eos ids of
    /// `generation_config.json` / `config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let path = dir.join(TOKENIZER_FILE);
        let tokenizer_json =
            std::fs::read_to_string(&path).map_err(|source| TokenizerError::Io {
                path: path.clone(),
                source,
            })?;
        let tokenizer_config = read_json(&dir.join(TOKENIZER_CONFIG_FILE), TOKENIZER_CONFIG_FILE)?;
        let jinja_path = dir.join(CHAT_TEMPLATE_FILE);
        let chat_template = match std::fs::read_to_string(&jinja_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match read_json(&dir.join(CHAT_TEMPLATE_JSON_FILE), CHAT_TEMPLATE_JSON_FILE)? {
                    Some(v) => match v.get("chat_template") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(other) => {
                            return Err(TokenizerError::WrongType {
                                file: CHAT_TEMPLATE_JSON_FILE.into(),
                                key: "chat_template".into(),
                                expected: "a string",
                                found: type_name(other),
                            });
                        }
                        None => None,
                    },
                    None => None,
                }
            }
            Err(source) => {
                return Err(TokenizerError::Io {
                    path: jinja_path,
                    source,
                });
            }
        };
        let config_eos_token_ids = config_eos_ids(dir)?;
        Self::from_parts(TokenizerFiles {
            tokenizer_json,
            tokenizer_config,
            chat_template,
            config_eos_token_ids,
        })
    }

    /// Build from in-memory files (e.g. those made from GGUF metadata).
    pub fn from_parts(files: TokenizerFiles) -> Result<Self, TokenizerError> {
        let empty = Map::new();
        let cfg = match &files.tokenizer_config {
            None => &empty,
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(TokenizerError::Invalid {
                    file: TOKENIZER_CONFIG_FILE.into(),
                    message: format!("expected a JSON object, found {}", type_name(other)),
                });
            }
        };
        let bos_token = special_token(cfg, "bos_token")?;
        let eos_token = special_token(cfg, "eos_token")?;
        let unk_token = special_token(cfg, "unk_token")?;
        let pad_token = special_token(cfg, "pad_token")?;
        let add_bos_token = opt_bool(cfg, "add_bos_token")?;
        let add_eos_token = opt_bool(cfg, "add_eos_token")?;

        let mut tj: Value =
            serde_json::from_str(&files.tokenizer_json).map_err(|e| TokenizerError::Json {
                file: TOKENIZER_FILE.into(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        let load = |v: Value| -> Result<tokenizers::Tokenizer, TokenizerError> {
            serde_json::from_value(v).map_err(|e| TokenizerError::Load {
                file: TOKENIZER_FILE.into(),
                message: e.to_string(),
            })
        };
        let class = cfg.get("tokenizer_class").and_then(Value::as_str);
        let mut inner = if matches!(class, Some("LlamaTokenizer" | "LlamaTokenizerFast")) {
            // Look up the special ids with a first load, then rebuild the post-processor.
            let first = load(tj.clone())?;
            let lookup = |t: &Option<String>| {
                t.as_deref()
                    .and_then(|s| first.token_to_id(s).map(|id| (s.to_string(), id)))
            };
            let (bos, eos) = (lookup(&bos_token), lookup(&eos_token));
            llama_post_processor(
                &mut tj,
                bos.as_ref().map(|(s, i)| (s.as_str(), *i)),
                eos.as_ref().map(|(s, i)| (s.as_str(), *i)),
                add_bos_token.unwrap_or(true),
                add_eos_token.unwrap_or(false),
            )?;
            load(tj)?
        } else {
            load(tj)?
        };
        // Never pad or truncate behind the caller's back.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Load {
                file: TOKENIZER_FILE.into(),
                message: e.to_string(),
            })?;

        let bos_token_id = bos_token.as_deref().and_then(|t| inner.token_to_id(t));
        let mut eos_set: BTreeSet<u32> = files.config_eos_token_ids.iter().copied().collect();
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_set.insert(id);
        }

        let mut sources = chat_templates_from_config(cfg, TOKENIZER_CONFIG_FILE)?;
        if let Some(t) = files.chat_template {
            sources.insert("default".to_string(), t);
        }
        let templates = sources
            .into_iter()
            .map(|(name, src)| {
                let compiled = ChatTemplate::new(src).map_err(|e| match e {
                    TokenizerError::TemplateSyntax { line, message } => (line, message),
                    other => (None, other.to_string()),
                });
                (name, compiled)
            })
            .collect();

        Ok(Self {
            inner: Arc::new(inner),
            bos_token,
            bos_token_id,
            eos_token,
            unk_token,
            pad_token,
            add_bos_token,
            eos_token_ids: eos_set.into_iter().collect(),
            templates,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. a bos
    /// token). Special tokens written in the text (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Text of `ids`. Special tokens are kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Render the chat template the way `transformers`' `apply_chat_template(...,
    /// tokenize=False)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&[Value]>,
    ) -> Result<String, TokenizerError> {
        self.apply_chat_template_with(messages, add_generation_prompt, tools, None, &Map::new())
    }

    /// [`Tokenizer::apply_chat_template`] with a template name (for tokenizers that
    /// carry several) and extra template variables (e.g. `enable_thinking`).
    pub fn apply_chat_template_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&[Value]>,
        template_name: Option<&str>,
        extra: &Map<String, Value>,
    ) -> Result<String, TokenizerError> {
        let name = match template_name {
            Some(n) => n,
            None if self.templates.len() <= 1 => match self.templates.keys().next() {
                Some(n) => n.as_str(),
                None => return Err(TokenizerError::NoChatTemplate),
            },
            // transformers: a "tool_use" template when tools are given, else "default".
            None if tools.is_some() && self.templates.contains_key("tool_use") => "tool_use",
            None => "default",
        };
        let template = match self.templates.get(name) {
            Some(Ok(t)) => t,
            Some(Err((line, message))) => {
                return Err(TokenizerError::TemplateSyntax {
                    line: *line,
                    message: message.clone(),
                });
            }
            None => {
                return Err(TokenizerError::NoSuchChatTemplate {
                    name: name.to_string(),
                    available: self
                        .templates
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        let mut ctx = Map::new();
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        for (k, v) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("pad_token", &self.pad_token),
        ] {
            if let Some(v) = v {
                ctx.insert(k.into(), Value::String(v.clone()));
            }
        }
        ctx.insert("messages".into(), Value::Array(messages.to_vec()));
        ctx.insert(
            "tools".into(),
            tools
                .map(|t| Value::Array(t.to_vec()))
                .unwrap_or(Value::Null),
        );
        if !ctx.contains_key("documents") {
            ctx.insert("documents".into(), Value::Null);
        }
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        template.render(minijinja::Value::from_serialize(&ctx))
    }

    /// Render the chat template and encode it without adding special tokens (what
    /// `apply_chat_template(..., tokenize=True)` returns).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&[Value]>,
    ) -> Result<Vec<u32>, TokenizerError> {
        let text = self.apply_chat_template(messages, add_generation_prompt, tools)?;
        self.encode(&text, false)
    }

    /// Whether a chat template is available.
    pub fn has_chat_template(&self) -> bool {
        !self.templates.is_empty()
    }

    /// Source of a chat template (`"default"` for a single one).
    pub fn chat_template_source(&self, name: &str) -> Option<&str> {
        match self.templates.get(name) {
            Some(Ok(t)) => Some(t.source()),
            _ => None,
        }
    }

    /// The ids that end generation: the tokenizer's eos token and the model config's
    /// eos ids (`generation_config.json` winning over `config.json`), sorted.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// Add eos ids (e.g. from a model config read elsewhere).
    pub fn add_eos_token_ids(&mut self, ids: &[u32]) {
        let mut set: BTreeSet<u32> = self.eos_token_ids.iter().copied().collect();
        set.extend(ids.iter().copied());
        self.eos_token_ids = set.into_iter().collect();
    }

    /// The bos token and its id, when the tokenizer has one.
    pub fn bos(&self) -> Option<(&str, u32)> {
        match (&self.bos_token, self.bos_token_id) {
            (Some(t), Some(id)) => Some((t.as_str(), id)),
            _ => None,
        }
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// `add_bos_token` of `tokenizer_config.json`, when set.
    pub fn add_bos_token(&self) -> Option<bool> {
        self.add_bos_token
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn detokenizer(&self, skip_special_tokens: bool) -> StreamingDetokenizer {
        StreamingDetokenizer::new(Arc::clone(&self.inner), skip_special_tokens)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// eos ids from `generation_config.json` (when truthy) or else `config.json`.
fn config_eos_ids(dir: &Path) -> Result<Vec<u32>, TokenizerError> {
    let cfg_err = |e: crate::config::ConfigError| TokenizerError::Invalid {
        file: "generation_config.json".into(),
        message: e.to_string(),
    };
    if let Some(ids) = crate::config::generation_config_eos(dir).map_err(cfg_err)? {
        return Ok(ids);
    }
    let Some(cfg) = read_json(&dir.join("config.json"), "config.json")? else {
        return Ok(Vec::new());
    };
    let wrong = |found: &Value| TokenizerError::WrongType {
        file: "config.json".into(),
        key: "eos_token_id".into(),
        expected: "a token id or a list of token ids",
        found: type_name(found),
    };
    let one = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match cfg.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| one(x).ok_or_else(|| wrong(x)))
            .collect(),
        Some(v) => one(v).map(|id| vec![id]).ok_or_else(|| wrong(v)),
    }
}
