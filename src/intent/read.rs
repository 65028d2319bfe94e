//! Bytes → a JSON object, or why the message cannot be an intent at all.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{FieldError, MAX_BODY_BYTES};
use crate::telemetry::metrics::DeadLetter;

/// A body that cannot be an intent: it is dead-lettered, not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("body is {0} bytes, over the 64 KiB limit")]
    TooLarge(usize),
    #[error("body is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is {0}, not a JSON object")]
    NotObject(&'static str),
}

impl Unreadable {
    /// Why, as metrics and logs name it.
    pub fn reason(&self) -> DeadLetter {
        match self {
            Unreadable::TooLarge(_) => DeadLetter::TooLarge,
            Unreadable::NotUtf8(_) => DeadLetter::NotUtf8,
            Unreadable::NotJson(_) => DeadLetter::NotJson,
            Unreadable::NotObject(_) => DeadLetter::NotObject,
        }
    }
}

/// A JSON object as read from an intent body: every top-level field a
/// standard JSON parser can represent, the raw text of `metadata` (echoed
/// exactly as received), and the fields it cannot represent.
///
/// The body is first read as an object of raw values, which accepts what
/// the JSON grammar accepts; each value is then parsed on its own. So a
/// number beyond a 64-bit float (`1e400`), nesting deeper than 128 levels
/// or a lone surrogate escape (`"\ud800"`) spoils only its own field: the
/// object is still an intent, answered with an `invalid_intent` event that
/// names the field, not dead-lettered.
#[derive(Debug, Default)]
pub struct ReadObject<'a> {
    pub fields: Map<String, Value>,
    /// `metadata` as received, when it is in `fields`.
    pub(super) metadata: Option<&'a RawValue>,
    /// Fields a standard parser cannot represent, with why.
    pub unrepresentable: Vec<FieldError>,
}

impl ReadObject<'_> {
    /// A field's value, with `null` and `""` read as absent.
    pub fn present(&self, field: &str) -> Option<&Value> {
        super::validate::present(&self.fields, field)
    }
}

/// The object's top level: raw keys and values, borrowed from the body.
struct RawPairs<'a>(Vec<(&'a RawValue, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for RawPairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = RawPairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(pair) = map.next_entry::<&RawValue, &RawValue>()? {
                    pairs.push(pair);
                }
                Ok(RawPairs(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// Reads the body as a JSON object, or says why it cannot be an intent.
pub fn read(body: &[u8]) -> Result<ReadObject<'_>, Unreadable> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Unreadable::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|e| Unreadable::NotUtf8(e.to_string()))?;
    let pairs = match serde_json::from_str::<RawPairs<'_>>(text) {
        Ok(p) => p,
        Err(e) => return Err(not_an_object(text, e)),
    };
    let mut out = ReadObject::default();
    for (raw_key, raw_value) in pairs.0 {
        let key = match serde_json::from_str::<String>(raw_key.get()) {
            Ok(k) => k,
            Err(e) => {
                out.unrepresentable
                    .push(FieldError::new("(a field name)", unrepresentable(&e)));
                continue;
            }
        };
        match serde_json::from_str::<Value>(raw_value.get()) {
            Ok(v) => {
                if key == "metadata" {
                    out.metadata = Some(raw_value);
                }
                out.fields.insert(key, v);
            }
            Err(e) => {
                if key == "metadata" {
                    out.metadata = None;
                }
                out.fields.remove(&key);
                out.unrepresentable
                    .push(FieldError::new(key, unrepresentable(&e)));
            }
        }
    }
    Ok(out)
}

/// Why a body that is not a readable JSON object is not one.
fn not_an_object(text: &str, e: serde_json::Error) -> Unreadable {
    // The raw reader refuses only what is not JSON, or JSON of another type.
    if e.classify() != serde_json::error::Category::Data {
        return Unreadable::NotJson(e.to_string());
    }
    let kind = match text.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    };
    Unreadable::NotObject(kind)
}

/// What a standard parser could not represent in a value that is valid JSON.
fn unrepresentable(e: &serde_json::Error) -> String {
    let m = e.to_string();
    if m.contains("number out of range") {
        "contains a number beyond the range of a 64-bit float".to_owned()
    } else if m.contains("recursion limit") {
        "is nested deeper than 128 levels".to_owned()
    } else if m.contains("surrogate") || m.contains("hex escape") {
        "contains a lone surrogate escape (like \\ud800), which is no Unicode character".to_owned()
    } else {
        format!("cannot be read: {m}")
    }
}

/// Removes whitespace between JSON tokens, leaving strings untouched.
pub(super) fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_bodies_are_told_apart() {
        assert_eq!(
            read(&vec![b' '; MAX_BODY_BYTES + 1]).err(),
            Some(Unreadable::TooLarge(MAX_BODY_BYTES + 1))
        );
        assert!(matches!(read(b"\xff\xfe{}"), Err(Unreadable::NotUtf8(_))));
        assert!(matches!(read(b"{\"a\":"), Err(Unreadable::NotJson(_))));
        assert_eq!(
            read(b"[1,2]").err(),
            Some(Unreadable::NotObject("an array"))
        );
        assert_eq!(
            read(b"\"x\"").err(),
            Some(Unreadable::NotObject("a string"))
        );
        assert_eq!(read(b"null").err(), Some(Unreadable::NotObject("null")));
        assert!(read(b"{}").is_ok());
        // Exactly 64 KiB is allowed.
        let mut at_limit = b"{\"pad\":\"".to_vec();
        at_limit.resize(MAX_BODY_BYTES - 2, b'x');
        at_limit.extend_from_slice(b"\"}");
        assert!(read(&at_limit).is_ok());
    }
}
