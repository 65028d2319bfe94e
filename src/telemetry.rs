//! Logs (tracing: JSON by default, pretty for terminals) and the
//! Prometheus recorder. Logs go to stderr so that commands like
//! `publish --wait` keep stdout for their output.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over
/// `log.level`. Safe to call twice (the second call does nothing).
pub fn init_logging(log: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Seconds-scale buckets for gateway calls, confirms and whole intents.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide Prometheus recorder once and returns its
/// handle (None if another recorder was installed first).
pub fn metrics() -> Option<&'static PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            register();
            Some(handle)
        })
        .as_ref()
}

/// Registers every series an operator alerts on, at zero, so `/metrics`
/// shows them from the start (the exporter renders only what was touched).
fn register() {
    use crate::outcome::FailureKind;
    for outcome in ["ready", "in_process", "unreadable", "duplicate_dropped"]
        .into_iter()
        .chain(FailureKind::ALL.iter().map(|k| k.as_str()))
    {
        metrics::counter!("h5pay_intents_total", "outcome" => outcome).absolute(0);
    }
    for status in ["ready", "in_process", "failed"] {
        metrics::counter!("h5pay_results_published_total", "status" => status).absolute(0);
    }
    for outcome in [
        "ready",
        "in_process",
        "payment_failed",
        "gateway_rejected",
        "bad_signature",
        "bad_response",
        "http_5xx",
        "throttled",
        "timeout",
        "connect_error",
        "io_error",
    ] {
        metrics::counter!("h5pay_gateway_requests_total", "outcome" => outcome).absolute(0);
    }
    for kind in ["replay", "conflict", "wait"] {
        metrics::counter!("h5pay_dedup_total", "kind" => kind).absolute(0);
    }
    for reason in ["too_large", "not_utf8", "not_json", "not_object"] {
        metrics::counter!("h5pay_dead_lettered_total", "reason" => reason).absolute(0);
    }
    for reason in [
        "publish_refused",
        "redis_unusable",
        "stored_unreadable",
        "panic",
    ] {
        metrics::counter!("h5pay_handed_back_total", "reason" => reason).absolute(0);
    }
    for name in [
        "h5pay_breaker_opened_total",
        "h5pay_claim_takeovers_total",
        "h5pay_claim_lost_total",
        "h5pay_publish_failures_total",
        "h5pay_amqp_reconnects_total",
        "h5pay_panics_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for name in [
        "h5pay_inflight_intents",
        "h5pay_breaker_state",
        "h5pay_ready",
    ] {
        metrics::gauge!(name).set(0.0);
    }
    for name in [
        "h5pay_gateway_request_duration_seconds",
        "h5pay_publish_confirm_seconds",
        "h5pay_claim_wait_seconds",
        "h5pay_intent_duration_seconds",
    ] {
        // Registering the handle is enough for the exporter to list it.
        let _ = metrics::histogram!(name);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "h5pay_intents_total",
        "Intent messages settled, by outcome (status or error kind)"
    );
    describe_counter!(
        "h5pay_results_published_total",
        "Result events confirmed by the broker, by status"
    );
    describe_counter!(
        "h5pay_gateway_requests_total",
        "Gateway HTTP attempts, by outcome"
    );
    describe_histogram!(
        "h5pay_gateway_request_duration_seconds",
        "Gateway HTTP attempt duration"
    );
    describe_counter!(
        "h5pay_gateway_retries_total",
        "Gateway retries scheduled, by reason"
    );
    describe_counter!(
        "h5pay_dedup_total",
        "Deduplication events: replay, conflict, wait"
    );
    describe_gauge!("h5pay_inflight_intents", "Deliveries being processed");
    describe_counter!(
        "h5pay_dead_lettered_total",
        "Messages dead-lettered because they cannot be an intent, by reason"
    );
    describe_gauge!(
        "h5pay_breaker_state",
        "Gateway circuit breaker: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        "h5pay_breaker_opened_total",
        "Times the gateway circuit breaker opened"
    );
    describe_histogram!(
        "h5pay_claim_wait_seconds",
        "Time spent waiting for another worker's claim"
    );
    describe_counter!("h5pay_claim_takeovers_total", "Expired claims taken over");
    describe_counter!(
        "h5pay_claim_lost_total",
        "Claims lost to another worker during a call"
    );
    describe_histogram!(
        "h5pay_publish_confirm_seconds",
        "Time from publish to broker confirm"
    );
    describe_counter!(
        "h5pay_publish_failures_total",
        "Result publishes not confirmed"
    );
    describe_counter!(
        "h5pay_redis_errors_total",
        "Redis operations that failed, by operation"
    );
    describe_counter!(
        "h5pay_amqp_reconnects_total",
        "RabbitMQ sessions rebuilt after a failure"
    );
    describe_histogram!(
        "h5pay_intent_duration_seconds",
        "Delivery to settlement (ack, reject, requeue)"
    );
    describe_gauge!("h5pay_ready", "1 while /readyz answers 200");
    describe_counter!(
        "h5pay_handed_back_total",
        "Intents handed back (requeued) after trying, by reason: publish_refused, redis_unusable, stored_unreadable, panic"
    );
    describe_counter!(
        "h5pay_reply_to_failures_total",
        "Best-effort reply_to copies the broker refused"
    );
    describe_counter!(
        "h5pay_http_connections_refused_total",
        "HTTP connections closed at once because the server had its maximum open, by server"
    );
    describe_counter!(
        "h5pay_panics_total",
        "Intents whose processing panicked (handed back; a bug to report)"
    );
}
