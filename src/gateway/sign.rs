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

enum SignValue<'a> {
    Str(&'a str),
    Num(&'a serde_json::Number),
}

impl SignValue<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, SignValue::Str(s) if s.is_empty())
    }
}

/// The fields that take part under `rule`, sorted by name in byte order.
/// Sorting here (rather than relying on `Map`'s order) keeps the rule right
/// even if a dependency turns on serde_json's `preserve_order`.
fn fields<'a>(params: &'a Map<String, Value>, rule: Rule) -> Vec<(&'a str, SignValue<'a>)> {
    let mut out: Vec<(&str, SignValue<'_>)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "sign")
        .filter_map(|(k, v)| signable(v).map(|sv| (k.as_str(), sv)))
        .filter(|(_, v)| rule == Rule::Primary || !v.is_empty())
        .collect();
    out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out
}

/// Feeds the canonical string into `sink` piece by piece.
fn canonicalise(params: &Map<String, Value>, key: &str, rule: Rule, mut sink: impl FnMut(&[u8])) {
    let mut number = String::new();
    for (i, (k, v)) in fields(params, rule).into_iter().enumerate() {
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

/// The raw 16-byte MD5 digest of `params` under `rule`.
pub fn digest(params: &Map<String, Value>, key: &SecretString, rule: Rule) -> [u8; 16] {
    let mut hasher = Md5::new();
    canonicalise(params, key.expose_secret(), rule, |piece| {
        hasher.update(piece)
    });
    hasher.finalize().into()
}

/// The sign of `params` by the primary rule, as 32 lowercase hex chars.
pub fn sign(params: &Map<String, Value>, key: &SecretString) -> String {
    hex::encode(digest(params, key, Rule::Primary))
}

/// The canonical string (key included). For tests and diagnostics of the
/// rule only: never log it, it carries the key.
pub fn canonical_string(params: &Map<String, Value>, key: &SecretString, rule: Rule) -> String {
    let mut out = Vec::new();
    canonicalise(params, key.expose_secret(), rule, |p| {
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

/// Checks the `sign` field of `params` against the primary rule and the
/// skip-empty variant. The comparison is constant-time over the decoded 16
/// bytes, so hex case does not matter.
pub fn verify(params: &Map<String, Value>, key: &SecretString) -> Result<(), VerifyError> {
    let given = match params.get("sign") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(VerifyError::Missing),
        Some(_) => return Err(VerifyError::Malformed),
    };
    let mut given_bytes = [0u8; 16];
    if given.len() != 32 || hex::decode_to_slice(given, &mut given_bytes).is_err() {
        return Err(VerifyError::Malformed);
    }
    let primary = digest(params, key, Rule::Primary);
    let mut ok = primary.ct_eq(&given_bytes);
    // The variant differs from the primary rule only when an empty string
    // takes part; otherwise its digest is the same and need not be computed.
    let has_empty = params
        .iter()
        .any(|(k, v)| k != "sign" && matches!(v, Value::String(s) if s.is_empty()));
    if has_empty {
        ok |= digest(params, key, Rule::SkipEmpty).ct_eq(&given_bytes);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
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
    fn a_changed_value_breaks_the_sign() {
        let mut p = obj(json!({"total_amount": "1", "mch_no": "M"}));
        p.insert("sign".into(), Value::String(sign(&p, &key())));
        p.insert("total_amount".into(), json!("2"));
        assert_eq!(verify(&p, &key()), Err(VerifyError::Mismatch));
    }
}
