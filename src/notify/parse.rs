//! A notify's body → a verified notify, or why it is refused (contract
//! §11.1–2), and what it says about the payment. Pure functions.
//!
//! The body is read as an [`Object`]: fields sorted by name, strings
//! borrowed from the body, as the worker reads the gateway's h5pay answer.
//! A `serde_json::Value` map copied every key and value into a tree and
//! dropped it again: about 15 k instructions per notify, against 7 k
//! (BENCHMARKS.md, tenth sitting).

use std::borrow::Cow;

use secrecy::SecretString;

use crate::domain::Echoes;
use crate::domain::Presence::{Required, WhenNotEmpty, WhenPresent};
use crate::gateway::kinds::{self, Expected};
use crate::gateway::object::{Object, ObjectError};
use crate::gateway::sign;
use crate::gateway::wire::ResultCode;
use crate::intent::Identity;
use crate::keys::Institutions;
use crate::payment::{Evidence, View};
use crate::text::{gateway_text, quoted};

/// Why a notify is refused before it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    NotScalars(String),
    #[error("inst_no {0:?} is not a configured institution")]
    UnknownInstitution(String),
    #[error("sign check failed: {0}")]
    BadSign(sign::VerifyError),
}

/// A JSON object of scalar values (strings, numbers, booleans, null).
pub fn read(body: &[u8]) -> Result<Object<'_>, Refused> {
    let m = Object::parse(body).map_err(|e| {
        Refused::NotScalars(match e {
            ObjectError::NotJson(e) => format!("body is not JSON: {e}"),
            ObjectError::NotObject(kind) => format!("body is {kind}, not a JSON object"),
        })
    })?;
    if let Some((k, kind)) = m.iter().find_map(|(k, v)| Some((k, v.nested()?))) {
        return Err(Refused::NotScalars(format!(
            "field {} is {kind}: a notify holds scalar values only",
            quoted(k),
        )));
    }
    Ok(m)
}

/// Checks the sign, with the key of the body's `inst_no`, else the default
/// institution: every scalar field takes part, unknown ones too (primary
/// rule, then the skip-empty variant; constant time). Returns the
/// institution.
pub fn verify(m: &Object<'_>, institutions: &Institutions) -> Result<String, Refused> {
    let inst_no = m.text("inst_no").filter(|s| !s.is_empty()).map_or_else(
        || institutions.default_inst_no().to_owned(),
        Cow::into_owned,
    );
    let key: &SecretString = institutions
        .key(&inst_no)
        .ok_or_else(|| Refused::UnknownInstitution(gateway_text(&inst_no)))?;
    sign::verify_object(m, key).map_err(Refused::BadSign)?;
    Ok(inst_no)
}

/// The identity a verified notify names (`_` for a field it lacks).
pub fn identity(m: &Object<'_>, inst_no: &str) -> Identity {
    let field = |k: &str| {
        m.text(k)
            .filter(|s| crate::intent::is_identifier(s, 64))
            .map_or_else(|| "_".to_owned(), Cow::into_owned)
    };
    Identity {
        inst_no: inst_no.to_owned(),
        mch_no: field("mch_no"),
        pay_trace_no: field("pay_trace_no"),
    }
}

/// Why a verified notify is no notify of this payment at all: it carries
/// fields only another signed message carries (contract §10 rule 4).
pub fn foreign(m: &Object<'_>) -> Option<String> {
    let fields = kinds::foreign_fields(m, Expected::Notify);
    (!fields.is_empty()).then(|| kinds::foreign_message(&fields, Expected::Notify))
}

/// What a verified notify says: evidence, or why it cannot be placed. A
/// refund's notify is never evidence about the payment, and `paid` needs
/// the order's number and amount (contract §10 rule 4).
pub fn evidence(m: &Object<'_>) -> Result<Evidence, String> {
    if kinds::is_refund(m) {
        return Err(
            "a refund notify (TRADE_REFUND): refunds are not part of this contract, never payment evidence"
                .to_owned(),
        );
    }
    if let Some(rc) = m.text("return_code").filter(|c| c != "SUCCESS") {
        return Err(format!("return_code {}", quoted(&rc)));
    }
    if let Some(tt) = m.text("trade_type").filter(|t| t != "1") {
        return Err(format!("unknown trade_type {}", quoted(&tt)));
    }
    let Some(code) = m.text("result_code") else {
        return Err("no result_code".to_owned());
    };
    match ResultCode::parse(&code) {
        Some(ResultCode::PaySuccess) if m.text("total_amount").is_none_or(|a| a.is_empty()) => {
            Err("PAY_SUCCESS without a total_amount".to_owned())
        }
        Some(ResultCode::PaySuccess) => Ok(Evidence::Paid {
            trade_no: m
                .text("trade_no")
                .filter(|t| !t.is_empty())
                .map(Cow::into_owned),
        }),
        Some(ResultCode::PayFail) => Ok(Evidence::Failed),
        Some(ResultCode::PayInProcess) => Ok(Evidence::NotYet),
        None => Err(format!("unknown result_code {}", quoted(&code))),
    }
}

/// The echoes a notify must match (contract §10 rule 4): `total_amount`
/// (never `pay_amount` or `receipt_amount`, which discounts lower),
/// `pay_time` when present, and `trade_no` when the worker knows it. The
/// identity fields matched by construction. Every difference is named.
pub fn mismatches(m: &Object<'_>, view: &View) -> Vec<String> {
    // No amount to compare with: the identity is unknown (an anomaly of
    // its own).
    Echoes::new()
        .amount(
            "total_amount",
            m.text("total_amount").as_deref(),
            view.total_amount(),
            Required,
        )
        .text(
            "pay_time",
            m.text("pay_time").as_deref(),
            view.pay_time.as_deref(),
            WhenPresent,
        )
        .text(
            "trade_no",
            m.text("trade_no").as_deref(),
            view.trade_no.as_deref(),
            WhenNotEmpty,
        )
        .differences()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::object::Field;
    use serde_json::{Value, json};

    fn evidence_of(v: &Value) -> Result<Evidence, String> {
        let body = v.to_string();
        let m = read(body.as_bytes()).map_err(|e| e.to_string())?;
        evidence(&m)
    }

    #[test]
    fn only_objects_of_scalars_are_notifies() {
        let m = read(br#"{"a":"1","b":2,"c":true,"d":null}"#);
        assert_eq!(m.map(|m| m.iter().count()), Ok(4));
        let refused: [(&[u8], &str); 7] = [
            (b"[1]", "body is an array, not a JSON object"),
            (b"\"s\"", "body is a string, not a JSON object"),
            (
                br#"{"a":"1","z":{"b":1}}"#,
                r#"field "z" is an object: a notify holds scalar values only"#,
            ),
            (
                br#"{"b":[1],"a":{}}"#,
                r#"field "a" is an object: a notify holds scalar values only"#,
            ),
            (
                br#"{"a":[1]}"#,
                r#"field "a" is an array: a notify holds scalar values only"#,
            ),
            (
                b"nope",
                "body is not JSON: expected ident at line 1 column 2",
            ),
            (
                b"{\"a\":\"\xe6\x94\xaf\xff\"}",
                "body is not JSON: not UTF-8 (at byte 9)",
            ),
        ];
        for (body, want) in refused {
            assert_eq!(
                read(body).map_err(|e| e.to_string()),
                Err(want.to_owned()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Nested past serde_json's depth limit: still only "nested" (the
        // nested value is skipped, not built).
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(500), "]".repeat(500));
        assert_eq!(
            read(deep.as_bytes()).map_err(|e| e.to_string()),
            Err(r#"field "a" is an array: a notify holds scalar values only"#.to_owned())
        );
        assert!(matches!(
            read(br#"{"a":"1"} x"#),
            Err(Refused::NotScalars(m)) if m.starts_with("body is not JSON: trailing characters")
        ));
        // Borrowed from the body where it had no escapes.
        let m = read("{\"body\":\"支付\",\"e\":\"a\\u00e9\"}".as_bytes()).unwrap_or_default();
        assert!(matches!(
            m.get("body"),
            Some(Field::Str(Cow::Borrowed("支付")))
        ));
        assert_eq!(m.text("e").as_deref(), Some("aé"));
    }

    #[test]
    fn what_a_notify_says() {
        let cases = [
            (
                json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "trade_no": "T1", "trade_type": "1", "total_amount": "100"}),
                Ok(Evidence::Paid {
                    trade_no: Some("T1".into()),
                }),
            ),
            (
                json!({"result_code": "PAY_SUCCESS", "trade_no": "", "total_amount": 100}),
                Ok(Evidence::Paid { trade_no: None }),
            ),
            (json!({"result_code": "PAY_FAIL"}), Ok(Evidence::Failed)),
            (
                json!({"result_code": "PAY_IN_PROCESS"}),
                Ok(Evidence::NotYet),
            ),
            (
                json!({"result_code": "PAY_SUCCESS", "trade_type": "9"}),
                Err(r#"unknown trade_type "9""#.to_owned()),
            ),
            (
                json!({"return_code": "FAIL"}),
                Err(r#"return_code "FAIL""#.to_owned()),
            ),
            // paid without an amount, and refunds, are never evidence.
            (
                json!({"result_code": "PAY_SUCCESS", "trade_no": "T1"}),
                Err("PAY_SUCCESS without a total_amount".to_owned()),
            ),
            (
                json!({"result_code": "PAY_SUCCESS", "trade_no": "T1", "total_amount": ""}),
                Err("PAY_SUCCESS without a total_amount".to_owned()),
            ),
            (
                json!({"result_code": "PAID"}),
                Err(r#"unknown result_code "PAID""#.to_owned()),
            ),
            (json!({}), Err("no result_code".to_owned())),
        ];
        for (m, want) in cases {
            assert_eq!(evidence_of(&m), want, "{m}");
        }
        for refund in [
            json!({"result_code": "TRADE_REFUND", "trade_no": "T1", "total_amount": "100"}),
            json!({"result_code": "PAY_SUCCESS", "trade_no": "T1", "total_amount": "100", "refund_no": "R1"}),
        ] {
            assert!(
                evidence_of(&refund).is_err_and(|e| e.starts_with("a refund notify")),
                "{refund}"
            );
        }
    }
}
