//! The notify receiver and the payment state (contract §10, §11) over real
//! RabbitMQ, Redis and HTTP: the sandbox pays orders and sends its signed
//! notifies, or a test sends its own.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::{Received, ReceiverServer, Results, SANDBOX_KEY, TestEnv, Via, WAIT, intent};

const SUCCESS: &str = r#"{"return_code":"SUCCESS","return_msg":"成功"}"#;

/// A notify signed with `key`, as the gateway sends it.
fn signed(mut fields: Value, key: &str) -> Vec<u8> {
    let m = fields.as_object_mut().expect("an object");
    m.remove("sign");
    let s = h5pay_worker::gateway::sign::sign(m, &secrecy::SecretString::from(key.to_owned()));
    m.insert("sign".into(), Value::String(s));
    serde_json::to_vec(&fields).expect("serialises")
}

/// The paid notify the gateway would send for a ready result event.
fn paid_notify(ready: &Value) -> Value {
    json!({
        "return_code": "SUCCESS", "return_msg": "支付成功", "result_code": "PAY_SUCCESS",
        "inst_no": ready["inst_no"], "mch_no": ready["mch_no"], "pay_trace_no": ready["pay_trace_no"],
        "pay_time": ready["pay_time"], "total_amount": ready["total_amount"].to_string(),
        "pay_amount": "1", "receipt_amount": "1",
        "trade_no": ready["trade_no"], "trade_type": "1", "end_time": "2026-11-26 11:06:12.0"
    })
}

/// A worker notifying `receiver`, an intent placed: its ready event.
async fn placed(env: &TestEnv, receiver: &ReceiverServer, trace: &str, amount: u64) -> Received {
    let mut results = env.results().await;
    let worker = env.worker_with(env.config_notifying(receiver));
    worker.ready().await;
    let mut body = intent(trace, "M1", amount);
    body["metadata"] = json!({"order_id": format!("order-{trace}")});
    env.publish_json(&body).await;
    // An earlier worker stopped before its ack may have left its intent to
    // this one, whose replay comes first: wait for this identity's event.
    let r = results.next_for(trace, WAIT).await;
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    drop(worker);
    r
}

/// A test's world: its own broker vhost and Redis prefix, a receiver, and
/// the payment events it publishes.
async fn rig() -> (TestEnv, ReceiverServer, Results) {
    let env = TestEnv::new().await;
    let receiver = env.receiver(Via::default()).await;
    let payments = env.payments().await;
    (env, receiver, payments)
}

/// `fields` signed with the institution's key and posted: the gateway is
/// answered SUCCESS.
async fn accepted(receiver: &ReceiverServer, fields: Value) {
    assert_eq!(
        receiver.post(&signed(fields, SANDBOX_KEY)).await,
        (200, SUCCESS.to_owned())
    );
}

/// A world whose sandbox sends its notifies at these times (ms) after a
/// payment, with `inst_no` or without.
async fn sandbox_notifying(schedule_ms: [u64; 4], inst_no: bool) -> TestEnv {
    TestEnv::start(crate::support::EnvOptions {
        sandbox: h5pay_worker::sandbox::SandboxOptions {
            notify_inst_no: inst_no,
            notify_schedule: schedule_ms.map(Duration::from_millis).into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

async fn state_of(env: &TestEnv, trace: &str) -> Option<String> {
    let mut r = env.redis().await;
    redis::cmd("HGET")
        .arg(format!(
            "{}:60000001:M1:{trace}",
            env.config.settings.redis.key_prefix
        ))
        .arg("ps")
        .query_async(&mut r)
        .await
        .expect("HGET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_ends_in_one_paid_event_with_every_field() {
    let (env, receiver, mut payments) = rig().await;
    let ready = placed(&env, &receiver, "PAID-1", 100).await;
    assert_eq!(state_of(&env, "PAID-1").await.as_deref(), Some("open"));
    env.pay("M1", "PAID-1").await;
    let p = payments.take(1, WAIT).await.remove(0);
    let e = &p.event;
    assert_eq!(e["schema"], "h5pay.payment.v1");
    assert_eq!(e["state"], "paid");
    for field in [
        "inst_no",
        "mch_no",
        "pay_trace_no",
        "pay_type",
        "total_amount",
        "pay_time",
        "trade_no",
        "metadata",
    ] {
        assert_eq!(e[field], ready.event[field], "{field}: {e}");
    }
    assert!(
        e["paid_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e}"
    );
    assert_eq!(e["source"], "notify");
    assert_eq!(e["late"], false);
    assert_eq!(e["previous"], "open");
    assert_eq!(e["anomaly"], Value::Null);
    let id = e["event_id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(p.routing_key, "h5pay.payment.paid.M1");
    assert_eq!(p.header("x-state").as_deref(), Some("paid"));
    assert_eq!(p.props.message_id().as_ref().map(|m| m.as_str()), Some(id));
    assert_eq!(p.props.correlation_id(), ready.props.correlation_id());
    assert_eq!(p.props.delivery_mode(), &Some(2));
    assert_eq!(state_of(&env, "PAID-1").await.as_deref(), Some("paid"));
    // The gateway got the reply it stops on (the reply follows the event's
    // confirm, so the sandbox may read it a moment after the test sees the
    // event).
    let notified = || {
        let stats = env.sandbox.stats(&Default::default());
        stats
            .identities
            .iter()
            .any(|i| i.pay_trace_no == "PAID-1" && i.notified)
    };
    for _ in 0..50 {
        if notified() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(notified(), "the sandbox never got the SUCCESS reply");
    payments.none_for(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_notifies_sequential_and_concurrent_on_two_receivers_make_one_event() {
    let env = TestEnv::new().await;
    let a = env.receiver(Via::default()).await;
    let b = env.receiver(Via::default()).await;
    let mut payments = env.payments().await;
    let ready = placed(&env, &a, "DUP-1", 100).await;
    let body = signed(paid_notify(&ready.event), SANDBOX_KEY);
    let concurrent = (0..10).map(|i| {
        if i % 2 == 0 {
            a.post(&body)
        } else {
            b.post(&body)
        }
    });
    for (status, reply) in join_all(concurrent).await {
        assert_eq!((status, reply.as_str()), (200, SUCCESS));
    }
    for _ in 0..3 {
        assert_eq!(b.post(&body).await, (200, SUCCESS.to_owned()));
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(p) = payments.next(Duration::from_secs(2)).await {
        assert_eq!(p.event["state"], "paid", "{}", p.event);
        ids.insert(p.event["event_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(ids.len(), 1, "one event_id for one payment: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_that_cannot_be_verified_or_read_are_refused_with_the_right_status_and_no_event() {
    let (env, receiver, mut payments) = rig().await;
    let ready = placed(&env, &receiver, "BAD-1", 100).await;
    let good = paid_notify(&ready.event);
    let mut wrong_key = signed(good.clone(), "not-the-key");
    let mut unknown_inst = good.clone();
    unknown_inst["inst_no"] = json!("99999999");
    let mut nested = good.clone();
    nested["extra"] = json!({"a": 1});
    let mut tampered: Value =
        serde_json::from_slice(&signed(good.clone(), SANDBOX_KEY)).expect("json");
    tampered["total_amount"] = json!("1");
    let huge = json!({"pad": "x".repeat(20_000)});
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "signed with another key",
            std::mem::take(&mut wrong_key),
            400,
        ),
        (
            "unknown institution",
            signed(unknown_inst, SANDBOX_KEY),
            400,
        ),
        (
            "changed after signing",
            serde_json::to_vec(&tampered).expect("json"),
            400,
        ),
        ("unsigned", serde_json::to_vec(&good).expect("json"), 400),
        ("nested value", signed(nested, SANDBOX_KEY), 400),
        ("not an object", b"[1,2]".to_vec(), 400),
        ("not JSON", b"return_code=SUCCESS".to_vec(), 400),
        (
            "over the body limit",
            serde_json::to_vec(&huge).expect("json"),
            413,
        ),
    ];
    for (what, body, want) in cases {
        let (status, reply) = receiver.post(&body).await;
        assert_eq!(status, want, "{what}: {reply}");
        let v: Value =
            serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{what}: {e}: {reply}"));
        assert_eq!(v["return_code"], "FAIL", "{what}");
        assert!(
            v["return_msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(!reply.contains(SANDBOX_KEY), "{what}: a key in the reply");
    }
    payments.none_for(Duration::from_secs(1)).await;
    assert_eq!(state_of(&env, "BAD-1").await.as_deref(), Some("open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_notifies_that_differ_from_what_was_sent_raise_an_anomaly_and_change_nothing() {
    let (env, receiver, mut payments) = rig().await;
    let ready = placed(&env, &receiver, "MIS-1", 100).await;
    let good = paid_notify(&ready.event);
    let mut cases = Vec::new();
    for (field, value) in [
        ("total_amount", json!("101")),
        ("pay_time", json!("20200101000000")),
        ("trade_no", json!("SOMEONE-ELSES")),
    ] {
        let mut n = good.clone();
        n[field] = value;
        cases.push((field, n));
    }
    for (field, n) in &cases {
        let (status, reply) = receiver.post(&signed(n.clone(), SANDBOX_KEY)).await;
        assert_eq!((status, reply.as_str()), (200, SUCCESS), "{field}");
        let p = payments.take(1, WAIT).await.remove(0);
        assert_eq!(p.event["state"], "anomaly", "{field}: {}", p.event);
        assert_eq!(p.event["anomaly"]["kind"], "mismatch", "{field}");
        assert!(
            p.event["anomaly"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{field}: {}",
            p.event
        );
        assert_eq!(p.routing_key, "h5pay.payment.anomaly.M1");
        assert_eq!(
            state_of(&env, "MIS-1").await.as_deref(),
            Some("open"),
            "{field}"
        );
    }
    // pay_amount below total_amount (a discount) is no mismatch.
    let mut discounted = good.clone();
    discounted["pay_amount"] = json!("90");
    discounted["receipt_amount"] = json!("90");
    accepted(&receiver, discounted).await;
    let p = payments.take(1, WAIT).await.remove(0);
    assert_eq!(p.event["state"], "paid", "{}", p.event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_scenario_4023_notify_carries_another_amount_and_is_an_anomaly() {
    let (env, receiver, mut payments) = rig().await;
    placed(&env, &receiver, "MIS-4023", 4023).await;
    // Paid by itself a second after it was placed.
    let p = payments.take(1, WAIT).await.remove(0);
    assert_eq!(p.event["state"], "anomaly", "{}", p.event);
    assert_eq!(p.event["anomaly"]["kind"], "mismatch");
    assert_eq!(state_of(&env, "MIS-4023").await.as_deref(), Some("open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_for_an_unknown_payment_is_an_anomaly_answered_success() {
    let (env, receiver, mut payments) = rig().await;
    let n = json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "inst_no": "60000001",
        "mch_no": "M1", "pay_trace_no": "NEVER-SEEN", "pay_time": "20261126101500",
        "total_amount": "100", "trade_no": "T-X"});
    accepted(&receiver, n).await;
    let p = payments.take(1, WAIT).await.remove(0);
    assert_eq!(p.event["state"], "anomaly");
    assert_eq!(p.event["anomaly"]["kind"], "unknown_payment", "{}", p.event);
    assert_eq!(p.event["pay_trace_no"], "NEVER-SEEN");
    assert_eq!(
        state_of(&env, "NEVER-SEEN").await,
        None,
        "nothing stored for it"
    );
    // Not even a count of its notifies: no key at all.
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!(
            "{}:60000001:M1:NEVER-SEEN",
            env.config.settings.redis.key_prefix
        ))
        .query_async(&mut env.redis().await)
        .await
        .expect("EXISTS");
    assert!(!exists, "a key for a payment nobody placed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_is_final_and_money_wins_over_failed_and_closed() {
    let (env, receiver, mut payments) = rig().await;
    // Paid, then a late PAY_FAIL: nothing changes.
    let ready = placed(&env, &receiver, "FIN-1", 100).await;
    let paid = signed(paid_notify(&ready.event), SANDBOX_KEY);
    assert_eq!(receiver.post(&paid).await, (200, SUCCESS.to_owned()));
    assert_eq!(payments.take(1, WAIT).await[0].event["state"], "paid");
    let mut fail = paid_notify(&ready.event);
    fail["result_code"] = json!("PAY_FAIL");
    accepted(&receiver, fail).await;
    payments.none_for(Duration::from_millis(800)).await;
    assert_eq!(state_of(&env, "FIN-1").await.as_deref(), Some("paid"));

    // Failed, then paid: paid with late: true and previous: failed.
    let ready = placed(&env, &receiver, "FIN-2", 100).await;
    let mut fail = paid_notify(&ready.event);
    fail["result_code"] = json!("PAY_FAIL");
    accepted(&receiver, fail).await;
    let failed = payments.take(1, WAIT).await.remove(0);
    assert_eq!(
        (
            failed.event["state"].as_str(),
            failed.event["previous"].as_str()
        ),
        (Some("failed"), Some("open"))
    );
    let paid = signed(paid_notify(&ready.event), SANDBOX_KEY);
    assert_eq!(receiver.post(&paid).await, (200, SUCCESS.to_owned()));
    let late = payments.take(1, WAIT).await.remove(0);
    assert_eq!(late.event["state"], "paid");
    assert_eq!(late.event["late"], true);
    assert_eq!(late.event["previous"], "failed");

    // Closed (as the reconciler leaves it), then paid: late, previous closed.
    let ready = placed(&env, &receiver, "FIN-3", 100).await;
    let mut r = env.redis().await;
    let _: () = redis::cmd("HSET")
        .arg(format!(
            "{}:60000001:M1:FIN-3",
            env.config.settings.redis.key_prefix
        ))
        .arg("ps")
        .arg("closed")
        .query_async(&mut r)
        .await
        .expect("HSET");
    assert_eq!(
        receiver
            .post(&signed(paid_notify(&ready.event), SANDBOX_KEY))
            .await,
        (200, SUCCESS.to_owned())
    );
    let late = payments.take(1, WAIT).await.remove(0);
    assert_eq!(
        (
            late.event["late"].as_bool(),
            late.event["previous"].as_str()
        ),
        (Some(true), Some("closed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_or_redis_cut_a_notify_is_refused_503_and_nothing_changes_until_it_comes_again()
 {
    let env = TestEnv::new().await;
    let mut payments = env.payments().await;
    let direct = env.receiver(Via::default()).await;
    let ready = placed(&env, &direct, "CUT-1", 100).await;
    let amqp = crate::proxy::Proxy::start("127.0.0.1:5672".parse().expect("an address")).await;
    let redis = crate::proxy::Proxy::start("127.0.0.1:6379".parse().expect("an address")).await;
    let receiver = env
        .receiver(Via {
            amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp.port)),
            redis_url: Some(format!("redis://127.0.0.1:{}/0", redis.port)),
        })
        .await;
    assert!(
        receiver.connected().await,
        "the receiver reaches the broker"
    );
    let paid = signed(paid_notify(&ready.event), SANDBOX_KEY);

    amqp.cut();
    let (status, reply) = receiver.post(&paid).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(
        serde_json::from_str::<Value>(&reply).expect("json")["return_code"],
        "FAIL"
    );
    assert_eq!(
        state_of(&env, "CUT-1").await.as_deref(),
        Some("open"),
        "nothing changed"
    );
    payments.none_for(Duration::from_millis(500)).await;
    amqp.restore().await;
    assert!(receiver.connected().await, "reconnected");

    redis.cut();
    let (status, _) = receiver.post(&paid).await;
    assert_eq!(status, 503);
    assert_eq!(
        state_of(&env, "CUT-1").await.as_deref(),
        Some("open"),
        "nothing changed"
    );
    redis.restore().await;

    // The gateway sends it again: now it applies.
    let mut answered = (0, String::new());
    for _ in 0..40 {
        answered = receiver.post(&paid).await;
        if answered.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(answered, (200, SUCCESS.to_owned()));
    let p = payments.take(1, WAIT).await.remove(0);
    assert_eq!(p.event["state"], "paid");
    assert_eq!(state_of(&env, "CUT-1").await.as_deref(), Some("paid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_before_the_outcome_is_stored_still_applies_and_the_intent_still_gets_ready() {
    let (env, receiver, mut payments) = rig().await;
    let mut results = env.results().await;
    // A worker claimed the identity, called the gateway (which placed the
    // order) and died before storing the answer.
    let trace = "EARLY-1";
    let sent = json!({"pay_type": "400", "total_amount": 100, "notify_url": receiver.url,
        "correlation_id": trace});
    let body = serde_json::to_vec(&intent(trace, "M1", 100)).expect("json");
    let obj = h5pay_worker::intent::read(&body).expect("an object");
    let rules = h5pay_worker::intent::Rules {
        institutions: &env.config.institutions,
        default_mch_no: None,
        max_amount: 100_000_000,
    };
    let fp = h5pay_worker::intent::validate(&obj, rules)
        .expect("valid")
        .fingerprint();
    let sent = sent.to_string();
    let claim = h5pay_worker::claim::ClaimRequest {
        sent: &sent,
        ..crate::support::claim_request("dead-owner", &fp, "20261126080000")
    };
    let id = h5pay_worker::intent::Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: trace.into(),
    };
    let claimed = env.claim_store_with_lease(1000).claim(&id, &claim).await;
    assert!(
        matches!(claimed, Ok(h5pay_worker::claim::ClaimReply::Claimed { .. })),
        "{claimed:?}"
    );
    let request = h5pay_worker::gateway::H5PayRequest {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_type: h5pay_worker::gateway::PayType::Wechat,
        pay_trace_no: trace.into(),
        pay_time: "20261126080000".into(),
        total_amount: 100,
        open_id: None,
        notify_url: Some(receiver.url.clone()),
    };
    let answer = reqwest::Client::new()
        .post(env.gateway_url())
        .header("content-type", "application/json")
        .body(request.signed_body(&secrecy::SecretString::from(SANDBOX_KEY)))
        .send()
        .await
        .expect("the sandbox answers");
    assert!(answer.status().is_success());
    // The payer pays; the notify comes before any outcome is stored.
    env.pay("M1", trace).await;
    let p = payments.take(1, WAIT).await.remove(0);
    assert_eq!(p.event["state"], "paid", "{}", p.event);
    assert_eq!(p.event["previous"], "open");
    assert_eq!(p.event["late"], false);
    // The intent comes (again): the worker takes the claim over, sends the
    // identical request, and the intent still gets its result event.
    let _worker = env.worker_with(env.config_notifying(&receiver));
    env.publish(&body).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    assert_eq!(r.event["trade_no"], p.event["trade_no"]);
    assert_eq!(
        env.calls("M1", trace),
        2,
        "the identical request, once more"
    );
    assert_eq!(
        env.sandbox
            .stats(&Default::default())
            .identities
            .iter()
            .find(|i| i.pay_trace_no == trace)
            .map(|i| i.distinct_requests),
        Some(1)
    );
    assert_eq!(
        state_of(&env, trace).await.as_deref(),
        Some("paid"),
        "the store left it paid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_pays_by_itself_and_notifies_as_its_scenarios_say() {
    // Notifies without inst_no: the receiver's default institution.
    let env = sandbox_notifying([0, 300, 600, 1200], false).await;
    let receiver = env.receiver(Via::default()).await;
    let mut payments = env.payments().await;
    for (trace, amount) in [
        ("SELF-4020", 4020),
        ("SELF-4021", 4021),
        ("SELF-4022", 4022),
    ] {
        placed(&env, &receiver, trace, amount).await;
    }
    let mut got = Vec::new();
    while let Some(p) = payments.next(Duration::from_secs(4)).await {
        got.push((
            p.event["pay_trace_no"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            p.event["state"].as_str().unwrap_or_default().to_owned(),
            p.event["event_id"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let of = |t: &str| got.iter().filter(|g| g.0 == t).cloned().collect::<Vec<_>>();
    assert_eq!(of("SELF-4020").len(), 1, "{got:?}");
    assert_eq!(of("SELF-4020")[0].1, "paid");
    assert!(of("SELF-4021").is_empty(), "4021 never notifies: {got:?}");
    // 4022 notifies three times; one event (or the same one again).
    let ids: std::collections::HashSet<_> = of("SELF-4022").into_iter().map(|g| g.2).collect();
    assert_eq!(ids.len(), 1, "{got:?}");
    let stats = env.sandbox.stats(&Default::default());
    let sent = |t: &str| {
        stats
            .identities
            .iter()
            .find(|i| i.pay_trace_no == t)
            .map(|i| (i.paid, i.notifies_sent))
    };
    assert_eq!(sent("SELF-4020"), Some((true, 1)));
    assert_eq!(sent("SELF-4021"), Some((true, 0)));
    assert_eq!(sent("SELF-4022"), Some((true, 3)));
    assert_eq!(
        state_of(&env, "SELF-4021").await.as_deref(),
        Some("open"),
        "only a query can find 4021 out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_outcome_the_payment_and_the_notifies_but_no_key_and_no_link() {
    let (env, receiver, mut payments) = rig().await;
    let ready = placed(&env, &receiver, "INSP-1", 100).await;
    env.pay("M1", "INSP-1").await;
    payments.take(1, WAIT).await;
    let (_dir, path) = env.config_file("");
    let run = |json: bool| {
        let extra: &[&str] = if json { &["--json"] } else { &[] };
        let out = crate::support::inspect(&path, "INSP-1", extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(false);
    let code_url = ready.event["code_url"].as_str().unwrap_or_default();
    crate::support::assert_all_in(
        &text,
        &[
            "payment        paid",
            "notifies seen  1",
            "outcome        ready",
            "claim          decided",
        ],
    );
    assert!(
        text.contains(ready.event["trade_no"].as_str().unwrap_or("?")),
        "{text}"
    );
    assert!(
        !text.contains(code_url) && !text.contains(SANDBOX_KEY),
        "{text}"
    );
    let v: Value = serde_json::from_str(&run(true)).expect("one JSON object");
    assert_eq!(v["payment"]["state"], "paid");
    assert_eq!(v["outcome"]["status"], "ready");
    assert_eq!(v["notifies_seen"], 1);
    assert!(!v.to_string().contains(code_url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_sends_again_until_it_gets_exactly_the_success_reply() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let env = sandbox_notifying([0, 100, 200, 300], true).await;
    // Receivers that answer nearly right, and one that answers right.
    let hits: Arc<[AtomicU32; 4]> = Arc::new(Default::default());
    let answer = |i: usize, status: u16, body: &'static str| {
        let hits = hits.clone();
        axum::routing::post(move || {
            hits[i].fetch_add(1, Ordering::SeqCst);
            async move {
                (
                    axum::http::StatusCode::from_u16(status).unwrap_or_default(),
                    body,
                )
            }
        })
    };
    let app = axum::Router::new()
        .route("/no-msg", answer(0, 200, r#"{"return_code":"SUCCESS"}"#))
        .route("/text", answer(1, 200, "success"))
        .route("/created", answer(2, 201, SUCCESS))
        .route("/exact", answer(3, 200, SUCCESS));
    let addr = crate::support::serve(app).await;
    let mut results = env.results().await;
    let _worker = env.worker();
    for (trace, path) in [
        ("R-0", "no-msg"),
        ("R-1", "text"),
        ("R-2", "created"),
        ("R-3", "exact"),
    ] {
        let mut body = intent(trace, "M1", 100);
        body["notify_url"] = json!(format!("http://{addr}/{path}"));
        env.publish_json(&body).await;
    }
    assert_eq!(results.take(4, WAIT).await.len(), 4);
    for trace in ["R-0", "R-1", "R-2", "R-3"] {
        env.pay("M1", trace).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let counts: Vec<u32> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
    assert_eq!(
        counts,
        vec![4, 4, 4, 1],
        "every schedule slot until the exact reply"
    );
}
