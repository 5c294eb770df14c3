//! Chat templates rendered with minijinja the way Hugging Face transformers renders
//! them with Jinja2: `trim_blocks` and `lstrip_blocks` on, loop controls, a `tojson`
//! that matches Python's `json.dumps(ensure_ascii=False)`, `raise_exception`,
//! `strftime_now`, and Python string/dict methods (`.strip()`, `.startswith()`,
//! `.split()`, `.items()`, `.get()`, …) through minijinja-contrib's pycompat.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use super::TokenizerError;

const TEMPLATE_NAME: &str = "chat_template";

/// Work one rendering may do (minijinja's fuel: about one unit per
/// instruction). Real chat templates over long conversations use a few
/// thousand per message; a template that loops without end (a model's
/// `chat_template` is untrusted input) stops here with an error instead of
/// holding the thread forever.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compile a template. Syntax errors name the line.
    pub fn new(source: impl Into<String>) -> Result<Self, TokenizerError> {
        let source: String = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        let prepared = strip_generation_tags(&source);
        env.add_template_owned(TEMPLATE_NAME, prepared)
            .map_err(|e| TokenizerError::TemplateSyntax {
                line: e.line(),
                message: error_chain(&e),
            })?;
        Ok(Self { env, source })
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render with a JSON object of variables.
    pub fn render_json(&self, context: &serde_json::Value) -> Result<String, TokenizerError> {
        self.render(Value::from_serialize(context))
    }

    /// Render with a context (a map of variables).
    pub fn render(&self, context: Value) -> Result<String, TokenizerError> {
        let tmpl =
            self.env
                .get_template(TEMPLATE_NAME)
                .map_err(|e| TokenizerError::TemplateRender {
                    line: e.line(),
                    message: error_chain(&e),
                })?;
        tmpl.render(context).map_err(|e| {
            if e.kind() == ErrorKind::OutOfFuel {
                return TokenizerError::TemplateRender {
                    line: e.line(),
                    message: format!(
                        "rendering stopped after {TEMPLATE_FUEL} steps (a loop that does not \
                         end?)"
                    ),
                };
            }
            // `raise_exception` errors carry the template author's message.
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = cur {
                if let Some(me) = err.downcast_ref::<Error>()
                    && let Some(msg) = me.detail().and_then(|d| d.strip_prefix(RAISED))
                {
                    return TokenizerError::TemplateException(msg.to_string());
                }
                cur = err.source();
            }
            TokenizerError::TemplateRender {
                line: e.line(),
                message: error_chain(&e),
            }
        })
    }
}

const RAISED: &str = "raise_exception: ";

fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        let _ = write!(s, ": {err}");
        cur = err.source();
    }
    s
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// `strftime_now(format)`: the local time formatted like Python's `strftime`.
fn strftime_now(format: String) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        ));
    }
    let now = chrono::Local::now();
    Ok(now.format_with_items(items.into_iter()).to_string())
}

/// Remove `{% generation %}` / `{% endgeneration %}` tags (transformers' assistant-mask
/// extension: they render their body unchanged).
fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("%}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = after[..end].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if inner == "generation" || inner == "endgeneration" {
            // Keep whitespace control: a `-` on either side still trims.
            let inner_raw = &after[..end];
            let left = inner_raw.starts_with('-');
            let right = inner_raw.ends_with('-');
            if left || right {
                // An empty block keeps the whitespace trimming the tag asked for.
                out.push_str(if left {
                    "{%- if true %}"
                } else {
                    "{% if true %}"
                });
                out.push_str(if right { "{% endif -%}" } else { "{% endif %}" });
            }
            rest = &after[end + 2..];
        } else {
            out.push_str(&rest[start..start + 2 + end + 2]);
            rest = &after[end + 2..];
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// tojson, as Python's json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False)
// ---------------------------------------------------------------------------------------

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::Number => {
            let n = i64::try_from(v.clone()).map_err(|_| {
                Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an int")
            })?;
            Some(" ".repeat(n.max(0) as usize))
        }
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or a string",
                ));
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match (
                parts.first().and_then(Value::as_str),
                parts.get(1).and_then(Value::as_str),
            ) {
                (Some(a), Some(b)) if parts.len() == 2 => (a.to_string(), b.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ));
                }
            }
        }
        // Python's defaults: (', ', ': ') without indent, (',', ': ') with it.
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, &value, &style, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_newline_indent(out: &mut String, style: &JsonStyle, level: usize) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn write_json(out: &mut String, v: &Value, style: &JsonStyle, level: usize) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, v)?,
        ValueKind::String => write_str(out, v.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Bytes => {
            let s = v
                .as_bytes()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            write_str(out, &s, style.ensure_ascii);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                write_newline_indent(out, style, level + 1);
                write_json(out, item, style, level + 1)?;
            }
            write_newline_indent(out, style, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                write_newline_indent(out, style, level + 1);
                match key.kind() {
                    ValueKind::String => {
                        write_str(out, key.as_str().unwrap_or_default(), style.ensure_ascii)
                    }
                    // Python converts int/float/bool/None keys to strings.
                    ValueKind::None => out.push_str("\"null\""),
                    ValueKind::Bool | ValueKind::Number => {
                        let mut k = String::new();
                        write_json(&mut k, key, style, 0)?;
                        write_str(out, &k, style.ensure_ascii);
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!(
                                "tojson: keys must be str, int, float, bool or None, not {}",
                                key.kind()
                            ),
                        ));
                    }
                }
                out.push_str(&style.key_sep);
                let item = v.get_item(key)?;
                write_json(out, &item, style, level + 1)?;
            }
            write_newline_indent(out, style, level);
            out.push('}');
        }
        _ => {
            // Plain objects and anything else: their string form.
            write_str(out, &v.to_string(), style.ensure_ascii);
        }
    }
    Ok(())
}

fn write_number(out: &mut String, v: &Value) -> Result<(), Error> {
    if v.is_integer() {
        if let Ok(i) = i64::try_from(v.clone()) {
            let _ = write!(out, "{i}");
            return Ok(());
        }
        if let Ok(u) = u64::try_from(v.clone()) {
            let _ = write!(out, "{u}");
            return Ok(());
        }
        if let Ok(i) = i128::try_from(v.clone()) {
            let _ = write!(out, "{i}");
            return Ok(());
        }
    }
    let f = f64::try_from(v.clone())?;
    out.push_str(&python_float_repr(f));
    Ok(())
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation when the
/// exponent is below -4 or at least 16, always a `.0` or exponent for integral values.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "d.ddde±x".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let point = exp + 1; // position of the decimal point within the digits
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point >= n {
            format!("{}{}.0", digits, "0".repeat((point - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn generation_tags_are_removed() {
        let t = "{% for m in messages %}{% generation %}{{ m }}{% endgeneration %}{% endfor %}";
        assert_eq!(
            strip_generation_tags(t),
            "{% for m in messages %}{{ m }}{% endfor %}"
        );
        // Whitespace control on the tags still trims, as in Jinja2.
        let t = ChatTemplate::new("a  {%- generation %} b {% endgeneration -%}  c").unwrap();
        assert_eq!(t.render_json(&serde_json::json!({})).unwrap(), "a b c");
    }
}
