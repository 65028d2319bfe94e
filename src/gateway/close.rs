//! `POST /api/openpay/v3/closeorder` (gateway-lifecycle.md, contract §12
//! "Closing"): make an unpaid order unpayable. The same `close_trace_no`
//! and `close_time` go out on every attempt; only `result_code`
//! `PAY_SUCCESS`, exactly, means closed (the vendor's misspelt
//! `PAY_SUCEESS` does not). A query afterwards decides the payment.

use secrecy::SecretString;

use super::object::Object;
use super::sign;
use super::signed_call::{
    Decided, Exchange, StatusClass, TransientKind, Verdict, answer_of, json_object, opened,
    status_class, transient,
};
use super::wire::{CloseRequest, ResultCode};
use crate::domain::{Echoes, Presence::WhenNotEmpty};
use crate::text::gateway_text;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseAnswer {
    Closed,
    /// `PAY_FAIL`: the gateway could not close it (for example: paid).
    NotClosed(String),
    /// Anything else: refused, `return_code` FAIL, unsigned, an unknown
    /// word, retries ran out.
    Unknown(String),
}

impl Decided for CloseAnswer {
    fn outcome_label(&self) -> &'static str {
        match self {
            CloseAnswer::Unknown(_) => "refused",
            _ => "answered",
        }
    }
}

/// Classifies one closeorder exchange.
pub fn classify(
    exchange: &Exchange<'_>,
    sent: &CloseRequest,
    verify_key: Option<&SecretString>,
) -> Verdict<CloseAnswer> {
    let (status, body) = match opened(exchange) {
        Ok(answer) => answer,
        Err(verdict) => return verdict,
    };
    let raw = json_object(body);
    let answer = Some(answer_of(status, raw.as_ref()));
    if status_class(status) == StatusClass::Refused {
        let value = CloseAnswer::Unknown(format!("close refused with HTTP {status}"));
        return Verdict::Final { value, answer };
    }
    let Some(m) = raw else {
        return transient(
            TransientKind::BadResponse,
            true,
            "close answer is not a JSON object".into(),
            None,
            answer,
        );
    };
    Verdict::Final {
        value: read_answer(&m, sent, verify_key),
        answer,
    }
}

pub fn read_answer(
    m: &Object<'_>,
    sent: &CloseRequest,
    verify_key: Option<&SecretString>,
) -> CloseAnswer {
    if let Some(key) = verify_key
        && let Err(e) = sign::verify_object(m, key)
    {
        return CloseAnswer::Unknown(format!("close answer sign check failed: {e}"));
    }
    let field = |k: &str| m.text(k).filter(|v| !v.is_empty());
    let msg = gateway_text(&field("return_msg").unwrap_or_default());
    if field("return_code").as_deref() != Some("SUCCESS") {
        return CloseAnswer::Unknown(format!("close answered return_code FAIL: {msg}"));
    }
    let mut echoes = Echoes::new();
    for (k, want) in [
        ("trade_no", &sent.trade_no),
        ("close_trace_no", &sent.close_trace_no),
        ("mch_no", &sent.mch_no),
    ] {
        echoes = echoes.text(k, m.text(k).as_deref(), Some(want), WhenNotEmpty);
    }
    if let Err(e) = echoes.verdict("close answer does not echo the request") {
        return CloseAnswer::Unknown(e);
    }
    let code = field("result_code");
    match code.as_deref().and_then(ResultCode::parse) {
        Some(ResultCode::PaySuccess) => CloseAnswer::Closed,
        Some(ResultCode::PayFail) => CloseAnswer::NotClosed(msg),
        _ => CloseAnswer::Unknown(format!(
            "close answered result_code {}",
            gateway_text(code.as_deref().unwrap_or("(none)"))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    const KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

    fn sent() -> CloseRequest {
        CloseRequest {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            close_trace_no: "c1".into(),
            close_time: "20261130120000".into(),
            trade_no: "TN".into(),
        }
    }

    /// The answer as it comes off the wire: the map's JSON, read as an
    /// [`Object`] (the tests build answers as maps).
    fn read_answer(
        m: &Map<String, Value>,
        sent: &CloseRequest,
        key: Option<&SecretString>,
    ) -> CloseAnswer {
        let body = serde_json::to_vec(m).unwrap_or_default();
        super::read_answer(&Object::parse(&body).unwrap_or_default(), sent, key)
    }

    fn answer(v: Value) -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        let s = sign::sign(&m, &SecretString::from(KEY));
        m.insert("sign".into(), Value::String(s));
        m
    }

    #[test]
    fn only_pay_success_spelt_right_is_closed() {
        let key = SecretString::from(KEY);
        let k = Some(&key);
        let ok = answer(
            json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "trade_no": "TN", "close_trace_no": "c1"}),
        );
        assert_eq!(read_answer(&ok, &sent(), k), CloseAnswer::Closed);
        let typo = answer(
            json!({"return_code": "SUCCESS", "result_code": "PAY_SUCEESS", "trade_no": "TN"}),
        );
        assert!(matches!(
            read_answer(&typo, &sent(), k),
            CloseAnswer::Unknown(_)
        ));
        let fail = answer(
            json!({"return_code": "SUCCESS", "result_code": "PAY_FAIL", "return_msg": "已支付"}),
        );
        assert_eq!(
            read_answer(&fail, &sent(), k),
            CloseAnswer::NotClosed("已支付".into())
        );
    }

    #[test]
    fn unsigned_refused_or_foreign_answers_are_unknown() {
        let key = SecretString::from(KEY);
        let k = Some(&key);
        let mut forged = answer(json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS"}));
        forged.insert("trade_no".into(), json!("TN"));
        assert!(
            matches!(read_answer(&forged, &sent(), k), CloseAnswer::Unknown(m) if m.contains("sign"))
        );
        let other = answer(
            json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "trade_no": "TX"}),
        );
        assert!(
            matches!(read_answer(&other, &sent(), k), CloseAnswer::Unknown(m) if m.contains("trade_no"))
        );
        let refused = answer(json!({"return_code": "FAIL", "return_msg": "参数错误"}));
        assert!(matches!(
            read_answer(&refused, &sent(), k),
            CloseAnswer::Unknown(_)
        ));
        let x = Exchange::Answered {
            status: 500,
            retry_after: None,
            body: b"",
        };
        assert!(matches!(classify(&x, &sent(), k), Verdict::Transient(_)));
    }
}
