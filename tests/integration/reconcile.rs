//! The reconciler (contract §10, §12) over real RabbitMQ, Redis and HTTP:
//! checks a second or two after pay_time, queries, closes, gives up, and
//! stays safe across replicas and dead checks.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{EnvOptions, Received, SANDBOX_KEY, TestEnv, WAIT, intent};

/// A schedule of seconds: checks 1 and 2 s after pay_time, then every
/// second; unpaid orders closed after 3 + 1 s; given up after 30 s.
const FAST: [(&str, &str); 4] = [
    ("H5PAY__RECONCILE__CHECK_AFTER_SECS", "1,2"),
    ("H5PAY__RECONCILE__ORDER_TTL_SECS", "3"),
    ("H5PAY__RECONCILE__CLOSE_GRACE_SECS", "1"),
    ("H5PAY__RECONCILE__MAX_AGE_SECS", "30"),
];

/// Long enough for a check two seconds away, a close and its query.
const LIFECYCLE: Duration = Duration::from_secs(15);

async fn fast_env(extra: &[(&'static str, &str)]) -> TestEnv {
    let mut all: Vec<(&'static str, &str)> = FAST.to_vec();
    all.extend_from_slice(extra);
    TestEnv::with(&all).await
}

/// Publishes an intent and waits for its result event.
async fn place(
    env: &TestEnv,
    results: &mut crate::support::Results,
    trace: &str,
    amount: u64,
) -> Received {
    env.publish_json(&intent(trace, "M1", amount)).await;
    results.next_for(trace, WAIT).await
}

/// Payment events until one for `trace` says `state` (others are kept).
async fn until_state(
    payments: &mut crate::support::Results,
    seen: &mut Vec<Received>,
    trace: &str,
    state: &str,
) -> Received {
    if let Some(p) = seen
        .iter()
        .find(|p| p.event["pay_trace_no"] == trace && p.event["state"] == state)
    {
        return p.clone();
    }
    let deadline = tokio::time::Instant::now() + LIFECYCLE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let p = payments
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no {state} event for {trace}; seen: {:?}", events_of(seen)));
        seen.push(p.clone());
        if p.event["pay_trace_no"] == trace && p.event["state"] == state {
            return p;
        }
    }
}

fn events_of(seen: &[Received]) -> Vec<String> {
    seen.iter()
        .map(|p| format!("{}:{}", p.event["pay_trace_no"], p.event["state"]))
        .collect()
}

fn m1(trace: &str) -> h5pay_worker::intent::Identity {
    h5pay_worker::intent::Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: trace.into(),
    }
}

async fn next_check(env: &TestEnv, trace: &str) -> Option<f64> {
    let mut r = env.redis().await;
    let checks = env.checks_store();
    redis::cmd("ZSCORE")
        .arg(checks.key_of(&m1(trace)))
        .arg(format!("60000001:M1:{trace}"))
        .query_async(&mut r)
        .await
        .expect("ZSCORE")
}

/// Whether the payment's checks end within two seconds (the last check
/// removes its schedule just after its event is confirmed).
async fn unscheduled_soon(env: &TestEnv, trace: &str) -> bool {
    for _ in 0..20 {
        if next_check(env, trace).await.is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_notify_never_comes_is_found_paid_by_a_query_in_either_answer_shape() {
    for shape in [
        h5pay_worker::sandbox::QueryShape::ResultCode,
        h5pay_worker::sandbox::QueryShape::TradeState,
    ] {
        let env = TestEnv::start(EnvOptions {
            overrides: FAST.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            sandbox: h5pay_worker::sandbox::SandboxOptions {
                query_shape: shape,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let mut results = env.results().await;
        let mut payments = env.payments().await;
        let _worker = env.worker();
        // 4021: paid by itself a second after it was placed, no notify.
        let ready = place(&env, &mut results, "Q-4021", 4021).await;
        assert!(
            next_check(&env, "Q-4021").await.is_some(),
            "the first check is scheduled before the ack"
        );
        let paid = until_state(&mut payments, &mut Vec::new(), "Q-4021", "paid").await;
        let e = &paid.event;
        assert_eq!(e["source"], "query", "{shape:?}: {e}");
        assert_eq!(e["trade_no"], ready.event["trade_no"]);
        assert_eq!(
            (e["late"].as_bool(), e["previous"].as_str()),
            (Some(false), Some("open"))
        );
        assert!(
            e["paid_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{e}"
        );
        assert_eq!(e["metadata"], ready.event["metadata"]);
        assert_eq!(paid.props.correlation_id(), ready.props.correlation_id());
        assert_eq!(env.payment_state("Q-4021").await.as_deref(), Some("paid"));
        let order = env.sandbox_order("Q-4021").expect("the sandbox knows it");
        assert!(order.queries >= 1 && order.notifies_sent == 0, "{order:?}");
        // A final payment has no more checks.
        assert!(unscheduled_soon(&env, "Q-4021").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_says_the_payment_failed_ends_it_failed() {
    let env = fast_env(&[]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    place(&env, &mut results, "Q-4024", 4024).await;
    let failed = until_state(&mut payments, &mut Vec::new(), "Q-4024", "failed").await;
    assert_eq!(failed.event["source"], "query");
    assert_eq!(failed.event["previous"], "open");
    assert_eq!(env.payment_state("Q-4024").await.as_deref(), Some("failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_left_unpaid_is_closed_then_a_query_confirms_it_and_it_can_no_longer_be_paid() {
    let env = fast_env(&[]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    let ready = place(&env, &mut results, "C-1", 100).await;
    // In process too: an order exists, with a trade_no, and is closed.
    place(&env, &mut results, "C-4002", 4002).await;
    let mut seen = Vec::new();
    for trace in ["C-1", "C-4002"] {
        let closed = until_state(&mut payments, &mut seen, trace, "closed").await;
        assert_eq!(closed.event["source"], "close", "{}", closed.event);
        assert_eq!(closed.event["previous"], "open");
        let order = env.sandbox_order(trace).expect("known");
        assert!(order.closed && order.closes == 1, "{order:?}");
        assert_eq!(order.close_trace_nos.len(), 1);
        assert!(
            order.queries >= 2,
            "queried before and after the close: {order:?}"
        );
    }
    assert_eq!(
        seen.iter().filter(|p| p.event["state"] != "closed").count(),
        0,
        "{:?}",
        events_of(&seen)
    );
    assert_eq!(closed_trade_no(&seen, "C-1"), ready.event["trade_no"]);
    // The buyer comes back too late: the order cannot be paid.
    let answer = reqwest::Client::new()
        .post(format!("http://{}/sandbox/pay", env.sandbox_addr))
        .header("content-type", "application/json")
        .body(json!({"mch_no": "M1", "pay_trace_no": "C-1"}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 409);
}

fn closed_trade_no(seen: &[Received], trace: &str) -> Value {
    seen.iter()
        .find(|p| p.event["pay_trace_no"] == trace)
        .map(|p| p.event["trade_no"].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_fails_is_sent_again_with_the_same_close_trace_no_and_time() {
    let env = fast_env(&[]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    place(&env, &mut results, "C-4025", 4025).await;
    until_state(&mut payments, &mut Vec::new(), "C-4025", "closed").await;
    let order = env.sandbox_order("C-4025").expect("known");
    assert_eq!(order.closes, 2, "refused once, then closed: {order:?}");
    assert_eq!(
        order.close_trace_nos.len(),
        1,
        "one close_trace_no for every call: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_unknown_payment_learns_its_trade_no_from_a_query_and_is_closed() {
    let env = fast_env(&[]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    // 4026: the order is placed but its answer lost; the retry is refused.
    let r = place(&env, &mut results, "U-4026", 4026).await;
    assert_eq!(r.kind(), Some("outcome_unknown"), "{}", r.event);
    assert_eq!(r.event["trade_no"], Value::Null);
    let closed = until_state(&mut payments, &mut Vec::new(), "U-4026", "closed").await;
    let order = env.sandbox_order("U-4026").expect("known");
    assert_eq!(
        closed.event["trade_no"].as_str(),
        order.trade_no.as_deref(),
        "learned from the query"
    );
    assert!(
        order.closed && order.close_trace_nos.len() == 1,
        "{order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_still_open_at_max_age_is_unresolved_and_inspect_says_why() {
    let env = fast_env(&[
        ("H5PAY__RECONCILE__CLOSE_UNPAID", "false"),
        ("H5PAY__RECONCILE__MAX_AGE_SECS", "4"),
    ])
    .await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    place(&env, &mut results, "G-1", 100).await;
    let unresolved = until_state(&mut payments, &mut Vec::new(), "G-1", "unresolved").await;
    assert_eq!(unresolved.event["source"], "query");
    assert_eq!(unresolved.event["previous"], "open");
    let order = env.sandbox_order("G-1").expect("known");
    assert_eq!(order.closes, 0, "close_unpaid is off");
    assert!(
        order.queries >= 2,
        "queried on schedule, and one last time: {order:?}"
    );
    assert!(unscheduled_soon(&env, "G-1").await, "no more checks");
    let (_dir, path) = env.config_file("");
    let out = crate::support::inspect(&path, "G-1", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    crate::support::assert_all_in(
        &text,
        &[
            "payment        unresolved",
            "last check     unresolved",
            "give_up",
            "why",
        ],
    );
    assert!(!text.contains(SANDBOX_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_contradicts_itself_is_an_anomaly_and_the_payment_stays_open() {
    let env = fast_env(&[("H5PAY__RECONCILE__CLOSE_UNPAID", "false")]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    place(&env, &mut results, "X-4027", 4027).await;
    let a = until_state(&mut payments, &mut Vec::new(), "X-4027", "anomaly").await;
    assert_eq!(a.event["anomaly"]["kind"], "contradiction", "{}", a.event);
    assert_eq!(a.event["source"], "query");
    assert_eq!(env.payment_state("X-4027").await.as_deref(), Some("open"));
    assert!(
        next_check(&env, "X-4027").await.is_some(),
        "still checked on schedule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_that_does_not_match_brings_the_query_forward() {
    // Checks far off: only the mismatch can bring one now.
    let env = TestEnv::new().await;
    let receiver = env.receiver(crate::support::Via::default()).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker_with(env.config_notifying(&receiver));
    // 4023 pays by itself and notifies another total_amount.
    place(&env, &mut results, "M-4023", 4023).await;
    let mut seen = Vec::new();
    let anomaly = until_state(&mut payments, &mut seen, "M-4023", "anomaly").await;
    assert_eq!(anomaly.event["anomaly"]["kind"], "mismatch");
    let paid = until_state(&mut payments, &mut seen, "M-4023", "paid").await;
    assert_eq!(paid.event["source"], "query", "the query found the truth");
    assert_eq!(paid.event["total_amount"], 4023);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_is_idempotent_and_a_replay_schedules_what_a_crash_lost() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let ready = place(&env, &mut results, "S-1", 100).await;
    let first = next_check(&env, "S-1").await.expect("scheduled");
    // Due check_after_secs[0] (600 s) after the order was placed: when
    // its outcome was decided (contract §12), never the pay_time.
    let placed = chrono::DateTime::parse_from_rfc3339(
        ready.event["occurred_at"].as_str().unwrap_or_default(),
    )
    .expect("an occurred_at")
    .timestamp_millis();
    assert_eq!(first as i64, placed + 600_000);
    // A replay does not move it.
    place(&env, &mut results, "S-1", 100).await;
    assert_eq!(next_check(&env, "S-1").await, Some(first));
    // Nor a check the reconciler has moved since (as a check reschedules).
    let mut r = env.redis().await;
    let moved = first + 240_000.0;
    let _: i64 = redis::cmd("ZADD")
        .arg(env.checks_store().key_of(&m1("S-1")))
        .arg(moved)
        .arg("60000001:M1:S-1")
        .query_async(&mut r)
        .await
        .expect("ZADD");
    place(&env, &mut results, "S-1", 100).await;
    assert_eq!(
        next_check(&env, "S-1").await,
        Some(moved),
        "a replay moved a rescheduled check back to the first point"
    );
    // As if the schedule had been lost (the worker of an earlier version
    // died between the store and the schedule).
    let _: i64 = redis::cmd("ZREM")
        .arg(env.checks_store().key_of(&m1("S-1")))
        .arg("60000001:M1:S-1")
        .query_async(&mut r)
        .await
        .expect("ZREM");
    place(&env, &mut results, "S-1", 100).await;
    assert_eq!(
        next_check(&env, "S-1").await,
        Some(first),
        "the replay scheduled it again"
    );
    // Outcomes that are not followed get no checks.
    place(&env, &mut results, "S-4001", 4001).await;
    assert_eq!(next_check(&env, "S-4001").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_whose_replica_died_mid_check_runs_again_after_the_lease() {
    // A replica "picks up" the check and takes the identity's lease, then
    // dies: nothing releases either.
    let env = fast_env(&[("H5PAY__RECONCILE__ENABLED", "false")]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let placing = env.worker();
    place(&env, &mut results, "D-4021", 4021).await;
    drop(placing);
    // The worker above did not schedule (reconciler off): schedule now.
    let checks = env.checks_store();
    let id = h5pay_worker::intent::Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: "D-4021".into(),
    };
    checks.schedule(&id, 0).await.expect("scheduled");
    let lease_ms = env.config.settings.redis.lease_ms;
    let (_, picked) = checks.due(10, lease_ms).await.expect("picked up");
    assert_eq!(picked.len(), 1);
    let dead = h5pay_worker::claim::new_token();
    assert_eq!(
        checks.lease(&id, &dead, lease_ms).await.expect("leased"),
        h5pay_worker::reconcile::store::Lease::Taken
    );
    // Due again at once (as a notify that does not match makes it): only
    // the dead check's hold on the identity keeps the next one waiting.
    checks.bring_forward(&id, 0).await.expect("due again");
    let started = tokio::time::Instant::now();
    let mut config = env.config.clone();
    config.settings.reconcile.enabled = true;
    let _worker = env.worker_with(config);
    let paid = until_state(&mut payments, &mut Vec::new(), "D-4021", "paid").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(lease_ms - 1000),
        "ran before the lease was over: {waited:?}"
    );
    assert_eq!(paid.event["source"], "query");
    assert_eq!(env.sandbox_order("D-4021").map(|o| o.max_overlap), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_query_one_payment_at_once_and_each_state_is_one_event() {
    // Slow answers: overlapping checks would show.
    let fast = FAST.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let env = TestEnv::start(EnvOptions::gateway_latency(
        Duration::from_millis(300),
        fast,
    ))
    .await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let a = env.worker();
    let b = env.worker();
    a.ready().await;
    b.ready().await;
    let traces: Vec<String> = (0..24).map(|i| format!("R2-{i}")).collect();
    for (i, t) in traces.iter().enumerate() {
        // Half pay by themselves without a notify, half stay unpaid and are closed.
        let amount = if i % 2 == 0 { 4021 } else { 100 };
        env.publish_json(&intent(t, "M1", amount)).await;
    }
    assert_eq!(results.take(traces.len(), WAIT).await.len(), traces.len());
    // Checks brought forward again and again while others run (as notifies
    // that do not match do): only the identity's lease keeps two checks of
    // one payment apart.
    let checks = env.checks_store();
    let ids: Vec<h5pay_worker::intent::Identity> = traces
        .iter()
        .map(|t| h5pay_worker::intent::Identity {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_trace_no: t.clone(),
        })
        .collect();
    let nagging = tokio::spawn(async move {
        for _ in 0..60 {
            let now = chrono::Utc::now().timestamp_millis();
            for id in &ids {
                let _ = checks.bring_forward(id, now).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut by_trace: HashMap<String, HashSet<(String, String)>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while by_trace.len() < traces.len() && tokio::time::Instant::now() < deadline {
        if let Some(p) = payments.next(Duration::from_secs(2)).await {
            by_trace
                .entry(
                    p.event["pay_trace_no"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_default()
                .insert((
                    p.event["state"].as_str().unwrap_or_default().to_owned(),
                    p.event["event_id"].as_str().unwrap_or_default().to_owned(),
                ));
        }
    }
    let _ = nagging.await;
    payments.none_for(Duration::from_millis(1500)).await;
    for (i, t) in traces.iter().enumerate() {
        let events = by_trace.get(t).cloned().unwrap_or_default();
        let want = if i % 2 == 0 { "paid" } else { "closed" };
        assert_eq!(events.len(), 1, "{t}: one event: {events:?}");
        assert!(events.iter().all(|(s, _)| s == want), "{t}: {events:?}");
        let order = env.sandbox_order(t).expect("known");
        assert_eq!(order.max_overlap, 1, "{t}: two checks at once: {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_racing_a_query_makes_one_paid_event() {
    let env = fast_env(&[("H5PAY__RECONCILE__CHECK_AFTER_SECS", "1")]).await;
    let receiver = env.receiver(crate::support::Via::default()).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker_with(env.config_notifying(&receiver));
    let traces: Vec<String> = (0..10).map(|i| format!("RACE-{i}")).collect();
    for t in &traces {
        place(&env, &mut results, t, 100).await;
    }
    // Paid around the time the checks fall due: notify and query race.
    for t in &traces {
        env.pay("M1", t).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    while let Some(p) = payments.next(Duration::from_secs(4)).await {
        assert_eq!(p.event["state"], "paid", "{}", p.event);
        ids.entry(
            p.event["pay_trace_no"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
        .or_default()
        .insert(p.event["event_id"].as_str().unwrap_or_default().to_owned());
    }
    for t in &traces {
        assert_eq!(ids.get(t).map(HashSet::len), Some(1), "{t}: {ids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_a_gateway_outage_leave_the_payment_open_until_the_gateway_answers() {
    let mut env = fast_env(&[]).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker();
    place(&env, &mut results, "O-4021", 4021).await;
    env.stop_sandbox().await;
    // Checks fall due and find no gateway: the payment stays open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.payment_state("O-4021").await.as_deref(), Some("open"));
    assert!(next_check(&env, "O-4021").await.is_some());
    env.restart_sandbox().await;
    let paid = until_state(&mut payments, &mut Vec::new(), "O-4021", "paid").await;
    assert_eq!(paid.event["source"], "query");
}

/// Contract §10 rule 7: a worker stores a transition, the broker hangs
/// while it publishes the event, and the process is killed (-9) before the
/// confirm. The next check publishes that event before anything else, so
/// a payment only queries can follow is never silenced.
async fn an_unconfirmed_transition_survives_a_kill(
    amount: u64,
    state: &str,
    schedule: &[(&'static str, &'static str)],
) {
    let mut all: Vec<(&'static str, &str)> = FAST.to_vec();
    all.extend_from_slice(schedule);
    let env = TestEnv::with(&all).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let amqp = crate::proxy::Proxy::start("127.0.0.1:5672".parse().expect("an address")).await;
    let (_dir, path) = env.config_file("");
    let mut child_env: HashMap<&str, &str> = all.iter().copied().collect();
    let via_proxy = format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp.port);
    child_env.insert("H5PAY__AMQP__URL", &via_proxy);
    let child_env: Vec<(&str, &str)> = child_env.into_iter().collect();
    let admin = crate::net::free_port().expect("a free port");
    let mut child = crate::cli::spawn_run(&path, admin, &child_env, std::process::Stdio::null());
    assert!(crate::cli::wait_ready(admin).await, "worker not ready");
    let trace = format!("K-{amount}-{state}");
    place(&env, &mut results, &trace, amount).await;
    // The broker hangs from now on: the check's event is never confirmed.
    amqp.stall();
    let key = env.claim_store().key(&h5pay_worker::intent::Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: trace.clone(),
    });
    let mut r = env.redis().await;
    let deadline = tokio::time::Instant::now() + LIFECYCLE;
    loop {
        let f: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(&["ps", "pc"])
            .query_async(&mut r)
            .await
            .expect("HMGET");
        if f.first().cloned().flatten().as_deref() == Some(state)
            && f.get(1).cloned().flatten().as_deref() == Some("0")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stored {state} with its event unconfirmed: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    // What the stalled broker held is dropped with the proxy, never sent.
    drop(amqp);
    if let Some(p) = payments.next(Duration::from_millis(300)).await {
        assert!(
            p.event["pay_trace_no"] != trace.as_str(),
            "an event was published before the kill: {}",
            p.event
        );
    }
    let _worker = env.worker();
    let p = until_state(&mut payments, &mut Vec::new(), &trace, state).await;
    assert_eq!(p.event["pay_trace_no"], trace.as_str());
    assert!(unscheduled_soon(&env, &trace).await, "checks go on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_found_by_a_query_reaches_the_broker_after_a_kill_before_its_confirm() {
    an_unconfirmed_transition_survives_a_kill(4021, "paid", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reaches_the_broker_after_a_kill_before_its_confirm() {
    an_unconfirmed_transition_survives_a_kill(4024, "failed", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_reaches_the_broker_after_a_kill_before_its_confirm() {
    an_unconfirmed_transition_survives_a_kill(100, "closed", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_reaches_the_broker_after_a_kill_before_its_confirm() {
    an_unconfirmed_transition_survives_a_kill(
        100,
        "unresolved",
        &[
            ("H5PAY__RECONCILE__ORDER_TTL_SECS", "600"),
            ("H5PAY__RECONCILE__MAX_AGE_SECS", "3"),
        ],
    )
    .await;
}

/// A queryorder endpoint that takes `hold` to answer 503, counting the
/// requests it holds at once: (in flight, most in flight, all).
async fn counting_query_endpoint(
    hold: Duration,
) -> (String, std::sync::Arc<[std::sync::atomic::AtomicUsize; 3]>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let counts = std::sync::Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let seen = counts.clone();
    let app = axum::Router::new().route(
        "/slow/queryorder",
        axum::routing::post(move || {
            let c = seen.clone();
            async move {
                let now = c[0].fetch_add(1, Ordering::SeqCst) + 1;
                c[1].fetch_max(now, Ordering::SeqCst);
                c[2].fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                c[0].fetch_sub(1, Ordering::SeqCst);
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }),
    );
    let addr = crate::support::serve(app).await;
    (format!("http://{addr}/slow/queryorder"), counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_runs_at_most_reconcile_concurrency_checks_at_once_at_the_set_query_url() {
    use std::sync::atomic::Ordering;
    // One attempt per query: a check holds its slot for one slow answer.
    let env = fast_env(&[("H5PAY__RETRY__MAX_ATTEMPTS", "1")]).await;
    let (query_url, counts) = counting_query_endpoint(Duration::from_millis(500)).await;
    let mut config = env.config.clone();
    config.settings.reconcile.concurrency = 2;
    config.settings.gateway.query_url = query_url;
    let mut results = env.results().await;
    let worker = env.worker_with(config);
    worker.ready().await;
    let n = 6;
    for i in 0..n {
        place(&env, &mut results, &format!("CONC-{i}"), 100).await;
    }
    // Every payment's first check comes due a second after it was placed.
    let deadline = tokio::time::Instant::now() + LIFECYCLE;
    while counts[2].load(Ordering::SeqCst) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        counts[2].load(Ordering::SeqCst) >= n,
        "{} queries reached the set query_url",
        counts[2].load(Ordering::SeqCst)
    );
    assert_eq!(
        counts[1].load(Ordering::SeqCst),
        2,
        "at most reconcile.concurrency queries at once, and that many while checks wait"
    );
    assert!(worker.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_checks_are_spread_over_shards_and_the_earlier_single_key_is_still_drained() {
    // Contract §14: reconcile.schedule_shards keys (4 here); the one key of
    // earlier versions is drained too, so an upgrade loses no check.
    let env = fast_env(&[
        ("H5PAY__RECONCILE__SCHEDULE_SHARDS", "4"),
        ("H5PAY__RECONCILE__ENABLED", "false"),
    ])
    .await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let placing = env.worker();
    let traces: Vec<String> = (0..8).map(|i| format!("SH-{i}")).collect();
    for t in &traces {
        place(&env, &mut results, t, 4021).await;
    }
    drop(placing);
    let checks = env.checks_store();
    assert_eq!(checks.keys().len(), 5, "4 shards and the earlier key");
    let mut r = env.redis().await;
    let mut used = HashSet::new();
    for t in &traces[..7] {
        let key = checks.key_of(&m1(t)).to_owned();
        let _: i64 = redis::cmd("ZADD")
            .arg(&key)
            .arg(0)
            .arg(format!("60000001:M1:{t}"))
            .query_async(&mut r)
            .await
            .expect("ZADD");
        used.insert(key);
    }
    assert!(used.len() >= 2, "spread over shards: {used:?}");
    // The last one as an earlier version scheduled it.
    let legacy = format!("{}:checks", env.config.settings.redis.key_prefix);
    assert!(!used.contains(&legacy));
    let _: i64 = redis::cmd("ZADD")
        .arg(&legacy)
        .arg(0)
        .arg("60000001:M1:SH-7")
        .query_async(&mut r)
        .await
        .expect("ZADD");
    let mut config = env.config.clone();
    config.settings.reconcile.enabled = true;
    let _worker = env.worker_with(config);
    let mut seen = Vec::new();
    for t in &traces {
        until_state(&mut payments, &mut seen, t, "paid").await;
    }
    // Each check removes itself just after its event is confirmed.
    for key in checks.keys() {
        let mut left = 1u64;
        for _ in 0..200 {
            left = redis::cmd("ZCARD")
                .arg(key)
                .query_async(&mut r)
                .await
                .expect("ZCARD");
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "{key} still holds checks of final payments");
    }
}
