//! Which kind of message a signed body is (contract §10 rule 4). The
//! gateway signs every message type with one key and one rule, so a signed
//! h5pay answer (`PAY_SUCCESS` = placed) replayed as a notify, or a close
//! answer (`PAY_SUCCESS` = closed) returned for a query, would verify. What
//! tells them apart are the fields only another message carries: they are
//! inside the sign, so they cannot be stripped without breaking it. Pure.

use serde_json::{Map, Value};

use super::wire::{JSAPI_FIELDS, TRADE_REFUND};

/// The message a body is taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Notify,
    QueryAnswer,
}

/// Fields of the closeorder answer.
const CLOSE_ANSWER: &[&str] = &["close_trace_no", "close_time"];
/// Fields of a request the worker sends (echoed back, it is no answer).
const REQUEST: &[&str] = &["notify_url", "open_id"];
/// Fields of a query (a notify never carries them).
const QUERY: &[&str] = &["query_trace_no"];

/// The non-null fields of `m` that only another kind of message carries,
/// in a fixed order; empty when the body may be what it is taken as.
pub fn foreign_fields(m: &Map<String, Value>, expected: Expected) -> Vec<&'static str> {
    let extra: &[&str] = match expected {
        Expected::Notify => QUERY,
        Expected::QueryAnswer => &[],
    };
    // The h5pay answer's fields (each pay type's shape) come first.
    [
        &["code_url"][..],
        &JSAPI_FIELDS,
        &["ali_trade_no"],
        CLOSE_ANSWER,
        REQUEST,
        extra,
    ]
    .into_iter()
    .flatten()
    .copied()
    .filter(|k| m.get(*k).is_some_and(|v| !v.is_null()))
    .collect()
}

/// The one-line reason of a `foreign_message` anomaly.
pub fn foreign_message(fields: &[&str], expected: Expected) -> String {
    let taken_as = match expected {
        Expected::Notify => "a notify",
        Expected::QueryAnswer => "a query answer",
    };
    format!(
        "{taken_as} carrying fields of another message ({}): a signed message replayed as evidence it is not",
        fields.join(", ")
    )
}

/// Whether a notify reports a refund (`result_code` `TRADE_REFUND`, or a
/// refund field): never evidence about the payment (contract §10 rule 4).
pub fn is_refund(m: &Map<String, Value>) -> bool {
    const REFUND_FIELDS: &[&str] = &["refund_trace_no", "refund_no", "refund_fee"];
    m.get("result_code").and_then(Value::as_str) == Some(TRADE_REFUND)
        || REFUND_FIELDS
            .iter()
            .any(|k| m.get(*k).is_some_and(|v| !v.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fields_of_other_messages_are_named_and_nulls_are_not() {
        let cases: &[(Value, Expected, &[&str])] = &[
            (
                json!({"result_code": "PAY_SUCCESS", "trade_no": "T"}),
                Expected::Notify,
                &[],
            ),
            (
                json!({"code_url": "https://x", "trade_no": "T"}),
                Expected::Notify,
                &["code_url"],
            ),
            (
                json!({"appId": "wx", "paySign": "s", "packages": "p"}),
                Expected::QueryAnswer,
                &["appId", "packages", "paySign"],
            ),
            (
                json!({"ali_trade_no": "2026"}),
                Expected::Notify,
                &["ali_trade_no"],
            ),
            (
                json!({"close_trace_no": "c", "close_time": "20261130120000"}),
                Expected::QueryAnswer,
                &["close_trace_no", "close_time"],
            ),
            (
                json!({"notify_url": "https://n", "open_id": "o"}),
                Expected::QueryAnswer,
                &["notify_url", "open_id"],
            ),
            (
                json!({"query_trace_no": "q"}),
                Expected::Notify,
                &["query_trace_no"],
            ),
            // A query answer echoes its own query_trace_no.
            (json!({"query_trace_no": "q"}), Expected::QueryAnswer, &[]),
            (
                json!({"code_url": null, "close_time": null}),
                Expected::QueryAnswer,
                &[],
            ),
            // Empty is not null: the field is there, inside the sign.
            (json!({"code_url": ""}), Expected::Notify, &["code_url"]),
        ];
        for (m, expected, want) in cases {
            assert_eq!(foreign_fields(&obj(m.clone()), *expected), *want, "{m}");
        }
    }

    #[test]
    fn refunds_are_told_by_their_code_or_their_fields() {
        assert!(is_refund(&obj(json!({"result_code": "TRADE_REFUND"}))));
        assert!(is_refund(&obj(
            json!({"result_code": "PAY_SUCCESS", "refund_fee": "100"})
        )));
        assert!(!is_refund(&obj(
            json!({"result_code": "PAY_SUCCESS", "refund_no": null})
        )));
        assert!(!is_refund(&obj(json!({"result_code": "PAY_SUCCESS"}))));
    }
}
