//! The demo's intents, each with what the contract says must come of it:
//! two waves, the second replaying the first's identity.

use serde_json::{Value, json};

/// One demo intent and what the contract says must come of it.
pub(super) struct Case {
    pub label: &'static str,
    pub trace: String,
    pub body: Vec<u8>,
    /// `status` or `failed/<kind>`; None for a body that must be dead-lettered.
    pub expect: Option<&'static str>,
    pub check: fn(&Value) -> bool,
    /// The demo pays this order on the sandbox, as a payer would.
    pub pay_by_hand: bool,
    /// The payment events expected, in order (`paid`, `anomaly/mismatch >
    /// paid`); later events may follow. None: none at all.
    pub payment: Option<&'static str>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            label: "",
            trace: String::new(),
            body: Vec::new(),
            expect: None,
            check: |_| true,
            pay_by_hand: false,
            payment: None,
        }
    }
}

fn body(trace: &str, pay_type: &str, amount: Value, extra: Value) -> Vec<u8> {
    let mut v = json!({"pay_trace_no": trace, "mch_no": "DEMO0001", "pay_type": pay_type, "total_amount": amount,
                       "metadata": {"order_id": format!("demo-{trace}")}});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Every intent but the replays, in the order they are sent and shown.
pub(super) fn first_wave(run_id: &str) -> Vec<Case> {
    let mut wave = notified(run_id);
    wave.extend(reconciled(run_id));
    wave.extend(refused_or_retried(run_id));
    wave
}

/// Links that end paid or closed through the payer, the gateway's notify
/// or the reconciler's close.
fn notified(run_id: &str) -> Vec<Case> {
    let t = |n: &str| format!("{run_id}-{n}");
    vec![
        Case {
            label: "ready with a code_url",
            trace: t("ready"),
            body: body(&t("ready"), "wechat", json!(100), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            pay_by_hand: true,
            payment: Some("paid"),
        },
        Case {
            label: "ready with JSAPI, never paid: closed",
            trace: t("jsapi"),
            body: body(
                &t("jsapi"),
                "400",
                json!(101),
                json!({"open_id": "oDemoUser"}),
            ),
            expect: Some("ready"),
            check: |e| {
                e["jsapi"]["timeStamp"]
                    .as_str()
                    .is_some_and(|t| t.len() == 10)
            },
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "ready (Alipay)",
            trace: t("alipay"),
            body: body(&t("alipay"), "alipay", json!("102"), json!({})),
            expect: Some("ready"),
            check: |e| e["pay_type"] == "300",
            pay_by_hand: true,
            payment: Some("paid"),
        },
        Case {
            label: "paid by itself a second later (4020)",
            trace: t("selfpaid"),
            body: body(&t("selfpaid"), "wechat", json!(4020), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("paid"),
            ..Case::default()
        },
        Case {
            label: "notify with another amount (4023)",
            trace: t("mismatch"),
            body: body(&t("mismatch"), "wechat", json!(4023), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            // The anomaly brings a query forward, which finds it paid.
            payment: Some("anomaly/mismatch > paid"),
            ..Case::default()
        },
        Case {
            label: "in_process (4002), never paid: closed",
            trace: t("inproc"),
            body: body(&t("inproc"), "wechat", json!(4002), json!({})),
            expect: Some("in_process"),
            check: |_| true,
            payment: Some("closed"),
            ..Case::default()
        },
    ]
}

/// Payments only the reconciler's queries and closes settle.
fn reconciled(run_id: &str) -> Vec<Case> {
    let t = |n: &str| format!("{run_id}-{n}");
    vec![
        Case {
            label: "paid, its notify lost (4021): a query finds it",
            trace: t("nonotify"),
            body: body(&t("nonotify"), "wechat", json!(4021), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("paid"),
            ..Case::default()
        },
        Case {
            label: "the payment fails (4024): a query says so",
            trace: t("latefail"),
            body: body(&t("latefail"), "wechat", json!(4024), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("failed"),
            ..Case::default()
        },
        Case {
            label: "closeorder fails once (4025), then closed",
            trace: t("closeonce"),
            body: body(&t("closeonce"), "alipay", json!(4025), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "answer lost (4026): found by a query, closed",
            trace: t("lost"),
            body: body(&t("lost"), "wechat", json!(4026), json!({})),
            expect: Some("failed/outcome_unknown"),
            check: |e| e["attempts"] == 2,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "a query contradicts itself (4027)",
            trace: t("contra"),
            body: body(&t("contra"), "wechat", json!(4027), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("anomaly/contradiction"),
            ..Case::default()
        },
    ]
}

/// Refusals, retries, and intents that never reach the gateway.
fn refused_or_retried(run_id: &str) -> Vec<Case> {
    let t = |n: &str| format!("{run_id}-{n}");
    vec![
        Case {
            label: "payment_failed (4001)",
            trace: t("payfail"),
            body: body(&t("payfail"), "wechat", json!(4001), json!({})),
            expect: Some("failed/payment_failed"),
            check: |_| true,
            ..Case::default()
        },
        Case {
            label: "gateway_rejected (4003)",
            trace: t("rejected"),
            body: body(&t("rejected"), "wechat", json!(4003), json!({})),
            expect: Some("failed/gateway_rejected"),
            check: |_| true,
            ..Case::default()
        },
        Case {
            label: "bad_signature (4010)",
            trace: t("badsign"),
            body: body(&t("badsign"), "wechat", json!(4010), json!({})),
            expect: Some("failed/bad_signature"),
            check: |e| e["code_url"].is_null(),
            ..Case::default()
        },
        Case {
            label: "two 503s, retried (5001)",
            trace: t("retry503"),
            body: body(&t("retry503"), "unionpay", json!(5001), json!({})),
            expect: Some("ready"),
            check: |e| e["attempts"] == 3,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "timeout, retried (5003)",
            trace: t("hang"),
            body: body(&t("hang"), "wechat", json!(5003), json!({})),
            expect: Some("ready"),
            check: |e| e["attempts"] == 2,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "always 500: gateway_unavailable (5002)",
            trace: t("down"),
            body: body(&t("down"), "wechat", json!(5002), json!({})),
            expect: Some("failed/gateway_unavailable"),
            check: |e| e["attempts"] == 3,
            ..Case::default()
        },
        Case {
            label: "invalid intent (\"1.00\")",
            trace: t("invalid"),
            body: body(&t("invalid"), "wechat", json!("1.00"), json!({})),
            expect: Some("failed/invalid_intent"),
            check: |e| e["attempts"] == 0,
            ..Case::default()
        },
        Case {
            label: "not JSON: dead-lettered",
            trace: t("garbage"),
            body: b"this is not an intent".to_vec(),
            expect: None,
            check: |_| true,
            ..Case::default()
        },
    ]
}

/// The first intent's identity again: a replay, then a conflict. Sent one
/// at a time, so the rows read in order.
pub(super) fn second_wave(run_id: &str) -> Vec<Case> {
    let t = |n: &str| format!("{run_id}-{n}");
    vec![
        Case {
            label: "duplicate of the first (replayed)",
            trace: t("ready"),
            body: body(&t("ready"), "400", json!("100"), json!({})),
            expect: Some("ready"),
            check: |e| e["duplicate"] == true,
            ..Case::default()
        },
        Case {
            label: "same identity, other amount: conflict",
            trace: t("ready"),
            body: body(&t("ready"), "wechat", json!(999), json!({})),
            expect: Some("failed/conflict"),
            check: |e| e["attempts"] == 0,
            ..Case::default()
        },
    ]
}
