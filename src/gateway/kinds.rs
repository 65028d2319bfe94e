//! Which kind of message a signed body is (contract §10 rule 4). The
//! gateway signs every message type with one key and one rule, so a signed
//! h5pay answer (`PAY_SUCCESS` = placed) replayed as a notify, or a close
//! answer (`PAY_SUCCESS` = closed) returned for a query, would verify. What
//! tells them apart are the fields only another message carries: they are
//! inside the sign, so they cannot be stripped without breaking it. Pure.

use super::object::{Field, Object};
use super::wire::{JSAPI_FIELDS, TRADE_REFUND};

/// Whether field `k` is there and not null.
fn carries(m: &Object<'_>, k: &str) -> bool {
    m.get(k).is_some_and(|v| *v != Field::Null)
}

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
pub fn foreign_fields(m: &Object<'_>, expected: Expected) -> Vec<&'static str> {
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
    .filter(|k| carries(m, k))
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
pub fn is_refund(m: &Object<'_>) -> bool {
    const REFUND_FIELDS: &[&str] = &["refund_trace_no", "refund_no", "refund_fee"];
    matches!(m.get("result_code"), Some(Field::Str(c)) if c == TRADE_REFUND)
        || REFUND_FIELDS.iter().any(|k| carries(m, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// `f` of the body `v` writes, read as the wire gives it.
    fn on<T>(v: &Value, f: impl Fn(&Object<'_>) -> T) -> T {
        let body = v.to_string();
        f(&Object::parse(body.as_bytes()).unwrap_or_default())
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
            assert_eq!(on(m, |o| foreign_fields(o, *expected)), *want, "{m}");
        }
    }

    #[test]
    fn refunds_are_told_by_their_code_or_their_fields() {
        let cases = [
            (json!({"result_code": "TRADE_REFUND"}), true),
            (
                json!({"result_code": "PAY_SUCCESS", "refund_fee": "100"}),
                true,
            ),
            (json!({"result_code": "PAY_SUCCESS", "refund_no": 7}), true),
            (
                json!({"result_code": "PAY_SUCCESS", "refund_no": null}),
                false,
            ),
            (json!({"result_code": "PAY_SUCCESS"}), false),
            // Only the string names the refund code.
            (json!({"result_code": ["TRADE_REFUND"]}), false),
        ];
        for (m, want) in cases {
            assert_eq!(on(&m, is_refund), want, "{m}");
        }
    }
}
