//! Deduplication and the claim protocol across deliveries and workers:
//! replays, conflicts, identity scoping, store-before-publish, takeovers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use serde_json::{Value, json};

use h5pay_worker::claim::{ClaimReply, Release};
use h5pay_worker::intent::Identity;

use crate::support::{TestEnv, WAIT, claim_request, intent};

fn id(mch: &str, trace: &str) -> Identity {
    Identity {
        inst_no: "60000001".into(),
        mch_no: mch.into(),
        pay_trace_no: trace.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_intent_replays_the_stored_event_without_a_second_call() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&json!({"pay_trace_no": "D-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 100, "metadata": {"v": 1}}))
        .await;
    let first = results.take(1, WAIT).await.remove(0);
    assert_eq!(first.event["duplicate"], false);
    // Same parameters, written differently, and another correlation.
    let body = json!({"pay_trace_no": "D-1", "mch_no": "M1", "pay_type": "400", "total_amount": "100", "metadata": {"v": 2}});
    env.publish_with(
        &serde_json::to_vec(&body).unwrap_or_default(),
        BasicProperties::default().with_correlation_id("second".into()),
    )
    .await;
    let second = results.take(1, WAIT).await.remove(0);
    assert_eq!(second.event["duplicate"], true);
    assert_eq!(second.event["event_id"], first.event["event_id"]);
    for unchanged in [
        "occurred_at",
        "attempts",
        "gateway",
        "metadata",
        "code_url",
        "trade_no",
        "pay_time",
    ] {
        assert_eq!(
            second.event[unchanged], first.event[unchanged],
            "{unchanged} must be the original's"
        );
    }
    assert_eq!(
        second.props.correlation_id().as_ref().map(|c| c.as_str()),
        Some("second")
    );
    assert_eq!(env.calls("M1", "D-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_on_two_workers_make_one_gateway_call() {
    let env = TestEnv::start(crate::support::EnvOptions::gateway_latency(
        Duration::from_millis(300),
        Vec::new(),
    ))
    .await;
    let mut results = env.results().await;
    let a = env.worker();
    let b = env.worker();
    a.ready().await;
    b.ready().await;
    let body = serde_json::to_vec(&intent("CD-1", "M1", 100)).unwrap_or_default();
    let ch = env.publisher().await;
    for _ in 0..20 {
        crate::support::publish_on(
            &ch,
            &env.config.settings.amqp.intent_exchange,
            &body,
            BasicProperties::default(),
        )
        .await;
    }
    let got = results.take(20, WAIT).await;
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|r| r.event["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "one outcome, one event id");
    assert!(got.iter().all(|r| r.event["status"] == "ready"));
    assert_eq!(env.calls("M1", "CD-1"), 1, "the gateway is called once");
    results.none_for(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_parameters_for_a_known_identity_are_a_conflict() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 100, "pay_time": "20261126101500"}))
        .await;
    let first = results.take(1, WAIT).await.remove(0);
    assert_eq!(first.event["status"], "ready");
    let conflicts = [
        json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 101}),
        json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "alipay", "total_amount": 100}),
        json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 100, "open_id": "o"}),
        json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 100, "notify_url": "https://n.example/"}),
        json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 100, "pay_time": "20261126101501"}),
    ];
    for c in &conflicts {
        env.publish_json(c).await;
    }
    let got = results.take(conflicts.len(), WAIT).await;
    let mut ids = HashSet::new();
    for r in &got {
        assert_eq!(r.kind(), Some("conflict"), "{}", r.event);
        assert_eq!(
            (r.event["attempts"].as_u64(), r.event["gateway"].is_null()),
            (Some(0), true)
        );
        ids.insert(r.event["event_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        ids.len(),
        conflicts.len(),
        "a conflict's id comes from its own body"
    );
    assert!(!ids.contains(first.event["event_id"].as_str().unwrap_or_default()));
    // Without pay_time the stored one applies: a duplicate, not a conflict.
    env.publish_json(
        &json!({"pay_trace_no": "CF-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 100}),
    )
    .await;
    let dup = results.take(1, WAIT).await.remove(0);
    assert_eq!(dup.event["duplicate"], true);
    assert_eq!(env.calls("M1", "CF-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_includes_the_merchant_and_the_institution() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&intent("SAME-1", "MA", 100)).await;
    env.publish_json(&intent("SAME-1", "MB", 200)).await;
    env.publish_json(&json!({"pay_trace_no": "SAME-1", "mch_no": "MA", "pay_type": "wechat", "total_amount": 300, "inst_no": "60000002"}))
        .await;
    let got = results.take(3, WAIT).await;
    assert!(
        got.iter()
            .all(|r| r.event["status"] == "ready" && r.event["duplicate"] == false),
        "{:?}",
        got.iter().map(|r| &r.event).collect::<Vec<_>>()
    );
    assert_eq!(env.sandbox.calls("60000001", "MA", "SAME-1"), 1);
    assert_eq!(env.sandbox.calls("60000001", "MB", "SAME-1"), 1);
    assert_eq!(
        env.sandbox.calls("60000002", "MA", "SAME-1"),
        1,
        "signed with the second institution's key"
    );
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|r| r.event["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_duplicates_drop_a_replay_of_a_confirmed_outcome_is_acked_silently() {
    let env = TestEnv::with(&[("H5PAY__WORKER__DUPLICATES", "drop")]).await;
    let mut results = env.results().await;
    let worker = env.worker();
    env.publish_json(&intent("DROP-1", "M1", 100)).await;
    results.take(1, WAIT).await;
    env.publish_json(&intent("DROP-1", "M1", 100)).await;
    results.none_for(Duration::from_secs(1)).await;
    assert!(worker.stop().await.is_ok());
    assert_eq!(
        env.queue_depth(&env.config.settings.amqp.intent_queue)
            .await,
        0,
        "the duplicate was acknowledged"
    );
    assert_eq!(env.calls("M1", "DROP-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_stored_before_a_crash_is_replayed_unconfirmed_then_as_duplicate() {
    let env = TestEnv::new().await;
    let claims = env.claim_store();
    let identity = id("M1", "CRASH-1");
    // What a worker that died between "store" and "publish" leaves behind.
    let reply = claims
        .claim(
            &identity,
            &claim_request(
                "dead-worker",
                &fingerprint_of(&intent("CRASH-1", "M1", 100)),
                "20261126101500",
            ),
        )
        .await;
    assert!(matches!(reply, Ok(ClaimReply::Claimed { .. })), "{reply:?}");
    let stored = json!({"schema": "h5pay.result.v1", "event_id": "0123456789abcdef0123456789abcdef", "status": "ready",
        "inst_no": "60000001", "mch_no": "M1", "pay_trace_no": "CRASH-1", "pay_type": "400", "total_amount": 100,
        "pay_time": "20261126101500", "trade_no": "T-OLD", "code_url": "https://pay.example/old", "jsapi": null,
        "ali_trade_no": null, "gateway": {"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "return_msg": "ok", "http_status": 200},
        "error": null, "attempts": 1, "duplicate": false, "metadata": null, "occurred_at": "2026-11-26T01:02:03.004Z"});
    assert!(matches!(
        claims
            .store(
                &identity,
                "dead-worker",
                &outcome(stored.to_string().as_bytes())
            )
            .await,
        Ok(true)
    ));

    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&intent("CRASH-1", "M1", 100)).await;
    let r = results.take(1, WAIT).await.remove(0);
    let mut expected = stored.clone();
    expected["duplicate"] = json!(false);
    assert_eq!(
        r.event, expected,
        "the stored event, unchanged, and not a duplicate: it was never confirmed"
    );
    assert_eq!(env.calls("M1", "CRASH-1"), 0, "no second gateway call");
    env.publish_json(&intent("CRASH-1", "M1", 100)).await;
    let again = results.take(1, WAIT).await.remove(0);
    assert_eq!(again.event["duplicate"], true, "now it was confirmed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_fails_after_the_store_is_replayed_after_the_reconnect() {
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    let worker = env.worker();
    worker.ready().await;
    // Break the path between "stored" and "published": the result exchange
    // disappears, so the publish fails with a channel error.
    env.delete_exchange(&a.result_exchange).await;
    env.publish_json(&intent("SBP-1", "M1", 100)).await;
    // The worker reconnects, declares the exchange again, gets the intent
    // again and replays the stored outcome. No consumer is bound to the new
    // exchange, so the event lands in the unrouted queue.
    let unrouted = a.unrouted_exchange();
    let m = env
        .get_within(&unrouted)
        .await
        .unwrap_or_else(|| panic!("no result after the reconnect"));
    let event: Value = serde_json::from_slice(&m.delivery.data).unwrap_or_default();
    assert_eq!(event["pay_trace_no"], "SBP-1");
    assert_eq!(event["status"], "ready");
    assert_eq!(
        event["duplicate"], false,
        "the first publish was never confirmed"
    );
    assert_eq!(
        env.calls("M1", "SBP-1"),
        1,
        "the stored outcome was replayed, not fetched again"
    );
    assert!(worker.stop().await.is_ok());
    assert_eq!(env.queue_depth(&a.intent_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_owner_whose_lease_was_taken_over_cannot_overwrite_the_new_outcome() {
    let env = TestEnv::new().await;
    let claims = env.claim_store_with_lease(300);
    let identity = id("M1", "STALL-1");
    let fp = fingerprint_of(&intent("STALL-1", "M1", 100));
    let first = claims
        .claim(&identity, &claim_request("owner-a", &fp, "20261126000000"))
        .await;
    assert!(
        matches!(
            first,
            Ok(ClaimReply::Claimed {
                takeover: false,
                ..
            })
        ),
        "{first:?}"
    );
    let live = claims
        .claim(&identity, &claim_request("owner-b", &fp, "20261126999999"))
        .await;
    assert!(
        matches!(live, Ok(ClaimReply::Wait { .. })),
        "a live lease makes others wait: {live:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    match claims
        .claim(&identity, &claim_request("owner-b", &fp, "20261126999999"))
        .await
    {
        Ok(ClaimReply::Claimed {
            pay_time, takeover, ..
        }) => {
            assert!(takeover);
            assert_eq!(
                pay_time, "20261126000000",
                "a takeover reuses the first pay_time"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        claims.renew(&identity, "owner-a").await,
        Ok(false)
    ));
    assert!(
        matches!(
            claims
                .store(&identity, "owner-a", &outcome(b"{\"stale\":true}"))
                .await,
            Ok(false)
        ),
        "the stalled owner must lose"
    );
    assert!(matches!(
        claims.release(&identity, "owner-a", Release::Forget).await,
        Ok(false)
    ));
    assert!(matches!(
        claims
            .store(&identity, "owner-b", &outcome(b"{\"fresh\":true}"))
            .await,
        Ok(true)
    ));
    match claims
        .claim(&identity, &claim_request("owner-c", &fp, "x"))
        .await
    {
        Ok(ClaimReply::Done { event, confirmed }) => {
            assert_eq!(event, "{\"fresh\":true}");
            assert!(!confirmed);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(claims.mark_confirmed(&identity).await, Ok(true)));
    assert!(
        matches!(claims.mark_confirmed(&identity).await, Ok(false)),
        "already marked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_a_dead_owners_lease_then_takes_over_with_the_same_pay_time() {
    let env = TestEnv::new().await;
    // A worker claimed it and died before calling (or while calling).
    claimed_by_a_dead_owner(&env, "TAKE-1", 100, 1500).await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&intent("TAKE-1", "M1", 100)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready");
    assert_eq!(
        r.event["pay_time"], "20261126080000",
        "the takeover sends the identity's first pay_time"
    );
    assert_eq!(env.calls("M1", "TAKE-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_a_takeover_is_outcome_unknown_not_a_clean_rejection() {
    let env = TestEnv::new().await;
    // The earlier owner may have sent the request before it died.
    claimed_by_a_dead_owner(&env, "TAKE-4003", 4003, 500).await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&intent("TAKE-4003", "M1", 4003)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.kind(), Some("outcome_unknown"), "{}", r.event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_twenty_percent_duplicates_call_each_identity_once() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let a = env.worker();
    let b = env.worker();
    a.ready().await;
    b.ready().await;
    let unique = 200;
    let mut bodies: Vec<(String, Vec<u8>)> = (0..unique)
        .map(|i| {
            let t = format!("TW-{i}");
            let b = serde_json::to_vec(&intent(&t, "M1", 100)).unwrap_or_default();
            (t, b)
        })
        .collect();
    let dups: Vec<(String, Vec<u8>)> = bodies.iter().step_by(5).cloned().collect();
    bodies.extend(dups);
    let total = bodies.len();
    // Two publishers at once.
    let (left, right) = bodies.split_at(total / 2);
    let exchange = env.config.settings.amqp.intent_exchange.clone();
    let (ch1, ch2) = (env.publisher().await, env.publisher().await);
    let p1 = async {
        for (_, b) in left {
            crate::support::publish_on(&ch1, &exchange, b, BasicProperties::default()).await;
        }
    };
    let p2 = async {
        for (_, b) in right.iter().rev() {
            crate::support::publish_on(&ch2, &exchange, b, BasicProperties::default()).await;
        }
    };
    tokio::join!(p1, p2);
    let got = results.take(total, Duration::from_secs(60)).await;
    let mut per_trace: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &got {
        assert_eq!(r.event["status"], "ready");
        per_trace
            .entry(
                r.event["pay_trace_no"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default()
            .insert(r.event["event_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(per_trace.len(), unique);
    for (t, ids) in &per_trace {
        assert_eq!(ids.len(), 1, "{t}: one event id");
        assert_eq!(env.calls("M1", t), 1, "{t}: one gateway call");
    }
    let stats = env.sandbox.stats(&Default::default());
    assert!(stats.identities.iter().all(|i| i.distinct_requests == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_arguments_stops_the_worker_with_a_clear_error() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.settings.amqp.intent_queue = format!("h5pay-test-{}.mismatch", env.id);
    let ch = env.conn.create_channel().await.expect("a channel");
    ch.queue_declare(
        config.settings.amqp.intent_queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .expect("queue declared");
    let mut worker = env.worker_with(config.clone());
    let err = match tokio::time::timeout(Duration::from_secs(10), &mut worker.task).await {
        Ok(Ok(Err(e))) => e.to_string(),
        other => panic!("expected a topology error, got {other:?}"),
    };
    assert!(
        err.contains(&format!("queue '{}'", config.settings.amqp.intent_queue)),
        "{err}"
    );
    assert!(
        err.contains("x-queue-type") || err.contains("inequivalent"),
        "{err}"
    );
    let ch = env.conn.create_channel().await.expect("a channel");
    let _ = ch
        .queue_delete(
            config.settings.amqp.intent_queue.as_str().into(),
            Default::default(),
        )
        .await;
}

/// Leaves a claim on (60000001, M1, trace) by an owner that never comes
/// back, with pay_time 20261126080000 and a lease of `lease_ms`.
async fn claimed_by_a_dead_owner(env: &TestEnv, trace: &str, amount: u64, lease_ms: u64) {
    let fp = fingerprint_of(&intent(trace, "M1", amount));
    let reply = env
        .claim_store_with_lease(lease_ms)
        .claim(
            &id("M1", trace),
            &claim_request("dead-owner", &fp, "20261126080000"),
        )
        .await;
    assert!(matches!(reply, Ok(ClaimReply::Claimed { .. })), "{reply:?}");
}

/// An outcome to store directly (not followed).
fn outcome(event: &[u8]) -> h5pay_worker::claim::StoredOutcome<'_> {
    h5pay_worker::claim::StoredOutcome {
        event,
        followed: false,
        trade_no: None,
        first_check: None,
    }
}

fn fingerprint_of(v: &Value) -> String {
    let inst = h5pay_worker::keys::Institutions::from_pairs([(
        "60000001".to_owned(),
        secrecy::SecretString::from("k"),
    )])
    .unwrap_or_else(|| unreachable!());
    let body = serde_json::to_vec(v).expect("a JSON value serialises");
    let obj = h5pay_worker::intent::read(&body).expect("an intent object");
    h5pay_worker::intent::validate(
        &obj,
        h5pay_worker::intent::Rules {
            institutions: &inst,
            default_mch_no: None,
            max_amount: 100_000_000,
        },
    )
    .map(|i| i.fingerprint())
    .unwrap_or_else(|e| panic!("{}", e.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_vanishes_mid_call_still_remembers_the_first_attempt() {
    // Contract §5.6: the claim disappears while the first call hangs at the
    // gateway (a failover that lost it); the worker claims again and calls
    // again; the gateway refuses the second call as a duplicate. The order
    // exists, so that refusal is outcome_unknown, never gateway_rejected.
    let env = crate::support::TestEnv::start(crate::support::EnvOptions::gateway_hangs(vec![
        ("H5PAY__REDIS__LEASE_MS", "5000".into()),
        ("H5PAY__GATEWAY__REQUEST_TIMEOUT_MS", "4000".into()),
    ]))
    .await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&intent("V-4028", "M1", 4028)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.calls("M1", "V-4028") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = env.claim_store().key(&id("M1", "V-4028"));
    let mut r = env.redis().await;
    let removed: u64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut r)
        .await
        .expect("DEL");
    assert_eq!(removed, 1, "the claim existed while the call hung");
    let result = results.next(WAIT + WAIT).await.expect("a result event");
    assert_eq!(env.calls("M1", "V-4028"), 2, "{}", result.event);
    assert_eq!(result.event["status"], "failed", "{}", result.event);
    assert_eq!(
        result.event["error"]["kind"], "outcome_unknown",
        "a duplicate refusal after an attempt that may have reached the gateway: {}",
        result.event
    );
    // And the claim taken again remembers it for any later owner.
    let reached: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("rg")
        .query_async(&mut r)
        .await
        .expect("HGET");
    assert_eq!(reached.as_deref(), Some("1"));
}
