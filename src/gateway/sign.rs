//! The gateway's MD5 signing rule (see `tests/data/sign-vectors.json`).
//!
//! Primary rule: every top-level field except `sign` whose value is a string
//! (empty strings included, as `k=`) or a number; sorted by name in byte
//! order; joined as `k=v` with `&`; then `&key=KEY`; MD5 over the UTF-8
//! bytes; lowercase hex. The skip-empty variant leaves empty strings out and
//! is only ever accepted when verifying a response, never used to sign.
//!
//! The canonical string contains the key, so it is streamed straight into the
//! hasher and never built as a `String` outside tests.

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::object::{Field, Object};

/// Which canonicalisation to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Empty strings take part as `k=`. The only rule used for signing.
    Primary,
    /// Empty strings are left out. Accepted for responses only.
    SkipEmpty,
}

/// A field's value as it takes part in the signature, or `None` when the
/// rule leaves it out (null, booleans, objects, arrays).
fn signable(value: &Value) -> Option<SignValue<'_>> {
    match value {
        Value::String(s) => Some(SignValue::Str(s)),
        Value::Number(n) => Some(SignValue::Num(n)),
        _ => None,
    }
}

/// The same for a field of an answer read as an [`Object`].
fn signable_field<'a>(value: &'a Field<'_>) -> Option<SignValue<'a>> {
    match value {
        Field::Str(s) => Some(SignValue::Str(s)),
        Field::Num(n) => Some(SignValue::Num(n)),
        Field::Null | Field::Other(_) => None,
    }
}

#[derive(Clone, Copy)]
enum SignValue<'a> {
    Str(&'a str),
    Num(&'a serde_json::Number),
}

impl SignValue<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, SignValue::Str(s) if s.is_empty())
    }
}

/// The fields that take part in a signature (every rule's), sorted by
/// name in byte order. Sorting here (rather than relying on the map's
/// order) keeps the rule right even if a dependency turns on serde_json's
/// `preserve_order`.
fn fields<'a>(
    params: impl Iterator<Item = (&'a str, Option<SignValue<'a>>)>,
) -> Vec<(&'a str, SignValue<'a>)> {
    // Sized from the fields given: collected through the filters it would
    // start empty and grow (copied) twice per signed body.
    let mut out: Vec<(&str, SignValue<'_>)> = Vec::with_capacity(params.size_hint().0);
    out.extend(
        params
            .filter(|(k, _)| *k != "sign")
            .filter_map(|(k, v)| Some((k, v?))),
    );
    out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out
}

fn map_fields(params: &Map<String, Value>) -> Vec<(&str, SignValue<'_>)> {
    fields(params.iter().map(|(k, v)| (k.as_str(), signable(v))))
}

/// Feeds the canonical string of `fields` (sorted) under `rule` into
/// `sink` piece by piece.
fn canonicalise(
    fields: &[(&str, SignValue<'_>)],
    key: &str,
    rule: Rule,
    mut sink: impl FnMut(&[u8]),
) {
    let mut number = String::new();
    let taking_part = fields
        .iter()
        .filter(|(_, v)| rule == Rule::Primary || !v.is_empty());
    for (i, (k, v)) in taking_part.enumerate() {
        if i > 0 {
            sink(b"&");
        }
        sink(k.as_bytes());
        sink(b"=");
        match v {
            SignValue::Str(s) => sink(s.as_bytes()),
            SignValue::Num(n) => {
                use std::fmt::Write;
                number.clear();
                // Writing to a String cannot fail.
                let _ = write!(number, "{n}");
                sink(number.as_bytes());
            }
        }
    }
    sink(b"&key=");
    sink(key.as_bytes());
}

fn digest_of(fields: &[(&str, SignValue<'_>)], key: &SecretString, rule: Rule) -> [u8; 16] {
    let mut hasher = Md5::new();
    canonicalise(fields, key.expose_secret(), rule, |piece| {
        hasher.update(piece)
    });
    hasher.finalize().into()
}

/// The raw 16-byte MD5 digest of `params` under `rule`.
pub fn digest(params: &Map<String, Value>, key: &SecretString, rule: Rule) -> [u8; 16] {
    digest_of(&map_fields(params), key, rule)
}

/// The sign of `params` by the primary rule, as 32 lowercase hex chars.
pub fn sign(params: &Map<String, Value>, key: &SecretString) -> String {
    hex::encode(digest(params, key, Rule::Primary))
}

/// The canonical string (key included). For tests and diagnostics of the
/// rule only: never log it, it carries the key.
pub fn canonical_string(params: &Map<String, Value>, key: &SecretString, rule: Rule) -> String {
    let mut out = Vec::new();
    canonicalise(&map_fields(params), key.expose_secret(), rule, |p| {
        out.extend_from_slice(p)
    });
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a `sign` did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the sign field is missing")]
    Missing,
    #[error("the sign field is not 32 hex characters")]
    Malformed,
    #[error("the sign does not match")]
    Mismatch,
}

/// The `sign` field as received.
enum Given<'a> {
    Absent,
    Text(&'a str),
    NotText,
}

/// Checks the `sign` field of `params` against the primary rule and the
/// skip-empty variant. The comparison is constant-time over the decoded 16
/// bytes, so hex case does not matter.
pub fn verify(params: &Map<String, Value>, key: &SecretString) -> Result<(), VerifyError> {
    let given = match params.get("sign") {
        Some(Value::String(s)) => Given::Text(s),
        None | Some(Value::Null) => Given::Absent,
        Some(_) => Given::NotText,
    };
    verify_fields(given, &map_fields(params), key)
}

/// [`verify`] for an answer read as an [`Object`].
pub fn verify_object(params: &Object<'_>, key: &SecretString) -> Result<(), VerifyError> {
    let given = match params.get("sign") {
        Some(Field::Str(s)) => Given::Text(s),
        None | Some(Field::Null) => Given::Absent,
        Some(_) => Given::NotText,
    };
    let taking_part = fields(params.iter().map(|(k, v)| (k, signable_field(v))));
    verify_fields(given, &taking_part, key)
}

fn verify_fields(
    given: Given<'_>,
    fields: &[(&str, SignValue<'_>)],
    key: &SecretString,
) -> Result<(), VerifyError> {
    let given = match given {
        Given::Text(s) => s,
        Given::Absent => return Err(VerifyError::Missing),
        Given::NotText => return Err(VerifyError::Malformed),
    };
    let mut given_bytes = [0u8; 16];
    if given.len() != 32 || hex::decode_to_slice(given, &mut given_bytes).is_err() {
        return Err(VerifyError::Malformed);
    }
    if bool::from(digest_of(fields, key, Rule::Primary).ct_eq(&given_bytes)) {
        return Ok(());
    }
    // The variant differs from the primary rule only when an empty string
    // takes part; otherwise its digest is the same and need not be computed.
    // Computed only after the primary rule failed: which rule matched is no
    // secret (the comparison stays constant-time within each).
    let has_empty = fields.iter().any(|(_, v)| v.is_empty());
    if has_empty && bool::from(digest_of(fields, key, Rule::SkipEmpty).ct_eq(&given_bytes)) {
        return Ok(());
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SecretString {
        SecretString::from("sandbox-key-5f2b9c0e7d1a4b3c")
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test literal is an object"),
        }
    }

    #[test]
    fn verify_accepts_upper_case_hex_and_both_rules() {
        let mut p = obj(json!({"a": "1", "b": ""}));
        let primary = sign(&p, &key());
        p.insert("sign".into(), Value::String(primary.to_uppercase()));
        assert_eq!(verify(&p, &key()), Ok(()));
        let variant = hex::encode(digest(&p, &key(), Rule::SkipEmpty));
        assert_ne!(primary, variant, "an empty string must change the sign");
        p.insert("sign".into(), Value::String(variant));
        assert_eq!(verify(&p, &key()), Ok(()));
    }

    #[test]
    fn verify_rejects_missing_malformed_and_wrong_signs() {
        let mut p = obj(json!({"a": "1"}));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Missing));
        p.insert("sign".into(), json!(12));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Malformed));
        p.insert("sign".into(), json!("abc"));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Malformed));
        p.insert("sign".into(), json!("zz".repeat(16)));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Malformed));
        p.insert("sign".into(), json!("0".repeat(32)));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Mismatch));
        let other = SecretString::from("another-key");
        p.insert("sign".into(), Value::String(sign(&p, &other)));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Mismatch));
    }

    #[test]
    fn an_answer_read_as_an_object_verifies_as_its_map_does() {
        let signed = |v: Value, rule: Rule| {
            let mut m = obj(v);
            let s = hex::encode(digest(&m, &key(), rule));
            m.insert("sign".into(), Value::String(s));
            m
        };
        let cases = [
            signed(json!({"a": "1", "b": ""}), Rule::Primary),
            signed(json!({"a": "1", "b": ""}), Rule::SkipEmpty),
            signed(
                json!({"n": 12, "f": 1.5, "x": null, "t": true, "o": {"k": 1}}),
                Rule::Primary,
            ),
            signed(json!({"msg": "a\"b\u{e9}"}), Rule::Primary),
            obj(json!({"a": "1", "sign": "0".repeat(32)})),
            obj(json!({"a": "1", "sign": 7})),
            obj(json!({"a": "1", "sign": null})),
            obj(json!({"a": "1"})),
        ];
        for m in cases {
            let body = serde_json::to_vec(&m).unwrap_or_default();
            let o = Object::parse(&body).expect("an object");
            assert_eq!(verify_object(&o, &key()), verify(&m, &key()), "{m:?}");
        }
    }

    #[test]
    fn a_changed_value_breaks_the_sign() {
        let mut p = obj(json!({"total_amount": "1", "mch_no": "M"}));
        p.insert("sign".into(), Value::String(sign(&p, &key())));
        p.insert("total_amount".into(), json!("2"));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Mismatch));
    }
}
