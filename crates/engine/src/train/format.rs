//! The dataset formats of mlx-lm's `tuner/datasets.py` and the rules a row must
//! follow, in one place: the trainer's reader ([`super::data`]) and the hub's dataset
//! registration (every line, while it copies the file) both detect and validate here.
//!
//! A format is detected from a file's first row in mlx-lm's order: `prompt` and
//! `completion` (completions), `messages` (chat, with optional `tools`), `text`. The
//! problems are data ([`RowError`]), so each surface words them its own way (the
//! `Display` here is the trainer's; the hub's API keeps its own wording).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Key names of the dataset fields (mlx-lm's `*_feature` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeys {
    pub text: String,
    pub prompt: String,
    pub completion: String,
    pub chat: String,
}

impl Default for DataKeys {
    fn default() -> DataKeys {
        DataKeys {
            text: "text".into(),
            prompt: "prompt".into(),
            completion: "completion".into(),
            chat: "messages".into(),
        }
    }
}

/// The format of a dataset file, from its first row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Text,
    Completions,
    Chat,
}

impl DataFormat {
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Text => "text",
            DataFormat::Completions => "completions",
            DataFormat::Chat => "chat",
        }
    }
}

/// The kind of a JSON value, as errors name what they found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    pub fn of(v: &Value) -> JsonKind {
        match v {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }

    /// "a string", "a list", …: Python's names, as mlx-lm's messages say.
    pub fn python_name(self) -> &'static str {
        match self {
            JsonKind::Array => "a list",
            other => other.json_name(),
        }
    }

    /// "a string", "an array", …: JSON's names.
    pub fn json_name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        }
    }
}

/// Roles a chat row may use when [`RowRules::known_roles_only`].
pub const KNOWN_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Why a line or row is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// The line is not UTF-8 (line readers only).
    NotUtf8(String),
    /// A blank line (line readers only: the trainer skips them, as mlx-lm's loader
    /// never sees them).
    EmptyLine,
    InvalidJson(String),
    NotAnObject(JsonKind),
    /// The first row fits no format (under these key names).
    UnknownFormat(DataKeys),
    MissingKey {
        key: String,
        format: DataFormat,
    },
    NotAString {
        key: String,
        found: JsonKind,
    },
    MessagesNotAList {
        key: String,
        found: JsonKind,
    },
    MessagesEmpty {
        key: String,
    },
    MessageNotAnObject {
        index: usize,
        found: JsonKind,
    },
    RoleMissing {
        index: usize,
    },
    RoleNotAString {
        index: usize,
        found: JsonKind,
    },
    UnknownRole {
        index: usize,
        role: String,
    },
    ContentMissing {
        index: usize,
    },
    ContentNotAString {
        index: usize,
        found: JsonKind,
    },
    ToolsNotAList(JsonKind),
    /// With prompt masking, a chat row must end with the assistant's answer.
    MaskedChatEndsWithoutAssistant,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |k: &JsonKind| k.python_name();
        match self {
            RowError::NotUtf8(e) => write!(f, "invalid UTF-8: {e}"),
            RowError::EmptyLine => write!(f, "empty line"),
            RowError::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            RowError::NotAnObject(_) => write!(f, "expected a JSON object"),
            RowError::UnknownFormat(k) => write!(
                f,
                "unsupported data format: a row needs `{}`, `{}`+`{}` or `{}`",
                k.text, k.prompt, k.completion, k.chat
            ),
            RowError::MissingKey { key, format } => write!(
                f,
                "missing `{key}` (the file is in {} format, from its first row)",
                format.name()
            ),
            RowError::NotAString { key, found } => {
                write!(f, "`{key}` must be a string, found {}", list(found))
            }
            RowError::MessagesNotAList { key, found } => {
                write!(
                    f,
                    "`{key}` must be a list of messages, found {}",
                    list(found)
                )
            }
            RowError::MessagesEmpty { key } => write!(f, "`{key}` is empty"),
            RowError::MessageNotAnObject { index, .. } => {
                write!(f, "message {index} is not an object")
            }
            RowError::RoleMissing { index } | RowError::RoleNotAString { index, .. } => {
                write!(f, "message {index} has no string `role`")
            }
            RowError::UnknownRole { index, role } => write!(
                f,
                "message {index}: role {role:?} is not one of system, user, assistant, tool"
            ),
            RowError::ContentMissing { index } => write!(f, "message {index} has no `content`"),
            RowError::ContentNotAString { index, found } => write!(
                f,
                "message {index}: `content` must be a string, found {}",
                list(found)
            ),
            RowError::ToolsNotAList(found) => {
                write!(f, "`tools` must be a list, found {}", list(found))
            }
            RowError::MaskedChatEndsWithoutAssistant => write!(
                f,
                "with --mask-prompt a chat row must end with an assistant message"
            ),
        }
    }
}

/// What a row is checked against besides its format.
#[derive(Debug, Clone, Default)]
pub struct RowRules {
    pub keys: DataKeys,
    /// Prompt masking: a chat row must end with an assistant message.
    pub mask_prompt: bool,
    /// Chat roles only from [`KNOWN_ROLES`] and `content` a string (or absent/null
    /// beside `tool_calls`): what the hub's registration holds datasets to.
    pub known_roles_only: bool,
}

/// The format `row` is in, in mlx-lm's order of detection.
pub fn detect_format(row: &Map<String, Value>, keys: &DataKeys) -> Result<DataFormat, RowError> {
    if row.contains_key(&keys.prompt) && row.contains_key(&keys.completion) {
        Ok(DataFormat::Completions)
    } else if row.contains_key(&keys.chat) {
        Ok(DataFormat::Chat)
    } else if row.contains_key(&keys.text) {
        Ok(DataFormat::Text)
    } else {
        Err(RowError::UnknownFormat(keys.clone()))
    }
}

/// Checks one row against `format`.
pub fn validate_row(
    row: &Map<String, Value>,
    format: DataFormat,
    rules: &RowRules,
) -> Result<(), RowError> {
    let k = &rules.keys;
    let string = |key: &str| -> Result<(), RowError> {
        match row.get(key) {
            Some(Value::String(_)) => Ok(()),
            Some(other) => Err(RowError::NotAString {
                key: key.to_string(),
                found: JsonKind::of(other),
            }),
            None => Err(RowError::MissingKey {
                key: key.to_string(),
                format,
            }),
        }
    };
    if let Some(t) = row.get("tools")
        && !t.is_array()
        && !t.is_null()
    {
        return Err(RowError::ToolsNotAList(JsonKind::of(t)));
    }
    match format {
        DataFormat::Text => string(&k.text),
        DataFormat::Completions => {
            string(&k.prompt)?;
            string(&k.completion)
        }
        DataFormat::Chat => {
            let msgs = match row.get(&k.chat) {
                Some(Value::Array(m)) => m,
                Some(other) => {
                    return Err(RowError::MessagesNotAList {
                        key: k.chat.clone(),
                        found: JsonKind::of(other),
                    });
                }
                None => {
                    return Err(RowError::MissingKey {
                        key: k.chat.clone(),
                        format,
                    });
                }
            };
            if msgs.is_empty() {
                return Err(RowError::MessagesEmpty {
                    key: k.chat.clone(),
                });
            }
            for (index, m) in msgs.iter().enumerate() {
                let Value::Object(m) = m else {
                    return Err(RowError::MessageNotAnObject {
                        index,
                        found: JsonKind::of(m),
                    });
                };
                match m.get("role") {
                    Some(Value::String(role)) => {
                        if rules.known_roles_only && !KNOWN_ROLES.contains(&role.as_str()) {
                            return Err(RowError::UnknownRole {
                                index,
                                role: role.clone(),
                            });
                        }
                    }
                    Some(other) => {
                        return Err(RowError::RoleNotAString {
                            index,
                            found: JsonKind::of(other),
                        });
                    }
                    None => return Err(RowError::RoleMissing { index }),
                }
                let calls_tools = m.contains_key("tool_calls");
                match m.get("content") {
                    None if !calls_tools => return Err(RowError::ContentMissing { index }),
                    // an assistant message that only calls tools
                    None | Some(Value::Null) if calls_tools => {}
                    Some(Value::String(_)) => {}
                    Some(other) if rules.known_roles_only => {
                        return Err(RowError::ContentNotAString {
                            index,
                            found: JsonKind::of(other),
                        });
                    }
                    _ => {}
                }
            }
            if rules.mask_prompt {
                let last = msgs.last().and_then(|m| m.get("role"));
                if last != Some(&Value::String("assistant".into())) {
                    return Err(RowError::MaskedChatEndsWithoutAssistant);
                }
            }
            Ok(())
        }
    }
}

/// A line [`check_line`] refused, and the format the row was held to when it was
/// known (given, or detected from this row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub error: RowError,
    pub format: Option<DataFormat>,
}

/// Checks one line of a JSONL file (its line ending included) for readers that take
/// every line as a row: UTF-8, not blank, a JSON object valid in `format`, which is
/// detected from this row when `None`. Returns the row's format.
pub fn check_line(
    line: &[u8],
    format: Option<DataFormat>,
    rules: &RowRules,
) -> Result<DataFormat, LineError> {
    let fail = |error: RowError, format: Option<DataFormat>| LineError { error, format };
    let text =
        std::str::from_utf8(line).map_err(|e| fail(RowError::NotUtf8(e.to_string()), None))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(fail(RowError::EmptyLine, None));
    }
    let row: Value =
        serde_json::from_str(text).map_err(|e| fail(RowError::InvalidJson(e.to_string()), None))?;
    let row = match row {
        Value::Object(row) => row,
        other => return Err(fail(RowError::NotAnObject(JsonKind::of(&other)), format)),
    };
    let format = match format {
        Some(f) => f,
        None => detect_format(&row, &rules.keys).map_err(|e| fail(e, None))?,
    };
    validate_row(&row, format, rules).map_err(|e| fail(e, Some(format)))?;
    Ok(format)
}
