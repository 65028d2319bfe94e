//! A notify's body → a verified notify, or why it is refused (contract
//! §11.1–2), and what it says about the payment. Pure functions.

use std::borrow::Cow;

use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::domain::Echoes;
use crate::domain::Presence::{Required, WhenNotEmpty, WhenPresent};
use crate::gateway::kinds::{self, Expected};
use crate::gateway::sign;
use crate::gateway::wire::{ResultCode, json_kind};
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
pub fn read(body: &[u8]) -> Result<Map<String, Value>, Refused> {
    // UTF-8 checked once, not string by string (as `gateway::object`).
    let text = std::str::from_utf8(body).map_err(|e| {
        Refused::NotScalars(format!(
            "body is not JSON: not UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Refused::NotScalars(format!("body is not JSON: {e}")))?;
    let Value::Object(m) = value else {
        return Err(Refused::NotScalars(format!(
            "body is {}, not a JSON object",
            json_kind(&value)
        )));
    };
    if let Some((k, v)) = m.iter().find(|(_, v)| v.is_object() || v.is_array()) {
        return Err(Refused::NotScalars(format!(
            "field {} is {}: a notify holds scalar values only",
            quoted(k),
            json_kind(v)
        )));
    }
    Ok(m)
}

pub use crate::gateway::wire::text;

/// Checks the sign, with the key of the body's `inst_no`, else the default
/// institution: every scalar field takes part, unknown ones too (primary
/// rule, then the skip-empty variant; constant time). Returns the
/// institution.
pub fn verify(m: &Map<String, Value>, institutions: &Institutions) -> Result<String, Refused> {
    let inst_no = text(m, "inst_no").filter(|s| !s.is_empty()).map_or_else(
        || institutions.default_inst_no().to_owned(),
        Cow::into_owned,
    );
    let key: &SecretString = institutions
        .key(&inst_no)
        .ok_or_else(|| Refused::UnknownInstitution(gateway_text(&inst_no)))?;
    sign::verify(m, key).map_err(Refused::BadSign)?;
    Ok(inst_no)
}

/// The identity a verified notify names (`_` for a field it lacks).
pub fn identity(m: &Map<String, Value>, inst_no: &str) -> Identity {
    let field = |k: &str| {
        text(m, k)
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
pub fn foreign(m: &Map<String, Value>) -> Option<String> {
    let fields = kinds::foreign_fields(m, Expected::Notify);
    (!fields.is_empty()).then(|| kinds::foreign_message(&fields, Expected::Notify))
}

/// What a verified notify says: evidence, or why it cannot be placed. A
/// refund's notify is never evidence about the payment, and `paid` needs
/// the order's number and amount (contract §10 rule 4).
pub fn evidence(m: &Map<String, Value>) -> Result<Evidence, String> {
    if kinds::is_refund(m) {
        return Err(
            "a refund notify (TRADE_REFUND): refunds are not part of this contract, never payment evidence"
                .to_owned(),
        );
    }
    if let Some(rc) = text(m, "return_code").filter(|c| c != "SUCCESS") {
        return Err(format!("return_code {}", quoted(&rc)));
    }
    if let Some(tt) = text(m, "trade_type").filter(|t| t != "1") {
        return Err(format!("unknown trade_type {}", quoted(&tt)));
    }
    let Some(code) = text(m, "result_code") else {
        return Err("no result_code".to_owned());
    };
    match ResultCode::parse(&code) {
        Some(ResultCode::PaySuccess) if text(m, "total_amount").is_none_or(|a| a.is_empty()) => {
            Err("PAY_SUCCESS without a total_amount".to_owned())
        }
        Some(ResultCode::PaySuccess) => Ok(Evidence::Paid {
            trade_no: text(m, "trade_no")
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
pub fn mismatches(m: &Map<String, Value>, view: &View) -> Vec<String> {
    // No amount to compare with: the identity is unknown (an anomaly of
    // its own).
    Echoes::new()
        .amount(
            "total_amount",
            text(m, "total_amount").as_deref(),
            view.total_amount(),
            Required,
        )
        .text(
            "pay_time",
            text(m, "pay_time").as_deref(),
            view.pay_time.as_deref(),
            WhenPresent,
        )
        .text(
            "trade_no",
            text(m, "trade_no").as_deref(),
            view.trade_no.as_deref(),
            WhenNotEmpty,
        )
        .differences()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn only_objects_of_scalars_are_notifies() {
        assert!(read(br#"{"a":"1","b":2,"c":true,"d":null}"#).is_ok());
        for bad in [
            &br#"[1]"#[..],
            br#"{"a":{"b":1}}"#,
            br#"{"a":[1]}"#,
            b"nope",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(matches!(read(bad), Err(Refused::NotScalars(_))), "{bad:?}");
        }
        assert_eq!(
            read(b"{\"a\":\"\xe6\x94\xaf\xff\"}").map_err(|e| e.to_string()),
            Err("body is not JSON: not UTF-8 (at byte 9)".to_owned())
        );
        let m = read("{\"body\":\"支付\"}".as_bytes()).unwrap_or_default();
        assert_eq!(m.get("body").and_then(Value::as_str), Some("支付"));
    }

    #[test]
    fn what_a_notify_says() {
        let paid = obj(
            json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "trade_no": "T1", "trade_type": "1", "total_amount": "100"}),
        );
        assert_eq!(
            evidence(&paid),
            Ok(Evidence::Paid {
                trade_no: Some("T1".into())
            })
        );
        assert_eq!(
            evidence(&obj(json!({"result_code": "PAY_FAIL"}))),
            Ok(Evidence::Failed)
        );
        assert_eq!(
            evidence(&obj(json!({"result_code": "PAY_IN_PROCESS"}))),
            Ok(Evidence::NotYet)
        );
        assert!(
            evidence(&obj(
                json!({"result_code": "PAY_SUCCESS", "trade_type": "9"})
            ))
            .is_err()
        );
        assert!(evidence(&obj(json!({"return_code": "FAIL"}))).is_err());
        // paid without an amount, and refunds, are never evidence.
        assert!(
            evidence(&obj(
                json!({"result_code": "PAY_SUCCESS", "trade_no": "T1"})
            ))
            .is_err()
        );
        for refund in [
            json!({"result_code": "TRADE_REFUND", "trade_no": "T1", "total_amount": "100"}),
            json!({"result_code": "PAY_SUCCESS", "trade_no": "T1", "total_amount": "100", "refund_no": "R1"}),
        ] {
            assert!(evidence(&obj(refund.clone())).is_err(), "{refund}");
        }
        assert!(evidence(&obj(json!({}))).is_err());
    }
}
