//! The fault suite: the real `h5pay-worker` binary as separate processes,
//! faults injected with our own TCP proxies, vhost-scoped
//! `rabbitmqctl close_all_connections`, and signals. Each scenario checks
//! the contract's promises — no intent lost, no identity sent two different
//! requests, one outcome per identity, no second gateway call after an
//! outcome is known — and appends its figures to
//! `target/chaos-report.jsonl` (see RELIABILITY.md).
//!
//! `cargo test --test chaos` runs the short version (CI);
//! `make chaos` (H5PAY_CHAOS_FULL=1) the full one: 2000 intents, 10 s
//! broker/Redis outages, a 30 s gateway outage.

mod harness;
#[path = "../common/net.rs"]
mod net;
#[path = "../common/proxy.rs"]
mod proxy;
#[path = "../common/vhost.rs"]
mod vhost;
#[path = "../common/worker_toml.rs"]
mod worker_toml;

use std::time::{Duration, Instant};

use harness::{Cluster, SERIAL, scale};

const DRAIN: Duration = Duration::from_secs(180);

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

/// Starts worker `n` and waits until its `/readyz` says 200.
async fn ready_worker(c: &Cluster, n: usize) -> (harness::Proc, u16) {
    let (w, admin) = c.worker(n);
    assert!(
        c.ready(admin, Duration::from_secs(30)).await,
        "{}",
        c.logs()
    );
    (w, admin)
}

async fn assert_all_results(c: &Cluster) {
    assert!(
        c.wait_all(DRAIN).await,
        "not every intent got a result\n{}",
        c.logs()
    );
}

fn assert_clean(c: &Cluster, r: &harness::Report) {
    assert_eq!(r.lost, 0, "{}: intents lost\n{}", r.scenario, c.logs());
    assert_eq!(
        r.two_requests, 0,
        "{}: an identity was sent two different requests",
        r.scenario
    );
    assert_eq!(
        r.not_ready,
        0,
        "{}: some intents did not end ready\n{}",
        r.scenario,
        c.logs()
    );
    assert_eq!(
        r.dead_lettered, 0,
        "{}: readable intents reached the DLQ",
        r.scenario
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let mut c = Cluster::start("kill9", 20).await;
    let (mut a, _) = ready_worker(&c, 0).await;
    c.publish(0, s.intents, 0).await;
    c.wait_received(s.intents / 3, Duration::from_secs(60))
        .await;
    a.signal("KILL");
    let _ = a.wait_exit(Duration::from_secs(5));
    let restarted = Instant::now();
    let (_b, _) = c.worker(1);
    assert_all_results(&c).await;
    let r = c
        .report("kill -9 under load, then restart", secs(restarted))
        .await;
    assert_clean(&c, &r);
    // Only intents in flight at the kill may be called twice (prefetch 64),
    // and then with the identical body (two_requests == 0 above).
    assert!(r.extra_calls <= 64, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connections_cut_then_closed_by_the_broker() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let mut c = Cluster::start("broker", 20).await;
    let (_w, admin) = ready_worker(&c, 0).await;
    c.publish(0, s.intents / 2, 0).await;
    c.wait_received(s.intents / 6, Duration::from_secs(60))
        .await;

    // The network between worker and broker goes away.
    c.amqp.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = c.readyz(admin).await.unwrap_or_default();
    assert_eq!(
        during["amqp"]["consuming"], false,
        "/readyz must tell: {during}"
    );
    tokio::time::sleep(s.outage.saturating_sub(Duration::from_secs(1))).await;
    c.amqp.restore().await;
    let restored = Instant::now();
    assert!(
        c.ready(admin, Duration::from_secs(30)).await,
        "no reconnect after the cut\n{}",
        c.logs()
    );
    let reconnect_secs = secs(restored);

    // The broker itself closes every connection of the vhost.
    c.vhost.close_all_connections();
    c.publish(s.intents / 2, s.intents / 2, 0).await;
    assert_all_results(&c).await;
    let r = c
        .report(
            "broker connections cut for the outage, then closed by the broker",
            reconnect_secs,
        )
        .await;
    assert_clean(&c, &r);
    assert_eq!(
        r.extra_calls, 0,
        "a stored outcome must be replayed, not fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_makes_intents_wait_without_gateway_calls() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let mut c = Cluster::start("redis", 20).await;
    let (_w, admin) = ready_worker(&c, 0).await;
    c.publish(0, s.intents, 0).await;
    c.wait_received(s.intents / 4, Duration::from_secs(60))
        .await;
    c.redis.cut();
    // Calls already under way may finish; after that, none may start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls_at_cut = c.sandbox_stats().await.total_calls;
    let during = c.readyz(admin).await.unwrap_or_default();
    assert_eq!(
        during["redis"]["reachable"], false,
        "/readyz must tell: {during}"
    );
    tokio::time::sleep(s.outage.saturating_sub(Duration::from_secs(2))).await;
    let calls_before_restore = c.sandbox_stats().await.total_calls;
    assert_eq!(
        calls_at_cut, calls_before_restore,
        "no gateway call without Redis"
    );
    c.redis.restore().await;
    let restored = Instant::now();
    assert_all_results(&c).await;
    let r = c.report("Redis cut for the outage", secs(restored)).await;
    assert_clean(&c, &r);
    assert_eq!(r.extra_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_down_opens_the_breaker_and_parks_new_intents() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let mut c = Cluster::start("gateway", 20).await;
    let (_w, admin) = ready_worker(&c, 0).await;
    c.publish(0, s.intents, 0).await;
    c.wait_received(s.intents / 4, Duration::from_secs(60))
        .await;
    c.gateway.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = c.readyz(admin).await.unwrap_or_default();
    assert_ne!(
        during["breaker"], "closed",
        "the breaker must open: {during}"
    );
    let metrics = crate::net::metrics(admin).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("h5pay_breaker_state ") && !l.ends_with(" 0")),
        "the breaker state is exported: {metrics}"
    );
    tokio::time::sleep(s.gateway_outage.saturating_sub(Duration::from_secs(2))).await;
    c.gateway.restore().await;
    let restored = Instant::now();
    assert_all_results(&c).await;
    let r = c
        .report(
            "gateway down (connections refused), breaker on",
            secs(restored),
        )
        .await;
    // The breaker parks first attempts (contract §5.11); intents already
    // retrying when the gateway went down keep their own budget and may end
    // gateway_unavailable, and so may each probe's intent. Nothing else.
    assert_eq!(r.lost, 0, "intents lost\n{}", c.logs());
    assert_eq!(
        r.two_requests, 0,
        "an identity was sent two different requests"
    );
    assert_eq!(r.dead_lettered, 0, "readable intents reached the DLQ");
    assert_eq!(
        r.not_ready, r.unavailable,
        "a failure other than gateway_unavailable: {r:?}"
    );
    let in_flight = 64;
    let probes = (s.gateway_outage.as_millis() / 500) as usize + 1;
    assert!(
        r.unavailable <= in_flight + probes,
        "more failed than were in flight or probed: {r:?}"
    );
    // Requests cut mid-flight may have reached the gateway: they are sent
    // again, identical (two_requests == 0 above).
    assert!(r.extra_calls <= 64, "{r:?}");
    let after = c.readyz(admin).await.unwrap_or_default();
    assert_eq!(after["breaker"], "closed", "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let mut c = Cluster::start("sigterm", 20).await;
    let (mut a, admin_a) = ready_worker(&c, 0).await;
    c.publish(0, s.intents, 0).await;
    c.wait_received(s.intents / 3, Duration::from_secs(60))
        .await;
    a.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{admin_a}/readyz")).await {
        assert_eq!(r.status().as_u16(), 503, "/readyz turns 503 at once");
    }
    let code = a.wait_exit(Duration::from_secs(25));
    assert_eq!(code, Some(0), "a graceful stop exits 0\n{}", c.logs());
    let restarted = Instant::now();
    let (_b, _) = c.worker(1);
    assert_all_results(&c).await;
    let r = c
        .report("SIGTERM under load, then restart", secs(restarted))
        .await;
    assert_clean(&c, &r);
    assert_eq!(r.extra_calls, 0, "a graceful stop calls nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_owner_past_its_lease_cannot_overwrite_the_takeover() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    // A slow gateway so that the stalled worker holds claims mid-call.
    let mut c = Cluster::start("sigstop", 300).await;
    let (a, _) = ready_worker(&c, 0).await;
    let half = s.intents / 2;
    c.publish(0, half, 0).await;
    c.wait_received(10, Duration::from_secs(60)).await;
    a.signal("STOP");
    let stopped = Instant::now();
    // Another worker gets duplicates of the same identities while A is
    // frozen with live claims: it waits for A's leases (5 s), takes over,
    // and calls with the identical request.
    let (_b, _) = ready_worker(&c, 1).await;
    let published = std::mem::take(&mut c.published);
    c.publish(0, half, 0).await;
    c.published = published;
    c.publish(half, s.intents - half, 0).await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(stopped.elapsed())).await;
    a.signal("CONT");
    let resumed = Instant::now();
    assert_all_results(&c).await;
    // Let A settle what it held, then judge.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = c
        .report(
            "SIGSTOP past the lease, then SIGCONT (stalled owner)",
            secs(resumed),
        )
        .await;
    assert_clean(&c, &r);
    assert!(
        r.extra_calls <= 64,
        "only claims A held may be called again: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_twenty_percent_duplicates() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let mut c = Cluster::start("replicas", 20).await;
    let (_a, _) = ready_worker(&c, 0).await;
    let (_b, _) = ready_worker(&c, 1).await;
    let started = Instant::now();
    // Two publishers at once, every fifth intent twice.
    let half = s.intents / 2;
    let (first, second) = tokio::join!(
        harness::publish_intents(&c.vhost.0, 0, half, 5),
        harness::publish_intents(&c.vhost.0, half, s.intents - half, 5)
    );
    c.published.extend(first);
    c.published.extend(second);
    assert_all_results(&c).await;
    let r = c
        .report(
            "two replicas, 20 % duplicates published concurrently",
            secs(started),
        )
        .await;
    assert_clean(&c, &r);
    assert_eq!(r.extra_calls, 0, "each identity is called once");
    let events = r.result_events;
    assert!(
        events >= r.identities + r.identities / 5 - 1,
        "every duplicate got its event: {r:?}"
    );
}

/// The reconciler's schedule in chaos: checks 2 and 4 s after pay_time,
/// unpaid orders closed after 8 s.
const LIFECYCLE: &str =
    "check_after_secs = [2, 4]\norder_ttl_secs = 6\nclose_grace_secs = 2\nmax_age_secs = 600";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_reach_their_final_state_through_kill_9_broker_close_and_redis_cut() {
    let _serial = SERIAL.lock().await;
    let s = scale();
    let n = s.intents / 2;
    // Slow queries, so that checks are in flight when the faults come.
    let mut c = Cluster::start_with("lifecycle", 100, LIFECYCLE).await;
    let (_receiver, receiver_admin) = c.receiver();
    assert!(
        c.ready(receiver_admin, Duration::from_secs(30)).await,
        "{}",
        c.logs()
    );
    let (mut a, _) = ready_worker(&c, 0).await;
    let (_b, _) = ready_worker(&c, 1).await;
    // Three kinds of payment: paid without a notify (4021: only a query
    // finds it), paid by the buyer around its first check (a notify racing
    // a query), never paid (closed).
    let kind = |i: usize| i % 3;
    let traces = harness::publish_amounts(&c.vhost.0, 0, n, 0, |i| match kind(i) {
        0 => 4021,
        _ => 100 + (i % 900) as u64,
    })
    .await;
    c.published.extend(traces.clone());
    assert_all_results(&c).await;
    let want: std::collections::HashMap<String, &'static str> = traces
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), if kind(i) == 2 { "closed" } else { "paid" }))
        .collect();
    let http = reqwest::Client::new();
    let pay = traces
        .iter()
        .enumerate()
        .filter(|(i, _)| kind(*i) == 1)
        .map(|(_, t)| t.clone())
        .collect::<Vec<_>>();
    let sandbox = c.sandbox_port;
    let paying = tokio::spawn(async move {
        for t in pay {
            let _ = http
                .post(format!("http://127.0.0.1:{sandbox}/sandbox/pay"))
                .header("content-type", "application/json")
                .body(serde_json::json!({"mch_no": "CHAOS1", "pay_trace_no": t}).to_string())
                .send()
                .await;
        }
    });
    // Checks fall due and run: a worker dies mid-check, the broker closes
    // every connection, Redis goes away for the outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.signal("KILL");
    let _ = a.wait_exit(Duration::from_secs(5));
    c.vhost.close_all_connections();
    c.redis.cut();
    tokio::time::sleep(s.outage).await;
    c.redis.restore().await;
    let restored = Instant::now();
    let (_a2, _) = c.worker(2);
    let _ = paying.await;
    let all_final = c.wait_payments(&want, DRAIN).await;
    let recover = secs(restored);
    let states = c.payment_states();
    let stats = c.sandbox_stats().await;
    let missing: Vec<&String> = want
        .iter()
        .filter(|(t, s)| {
            !states
                .get(*t)
                .is_some_and(|set| set.iter().any(|(st, _)| st == *s))
        })
        .map(|(t, _)| t)
        .collect();
    // One event per state: one event_id for each (identity, state).
    let split = states
        .values()
        .filter(|set| {
            let mut per_state: std::collections::HashMap<&str, usize> = Default::default();
            for (st, _) in set.iter() {
                *per_state.entry(st.as_str()).or_default() += 1;
            }
            per_state.values().any(|n| *n > 1)
        })
        .count();
    let overlapped = stats
        .identities
        .iter()
        .filter(|i| i.max_overlap > 1)
        .count();
    let two_states = states.values().filter(|set| set.len() > 1).count();
    let report = serde_json::json!({
        "scenario": "payments through kill -9 mid-check, broker close, Redis cut; two replicas; notifies racing queries",
        "payments": want.len(), "final": want.len() - missing.len(), "missing": missing.len(),
        "split_event_ids": split, "overlapping_checks": overlapped, "more_than_one_state": two_states,
        "queries": stats.identities.iter().map(|i| i.queries).sum::<u64>(),
        "closes": stats.identities.iter().map(|i| i.closes).sum::<u64>(),
        "recover_secs": recover,
    });
    harness::append_json(&report);
    eprintln!("{report}");
    assert!(
        all_final && missing.is_empty(),
        "payments not final: {missing:?}\n{}",
        c.logs()
    );
    assert_eq!(split, 0, "an identity's state got two event_ids");
    assert_eq!(overlapped, 0, "two checks of one payment ran at once");
    assert_eq!(two_states, 0, "a payment reached two final states");
    let r = c.report("(lifecycle scenario: its intents)", recover).await;
    assert_clean(&c, &r);
}
