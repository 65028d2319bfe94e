//! `POST /api/openpay/v3/queryorder` (gateway-lifecycle.md, contract §12):
//! what happened to an order. Read-only at the gateway, so every attempt
//! may be retried; the answer is classified here, purely. Both answer
//! shapes are read: `result_code`, and the older `trade_state`.

use std::borrow::Cow;

use secrecy::SecretString;

use super::kinds::{self, Expected};
use super::object::Object;
use super::sign;
use super::signed_call::{
    Decided, Exchange, StatusClass, TransientKind, Verdict, answer_of, json_object, message_suffix,
    opened, status_class, transient,
};
use super::wire::ResultCode;
use crate::domain::{AnomalyKind, Echoes, Presence::WhenNotEmpty, Presence::WhenPresent};
use crate::text::gateway_text;

/// What a query answer says about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAnswer {
    /// Paid (`PAY_SUCCESS`, or `trade_state` `SUCCESS`), with the order's
    /// number and `end_time` as sent.
    Paid {
        trade_no: String,
        end_time: Option<String>,
    },
    /// The payment failed or the order was closed (`PAY_FAIL`, or
    /// `CLOSED`/`REVOKED`/`PAYERROR`).
    Failed { trade_no: Option<String> },
    /// Not paid yet (`PAY_IN_PROCESS`, or `NOTPAY`/`USERPAYING`).
    NotYet { trade_no: Option<String> },
    /// A verified answer that cannot be taken as evidence: an anomaly,
    /// with the answer's `sign` (the anomaly's id derives from it).
    Anomaly {
        kind: AnomalyKind,
        message: String,
        sign: String,
    },
    /// No usable answer (refused, `return_code` FAIL, a sign that does not
    /// verify, or retries ran out): the payment stays open.
    NoAnswer(String),
}

impl QueryAnswer {
    /// The gateway's order number the answer names, if any.
    pub fn trade_no(&self) -> Option<&str> {
        match self {
            QueryAnswer::Paid { trade_no, .. } => Some(trade_no),
            QueryAnswer::Failed { trade_no } | QueryAnswer::NotYet { trade_no } => {
                trade_no.as_deref()
            }
            _ => None,
        }
    }

    /// The answer's meaning in a word (for logs and the last check).
    pub fn word(&self) -> &'static str {
        match self {
            QueryAnswer::Paid { .. } => "paid",
            QueryAnswer::Failed { .. } => "failed",
            QueryAnswer::NotYet { .. } => "not paid yet",
            QueryAnswer::Anomaly { .. } => "anomaly",
            QueryAnswer::NoAnswer(_) => "no answer",
        }
    }
}

impl Decided for QueryAnswer {
    fn outcome_label(&self) -> &'static str {
        match self {
            QueryAnswer::NoAnswer(_) => "refused",
            _ => "answered",
        }
    }
}

/// What an answer must echo: what the worker sent for the identity and
/// what it knows.
#[derive(Debug, Clone, Copy)]
pub struct QueryExpect<'a> {
    /// The institution's key, when `gateway.verify_response_sign` is on.
    pub verify_key: Option<&'a SecretString>,
    pub mch_no: &'a str,
    pub pay_trace_no: &'a str,
    pub pay_time: &'a str,
    pub total_amount: Option<u64>,
    /// The gateway's order number, when known.
    pub trade_no: Option<&'a str>,
    pub query_trace_no: &'a str,
}

/// One field's meaning: paid, failed, not yet, or a word the worker does
/// not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning<'a> {
    Paid,
    Failed,
    NotYet,
    Unknown(&'a str),
}

fn result_code(s: &str) -> Meaning<'_> {
    match ResultCode::parse(s) {
        Some(ResultCode::PaySuccess) => Meaning::Paid,
        Some(ResultCode::PayFail) => Meaning::Failed,
        Some(ResultCode::PayInProcess) => Meaning::NotYet,
        None => Meaning::Unknown(s),
    }
}

/// The upstream's vocabulary (gateway-lifecycle.md: assumed, the only
/// documented value is `SUCCESS`).
fn trade_state(s: &str) -> Meaning<'_> {
    match s {
        "SUCCESS" => Meaning::Paid,
        "CLOSED" | "REVOKED" | "PAYERROR" => Meaning::Failed,
        "NOTPAY" | "USERPAYING" => Meaning::NotYet,
        other => Meaning::Unknown(other),
    }
}

fn fin(value: QueryAnswer, status: u16, raw: Option<&Object<'_>>) -> Verdict<QueryAnswer> {
    Verdict::Final {
        value,
        answer: Some(answer_of(status, raw)),
    }
}

/// Classifies one queryorder exchange.
pub fn classify(exchange: &Exchange<'_>, expect: QueryExpect<'_>) -> Verdict<QueryAnswer> {
    let (status, body) = match opened(exchange) {
        Ok(answer) => answer,
        Err(verdict) => return verdict,
    };
    let raw = json_object(body);
    if status_class(status) == StatusClass::Refused {
        let message = format!(
            "query refused with HTTP {status}{}",
            message_suffix(&answer_of(status, raw.as_ref()))
        );
        return fin(QueryAnswer::NoAnswer(message), status, raw.as_ref());
    }
    let Some(m) = raw else {
        return transient(
            TransientKind::BadResponse,
            true,
            "query answer is not a JSON object".into(),
            None,
            Some(answer_of(status, None)),
        );
    };
    fin(read_answer(&m, expect), status, Some(&m))
}

/// A query answer's body, read: its sign, `return_code`, echoes and meaning.
pub fn read_answer(m: &Object<'_>, expect: QueryExpect<'_>) -> QueryAnswer {
    if let Some(key) = expect.verify_key
        && let Err(e) = sign::verify_object(m, key)
    {
        return QueryAnswer::NoAnswer(format!("query answer sign check failed: {e}"));
    }
    let field = |k: &str| m.text(k).filter(|v| !v.is_empty()).map(Cow::into_owned);
    let anomaly = |kind: AnomalyKind, message: String| QueryAnswer::Anomaly {
        kind,
        message,
        sign: m.text("sign").unwrap_or_default().into_owned(),
    };
    // Another kind of signed message returned as an answer is decided
    // first, whatever else is wrong with it (contract §10 rule 4).
    let foreign = kinds::foreign_fields(m, Expected::QueryAnswer);
    if !foreign.is_empty() {
        return anomaly(
            AnomalyKind::ForeignMessage,
            kinds::foreign_message(&foreign, Expected::QueryAnswer),
        );
    }
    if field("return_code").as_deref() != Some("SUCCESS") {
        return QueryAnswer::NoAnswer(format!(
            "query answered return_code {}: {}",
            gateway_text(&field("return_code").unwrap_or_default()),
            gateway_text(&field("return_msg").unwrap_or_default())
        ));
    }
    let wrong = mismatches(m, expect);
    if !wrong.is_empty() {
        return anomaly(
            AnomalyKind::Mismatch,
            format!("a signed query answer that differs: {}", wrong.join("; ")),
        );
    }
    let rc = field("result_code");
    let ts = field("trade_state");
    let meaning = match (
        rc.as_deref().map(result_code),
        ts.as_deref().map(trade_state),
    ) {
        (Some(a), Some(b)) if a != b => {
            return anomaly(
                AnomalyKind::Contradiction,
                format!(
                    "result_code {} but trade_state {}",
                    gateway_text(rc.as_deref().unwrap_or_default()),
                    gateway_text(ts.as_deref().unwrap_or_default())
                ),
            );
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => {
            return anomaly(
                AnomalyKind::Unexpected,
                "a query answer with neither result_code nor trade_state".into(),
            );
        }
    };
    let trade_no = field("trade_no");
    match meaning {
        Meaning::Paid => match (trade_no, field("total_amount")) {
            (Some(trade_no), Some(_)) => QueryAnswer::Paid {
                trade_no,
                end_time: field("end_time"),
            },
            (None, _) => anomaly(
                AnomalyKind::Unexpected,
                "a query answer says paid without a trade_no".into(),
            ),
            (Some(_), None) => anomaly(
                AnomalyKind::Unexpected,
                "a query answer says paid without a total_amount".into(),
            ),
        },
        Meaning::Failed => QueryAnswer::Failed { trade_no },
        Meaning::NotYet => QueryAnswer::NotYet { trade_no },
        Meaning::Unknown(word) => anomaly(
            AnomalyKind::Unexpected,
            format!(
                "a query answer the worker cannot place: {}",
                gateway_text(word)
            ),
        ),
    }
}

/// The echoes that differ from what was sent or is known (each checked
/// only when the answer carries it).
fn mismatches(m: &Object<'_>, e: QueryExpect<'_>) -> Vec<String> {
    let got = |k: &str| m.text(k);
    let mut echoes = Echoes::new();
    for (k, want) in [
        ("mch_no", Some(e.mch_no)),
        ("pay_trace_no", Some(e.pay_trace_no)),
        ("pay_time", Some(e.pay_time)),
        ("trade_no", e.trade_no),
        ("query_trace_no", Some(e.query_trace_no)),
    ] {
        echoes = echoes.text(k, got(k).as_deref(), want, WhenNotEmpty);
    }
    echoes
        .amount(
            "total_amount",
            got("total_amount").as_deref(),
            e.total_amount,
            WhenPresent,
        )
        .differences()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    const KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

    fn expect(key: &SecretString) -> QueryExpect<'_> {
        QueryExpect {
            verify_key: Some(key),
            mch_no: "M1",
            pay_trace_no: "T1",
            pay_time: "20261130101500",
            total_amount: Some(100),
            trade_no: None,
            query_trace_no: "q1",
        }
    }

    /// The answer as it comes off the wire: the map's JSON, read as an
    /// [`Object`] (the tests build and edit answers as maps).
    fn read_answer(m: &Map<String, Value>, e: QueryExpect<'_>) -> QueryAnswer {
        let body = serde_json::to_vec(m).unwrap_or_default();
        super::read_answer(&Object::parse(&body).unwrap_or_default(), e)
    }

    fn signed(mut v: Value) -> Map<String, Value> {
        let m = v.as_object_mut().expect("an object");
        let s = sign::sign(m, &SecretString::from(KEY));
        m.insert("sign".into(), Value::String(s));
        m.clone()
    }

    fn base() -> Value {
        json!({"return_code": "SUCCESS", "mch_no": "M1", "pay_trace_no": "T1",
               "pay_time": "20261130101500", "total_amount": "100", "query_trace_no": "q1"})
    }

    fn with(extra: Value) -> Map<String, Value> {
        let mut v = base();
        for (k, x) in extra.as_object().cloned().unwrap_or_default() {
            v[k] = x;
        }
        signed(v)
    }

    #[test]
    fn both_answer_shapes_are_read() {
        let key = SecretString::from(KEY);
        let e = expect(&key);
        let paid = read_answer(
            &with(json!({"result_code": "PAY_SUCCESS", "trade_no": "TN"})),
            e,
        );
        assert_eq!(
            paid,
            QueryAnswer::Paid {
                trade_no: "TN".into(),
                end_time: None
            }
        );
        let paid = read_answer(
            &with(
                json!({"trade_state": "SUCCESS", "trade_no": "TN", "end_time": "20261130101600"}),
            ),
            e,
        );
        assert!(
            matches!(
                paid,
                QueryAnswer::Paid {
                    end_time: Some(_),
                    ..
                }
            ),
            "{paid:?}"
        );
        for (shape, word) in [
            ("result_code", "PAY_FAIL"),
            ("trade_state", "CLOSED"),
            ("trade_state", "REVOKED"),
            ("trade_state", "PAYERROR"),
        ] {
            let a = read_answer(&with(json!({shape: word})), e);
            assert_eq!(a, QueryAnswer::Failed { trade_no: None }, "{word}");
        }
        for (shape, word) in [
            ("result_code", "PAY_IN_PROCESS"),
            ("trade_state", "NOTPAY"),
            ("trade_state", "USERPAYING"),
        ] {
            let a = read_answer(&with(json!({shape: word, "trade_no": "TN"})), e);
            assert_eq!(
                a,
                QueryAnswer::NotYet {
                    trade_no: Some("TN".into())
                },
                "{word}"
            );
        }
    }

    #[test]
    fn paid_needs_a_trade_no_and_unknown_words_are_anomalies() {
        let key = SecretString::from(KEY);
        let e = expect(&key);
        let a = read_answer(&with(json!({"result_code": "PAY_SUCCESS"})), e);
        assert!(
            matches!(
                a,
                QueryAnswer::Anomaly {
                    kind: AnomalyKind::Unexpected,
                    ..
                }
            ),
            "{a:?}"
        );
        for extra in [
            json!({"result_code": "PAY_SUCEESS", "trade_no": "TN"}),
            json!({"trade_state": "REFUND"}),
            json!({}),
        ] {
            let a = read_answer(&with(extra.clone()), e);
            assert!(
                matches!(
                    a,
                    QueryAnswer::Anomaly {
                        kind: AnomalyKind::Unexpected,
                        ..
                    }
                ),
                "{extra}: {a:?}"
            );
        }
    }

    #[test]
    fn other_messages_returned_as_answers_are_foreign_whatever_else_they_say() {
        let key = SecretString::from(KEY);
        let e = expect(&key);
        for extra in [
            // An h5pay answer: PAY_SUCCESS there means placed, not paid.
            json!({"result_code": "PAY_SUCCESS", "trade_no": "TN", "code_url": "https://pay"}),
            json!({"result_code": "PAY_SUCCESS", "trade_no": "TN", "appId": "wx", "paySign": "p"}),
            json!({"result_code": "PAY_SUCCESS", "trade_no": "TN", "ali_trade_no": "2026"}),
            // A close answer: PAY_SUCCESS there means closed.
            json!({"result_code": "PAY_SUCCESS", "trade_no": "TN", "close_trace_no": "c1", "close_time": "20261130120000"}),
            // Foreign and also a mismatch, or a FAIL: foreign first.
            json!({"result_code": "PAY_SUCCESS", "trade_no": "TN", "code_url": "https://pay", "total_amount": "1"}),
            json!({"return_code": "FAIL", "code_url": "https://pay"}),
        ] {
            let m = with(extra.clone());
            let a = read_answer(&m, e);
            assert!(
                matches!(&a, QueryAnswer::Anomaly { kind: AnomalyKind::ForeignMessage, sign, .. } if Some(sign) == m.get("sign").and_then(Value::as_str).map(str::to_owned).as_ref()),
                "{extra}: {a:?}"
            );
        }
    }

    #[test]
    fn paid_needs_an_amount() {
        let key = SecretString::from(KEY);
        let mut m = with(json!({"result_code": "PAY_SUCCESS", "trade_no": "TN"}));
        m.remove("total_amount");
        m.remove("sign");
        let m = signed(Value::Object(m));
        assert!(
            matches!(
                read_answer(&m, expect(&key)),
                QueryAnswer::Anomaly {
                    kind: AnomalyKind::Unexpected,
                    ..
                }
            ),
            "PAY_SUCCESS without a total_amount is never paid"
        );
    }

    #[test]
    fn two_fields_that_disagree_are_a_contradiction() {
        let key = SecretString::from(KEY);
        let a = read_answer(
            &with(json!({"result_code": "PAY_SUCCESS", "trade_state": "NOTPAY", "trade_no": "TN"})),
            expect(&key),
        );
        assert!(
            matches!(
                a,
                QueryAnswer::Anomaly {
                    kind: AnomalyKind::Contradiction,
                    ..
                }
            ),
            "{a:?}"
        );
        // Agreeing fields are fine.
        let a = read_answer(
            &with(
                json!({"result_code": "PAY_SUCCESS", "trade_state": "SUCCESS", "trade_no": "TN"}),
            ),
            expect(&key),
        );
        assert!(matches!(a, QueryAnswer::Paid { .. }), "{a:?}");
    }

    #[test]
    fn echoes_that_differ_are_a_mismatch_never_evidence() {
        let key = SecretString::from(KEY);
        let mut e = expect(&key);
        e.trade_no = Some("TN");
        for (k, v) in [
            ("total_amount", "101"),
            ("pay_time", "20261130101501"),
            ("pay_trace_no", "T2"),
            ("mch_no", "M2"),
            ("trade_no", "OTHER"),
            ("query_trace_no", "q2"),
            ("total_amount", "1e2"),
        ] {
            let a = read_answer(
                &with(json!({"result_code": "PAY_SUCCESS", "trade_no": "TN", k: v})),
                e,
            );
            assert!(
                matches!(&a, QueryAnswer::Anomaly { kind: AnomalyKind::Mismatch, message, .. } if message.contains(k)),
                "{k}: {a:?}"
            );
        }
        // Fields the answer leaves out are not checked.
        let mut m = with(json!({"result_code": "PAY_FAIL"}));
        for k in ["pay_time", "query_trace_no", "total_amount", "sign"] {
            m.remove(k);
        }
        let m = signed(Value::Object(m));
        assert_eq!(read_answer(&m, e), QueryAnswer::Failed { trade_no: None });
    }

    #[test]
    fn unsigned_refused_and_failed_answers_leave_the_payment_open() {
        let key = SecretString::from(KEY);
        let e = expect(&key);
        let mut m = with(json!({"result_code": "PAY_SUCCESS", "trade_no": "TN"}));
        m.insert("total_amount".into(), json!("1"));
        assert!(matches!(read_answer(&m, e), QueryAnswer::NoAnswer(msg) if msg.contains("sign")));
        let fail = with(json!({"return_code": "FAIL", "return_msg": "订单不存在"}));
        assert!(
            matches!(read_answer(&fail, e), QueryAnswer::NoAnswer(msg) if msg.contains("订单不存在"))
        );
        let x = Exchange::Answered {
            status: 404,
            retry_after: None,
            body: b"{}",
        };
        assert!(matches!(
            classify(&x, e),
            Verdict::Final {
                value: QueryAnswer::NoAnswer(_),
                ..
            }
        ));
        for x in [
            Exchange::Answered {
                status: 503,
                retry_after: None,
                body: b"",
            },
            Exchange::Answered {
                status: 200,
                retry_after: None,
                body: b"<html>",
            },
            Exchange::ConnectFailed("refused".into()),
            Exchange::SendFailed {
                timed_out: true,
                detail: "timeout".into(),
            },
        ] {
            assert!(matches!(classify(&x, e), Verdict::Transient(_)), "{x:?}");
        }
    }
}
