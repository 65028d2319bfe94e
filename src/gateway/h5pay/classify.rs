//! Classification of one h5pay exchange (contract §4, §5.6, §5.7): what
//! the gateway decided, or a transient failure that may be retried. Pure
//! functions: no I/O, no clock.

use secrecy::SecretString;

use super::H5PayDecided;
use crate::gateway::sign;
use crate::gateway::signed_call::{
    Exchange, StatusClass, TransientKind, Verdict, answer_of, message_suffix, opened, status_class,
    transient,
};
use crate::gateway::wire::{H5PayRequest, ReceivedResponse, ResultCode};
use crate::outcome::{Decision, Failure, FailureKind, GatewayAnswer};
use crate::text::{gateway_text, quoted};

// What a SUCCESS answer must hold is its own module; `seconds_timestamp`
// keeps its path here.
pub use super::success::seconds_timestamp;
use super::success::{bounded, check_echo, payable};

/// What an answer is checked against besides the request it answers.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The institution's key, when `gateway.verify_response_sign` is on.
    pub verify_key: Option<&'a SecretString>,
    /// Whether a plain-`http` code_url is acceptable: only when the gateway
    /// itself is reached over http (the sandbox); otherwise https only.
    pub http_links: bool,
}

/// The verdict on one h5pay exchange.
pub type H5PayVerdict = Verdict<H5PayDecided>;

impl H5PayVerdict {
    /// What an event would carry of this verdict: its failure message
    /// (`None` unless it failed) and the answer's summary. The tests and
    /// the fuzz targets hold both to their bounds.
    #[doc(hidden)]
    pub fn carried(self) -> (Option<String>, Option<GatewayAnswer>) {
        match self {
            Verdict::Final {
                value:
                    H5PayDecided {
                        decision: Decision::Failed(f),
                        ..
                    },
                answer,
            } => (Some(f.message), answer),
            Verdict::Final { answer, .. } => (None, answer),
            Verdict::Transient(t) => (Some(t.message), t.answer),
        }
    }
}

fn decided(decision: Decision, refusal: bool, answer: Option<GatewayAnswer>) -> H5PayVerdict {
    Verdict::Final {
        value: H5PayDecided {
            decision,
            refusal,
            trade_no: None,
        },
        answer,
    }
}

/// Classifies one exchange.
pub fn classify(exchange: &Exchange<'_>, sent: &H5PayRequest, expect: Expect<'_>) -> H5PayVerdict {
    let (status, body) = match opened(exchange) {
        Ok(answer) => answer,
        Err(verdict) => return verdict,
    };
    // Parse early so that refusals carry the gateway's own message.
    let parsed = ReceivedResponse::parse(body);
    let answer = answer_of(status, parsed.as_ref().ok().map(|r| &r.raw));
    if status_class(status) == StatusClass::Refused {
        let message = format!(
            "gateway refused the request with HTTP {status}{}",
            message_suffix(&answer)
        );
        return decided(
            Decision::Failed(Failure::new(FailureKind::GatewayRejected, message)),
            true,
            Some(answer),
        );
    }
    let response = match parsed {
        Ok(r) => r,
        Err(e) => {
            return transient(
                TransientKind::BadResponse,
                true,
                gateway_text(&e.to_string()),
                None,
                Some(answer),
            );
        }
    };
    classify_body(&response, sent, expect, Some(answer))
}

fn classify_body(
    response: &ReceivedResponse<'_>,
    sent: &H5PayRequest,
    expect: Expect<'_>,
    answer: Option<GatewayAnswer>,
) -> H5PayVerdict {
    let verify_key = expect.verify_key;
    let f = &response.fields;
    let bad = |message: String, answer: Option<GatewayAnswer>| {
        transient(TransientKind::BadResponse, true, message, None, answer)
    };
    let bad_signature = |e: sign::VerifyError, answer: Option<GatewayAnswer>| {
        let message = format!("response signature check failed: {e}");
        decided(
            Decision::Failed(Failure::new(FailureKind::BadSignature, message)),
            false,
            answer,
        )
    };
    let msg = gateway_text(f.return_msg.as_deref().unwrap_or(""));

    match f.return_code.as_deref() {
        Some("FAIL") => {
            // A FAIL without a sign is the refusal it says it is (forging one
            // moves no money); a FAIL with a wrong sign is not trusted.
            let has_sign = matches!(f.sign.as_deref(), Some(s) if !s.is_empty());
            if let (Some(key), true) = (verify_key, has_sign)
                && let Err(e) = sign::verify_object(&response.raw, key)
            {
                return bad_signature(e, answer);
            }
            let message = format!("gateway refused the request: return_code FAIL: {msg}");
            decided(
                Decision::Failed(Failure::new(FailureKind::GatewayRejected, message)),
                true,
                answer,
            )
        }
        Some("SUCCESS") => {
            if let Some(key) = verify_key
                && let Err(e) = sign::verify_object(&response.raw, key)
            {
                return bad_signature(e, answer);
            }
            if let Err(m) = check_echo(f, sent) {
                return bad(m, answer);
            }
            if let Err(m) = bounded(f) {
                return bad(m, answer);
            }
            let trade_no = f.trade_no.clone();
            let Some(code) = f.result_code.as_deref() else {
                return bad("SUCCESS answer without a result_code".to_owned(), answer);
            };
            let decision = match ResultCode::parse(code) {
                Some(ResultCode::PaySuccess) => match payable(f, expect.http_links) {
                    Ok(p) => Decision::Ready(p),
                    Err(m) => return bad(m, answer),
                },
                Some(ResultCode::PayInProcess) => Decision::InProcess,
                Some(ResultCode::PayFail) => Decision::Failed(Failure::new(
                    FailureKind::PaymentFailed,
                    format!("gateway answered PAY_FAIL: {msg}"),
                )),
                None => return bad(format!("unknown result_code {}", quoted(code)), answer),
            };
            Verdict::Final {
                value: H5PayDecided {
                    decision,
                    refusal: false,
                    trade_no,
                },
                answer,
            }
        }
        Some(other) => bad(format!("unknown return_code {}", quoted(other)), answer),
        None => bad("answer without a return_code".to_owned(), answer),
    }
}

/// After an attempt that may have reached the gateway, a later refusal (the
/// gateway's duplicate-pay_trace_no check looks like any other) means the
/// order may exist without us knowing its code_url: `outcome_unknown`.
pub fn refusal_after_reaching(
    decision: Decision,
    refusal: bool,
    reached_before: Option<&str>,
) -> Decision {
    match (decision, refusal, reached_before) {
        (Decision::Failed(f), true, Some(earlier)) => Decision::Failed(Failure::new(
            FailureKind::OutcomeUnknown,
            format!(
                "an earlier attempt may have reached the gateway ({earlier}), then the gateway refused \
                 ({}): the order may exist without its payment link",
                f.message
            ),
        )),
        (d, _, _) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::signed_call::TransientFailure;
    use serde_json::{Value, json};

    fn key() -> SecretString {
        SecretString::from("sandbox-key-5f2b9c0e7d1a4b3c")
    }

    const UNVERIFIED: Expect<'static> = Expect {
        verify_key: None,
        http_links: false,
    };

    fn request() -> H5PayRequest {
        H5PayRequest::example("T1", 100)
    }

    fn success(extra: Value) -> Value {
        let mut v = json!({
            "return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "return_msg": "ok",
            "mch_no": "M1", "pay_trace_no": "T1", "total_amount": "100", "trade_no": "TN1",
            "code_url": "https://pay.example/x", "appId": null, "shop_name": ""
        });
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    }

    fn signed(v: Value) -> Vec<u8> {
        let mut m = match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        m.remove("sign");
        let s = sign::sign(&m, &key());
        m.insert("sign".into(), Value::String(s));
        serde_json::to_vec(&m).unwrap_or_default()
    }

    fn classify_body_bytes(status: u16, body: &[u8]) -> H5PayVerdict {
        classify(
            &Exchange::Answered {
                status,
                retry_after: None,
                body,
            },
            &request(),
            Expect {
                verify_key: Some(&key()),
                http_links: false,
            },
        )
    }

    fn kind_of(v: &H5PayVerdict) -> String {
        match v {
            Verdict::Final {
                value:
                    H5PayDecided {
                        decision: Decision::Failed(f),
                        refusal,
                        ..
                    },
                ..
            } => format!(
                "final:{}{}",
                f.kind.as_str(),
                if *refusal { ":refusal" } else { "" }
            ),
            Verdict::Final { value, .. } => format!("final:{}", value.decision.status().as_str()),
            Verdict::Transient(TransientFailure { kind, reached, .. }) => {
                format!("transient:{kind:?}:reached={reached}")
            }
        }
    }

    #[test]
    fn classification_table() {
        let cases: Vec<(&str, H5PayVerdict, &str)> = vec![
            ("connect error", classify(&Exchange::ConnectFailed("refused".into()), &request(), UNVERIFIED), "transient:Unavailable:reached=false"),
            ("timeout", classify(&Exchange::SendFailed { timed_out: true, detail: "t".into() }, &request(), UNVERIFIED), "transient:Unavailable:reached=true"),
            ("ready", classify_body_bytes(200, &signed(success(json!({})))), "final:ready"),
            ("in process", classify_body_bytes(200, &signed(success(json!({"result_code": "PAY_IN_PROCESS", "code_url": null})))), "final:in_process"),
            ("pay fail", classify_body_bytes(200, &signed(success(json!({"result_code": "PAY_FAIL"})))), "final:payment_failed"),
            ("FAIL signed", classify_body_bytes(200, &signed(json!({"return_code": "FAIL", "return_msg": "参数不合法"}))), "final:gateway_rejected:refusal"),
            ("FAIL unsigned", classify_body_bytes(200, br#"{"return_code":"FAIL","return_msg":"x"}"#), "final:gateway_rejected:refusal"),
            ("FAIL wrong sign", classify_body_bytes(200, br#"{"return_code":"FAIL","return_msg":"x","sign":"00000000000000000000000000000000"}"#), "final:bad_signature"),
            ("SUCCESS unsigned", classify_body_bytes(200, &serde_json::to_vec(&success(json!({}))).unwrap_or_default()), "final:bad_signature"),
            ("SUCCESS wrong sign", classify_body_bytes(200, &serde_json::to_vec(&success(json!({"sign": "0".repeat(32)}))).unwrap_or_default()), "final:bad_signature"),
            ("echo mch_no", classify_body_bytes(200, &signed(success(json!({"mch_no": "M2"})))), "transient:BadResponse:reached=true"),
            ("echo amount missing", classify_body_bytes(200, &signed(success(json!({"total_amount": null})))), "transient:BadResponse:reached=true"),
            ("echo amount as number", classify_body_bytes(200, &signed(success(json!({"total_amount": 100})))), "final:ready"),
            ("ready without link", classify_body_bytes(200, &signed(success(json!({"code_url": null})))), "transient:BadResponse:reached=true"),
            ("unknown result", classify_body_bytes(200, &signed(success(json!({"result_code": "MAYBE"})))), "transient:BadResponse:reached=true"),
            ("not json", classify_body_bytes(200, b"<html>busy</html>"), "transient:BadResponse:reached=true"),
            ("503", classify_body_bytes(503, b""), "transient:Unavailable:reached=true"),
            ("429", classify_body_bytes(429, b""), "transient:Unavailable:reached=false"),
            ("408", classify_body_bytes(408, b""), "transient:Unavailable:reached=false"),
            ("404", classify_body_bytes(404, b"not found"), "final:gateway_rejected:refusal"),
            ("302", classify_body_bytes(302, b""), "transient:BadResponse:reached=true"),
        ];
        for (name, verdict, want) in cases {
            assert_eq!(kind_of(&verdict), want, "{name}: {verdict:?}");
        }
    }

    #[test]
    fn a_code_url_must_be_an_absolute_https_link() {
        for bad in [
            "javascript:alert(1)",
            "data:text/html,<b>pay</b>",
            "/sandbox/pay/1",
            "http://pay.example/x",
            "ftp://pay.example/x",
            "https://",
        ] {
            let v = classify_body_bytes(200, &signed(success(json!({"code_url": bad}))));
            assert_eq!(kind_of(&v), "transient:BadResponse:reached=true", "{bad}");
        }
        let http_gateway = Expect {
            verify_key: Some(&key()),
            http_links: true,
        };
        let body = signed(success(
            json!({"code_url": "http://127.0.0.1:8090/sandbox/pay/1"}),
        ));
        let exchange = Exchange::Answered {
            status: 200,
            retry_after: None,
            body: &body,
        };
        assert_eq!(
            kind_of(&classify(&exchange, &request(), http_gateway)),
            "final:ready"
        );
        let js = signed(success(json!({"code_url": "javascript:alert(1)"})));
        let exchange = Exchange::Answered {
            status: 200,
            retry_after: None,
            body: &js,
        };
        assert_eq!(
            kind_of(&classify(&exchange, &request(), http_gateway)),
            "transient:BadResponse:reached=true"
        );
    }

    #[test]
    fn gateway_text_in_an_outcome_is_cut_to_256_characters() {
        let long = "长".repeat(100_000);
        let cases = [
            signed(json!({"return_code": "FAIL", "return_msg": long})),
            signed(success(json!({"return_msg": long, "mch_no": long}))),
            signed(success(json!({"result_code": long}))),
            signed(success(json!({"trade_no": long}))),
        ];
        for body in cases {
            let (message, answer) = classify_body_bytes(200, &body).carried();
            let message = message.unwrap_or_else(|| panic!("not a failure"));
            assert!(
                message.chars().count() < 700,
                "{} chars",
                message.chars().count()
            );
            let a = answer.unwrap_or_else(|| panic!("no answer"));
            for text in [a.return_msg, a.result_code, a.return_code]
                .into_iter()
                .flatten()
            {
                assert!(
                    text.chars().count() <= 257,
                    "{} chars",
                    text.chars().count()
                );
            }
        }
    }

    #[test]
    fn unverified_mode_accepts_an_unsigned_success() {
        let body = serde_json::to_vec(&success(json!({}))).unwrap_or_default();
        let v = classify(
            &Exchange::Answered {
                status: 200,
                retry_after: None,
                body: &body,
            },
            &request(),
            UNVERIFIED,
        );
        assert_eq!(kind_of(&v), "final:ready");
    }

    #[test]
    fn jsapi_parameters_become_strings_and_seconds() {
        let body = signed(success(json!({
            "code_url": null, "appId": "wx1", "timeStamp": 1414561699123u64, "nonceStr": "n",
            "packages": "prepay_id=1", "signType": "MD5", "paySign": "ps"
        })));
        match classify_body_bytes(200, &body) {
            Verdict::Final {
                value:
                    H5PayDecided {
                        decision: Decision::Ready(p),
                        trade_no,
                        ..
                    },
                ..
            } => {
                assert_eq!(trade_no.as_deref(), Some("TN1"));
                assert_eq!(p.code_url, None);
                let j = p.jsapi.unwrap_or_else(|| panic!("no jsapi"));
                assert_eq!(j.time_stamp, "1414561699");
                assert_eq!(j.package, "prepay_id=1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seconds_timestamp("1414561699".into()), "1414561699");
    }

    #[test]
    fn incomplete_jsapi_alone_is_a_bad_response_naming_what_is_missing() {
        let body = signed(success(
            json!({"code_url": null, "appId": "wx1", "packages": "p"}),
        ));
        match classify_body_bytes(200, &body) {
            Verdict::Transient(TransientFailure { message, .. }) => {
                assert!(message.contains("paySign"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_after_a_reaching_attempt_is_outcome_unknown() {
        let rejected = Decision::Failed(Failure::new(FailureKind::GatewayRejected, "FAIL"));
        let settled = refusal_after_reaching(rejected.clone(), true, Some("HTTP 503"));
        assert!(
            matches!(settled, Decision::Failed(ref f) if f.kind == FailureKind::OutcomeUnknown)
        );
        assert_eq!(
            refusal_after_reaching(rejected.clone(), true, None),
            rejected
        );
        let pay_fail = Decision::Failed(Failure::new(FailureKind::PaymentFailed, "PAY_FAIL"));
        assert_eq!(
            refusal_after_reaching(pay_fail.clone(), false, Some("HTTP 503")),
            pay_fail
        );
    }
}
