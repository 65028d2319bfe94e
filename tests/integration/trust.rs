//! What a `paid` rests on (contract §10 rules 4 and 7, §12) over real
//! RabbitMQ, Redis and HTTP: signed messages of another kind are never
//! evidence, refunds never move a payment, one signed message is one
//! anomaly, every time counts from placement, an institution that left the
//! config ends `unresolved`, and a close is never sent for a paid payment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Received, ReceiverServer, SANDBOX_KEY, TestEnv, Via, WAIT};

fn key() -> secrecy::SecretString {
    secrecy::SecretString::from(SANDBOX_KEY.to_owned())
}

fn signed(mut fields: Value) -> Value {
    if let Some(m) = fields.as_object_mut() {
        m.remove("sign");
        let s = h5pay_worker::gateway::sign::sign(m, &key());
        m.insert("sign".into(), Value::String(s));
    }
    fields
}

/// A worker notifying `receiver` places `body`; its result event.
async fn placed(env: &TestEnv, receiver: &ReceiverServer, body: &Value) -> Received {
    let mut results = env.results().await;
    let worker = env.worker_with(env.config_notifying(receiver));
    worker.ready().await;
    env.publish_json(body).await;
    let trace = body["pay_trace_no"].clone();
    let r = loop {
        let r = results.next(WAIT).await.expect("a result event");
        if r.event["pay_trace_no"] == trace {
            break r;
        }
    };
    drop(worker);
    r
}

/// The h5pay answer the gateway gives for the identity of `ready`: the
/// same request the worker sent, sent again (the gateway is idempotent).
async fn h5pay_answer(
    env: &TestEnv,
    receiver: &ReceiverServer,
    ready: &Value,
    open_id: Option<&str>,
) -> Value {
    let request = h5pay_worker::gateway::H5PayRequest {
        inst_no: "60000001".into(),
        mch_no: ready["mch_no"].as_str().unwrap_or_default().into(),
        pay_type: serde_json::from_value(ready["pay_type"].clone()).expect("a pay type"),
        pay_trace_no: ready["pay_trace_no"].as_str().unwrap_or_default().into(),
        pay_time: ready["pay_time"].as_str().unwrap_or_default().into(),
        total_amount: ready["total_amount"].as_u64().unwrap_or_default(),
        open_id: open_id.map(str::to_owned),
        notify_url: Some(receiver.url.clone()),
    };
    let answer = reqwest::Client::new()
        .post(env.gateway_url())
        .header("content-type", "application/json")
        .body(request.signed_body(&key()))
        .send()
        .await
        .expect("the sandbox answers");
    let v: Value =
        serde_json::from_slice(&answer.bytes().await.expect("a body")).expect("a JSON answer");
    assert_eq!(v["result_code"], "PAY_SUCCESS", "{v}");
    v
}

/// Payment events of `trace` within `quiet`.
async fn events_for(
    payments: &mut crate::support::Results,
    trace: &str,
    quiet: Duration,
) -> Vec<Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + quiet;
    while let Some(p) = payments
        .next(end.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if p.event["pay_trace_no"] == trace {
            out.push(p.event);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h5pay_answer_replayed_as_a_notify_is_a_foreign_message_and_never_paid() {
    let env = TestEnv::new().await;
    let receiver = env.receiver(Via::default()).await;
    let mut payments = env.payments().await;
    // The three shapes of the h5pay answer: a code_url, JSAPI parameters,
    // an Alipay trade number.
    let shapes = [
        ("F-CODE", "wechat", None, "code_url"),
        ("F-JSAPI", "wechat", Some("o-wx-1"), "appId"),
        ("F-ALI", "alipay", Some("o-ali-1"), "ali_trade_no"),
    ];
    for (trace, pay_type, open_id, field) in shapes {
        let mut body = json!({"pay_trace_no": trace, "mch_no": "M1", "pay_type": pay_type, "total_amount": 100});
        if let Some(o) = open_id {
            body["open_id"] = json!(o);
        }
        let ready = placed(&env, &receiver, &body).await;
        assert_eq!(ready.event["status"], "ready", "{}", ready.event);
        let answer = h5pay_answer(&env, &receiver, &ready.event, open_id).await;
        assert!(!answer[field].is_null(), "{trace}: {answer}");
        let bytes = serde_json::to_vec(&answer).expect("serialises");
        let (status, reply) = receiver.post(&bytes).await;
        assert_eq!(status, 400, "{trace}: {reply}");
        assert!(reply.contains("FAIL"), "{reply}");
        // The same signed message again, in other whitespace and with a
        // field the sign leaves out: the same anomaly, not a second one.
        let mut again = answer.clone();
        again["added_by_a_replayer"] = Value::Null;
        let again = serde_json::to_vec_pretty(&again).expect("serialises");
        assert_eq!(receiver.post(&again).await.0, 400);
        let events = events_for(&mut payments, trace, Duration::from_secs(2)).await;
        assert!(!events.is_empty(), "{trace}: no anomaly event");
        for e in &events {
            assert_eq!(e["state"], "anomaly", "{trace}: {e}");
            assert_eq!(e["anomaly"]["kind"], "foreign_message", "{trace}: {e}");
        }
        assert_eq!(
            events
                .iter()
                .map(|e| e["event_id"].clone())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            1,
            "{trace}: one signed message is one anomaly: {events:?}"
        );
        assert_eq!(
            env.payment_state(trace).await.as_deref(),
            Some("open"),
            "{trace}"
        );
        // Not a notify, so not a notify seen (`inspect`).
        let id = h5pay_worker::intent::Identity {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_trace_no: trace.into(),
        };
        let view = h5pay_worker::payment::PaymentStore::new(env.claim_store())
            .view(&id)
            .await
            .expect("the payment");
        assert_eq!(view.notifies, 0, "{trace}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_notifies_and_paid_notifies_without_an_amount_never_move_a_payment() {
    let env = TestEnv::new().await;
    let receiver = env.receiver(Via::default()).await;
    let mut payments = env.payments().await;
    let open = placed(
        &env,
        &receiver,
        &crate::support::intent("R-OPEN", "M1", 100),
    )
    .await;
    let paid = placed(
        &env,
        &receiver,
        &crate::support::intent("R-PAID", "M1", 100),
    )
    .await;
    env.pay("M1", "R-PAID").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.payment_state("R-PAID").await.as_deref() != Some("paid") {
        assert!(tokio::time::Instant::now() < deadline, "never paid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = events_for(&mut payments, "R-PAID", Duration::from_millis(500)).await;
    for ready in [&open.event, &paid.event] {
        let trace = ready["pay_trace_no"].as_str().unwrap_or_default();
        let base = json!({
            "return_code": "SUCCESS", "return_msg": "退款成功",
            "mch_no": "M1", "pay_trace_no": trace, "pay_time": ready["pay_time"],
            "total_amount": "100", "trade_no": ready["trade_no"],
            "refund_trace_no": format!("RF-{trace}"), "refund_no": "R1", "refund_fee": "100",
        });
        let mut refund = base.clone();
        refund["result_code"] = json!("TRADE_REFUND");
        // A refund result worded as a success: still a refund.
        let mut worded_as_paid = base.clone();
        worded_as_paid["result_code"] = json!("PAY_SUCCESS");
        for body in [refund, worded_as_paid] {
            let bytes = serde_json::to_vec(&signed(body)).expect("serialises");
            let (status, reply) = receiver.post(&bytes).await;
            assert_eq!(status, 200, "{trace}: {reply}");
        }
        let events = events_for(&mut payments, trace, Duration::from_secs(1)).await;
        assert!(!events.is_empty(), "{trace}: an anomaly is raised");
        for e in &events {
            assert_eq!(e["state"], "anomaly", "{trace}: {e}");
            assert_eq!(e["anomaly"]["kind"], "unexpected", "{trace}: {e}");
        }
    }
    assert_eq!(env.payment_state("R-OPEN").await.as_deref(), Some("open"));
    assert_eq!(env.payment_state("R-PAID").await.as_deref(), Some("paid"));
    // PAY_SUCCESS without a total_amount is never paid.
    let no_amount = signed(json!({
        "return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "mch_no": "M1",
        "pay_trace_no": "R-OPEN", "pay_time": open.event["pay_time"], "trade_no": open.event["trade_no"],
    }));
    let (status, _) = receiver
        .post(&serde_json::to_vec(&no_amount).expect("serialises"))
        .await;
    assert_eq!(status, 200);
    let events = events_for(&mut payments, "R-OPEN", Duration::from_secs(1)).await;
    assert!(events.iter().all(|e| e["state"] == "anomaly"), "{events:?}");
    assert_eq!(env.payment_state("R-OPEN").await.as_deref(), Some("open"));
}

/// What the impostor gateway answers to queryorder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QueryWith {
    /// The last h5pay answer it relayed.
    H5payAnswer,
    /// The last closeorder answer it relayed.
    CloseAnswer,
    /// The sandbox's own answer with another `total_amount`, signed again
    /// with the institution's key.
    OtherAmount,
}

/// A gateway in front of the sandbox that relays h5pay and closeorder and
/// answers queryorder with one of their signed answers: a replay an
/// attacker on the plain-HTTP path could make.
async fn impostor(sandbox: &str, mode: QueryWith) -> (String, Arc<Mutex<u32>>) {
    let h5pay = Arc::new(Mutex::new(None::<Value>));
    let close = Arc::new(Mutex::new(None::<Value>));
    let queries = Arc::new(Mutex::new(0u32));
    let base = sandbox.trim_end_matches("h5pay").to_owned();
    let (h, c, q) = (h5pay.clone(), close.clone(), queries.clone());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let (h, c, q, base) = (h.clone(), c.clone(), q.clone(), base.clone());
        async move {
            let endpoint = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
            let relay = || async {
                let r = reqwest::Client::new()
                    .post(format!("{base}{endpoint}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .ok()?;
                serde_json::from_slice::<Value>(&r.bytes().await.ok()?).ok()
            };
            let answer = match endpoint.as_str() {
                "h5pay" => {
                    let a = relay().await;
                    *h.lock().expect("lock") = a.clone();
                    a
                }
                "closeorder" => {
                    let a = relay().await;
                    *c.lock().expect("lock") = a.clone();
                    a
                }
                _ => {
                    *q.lock().expect("lock") += 1;
                    let stored = match mode {
                        QueryWith::H5payAnswer => h.lock().expect("lock").clone(),
                        QueryWith::CloseAnswer => c.lock().expect("lock").clone(),
                        QueryWith::OtherAmount => relay().await.map(|mut a| {
                            a["total_amount"] = json!("1");
                            signed(a)
                        }),
                    };
                    match stored {
                        Some(a) => Some(a),
                        None => relay().await,
                    }
                }
            };
            axum::Json(answer.unwrap_or(Value::Null))
        }
    });
    let addr = crate::support::serve(app).await;
    (format!("http://{addr}/api/openpay/v3/h5pay"), queries)
}

const FAST: [(&str, &str); 4] = [
    ("H5PAY__RECONCILE__CHECK_AFTER_SECS", "1,2"),
    ("H5PAY__RECONCILE__ORDER_TTL_SECS", "3"),
    ("H5PAY__RECONCILE__CLOSE_GRACE_SECS", "1"),
    ("H5PAY__RECONCILE__MAX_AGE_SECS", "60"),
];

async fn answered_by_an_impostor(
    mode: QueryWith,
    trace: &str,
    amount: u64,
) -> (TestEnv, Vec<Value>) {
    let env = TestEnv::with(&FAST).await;
    let (url, queries) = impostor(&env.gateway_url(), mode).await;
    let mut config = env.config.clone();
    config.settings.gateway.url = url;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker_with(config);
    env.publish_json(&crate::support::intent(trace, "M1", amount))
        .await;
    let r = results.next(WAIT).await.expect("a result event");
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    // Checks at 1 and 2 s, the close at 4 s and its query.
    let events = events_for(&mut payments, trace, Duration::from_secs(7)).await;
    assert!(*queries.lock().expect("lock") >= 2, "queried");
    (env, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answered_with_the_h5pay_answer_is_a_foreign_message_never_paid() {
    let (env, events) = answered_by_an_impostor(QueryWith::H5payAnswer, "Q-H5", 100).await;
    assert!(!events.is_empty(), "an anomaly is raised");
    for e in &events {
        assert_eq!(e["state"], "anomaly", "{e}");
        assert_eq!(e["anomaly"]["kind"], "foreign_message", "{e}");
    }
    assert_ne!(env.payment_state("Q-H5").await.as_deref(), Some("paid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_after_a_close_answered_with_the_close_answer_is_a_foreign_message() {
    let (env, events) = answered_by_an_impostor(QueryWith::CloseAnswer, "Q-CL", 100).await;
    assert!(
        events
            .iter()
            .any(|e| e["anomaly"]["kind"] == "foreign_message"),
        "{events:?}"
    );
    assert!(
        events.iter().all(|e| e["state"] == "anomaly"),
        "a close answer is neither paid nor closed: {events:?}"
    );
    assert_eq!(env.payment_state("Q-CL").await.as_deref(), Some("open"));
}

/// An order the sandbox pays by itself without a notify (4021): only a
/// query can find it paid, and the query's answer says another amount,
/// correctly signed. Its echo does not match what was sent: a mismatch,
/// never `paid` (contract §10 rule 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_query_answer_with_another_amount_is_a_mismatch_never_paid() {
    let (env, events) = answered_by_an_impostor(QueryWith::OtherAmount, "Q-AMT", 4021).await;
    assert!(!events.is_empty(), "an anomaly is raised");
    for e in &events {
        assert_eq!(e["state"], "anomaly", "{e}");
        assert_eq!(e["anomaly"]["kind"], "mismatch", "{e}");
        assert!(
            e["anomaly"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("total_amount")),
            "{e}"
        );
    }
    assert_eq!(env.payment_state("Q-AMT").await.as_deref(), Some("open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_count_from_placement_not_from_the_publishers_pay_time() {
    // Orders are closed 20 minutes after placement (the defaults); checks
    // run 1 and 2 s after it.
    let env = TestEnv::with(&[("H5PAY__RECONCILE__CHECK_AFTER_SECS", "1,2")]).await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    let at = |mins: i64| {
        (chrono::Utc::now() + chrono::Duration::minutes(mins))
            .with_timezone(&offset)
            .format("%Y%m%d%H%M%S")
            .to_string()
    };
    for (trace, pay_time) in [("P-OLD", at(-25)), ("P-FUTURE", at(24 * 60))] {
        let mut body = crate::support::intent(trace, "M1", 100);
        body["pay_time"] = json!(pay_time);
        env.publish_json(&body).await;
        let r = results.next(WAIT).await.expect("a result event");
        assert_eq!(r.event["status"], "ready", "{}", r.event);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let old = env.sandbox_order("P-OLD").expect("placed");
    assert_eq!(
        old.closes, 0,
        "a 25-minute-old pay_time closed an order just placed"
    );
    assert!(old.queries >= 1, "checked");
    let future = env.sandbox_order("P-FUTURE").expect("placed");
    assert!(
        future.queries >= 1,
        "a future pay_time must still be checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_institution_left_the_config_ends_unresolved_at_max_age() {
    let env = TestEnv::with(&[
        ("H5PAY__RECONCILE__CHECK_AFTER_SECS", "1,2"),
        ("H5PAY__RECONCILE__MAX_AGE_SECS", "4"),
        ("H5PAY__RECONCILE__ORDER_TTL_SECS", "600"),
        ("H5PAY__RECONCILE__ENABLED", "false"),
    ])
    .await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let placing = env.worker();
    let mut body = crate::support::intent("O-1", "M1", 100);
    body["inst_no"] = json!("60000002");
    env.publish_json(&body).await;
    let r = results.next(WAIT).await.expect("a result event");
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    drop(placing);
    // Institution 60000002 leaves the config; the first check is scheduled
    // by hand (the placing worker had the reconciler off).
    let checks = env.checks_store();
    let id = h5pay_worker::intent::Identity {
        inst_no: "60000002".into(),
        mch_no: "M1".into(),
        pay_trace_no: "O-1".into(),
    };
    checks.schedule(&id, 0).await.expect("scheduled");
    let mut config = env.config.clone();
    config.settings.reconcile.enabled = true;
    config.institutions =
        h5pay_worker::keys::Institutions::from_pairs([("60000001".to_owned(), key())])
            .expect("one institution");
    let _worker = env.worker_with(config);
    let events = events_for(&mut payments, "O-1", Duration::from_secs(8)).await;
    let states: Vec<&Value> = events.iter().map(|e| &e["state"]).collect();
    assert_eq!(states, [&json!("unresolved")], "{events:?}");
    assert_eq!(
        env.sandbox
            .stats(&Default::default())
            .identities
            .iter()
            .find(|i| i.pay_trace_no == "O-1")
            .map(|i| i.queries),
        Some(0),
        "nothing can sign its query"
    );
    assert_eq!(checks.next(&id).await.expect("ZSCORE"), None, "no loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_retry_is_not_sent_once_the_payment_is_paid() {
    // The first closeorder is answered 503; meanwhile the payment became
    // paid (as a notify would make it, without the check's lease). The
    // retry reads the state again and is never sent.
    let env = TestEnv::with(&FAST).await;
    let closes = Arc::new(Mutex::new(0u32));
    let sandbox = env.gateway_url();
    let base = sandbox.trim_end_matches("h5pay").to_owned();
    let key_of = format!(
        "{}:60000001:M1:C-PAID",
        env.config.settings.redis.key_prefix
    );
    let redis_url = env.config.settings.redis.url.expose().to_owned();
    let counted = closes.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let (base, key_of, redis_url, counted) = (
            base.clone(),
            key_of.clone(),
            redis_url.clone(),
            counted.clone(),
        );
        async move {
            let endpoint = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
            if endpoint == "closeorder" {
                *counted.lock().expect("lock") += 1;
                let client = redis::Client::open(redis_url).expect("a client");
                let mut c = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("Redis");
                let _: i64 = redis::cmd("HSET")
                    .arg(&key_of)
                    .arg("ps")
                    .arg("paid")
                    .query_async(&mut c)
                    .await
                    .expect("HSET");
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new());
            }
            let r = reqwest::Client::new()
                .post(format!("{base}{endpoint}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("the sandbox answers");
            (
                axum::http::StatusCode::OK,
                r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
            )
        }
    });
    let addr = crate::support::serve(app).await;
    let mut config = env.config.clone();
    config.settings.gateway.url = format!("http://{addr}/api/openpay/v3/h5pay");
    let mut results = env.results().await;
    let _worker = env.worker_with(config);
    env.publish_json(&crate::support::intent("C-PAID", "M1", 100))
        .await;
    let r = results.next(WAIT).await.expect("a result event");
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    // The close is due 4 s after placement; its retries within ms.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        *closes.lock().expect("lock"),
        1,
        "closeorder sent for a paid payment"
    );
    assert_eq!(env.payment_state("C-PAID").await.as_deref(), Some("paid"));
}
