//! Reading a parsed JSON document field by field, collecting every error with its JSON path.
//!
//! serde's derived `deny_unknown_fields` stops at the first problem; operators want every
//! problem in one pass, so the configuration is parsed by `serde_json` into a `Value` and then
//! walked here. Every object is checked against its list of known fields, so unknown fields
//! are still always an error.

use serde_json::{Map, Value};

/// Errors collected while reading, each already formatted as `path: rule`.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<String>);

impl Errors {
    pub fn push(&mut self, path: &str, message: impl std::fmt::Display) {
        let path = if path.is_empty() { "config" } else { path };
        self.0.push(format!("{path}: {message}"));
    }
}

/// The path of a field of the object at `parent`.
/// An enumeration written as one keyword in the configuration.
pub trait Keyword: Copy + 'static {
    fn as_str(self) -> &'static str;
    /// What choosing this keyword means, shown beside it when a value is refused.
    fn gloss(self) -> Option<&'static str> {
        None
    }
}

pub fn field_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The path of an element of the list at `parent`.
pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A JSON object being read: remembers its path so field errors can name themselves.
pub struct Obj<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// Checks that `value` is an object whose fields are all in `known`; unknown fields are
    /// reported (every one of them) but the object is still read.
    pub fn new(value: &'a Value, path: &str, known: &[&str], errors: &mut Errors) -> Option<Self> {
        let Some(map) = value.as_object() else {
            errors.push(path, format!("must be an object, found {}", kind(value)));
            return None;
        };
        for name in map.keys() {
            if !known.contains(&name.as_str()) {
                errors.push(
                    path,
                    format!(
                        "unknown field \"{name}\"; expected one of: {}",
                        known.join(", ")
                    ),
                );
            }
        }
        Some(Obj {
            path: path.to_string(),
            map,
        })
    }

    /// The object in field `name`, checked against `known`; `None` when absent or not an object.
    pub fn section(&self, name: &str, known: &[&str], errors: &mut Errors) -> Option<Obj<'a>> {
        Obj::new(self.get(name)?, &self.path_of(name), known, errors)
    }

    pub fn path_of(&self, name: &str) -> String {
        field_path(&self.path, name)
    }

    /// The field's value; JSON `null` counts as absent.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &str, errors: &mut Errors) -> Option<&'a str> {
        let value = self.get(name)?;
        let s = value.as_str();
        if s.is_none() {
            errors.push(
                &self.path_of(name),
                format!("must be a string, found {}", kind(value)),
            );
        }
        s
    }

    pub fn required_string(&self, name: &str, errors: &mut Errors) -> Option<&'a str> {
        if self.get(name).is_none() {
            errors.push(&self.path_of(name), "is required");
            return None;
        }
        self.string(name, errors)
    }

    /// `name` as an RFC 3339 time (ms since the epoch), if present; an error names it
    /// otherwise.
    pub fn time(&self, name: &str, errors: &mut Errors) -> Option<i64> {
        let s = self.string(name, errors)?;
        self.parse_time(name, s, errors)
    }

    pub fn required_time(&self, name: &str, errors: &mut Errors) -> Option<i64> {
        let s = self.required_string(name, errors)?;
        self.parse_time(name, s, errors)
    }

    fn parse_time(&self, name: &str, s: &str, errors: &mut Errors) -> Option<i64> {
        let t = crate::time::parse_rfc3339(s);
        if t.is_none() {
            errors.push(
                &self.path_of(name),
                format!("must be {}, found \"{s}\"", crate::time::EXPECTED),
            );
        }
        t
    }

    /// `name` as one of the keywords `all`, if present; an error lists them otherwise.
    pub fn keyword<T: Keyword>(&self, name: &str, all: &[T], errors: &mut Errors) -> Option<T> {
        let s = self.string(name, errors)?;
        let found = all.iter().copied().find(|k| k.as_str() == s);
        if found.is_none() {
            let names: Vec<String> = all
                .iter()
                .map(|k| match k.gloss() {
                    Some(gloss) => format!("\"{}\" ({gloss})", k.as_str()),
                    None => format!("\"{}\"", k.as_str()),
                })
                .collect();
            let list = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            };
            errors.push(
                &self.path_of(name),
                format!("must be {list}, found \"{s}\""),
            );
        }
        found
    }

    pub fn bool(&self, name: &str, errors: &mut Errors) -> Option<bool> {
        let value = self.get(name)?;
        let b = value.as_bool();
        if b.is_none() {
            errors.push(
                &self.path_of(name),
                format!("must be true or false, found {}", kind(value)),
            );
        }
        b
    }

    pub fn list(&self, name: &str, errors: &mut Errors) -> Option<&'a Vec<Value>> {
        let value = self.get(name)?;
        list(value, &self.path_of(name), errors)
    }

    pub fn object_map(&self, name: &str, errors: &mut Errors) -> Option<&'a Map<String, Value>> {
        let value = self.get(name)?;
        let map = value.as_object();
        if map.is_none() {
            errors.push(
                &self.path_of(name),
                format!("must be an object, found {}", kind(value)),
            );
        }
        map
    }
}

pub fn list<'a>(value: &'a Value, path: &str, errors: &mut Errors) -> Option<&'a Vec<Value>> {
    let l = value.as_array();
    if l.is_none() {
        errors.push(path, format!("must be a list, found {}", kind(value)));
    }
    l
}

/// Reads a list of strings, reporting each element that is not one.
pub fn string_list<'a>(value: &'a Value, path: &str, errors: &mut Errors) -> Vec<&'a str> {
    let Some(items) = list(value, path, errors) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) => out.push(s),
            None => errors.push(
                &index_path(path, i),
                format!("must be a string, found {}", kind(item)),
            ),
        }
    }
    out
}

/// How a JSON value is named in error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A percentage from 0 to 100 with at most two decimals, as basis points (0..=10000).
pub fn percent_basis_points(value: &Value, path: &str, errors: &mut Errors) -> Option<u32> {
    let Some(p) = value.as_f64().filter(|_| value.is_number()) else {
        errors.push(
            path,
            format!("must be a number from 0 to 100, found {}", kind(value)),
        );
        return None;
    };
    if !(0.0..=100.0).contains(&p) {
        errors.push(
            path,
            format!("must be a number from 0 to 100, found {value}"),
        );
        return None;
    }
    let scaled = p * 100.0;
    let rounded = scaled.round();
    // A decimal like 33.33 is not exact in binary; allow float noise, reject a third decimal.
    if (scaled - rounded).abs() > 1e-6 {
        errors.push(
            path,
            format!("must have at most two decimals, found {value}"),
        );
        return None;
    }
    Some(rounded as u32)
}

/// Rewords a serde_json syntax error for an operator: what went wrong, at which line/column.
pub fn json_syntax_error(e: &serde_json::Error) -> String {
    let raw = e.to_string();
    // serde_json appends " at line L column C"; we say it our way.
    let what = raw.split(" at line ").next().unwrap_or(&raw);
    let what = match what {
        "EOF while parsing an object"
        | "EOF while parsing a list"
        | "EOF while parsing a value"
        | "EOF while parsing a string" => {
            "the document ends too early (unclosed object, list or string?)".to_string()
        }
        "trailing comma" => "trailing comma".to_string(),
        "trailing characters" => "unexpected characters after the end of the document".to_string(),
        "key must be a string" => "object keys must be strings in double quotes".to_string(),
        "expected value" => {
            "expected a value (string, number, object, list, true, false or null)".to_string()
        }
        other => other.replace('`', "'"),
    };
    format!(
        "invalid JSON at line {}, column {}: {what}",
        e.line(),
        e.column()
    )
}
