//! Every rule of contract §3, one parser per field; every broken rule is
//! collected, so an `invalid_intent` event names them all.

use serde_json::{Map, Value};

use super::{
    FieldError, Identity, Intent, InvalidIntent, MAX_METADATA_BYTES, Metadata, ReadObject,
    is_identifier, parse_pay_time,
};
use crate::domain::check_notify_url;
use crate::gateway::wire::{PayType, json_kind};
use crate::keys::Institutions;
use crate::text::clip;

/// What validation needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub institutions: &'a Institutions,
    /// `worker.default_mch_no`, when not empty.
    pub default_mch_no: Option<&'a str>,
    pub max_amount: u64,
}

/// A field's value, with `null` and `""` read as absent.
pub(super) fn present<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
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
    clip(&s, 48).into_owned()
}

/// Validates a JSON object against every rule of §3. Each field has its
/// own parser; every broken rule is collected, so the event names them all.
pub fn validate(obj: &ReadObject<'_>, rules: Rules<'_>) -> Result<Intent, Box<InvalidIntent>> {
    let mut errors = obj.unrepresentable.clone();
    let e = &mut errors;
    let pay_trace_no = take(
        e,
        "pay_trace_no",
        required(obj, "pay_trace_no", |v| identifier(v, 64)),
    );
    let mch_no = take(
        e,
        "mch_no",
        parse_mch_no(obj.present("mch_no"), rules.default_mch_no),
    );
    let inst_no = take(
        e,
        "inst_no",
        parse_inst_no(obj.present("inst_no"), rules.institutions),
    );
    let pay_type = take(e, "pay_type", required(obj, "pay_type", parse_pay_type));
    let total_amount = take(
        e,
        "total_amount",
        required(obj, "total_amount", |v| parse_amount(v, rules.max_amount)),
    );
    let pay_time = take(
        e,
        "pay_time",
        optional(obj, "pay_time", parse_pay_time_value),
    );
    let open_id = take(e, "open_id", optional(obj, "open_id", parse_open_id));
    let notify_url = take(
        e,
        "notify_url",
        optional(obj, "notify_url", parse_notify_url),
    );
    let metadata = take(e, "metadata", parse_metadata(obj));

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

/// A field's parsed value, or its error collected.
fn take<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    parsed: Result<Option<T>, String>,
) -> Option<T> {
    parsed.unwrap_or_else(|message| {
        errors.push(FieldError::new(field, message));
        None
    })
}

/// A required field: absent is an error, present goes to `parse`.
fn required<T>(
    obj: &ReadObject<'_>,
    field: &str,
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match obj.present(field) {
        // A field present but unrepresentable is already named.
        None if obj.unrepresentable.iter().any(|e| e.field == field) => Ok(None),
        None => Err("is required".into()),
        Some(v) => parse(v).map(Some),
    }
}

/// An optional field: absent (or `null`, `""`) is fine.
fn optional<T>(
    obj: &ReadObject<'_>,
    field: &str,
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    obj.present(field).map(parse).transpose()
}

fn identifier(v: &Value, max: usize) -> Result<String, String> {
    match v {
        Value::String(s) if is_identifier(s, max) => Ok(s.clone()),
        _ => Err(format!(
            "must be 1-{max} characters of [0-9A-Za-z_-], got {}",
            shown(v)
        )),
    }
}

fn parse_mch_no(v: Option<&Value>, default: Option<&str>) -> Result<Option<String>, String> {
    match (v, default) {
        (None, Some(default)) => Ok(Some(default.to_owned())),
        (None, None) => Err("is required (no worker.default_mch_no is configured)".into()),
        (Some(v), _) => identifier(v, 32).map(Some),
    }
}

fn parse_inst_no(v: Option<&Value>, institutions: &Institutions) -> Result<Option<String>, String> {
    match v {
        None => Ok(Some(institutions.default_inst_no().to_owned())),
        Some(Value::String(s)) if institutions.contains(s) => Ok(Some(s.clone())),
        Some(v) => Err(format!("{} is not a configured institution", shown(v))),
    }
}

fn parse_pay_type(v: &Value) -> Result<PayType, String> {
    v.as_str().and_then(PayType::parse).ok_or_else(|| {
        format!(
            "must be \"300\", \"400\", \"600\", alipay, wechat or unionpay, got {}",
            shown(v)
        )
    })
}

fn parse_amount(v: &Value, max_amount: u64) -> Result<u64, String> {
    match amount_of(v) {
        Some(a) if (1..=max_amount).contains(&a) => Ok(a),
        _ if is_digits_value(v) => Err(format!(
            "must be between 1 and {max_amount} fen, got {}",
            shown(v)
        )),
        _ => Err(format!(
            "must be a whole number of fen (a JSON integer or a string of digits), got {}",
            shown(v)
        )),
    }
}

fn parse_pay_time_value(v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(s) if parse_pay_time(s).is_some() => Ok(s.to_owned()),
        Some(s) if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{s:?} is not a real calendar time"))
        }
        _ => Err(format!("must be yyyyMMddHHmmss, got {}", shown(v))),
    }
}

fn parse_open_id(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.chars().count() <= 128 => Ok(s.clone()),
        Value::String(s) => Err(format!(
            "must be at most 128 characters, got {}",
            s.chars().count()
        )),
        v => Err(format!("must be a string, got {}", json_kind(v))),
    }
}

fn parse_notify_url(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => check_notify_url(s).map(|()| s.clone()),
        v => Err(format!("must be a string, got {}", json_kind(v))),
    }
}

fn parse_metadata(obj: &ReadObject<'_>) -> Result<Option<Metadata>, String> {
    match (obj.present("metadata"), obj.metadata) {
        (None, _) => Ok(None),
        (Some(Value::Object(_)), Some(raw)) => {
            let m = Metadata::from_received(raw)
                .ok_or_else(|| "cannot be read back as JSON".to_owned())?;
            let size = m.get().len();
            if size > MAX_METADATA_BYTES {
                return Err(format!("is {size} bytes serialised, over the 4 KiB limit"));
            }
            Ok(Some(m))
        }
        (Some(v), _) => Err(format!("must be a JSON object, got {}", json_kind(v))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::read;
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
        let body = serde_json::to_vec(&v).unwrap_or_default();
        let obj = read(&body).expect("an object");
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

    fn bad_fields(v: Value) -> Vec<String> {
        match check(v) {
            Ok(i) => panic!("accepted: {i:?}"),
            Err(e) => e.errors.iter().map(|e| e.field.clone()).collect(),
        }
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
        assert_eq!(
            i.metadata,
            Metadata::from_value(&json!({"order_id": "A-1"}))
        );
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
        let fields: Vec<&str> = e.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["pay_trace_no", "pay_type", "total_amount"]);
        let msg = e.message();
        for f in fields {
            assert!(msg.contains(f), "{msg}");
        }
        assert_eq!(e.mch_no.as_deref(), Some("M1"));
        assert_eq!(e.inst_no.as_deref(), Some("60000001"));
        assert_eq!(e.metadata, Metadata::from_value(&json!({"k": 1})));
    }

    fn rules(inst: &Institutions) -> Rules<'_> {
        Rules {
            institutions: inst,
            default_mch_no: None,
            max_amount: 100_000_000,
        }
    }

    #[test]
    fn values_a_standard_parser_cannot_hold_spoil_only_their_own_field() {
        let inst = institutions();
        let head = r#"{"mch_no":"M1","pay_type":"wechat","total_amount":1"#;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            (
                format!(r#"{head},"pay_trace_no":"T1","extra":1e400}}"#),
                "extra",
                "64-bit float",
            ),
            (
                format!(r#"{head},"pay_trace_no":"T1","metadata":{{"a":{deep}}}}}"#),
                "metadata",
                "128 levels",
            ),
            (
                format!(r#"{head},"pay_trace_no":"T\ud800"}}"#),
                "pay_trace_no",
                "surrogate",
            ),
            (
                format!(r#"{head},"pay_trace_no":"T1","\udc00":1}}"#),
                "(a field name)",
                "surrogate",
            ),
        ];
        for (body, field, why) in cases {
            let obj = read(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            let e = validate(&obj, rules(&inst))
                .err()
                .unwrap_or_else(|| panic!("accepted: {body}"));
            assert!(
                e.errors
                    .iter()
                    .any(|f| f.field == field && f.message.contains(why)),
                "{body}: {}",
                e.message()
            );
            // Identity fields are read as far as they can be.
            assert_eq!(e.mch_no.as_deref(), Some("M1"), "{body}");
            assert_eq!(e.total_amount, Some(1), "{body}");
        }
    }

    #[test]
    fn metadata_is_echoed_exactly_as_received() {
        let body = "{\"pay_trace_no\":\"T1\",\"mch_no\":\"M1\",\"pay_type\":\"wechat\",\"total_amount\":1,\n \
            \"metadata\": { \"z\": 123456789012345678901234567890, \"p\": 0.1000000000000000055511151231257827,\n \
            \"a\": \"x \\\" y\\n\", \"e\": 1E+2, \"u\": \"\\u00e9\" } }";
        let obj = read(body.as_bytes()).expect("an object");
        let i =
            validate(&obj, rules(&institutions())).unwrap_or_else(|e| panic!("{}", e.message()));
        assert_eq!(
            i.metadata.as_ref().map(Metadata::get),
            Some(
                r#"{"z":123456789012345678901234567890,"p":0.1000000000000000055511151231257827,"a":"x \" y\n","e":1E+2,"u":"\u00e9"}"#
            )
        );
    }

    #[test]
    fn notify_url_must_be_written_exactly_as_it_parses() {
        for bad in [
            " https://shop.example/n",
            "https://shop.example/n ",
            "https://shop.example/\tn",
            "https://shop.example/n\r\n",
            "HTTPS://shop.example/n",
            "https://SHOP.example/n",
            "https://shop.example",
            "javascript:alert(1)",
            "https:///n",
        ] {
            assert_eq!(
                bad_fields(with("notify_url", json!(bad))),
                vec!["notify_url"],
                "{bad:?}"
            );
        }
        for good in [
            "https://shop.example/n?a=1&b=2",
            "http://127.0.0.1:8091/h5pay/notify",
            "https://shop.example/",
        ] {
            assert!(check(with("notify_url", json!(good))).is_ok(), "{good:?}");
        }
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
        let f = check(with("notify_url", json!("http://o/"))).map(|i| i.fingerprint());
        assert_ne!(e.ok(), f.ok());
    }
}
