//! Intake (contract §3): message bytes → a validated [`Intent`], an
//! [`InvalidIntent`] naming every bad field, or [`Unreadable`] for what
//! cannot be an intent at all.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Institutions, is_identifier};
use crate::gateway::types::{H5PayRequest, PayType, json_kind};

/// Largest body accepted as an intent.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `metadata`, serialised.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

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
    /// A metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Unreadable::TooLarge(_) => "too_large",
            Unreadable::NotUtf8(_) => "not_utf8",
            Unreadable::NotJson(_) => "not_json",
            Unreadable::NotObject(_) => "not_object",
        }
    }
}

/// Reads the body as a JSON object, or says why it cannot be an intent.
pub fn read(body: &[u8]) -> Result<Map<String, Value>, Unreadable> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Unreadable::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|e| Unreadable::NotUtf8(e.to_string()))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Unreadable::NotObject(json_kind(&other))),
        Err(e) => Err(Unreadable::NotJson(e.to_string())),
    }
}

/// The identity of an intent: deduplication keys on all three.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub inst_no: String,
    pub mch_no: String,
    pub pay_trace_no: String,
}

/// A valid intent, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub identity: Identity,
    pub pay_type: PayType,
    /// In fen, 1..=gateway.max_amount.
    pub total_amount: u64,
    /// An explicit `pay_time`; when absent the worker fixes one at claim time.
    pub pay_time: Option<String>,
    pub open_id: Option<String>,
    pub notify_url: Option<String>,
    /// Echoed in the result, never sent to the gateway.
    pub metadata: Option<Value>,
}

impl Intent {
    /// A digest of the parameters that must match for a repeat of this
    /// identity to be a duplicate rather than a conflict (contract §4):
    /// compared after normalisation, so `wechat` = `400` and `"100"` = `100`.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.pay_type.code(),
            &self.total_amount.to_string(),
            self.open_id.as_deref().unwrap_or(""),
            self.notify_url.as_deref().unwrap_or(""),
        ] {
            // Length-prefixed so that no two field splits hash alike.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The gateway request, with the `pay_time` fixed for this identity.
    pub fn request(&self, pay_time: &str) -> H5PayRequest {
        H5PayRequest {
            inst_no: self.identity.inst_no.clone(),
            mch_no: self.identity.mch_no.clone(),
            pay_type: self.pay_type,
            pay_trace_no: self.identity.pay_trace_no.clone(),
            pay_time: pay_time.to_owned(),
            total_amount: self.total_amount,
            open_id: self.open_id.clone(),
            notify_url: self.notify_url.clone(),
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// An intent that breaks rules of §3. Keeps whatever fields were valid so
/// the result event can still carry them.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidIntent {
    pub errors: Vec<FieldError>,
    pub inst_no: Option<String>,
    pub mch_no: Option<String>,
    pub pay_trace_no: Option<String>,
    pub pay_type: Option<PayType>,
    pub total_amount: Option<u64>,
    pub pay_time: Option<String>,
    pub metadata: Option<Value>,
}

impl InvalidIntent {
    /// `field: problem; field: problem`, every bad field named.
    pub fn message(&self) -> String {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        format!("invalid intent: {}", parts.join("; "))
    }
}

/// What validation needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub institutions: &'a Institutions,
    /// `worker.default_mch_no`, when not empty.
    pub default_mch_no: Option<&'a str>,
    pub max_amount: u64,
}

/// A field's value, with `null` and `""` read as absent.
fn present<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) => Some(v),
    }
}

/// Quotes a received value for an error message, shortened.
fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 48 {
        let cut: String = s.chars().take(45).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Validates a JSON object against every rule of §3.
pub fn validate(obj: &Map<String, Value>, rules: Rules<'_>) -> Result<Intent, Box<InvalidIntent>> {
    let mut errors = Vec::new();
    let mut bad = |field: &'static str, message: String| errors.push(FieldError { field, message });

    // Identity fields.
    let pay_trace_no = match present(obj, "pay_trace_no") {
        None => {
            bad("pay_trace_no", "is required".into());
            None
        }
        Some(Value::String(s)) if is_identifier(s, 64) => Some(s.clone()),
        Some(v) => {
            bad(
                "pay_trace_no",
                format!("must be 1-64 characters of [0-9A-Za-z_-], got {}", shown(v)),
            );
            None
        }
    };
    let mch_no = match (present(obj, "mch_no"), rules.default_mch_no) {
        (None, Some(default)) => Some(default.to_owned()),
        (None, None) => {
            bad(
                "mch_no",
                "is required (no worker.default_mch_no is configured)".into(),
            );
            None
        }
        (Some(Value::String(s)), _) if is_identifier(s, 32) => Some(s.clone()),
        (Some(v), _) => {
            bad(
                "mch_no",
                format!("must be 1-32 characters of [0-9A-Za-z_-], got {}", shown(v)),
            );
            None
        }
    };
    let inst_no = match present(obj, "inst_no") {
        None => Some(rules.institutions.default_inst_no().to_owned()),
        Some(Value::String(s)) if rules.institutions.contains(s) => Some(s.clone()),
        Some(v) => {
            bad(
                "inst_no",
                format!("{} is not a configured institution", shown(v)),
            );
            None
        }
    };

    // Parameters.
    let pay_type = match present(obj, "pay_type") {
        None => {
            bad("pay_type", "is required".into());
            None
        }
        Some(v) => {
            let parsed = v.as_str().and_then(PayType::parse);
            if parsed.is_none() {
                bad(
                    "pay_type",
                    format!(
                        "must be \"300\", \"400\", \"600\", alipay, wechat or unionpay, got {}",
                        shown(v)
                    ),
                );
            }
            parsed
        }
    };
    let total_amount = match present(obj, "total_amount") {
        None => {
            bad("total_amount", "is required".into());
            None
        }
        Some(v) => match amount_of(v) {
            Some(a) if (1..=rules.max_amount).contains(&a) => Some(a),
            Some(_) | None if is_digits_value(v) => {
                bad(
                    "total_amount",
                    format!(
                        "must be between 1 and {} fen, got {}",
                        rules.max_amount,
                        shown(v)
                    ),
                );
                None
            }
            _ => {
                bad(
                    "total_amount",
                    format!(
                        "must be a whole number of fen (a JSON integer or a string of digits), got {}",
                        shown(v)
                    ),
                );
                None
            }
        },
    };
    let pay_time = match present(obj, "pay_time") {
        None => None,
        Some(v) => match v.as_str() {
            Some(s) if parse_pay_time(s).is_some() => Some(s.to_owned()),
            Some(s) if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) => {
                bad("pay_time", format!("{s:?} is not a real calendar time"));
                None
            }
            _ => {
                bad(
                    "pay_time",
                    format!("must be yyyyMMddHHmmss, got {}", shown(v)),
                );
                None
            }
        },
    };
    let open_id = match present(obj, "open_id") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= 128 => Some(s.clone()),
        Some(Value::String(s)) => {
            bad(
                "open_id",
                format!("must be at most 128 characters, got {}", s.chars().count()),
            );
            None
        }
        Some(v) => {
            bad("open_id", format!("must be a string, got {}", json_kind(v)));
            None
        }
    };
    let notify_url = match present(obj, "notify_url") {
        None => None,
        Some(Value::String(s)) => match check_notify_url(s) {
            Ok(()) => Some(s.clone()),
            Err(m) => {
                bad("notify_url", m);
                None
            }
        },
        Some(v) => {
            bad(
                "notify_url",
                format!("must be a string, got {}", json_kind(v)),
            );
            None
        }
    };
    let metadata = match present(obj, "metadata") {
        None => None,
        Some(v @ Value::Object(_)) => {
            let size = serde_json::to_string(v)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                bad(
                    "metadata",
                    format!("is {size} bytes serialised, over the 4 KiB limit"),
                );
                None
            } else {
                Some(v.clone())
            }
        }
        Some(v) => {
            bad(
                "metadata",
                format!("must be a JSON object, got {}", json_kind(v)),
            );
            None
        }
    };

    match (inst_no, mch_no, pay_trace_no, pay_type, total_amount) {
        (Some(inst_no), Some(mch_no), Some(pay_trace_no), Some(pay_type), Some(total_amount))
            if errors.is_empty() =>
        {
            Ok(Intent {
                identity: Identity {
                    inst_no,
                    mch_no,
                    pay_trace_no,
                },
                pay_type,
                total_amount,
                pay_time,
                open_id,
                notify_url,
                metadata,
            })
        }
        (inst_no, mch_no, pay_trace_no, pay_type, total_amount) => Err(Box::new(InvalidIntent {
            errors,
            inst_no,
            mch_no,
            pay_trace_no,
            pay_type,
            total_amount,
            pay_time,
            metadata,
        })),
    }
}

/// `100` or `"100"`; not `"1.00"`, `1e3`, `-1`, `" 1"`, `1.0`.
fn amount_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Whether the value is written as a whole number (so a failure is a range
/// problem, not a format one).
fn is_digits_value(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_u64() || n.is_i64(),
        Value::String(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

fn check_notify_url(s: &str) -> Result<(), String> {
    if s.chars().count() > 512 {
        return Err(format!(
            "must be at most 512 characters, got {}",
            s.chars().count()
        ));
    }
    let u = url::Url::parse(s).map_err(|e| format!("must be an absolute http(s) URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, got scheme {:?}",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

/// Reads `yyyyMMddHHmmss` as a real calendar time (no leap seconds).
pub fn parse_pay_time(s: &str) -> Option<chrono::NaiveDateTime> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(n(0..4)? as i32, n(4..6)?, n(6..8)?)?;
    let (h, mi, se) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if se > 59 {
        return None;
    }
    date.and_hms_opt(h, mi, se)
}

/// `now` written as `yyyyMMddHHmmss` in `offset`: the pay_time the worker
/// fixes for an intent without one.
pub fn format_pay_time(now: DateTime<Utc>, offset: FixedOffset) -> String {
    now.with_timezone(&offset)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// When the intent was made: the AMQP `timestamp` (seconds), else its
/// `pay_time` read in `offset`.
pub fn intent_time(
    amqp_timestamp: Option<u64>,
    pay_time: Option<&str>,
    offset: FixedOffset,
) -> Option<DateTime<Utc>> {
    if let Some(ts) = amqp_timestamp {
        return DateTime::from_timestamp(i64::try_from(ts).ok()?, 0);
    }
    let naive = parse_pay_time(pay_time?)?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether an intent made at `made` is older than `max_age_secs` (0: never).
pub fn is_expired(made: Option<DateTime<Utc>>, now: DateTime<Utc>, max_age_secs: u64) -> bool {
    match made {
        Some(t) if max_age_secs > 0 => {
            (now - t).num_seconds() > i64::try_from(max_age_secs).unwrap_or(i64::MAX)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    fn institutions() -> Institutions {
        Institutions::from_pairs([
            ("60000001".to_owned(), SecretString::from("k1")),
            ("60000002".to_owned(), SecretString::from("k2")),
        ])
        .unwrap_or_else(|| unreachable!())
    }

    fn check(v: Value) -> Result<Intent, Box<InvalidIntent>> {
        check_with(v, None)
    }

    fn check_with(v: Value, default_mch_no: Option<&str>) -> Result<Intent, Box<InvalidIntent>> {
        let inst = institutions();
        let obj = match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        validate(
            &obj,
            Rules {
                institutions: &inst,
                default_mch_no,
                max_amount: 100_000_000,
            },
        )
    }

    fn base() -> Value {
        json!({"pay_trace_no": "T-1", "mch_no": "M_1", "pay_type": "wechat", "total_amount": 100})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = base();
        if let Value::Object(m) = &mut v {
            m.insert(field.to_owned(), value);
        }
        v
    }

    fn bad_fields(v: Value) -> Vec<&'static str> {
        match check(v) {
            Ok(i) => panic!("accepted: {i:?}"),
            Err(e) => e.errors.iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn unreadable_bodies_are_told_apart() {
        assert_eq!(
            read(&vec![b' '; MAX_BODY_BYTES + 1]),
            Err(Unreadable::TooLarge(MAX_BODY_BYTES + 1))
        );
        assert!(matches!(read(b"\xff\xfe{}"), Err(Unreadable::NotUtf8(_))));
        assert!(matches!(read(b"{\"a\":"), Err(Unreadable::NotJson(_))));
        assert_eq!(read(b"[1,2]"), Err(Unreadable::NotObject("an array")));
        assert_eq!(read(b"\"x\""), Err(Unreadable::NotObject("a string")));
        assert_eq!(read(b"null"), Err(Unreadable::NotObject("null")));
        assert!(read(b"{}").is_ok());
        // Exactly 64 KiB is allowed.
        let mut at_limit = b"{\"pad\":\"".to_vec();
        at_limit.resize(MAX_BODY_BYTES - 2, b'x');
        at_limit.extend_from_slice(b"\"}");
        assert!(read(&at_limit).is_ok());
    }

    #[test]
    fn a_valid_intent_is_normalised() {
        let i = check(json!({
            "pay_trace_no": "T-1", "mch_no": "M_1", "pay_type": "WeChat", "total_amount": "0100",
            "inst_no": "60000002", "pay_time": "20240229235959", "open_id": "o1",
            "notify_url": "https://shop.example/n?a=1&b=2", "metadata": {"order_id": "A-1"}, "extra": [1]
        }))
        .unwrap_or_else(|e| panic!("{}", e.message()));
        assert_eq!(i.identity.inst_no, "60000002");
        assert_eq!(i.pay_type, PayType::Wechat);
        assert_eq!(i.total_amount, 100);
        assert_eq!(i.pay_time.as_deref(), Some("20240229235959"));
        assert_eq!(i.metadata, Some(json!({"order_id": "A-1"})));
    }

    #[test]
    fn null_and_empty_optionals_are_absent_and_defaults_apply() {
        let mut v = with("open_id", json!(""));
        if let Value::Object(m) = &mut v {
            m.insert("notify_url".into(), Value::Null);
            m.insert("pay_time".into(), json!(""));
            m.insert("metadata".into(), Value::Null);
            m.insert("inst_no".into(), json!(""));
            m.insert("mch_no".into(), Value::Null);
        }
        let i = check_with(v, Some("DEFAULT1")).unwrap_or_else(|e| panic!("{}", e.message()));
        assert_eq!(
            (i.open_id, i.notify_url, i.pay_time, i.metadata),
            (None, None, None, None)
        );
        assert_eq!(i.identity.inst_no, "60000001");
        assert_eq!(i.identity.mch_no, "DEFAULT1");
    }

    #[test]
    fn every_rule_rejects_what_it_should() {
        let cases: Vec<(&str, Value)> = vec![
            ("pay_trace_no", json!(null)),
            ("pay_trace_no", json!("")),
            ("pay_trace_no", json!("a b")),
            ("pay_trace_no", json!("x".repeat(65))),
            ("pay_trace_no", json!(12345)),
            ("mch_no", json!("M/1")),
            ("mch_no", json!("m".repeat(33))),
            ("mch_no", json!(null)),
            ("inst_no", json!("99999999")),
            ("inst_no", json!(60000001)),
            ("pay_type", json!("500")),
            ("pay_type", json!(400)),
            ("pay_type", json!("we chat")),
            ("pay_type", json!(null)),
            ("total_amount", json!("1.00")),
            ("total_amount", json!(-1)),
            ("total_amount", json!(0)),
            ("total_amount", json!("0")),
            ("total_amount", json!(1e3)),
            ("total_amount", json!(1.0)),
            ("total_amount", json!(" 1")),
            ("total_amount", json!("+1")),
            ("total_amount", json!("-1")),
            ("total_amount", json!(100_000_001)),
            ("total_amount", json!("99999999999999999999999")),
            ("total_amount", json!(true)),
            ("total_amount", json!(null)),
            ("pay_time", json!("20230230120000")),
            ("pay_time", json!("20230101246000")),
            ("pay_time", json!("20230101235960")),
            ("pay_time", json!("2023-01-01 12:00")),
            ("pay_time", json!(20230101120000u64)),
            ("open_id", json!("o".repeat(129))),
            ("open_id", json!(5)),
            ("notify_url", json!("/relative")),
            ("notify_url", json!("ftp://x/y")),
            (
                "notify_url",
                json!(format!("https://x.example/{}", "a".repeat(500))),
            ),
            ("notify_url", json!({"u": 1})),
            ("metadata", json!("text")),
            ("metadata", json!([1])),
            ("metadata", json!({"big": "x".repeat(4100)})),
        ];
        for (field, value) in cases {
            assert_eq!(
                bad_fields(with(field, value.clone())),
                vec![field],
                "{field} = {value}"
            );
        }
        // Boundaries that pass.
        for (field, value) in [
            ("pay_trace_no", json!("x".repeat(64))),
            ("mch_no", json!("m".repeat(32))),
            ("total_amount", json!(100_000_000)),
            ("total_amount", json!("1")),
            ("open_id", json!("o".repeat(128))),
            ("pay_type", json!("600")),
            ("pay_type", json!("ALIPAY")),
        ] {
            assert!(
                check(with(field, value.clone())).is_ok(),
                "{field} = {value}"
            );
        }
    }

    #[test]
    fn every_bad_field_is_named_and_valid_ones_are_kept() {
        let e = check(
            json!({"mch_no": "M1", "pay_type": "x", "total_amount": "1.00", "metadata": {"k": 1}}),
        )
        .err()
        .unwrap_or_else(|| panic!("accepted"));
        let fields: Vec<&str> = e.errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["pay_trace_no", "pay_type", "total_amount"]);
        let msg = e.message();
        for f in fields {
            assert!(msg.contains(f), "{msg}");
        }
        assert_eq!(e.mch_no.as_deref(), Some("M1"));
        assert_eq!(e.inst_no.as_deref(), Some("60000001"));
        assert_eq!(e.metadata, Some(json!({"k": 1})));
    }

    #[test]
    fn fingerprints_compare_normalised_parameters() {
        let a = check(with("pay_type", json!("wechat"))).map(|i| i.fingerprint());
        let b = check(with("pay_type", json!("400"))).map(|i| i.fingerprint());
        assert_eq!(a.ok(), b.ok());
        let c = check(with("total_amount", json!("100"))).map(|i| i.fingerprint());
        assert_eq!(check(base()).map(|i| i.fingerprint()).ok(), c.ok());
        let d = check(with("total_amount", json!(101))).map(|i| i.fingerprint());
        assert_ne!(check(base()).map(|i| i.fingerprint()).ok(), d.ok());
        let e = check(with("open_id", json!("o"))).map(|i| i.fingerprint());
        let f = check(with("notify_url", json!("http://o"))).map(|i| i.fingerprint());
        assert_ne!(e.ok(), f.ok());
    }

    #[test]
    fn pay_time_and_expiry() {
        let cst = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!());
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert_eq!(format_pay_time(now, cst), "20231115061320");
        let made = intent_time(None, Some("20231115060320"), cst);
        assert_eq!(made, DateTime::from_timestamp(1_699_999_400, 0));
        assert!(is_expired(made, now, 300));
        assert!(!is_expired(made, now, 600));
        assert!(!is_expired(made, now, 0), "0 means no expiry");
        let by_amqp = intent_time(Some(1_699_999_990), Some("20231115060320"), cst);
        assert!(!is_expired(by_amqp, now, 300), "the AMQP timestamp wins");
        assert!(!is_expired(intent_time(None, None, cst), now, 1));
    }
}
