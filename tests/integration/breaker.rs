//! The gateway circuit breaker through a real worker (contract §5.11): it
//! holds back first attempts only; intents already retrying keep their
//! own schedule and budget; a failed probe is the probing intent's first
//! attempt; a real outage parks new intents without spending budgets.

use std::time::{Duration, Instant};

use crate::support::{Received, TestEnv, intent};

/// Retries every 10-50 ms, four attempts, an 8 s budget (support's base).
const MAX_ATTEMPTS: u64 = 4;

fn by_trace(events: &[Received], prefix: &str) -> Vec<Received> {
    events
        .iter()
        .filter(|r| {
            r.event["pay_trace_no"]
                .as_str()
                .is_some_and(|t| t.starts_with(prefix))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_the_gateway_always_fails_each_end_unavailable_after_exactly_max_attempts_in_budget()
 {
    let env = TestEnv::with(&[
        ("H5PAY__BREAKER__ENABLED", "true"),
        ("H5PAY__BREAKER__FAILURE_THRESHOLD", "3"),
        ("H5PAY__BREAKER__OPEN_MS", "200"),
        ("H5PAY__BREAKER__MAX_OPEN_MS", "1000"),
    ])
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    let started = Instant::now();
    for i in 0..10 {
        env.publish_json(&intent(&format!("ALL500-{i}"), "M1", 5002))
            .await;
    }
    let events = results.take(10, Duration::from_secs(30)).await;
    let took = started.elapsed();
    for r in &events {
        let trace = r.event["pay_trace_no"].as_str().unwrap_or_default();
        assert_eq!(r.kind(), Some("gateway_unavailable"), "{}", r.event);
        assert_eq!(r.event["attempts"], MAX_ATTEMPTS, "{}", r.event);
        assert_eq!(
            env.calls("M1", trace),
            MAX_ATTEMPTS,
            "{trace}: one call per attempt, no probe outside the budget"
        );
    }
    // Each intent's budget is 8 s of retries; a breaker wait happens at most
    // before a first attempt (up to max_open_ms). The old rule held every
    // retry behind the breaker and took minutes.
    assert!(
        took < Duration::from_secs(8 + 1 + 5),
        "the failing intents took {took:?}"
    );
    assert!(worker.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_the_gateway_always_fails_cannot_hold_healthy_ones_behind_an_open_breaker() {
    let env = TestEnv::with(&[
        ("H5PAY__BREAKER__ENABLED", "true"),
        ("H5PAY__BREAKER__FAILURE_THRESHOLD", "5"),
        ("H5PAY__BREAKER__OPEN_MS", "1000"),
        ("H5PAY__BREAKER__MAX_OPEN_MS", "30000"),
        // Long enough for the failing intents to outlast the healthy batch.
        ("H5PAY__RETRY__MAX_ATTEMPTS", "40"),
        ("H5PAY__RETRY__MAX_INTERVAL_MS", "200"),
        ("H5PAY__RETRY__MAX_ELAPSED_MS", "15000"),
    ])
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    for i in 0..10 {
        env.publish_json(&intent(&format!("BAD-{i}"), "M1", 5002))
            .await;
    }
    // The failing ones open the breaker before the healthy ones arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.total_calls() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    for i in 0..200 {
        env.publish_json(&intent(&format!("GOOD-{i}"), "M1", 100))
            .await;
    }
    let mut events = Vec::new();
    while by_trace(&events, "GOOD-").len() < 200 {
        match results.next(Duration::from_secs(20)).await {
            Some(r) => events.push(r),
            None => panic!(
                "only {} healthy intents ended",
                by_trace(&events, "GOOD-").len()
            ),
        }
    }
    let took = started.elapsed();
    for r in by_trace(&events, "GOOD-") {
        assert_eq!(r.event["status"], "ready", "{}", r.event);
        assert_eq!(r.event["attempts"], 1, "{}", r.event);
    }
    // Within seconds: at most one open period and a probe, not the failing
    // intents' 15 s budgets (the old rule let their retries be the probes).
    assert!(
        took < Duration::from_secs(8),
        "the healthy intents took {took:?}"
    );
    let rest = results
        .take(
            10 - by_trace(&events, "BAD-").len(),
            Duration::from_secs(30),
        )
        .await;
    events.extend(rest);
    for r in by_trace(&events, "BAD-") {
        assert_eq!(r.kind(), Some("gateway_unavailable"), "{}", r.event);
    }
    assert!(worker.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_outage_parks_new_intents_without_spending_their_budgets() {
    let mut env = TestEnv::with(&[
        ("H5PAY__BREAKER__ENABLED", "true"),
        ("H5PAY__BREAKER__FAILURE_THRESHOLD", "3"),
        // Longer than the outage and the whole retry budget: parked intents
        // that still end ready were not charged for the wait.
        ("H5PAY__BREAKER__OPEN_MS", "6000"),
        ("H5PAY__BREAKER__MAX_OPEN_MS", "6000"),
        ("H5PAY__RETRY__MAX_ELAPSED_MS", "3000"),
    ])
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    env.stop_sandbox().await;
    // Three intents find the gateway down and open the breaker.
    for i in 0..3 {
        env.publish_json(&intent(&format!("DOWN-{i}"), "M1", 100))
            .await;
    }
    for r in results.take(3, Duration::from_secs(20)).await {
        assert_eq!(r.kind(), Some("gateway_unavailable"), "{}", r.event);
    }
    // New intents during the outage wait at the breaker.
    for i in 0..10 {
        env.publish_json(&intent(&format!("PARKED-{i}"), "M1", 100))
            .await;
    }
    results.none_for(Duration::from_secs(2)).await;
    env.restart_sandbox().await;
    let events = results.take(10, Duration::from_secs(30)).await;
    for r in &events {
        let trace = r.event["pay_trace_no"].as_str().unwrap_or_default();
        assert_eq!(r.event["status"], "ready", "{}", r.event);
        assert_eq!(r.event["attempts"], 1, "{}", r.event);
        assert_eq!(env.calls("M1", trace), 1, "{trace}");
    }
    assert!(worker.stop().await.is_ok());
}
