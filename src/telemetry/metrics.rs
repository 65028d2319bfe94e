//! Every metric of the product in one place, the way Vector keeps its
//! internal events: one function per thing that happens, label values from
//! enums, and every series registered at zero from the same lists
//! ([`register`]), so `/metrics` shows what OPERATIONS.md alerts on from
//! the first scrape and the names cannot drift between files.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::outcome::{FailureKind, Status};

/// A label value with the full list of its values (for [`register`]).
pub trait Label: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

macro_rules! label {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

/// How an intent message was settled (`h5pay_intents_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentOutcome {
    Ready,
    InProcess,
    Failed(FailureKind),
    /// Cannot be an intent at all: dead-lettered.
    Unreadable,
    /// `worker.duplicates = "drop"`: acknowledged without publishing.
    DuplicateDropped,
}

impl IntentOutcome {
    pub fn of(status: Status, failure: Option<FailureKind>) -> Self {
        match (status, failure) {
            (_, Some(kind)) => IntentOutcome::Failed(kind),
            (Status::Ready, None) => IntentOutcome::Ready,
            (Status::InProcess, None) => IntentOutcome::InProcess,
            // A failed event always carries its kind; never reached.
            (Status::Failed, None) => IntentOutcome::Unreadable,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            IntentOutcome::Ready => "ready",
            IntentOutcome::InProcess => "in_process",
            IntentOutcome::Failed(kind) => kind.as_str(),
            IntentOutcome::Unreadable => "unreadable",
            IntentOutcome::DuplicateDropped => "duplicate_dropped",
        }
    }

    fn all() -> impl Iterator<Item = IntentOutcome> {
        [
            IntentOutcome::Ready,
            IntentOutcome::InProcess,
            IntentOutcome::Unreadable,
            IntentOutcome::DuplicateDropped,
        ]
        .into_iter()
        .chain(FailureKind::ALL.iter().map(|k| IntentOutcome::Failed(*k)))
    }
}

/// What one gateway attempt ended as (`h5pay_gateway_requests_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The gateway decided: `ready`, `in_process`, or a failure kind.
    Decided(&'static str),
    Transient(Transient),
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Decided(s) => s,
            AttemptOutcome::Transient(t) => t.as_str(),
        }
    }
}

label! {
    /// Why an attempt may be retried (`h5pay_gateway_retries_total{reason}`,
    /// and the transient values of `h5pay_gateway_requests_total{outcome}`).
    Transient {
        ConnectError => "connect_error",
        Timeout => "timeout",
        IoError => "io_error",
        Http5xx => "http_5xx",
        /// HTTP 408 or 429.
        Throttled => "throttled",
        BadResponse => "bad_response",
    }
}

/// The decided values of `h5pay_gateway_requests_total{outcome}`.
const DECIDED: [&str; 7] = [
    "ready",
    "in_process",
    "payment_failed",
    "gateway_rejected",
    "bad_signature",
    // queryorder and closeorder: a usable answer, or none (refused,
    // return_code FAIL, unsigned).
    "answered",
    "refused",
];

label! {
    /// `h5pay_dedup_total{kind}`.
    Dedup {
        /// A stored outcome replayed.
        Replay => "replay",
        /// Same identity, other parameters.
        Conflict => "conflict",
        /// Another worker held the identity.
        Wait => "wait",
    }
}

label! {
    /// `h5pay_dead_lettered_total{reason}`.
    DeadLetter {
        TooLarge => "too_large",
        NotUtf8 => "not_utf8",
        NotJson => "not_json",
        NotObject => "not_object",
        /// A classic intent queue: an unusable Redis reply, delivered again.
        RedisUnusable => "redis_unusable",
    }
}

label! {
    /// `h5pay_handed_back_total{reason}`: intents requeued after trying.
    HandBack {
        /// The result was refused for `amqp.publish_retry_ms`.
        PublishRefused => "publish_refused",
        /// Redis answered something no retry fixes.
        RedisUnusable => "redis_unusable",
        StoredUnreadable => "stored_unreadable",
        Panic => "panic",
    }
}

label! {
    /// The `op` of `h5pay_redis_errors_total`.
    RedisOp {
        Claim => "claim",
        Store => "store",
        MarkConfirmed => "mark_confirmed",
        /// A payment's first check (the reconciler's schedule).
        Schedule => "schedule",
    }
}

label! {
    /// The `error` of `h5pay_redis_errors_total`: the cause.
    RedisCause {
        Timeout => "timeout",
        Connection => "connection",
        /// Any other error retrying may fix.
        Redis => "redis",
        WrongType => "wrong_type",
        Script => "script",
        NoPermission => "no_permission",
        CrossSlot => "cross_slot",
        Reply => "reply",
        /// Fewer replicas than `redis.wait_replicas` confirmed a write.
        Replicas => "replicas",
    }
}

impl RedisCause {
    /// A reply asking again will not change (contract §5.13).
    pub fn is_unusable(self) -> bool {
        !matches!(
            self,
            RedisCause::Timeout | RedisCause::Connection | RedisCause::Redis | RedisCause::Replicas
        )
    }
}

label! {
    /// The `server` of `h5pay_http_connections_refused_total`.
    Server {
        Admin => "admin",
        Sandbox => "sandbox",
        Notify => "notify",
    }
}

pub const INTENTS: &str = "h5pay_intents_total";
pub const RESULTS_PUBLISHED: &str = "h5pay_results_published_total";
pub const GATEWAY_REQUESTS: &str = "h5pay_gateway_requests_total";
pub const GATEWAY_REQUEST_DURATION: &str = "h5pay_gateway_request_duration_seconds";
pub const GATEWAY_RETRIES: &str = "h5pay_gateway_retries_total";
pub const DEDUP: &str = "h5pay_dedup_total";
pub const INFLIGHT: &str = "h5pay_inflight_intents";
pub const INTENT_DURATION: &str = "h5pay_intent_duration_seconds";
pub const DEAD_LETTERED: &str = "h5pay_dead_lettered_total";
pub const HANDED_BACK: &str = "h5pay_handed_back_total";
pub const BREAKER_STATE: &str = "h5pay_breaker_state";
pub const BREAKER_OPENED: &str = "h5pay_breaker_opened_total";
pub const CLAIM_WAIT: &str = "h5pay_claim_wait_seconds";
pub const CLAIM_TAKEOVERS: &str = "h5pay_claim_takeovers_total";
pub const CLAIM_LOST: &str = "h5pay_claim_lost_total";
pub const PUBLISH_CONFIRM: &str = "h5pay_publish_confirm_seconds";
pub const PUBLISH_FAILURES: &str = "h5pay_publish_failures_total";
pub const REPLY_TO_FAILURES: &str = "h5pay_reply_to_failures_total";
pub const REDIS_ERRORS: &str = "h5pay_redis_errors_total";
pub const AMQP_RECONNECTS: &str = "h5pay_amqp_reconnects_total";
pub const PANICS: &str = "h5pay_panics_total";
pub const READY: &str = "h5pay_ready";
pub const HTTP_REFUSED: &str = "h5pay_http_connections_refused_total";
pub const PAYMENT_EVENTS: &str = "h5pay_payment_events_total";
pub const RECONCILE_CHECKS: &str = "h5pay_reconcile_checks_total";
pub const RECONCILE_LAG: &str = "h5pay_reconcile_lag_seconds";
pub const RECONCILE_OVERDUE: &str = "h5pay_reconcile_overdue";
pub const INSECURE_GATEWAY: &str = "h5pay_insecure_gateway";
pub const DLQ_REACHABLE: &str = "h5pay_dlq_reachable";
pub const BUILD_INFO: &str = "h5pay_build_info";

/// The `version` of `h5pay_build_info`: the crate's, as `--version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

label! {
    /// `h5pay_reconcile_checks_total{result}` (contract §9, §12).
    CheckResult {
        /// The payment moved to paid (query, or the query after a close).
        Paid => "paid",
        Failed => "failed",
        Closed => "closed",
        /// Given up after `reconcile.max_age_secs`.
        Unresolved => "unresolved",
        /// Still open: the next check is scheduled.
        Open => "open",
        /// A verified answer that is not evidence: an anomaly event.
        Anomaly => "anomaly",
        /// No usable answer (gateway down, refused, unsigned): still open.
        NoAnswer => "no_answer",
        /// The payment was already final: nothing to do.
        Final => "final",
        /// Another check (or the intent's own claim) holds the identity.
        Busy => "busy",
        /// The identity's state expired (`redis.retention_secs`).
        Gone => "gone",
        /// Redis or the broker failed mid-check: it runs again after its lease.
        Error => "error",
    }
}

label! {
    /// `h5pay_notifies_total{outcome}` (contract §9).
    NotifyOutcome {
        /// A transition, its event confirmed.
        Applied => "applied",
        /// Already in that state.
        Duplicate => "duplicate",
        /// Evidence that changes nothing (not paid yet, a late PAY_FAIL).
        NoChange => "no_change",
        /// Unknown institution or a sign that does not verify: 400.
        BadSignature => "bad_signature",
        /// Too large, or not a JSON object of scalars: 413 / 400.
        BadRequest => "bad_request",
        UnknownPayment => "unknown_payment",
        /// Echoes that differ, or an answer that cannot be placed: an anomaly.
        Mismatch => "mismatch",
        /// Redis or the broker unavailable, or the event not confirmed: 503.
        Unavailable => "unavailable",
        /// A signed message of another kind (contract §10 rule 4): an
        /// anomaly, then 400.
        Foreign => "foreign_message",
    }
}

pub const NOTIFIES: &str = "h5pay_notifies_total";
pub const NOTIFY_DURATION: &str = "h5pay_notify_duration_seconds";

pub fn notify_answered(outcome: NotifyOutcome, took: Duration) {
    count(|h| &h.notifies, NOTIFIES, "outcome", outcome.as_str());
    record(|h| &h.notify_duration, NOTIFY_DURATION, took);
}

pub fn reconcile_check(result: CheckResult) {
    count(|h| &h.checks, RECONCILE_CHECKS, "result", result.as_str());
}

/// How late a due check started.
pub fn reconcile_lag(lag: Duration) {
    record(|h| &h.reconcile_lag, RECONCILE_LAG, lag);
}

/// Checks due now and not picked up.
pub fn reconcile_overdue(n: u64) {
    gauge!(RECONCILE_OVERDUE).set(n as f64);
}

pub fn payment_event(state: crate::domain::EventState) {
    count(
        |h| &h.payment_events,
        PAYMENT_EVENTS,
        "state",
        state.as_str(),
    );
}

pub fn intent_settled(outcome: IntentOutcome) {
    count(|h| &h.intents, INTENTS, "outcome", outcome.as_str());
}

pub fn result_published(status: Status) {
    count(|h| &h.results, RESULTS_PUBLISHED, "status", status.as_str());
}

pub fn gateway_attempt(outcome: AttemptOutcome, took: Duration) {
    count(
        |h| &h.gateway_requests,
        GATEWAY_REQUESTS,
        "outcome",
        outcome.as_str(),
    );
    record(|h| &h.gateway_duration, GATEWAY_REQUEST_DURATION, took);
}

pub fn gateway_retry(reason: Transient) {
    counter!(GATEWAY_RETRIES, "reason" => reason.as_str()).increment(1);
}

pub fn dedup(kind: Dedup) {
    counter!(DEDUP, "kind" => kind.as_str()).increment(1);
}

pub fn dead_lettered(reason: DeadLetter) {
    counter!(DEAD_LETTERED, "reason" => reason.as_str()).increment(1);
}

pub fn handed_back(reason: HandBack) {
    counter!(HANDED_BACK, "reason" => reason.as_str()).increment(1);
}

/// The breaker's state as the gauge shows it (0 closed, 1 half-open, 2
/// open: `BreakerState::gauge`).
pub fn breaker_state(gauge: f64) {
    gauge!(BREAKER_STATE).set(gauge);
}

pub fn breaker_opened() {
    counter!(BREAKER_OPENED).increment(1);
}

pub fn claim_waited(took: Duration) {
    histogram!(CLAIM_WAIT).record(took.as_secs_f64());
}

pub fn claim_taken_over() {
    counter!(CLAIM_TAKEOVERS).increment(1);
}

pub fn claim_lost() {
    counter!(CLAIM_LOST).increment(1);
}

pub fn publish_confirmed(took: Duration) {
    record(|h| &h.publish_confirm, PUBLISH_CONFIRM, took);
}

pub fn publish_failed() {
    counter!(PUBLISH_FAILURES).increment(1);
}

pub fn reply_to_failed() {
    counter!(REPLY_TO_FAILURES).increment(1);
}

pub fn redis_error(op: RedisOp, cause: RedisCause) {
    counter!(REDIS_ERRORS, "op" => op.as_str(), "error" => cause.as_str()).increment(1);
}

pub fn amqp_reconnected() {
    counter!(AMQP_RECONNECTS).increment(1);
}

pub fn panicked() {
    counter!(PANICS).increment(1);
}

pub fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// 1 when a gateway endpoint is plain `http` to a host that is not
/// loopback (contract §5.7), set once at start-up.
/// Whether the last declare reached the dead-letter queue (contract §14).
pub fn dlq_reachable(reachable: bool) {
    gauge!(DLQ_REACHABLE).set(if reachable { 1.0 } else { 0.0 });
}

pub fn insecure_gateway(insecure: bool) {
    gauge!(INSECURE_GATEWAY).set(if insecure { 1.0 } else { 0.0 });
}

pub fn http_connection_refused(server: Server) {
    counter!(HTTP_REFUSED, "server" => server.as_str()).increment(1);
}

/// A delivery in progress: counted in `h5pay_inflight_intents` until
/// dropped, when its time from delivery to settlement is recorded.
#[must_use]
pub struct InFlight(tokio::time::Instant);

impl InFlight {
    pub fn start() -> InFlight {
        in_flight(1.0);
        InFlight(tokio::time::Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        record(|h| &h.intent_duration, INTENT_DURATION, self.0.elapsed());
        in_flight(-1.0);
    }
}

/// Moves the in-flight gauge by `change`, through its handle when there is one.
fn in_flight(change: f64) {
    match HOT.get() {
        Some(h) => h.inflight.increment(change),
        None => gauge!(INFLIGHT).increment(change),
    }
}

/// The handles of the series touched on every intent, notify and check,
/// made once the recorder is installed ([`register`]). `counter!` builds
/// its key and looks it up in the recorder's registry on every call (about
/// 800 instructions; eight per intent: BENCHMARKS.md, seventh sitting); a
/// handle is an atomic add. Unset (no recorder: tests, the CLI's other
/// commands), the macros count as before.
struct Hot {
    intents: Labelled,
    results: Labelled,
    gateway_requests: Labelled,
    notifies: Labelled,
    payment_events: Labelled,
    checks: Labelled,
    inflight: Gauge,
    intent_duration: Histogram,
    gateway_duration: Histogram,
    publish_confirm: Histogram,
    notify_duration: Histogram,
    reconcile_lag: Histogram,
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// One counter's series by label value: a handful each, so a scan.
struct Labelled(Vec<(&'static str, Counter)>);

impl Labelled {
    fn new(
        name: &'static str,
        label: &'static str,
        values: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        Labelled(
            values
                .into_iter()
                .map(|v| (v, counter!(name, label => v)))
                .collect(),
        )
    }

    fn get(&self, value: &str) -> Option<&Counter> {
        self.0.iter().find(|(v, _)| *v == value).map(|(_, c)| c)
    }
}

/// Counts one on `name{label=value}`, through its handle when there is one.
fn count(
    table: fn(&Hot) -> &Labelled,
    name: &'static str,
    label: &'static str,
    value: &'static str,
) {
    match HOT.get().and_then(|h| table(h).get(value)) {
        Some(c) => c.increment(1),
        None => counter!(name, label => value).increment(1),
    }
}

fn record(hist: fn(&Hot) -> &Histogram, name: &'static str, took: Duration) {
    match HOT.get() {
        Some(h) => hist(h).record(took.as_secs_f64()),
        None => histogram!(name).record(took.as_secs_f64()),
    }
}

fn labels<L: Label>() -> impl Iterator<Item = &'static str> {
    L::ALL.iter().map(|v| v.as_str())
}

/// The hot series' handles, every label value of each: [`register`]
/// zeroes them.
fn hot() -> Hot {
    Hot {
        intents: Labelled::new(
            INTENTS,
            "outcome",
            IntentOutcome::all().map(IntentOutcome::as_str),
        ),
        results: Labelled::new(
            RESULTS_PUBLISHED,
            "status",
            [Status::Ready, Status::InProcess, Status::Failed].map(Status::as_str),
        ),
        gateway_requests: Labelled::new(
            GATEWAY_REQUESTS,
            "outcome",
            DECIDED.into_iter().chain(labels::<Transient>()),
        ),
        notifies: Labelled::new(NOTIFIES, "outcome", labels::<NotifyOutcome>()),
        payment_events: Labelled::new(
            PAYMENT_EVENTS,
            "state",
            crate::domain::EventState::ALL.map(|s| s.as_str()),
        ),
        checks: Labelled::new(RECONCILE_CHECKS, "result", labels::<CheckResult>()),
        inflight: gauge!(INFLIGHT),
        intent_duration: histogram!(INTENT_DURATION),
        gateway_duration: histogram!(GATEWAY_REQUEST_DURATION),
        publish_confirm: histogram!(PUBLISH_CONFIRM),
        notify_duration: histogram!(NOTIFY_DURATION),
        reconcile_lag: histogram!(RECONCILE_LAG),
    }
}

fn zero<L: Label>(name: &'static str, label: &'static str) {
    for v in L::ALL {
        counter!(name, label => v.as_str()).absolute(0);
    }
}

/// Registers every series at zero (the exporter renders only what was
/// touched), from the same lists the functions above count with.
pub(super) fn register() {
    // The hot series are registered by making their handles.
    let hot = hot();
    for table in [
        &hot.intents,
        &hot.results,
        &hot.gateway_requests,
        &hot.notifies,
        &hot.payment_events,
        &hot.checks,
    ] {
        for (_, c) in &table.0 {
            c.absolute(0);
        }
    }
    zero::<Transient>(GATEWAY_RETRIES, "reason");
    zero::<Dedup>(DEDUP, "kind");
    zero::<DeadLetter>(DEAD_LETTERED, "reason");
    zero::<HandBack>(HANDED_BACK, "reason");
    zero::<Server>(HTTP_REFUSED, "server");
    for op in RedisOp::ALL {
        for cause in RedisCause::ALL {
            counter!(REDIS_ERRORS, "op" => op.as_str(), "error" => cause.as_str()).absolute(0);
        }
    }
    for name in [
        BREAKER_OPENED,
        CLAIM_TAKEOVERS,
        CLAIM_LOST,
        PUBLISH_FAILURES,
        REPLY_TO_FAILURES,
        AMQP_RECONNECTS,
        PANICS,
    ] {
        counter!(name).absolute(0);
    }
    for name in [
        INFLIGHT,
        BREAKER_STATE,
        READY,
        RECONCILE_OVERDUE,
        INSECURE_GATEWAY,
        DLQ_REACHABLE,
    ] {
        gauge!(name).set(0.0);
    }
    // Always 1: the version is in the label (contract §9).
    gauge!(BUILD_INFO, "version" => VERSION).set(1.0);
    for name in [
        GATEWAY_REQUEST_DURATION,
        PUBLISH_CONFIRM,
        CLAIM_WAIT,
        INTENT_DURATION,
        NOTIFY_DURATION,
        RECONCILE_LAG,
    ] {
        // Registering the handle is enough for the exporter to list it.
        let _ = histogram!(name);
    }
    let _ = HOT.set(hot);
}

pub(super) fn describe() {
    describe_counter!(
        INTENTS,
        "Intent messages settled, by outcome (status or error kind)"
    );
    describe_counter!(
        RESULTS_PUBLISHED,
        "Result events confirmed by the broker, by status"
    );
    describe_counter!(GATEWAY_REQUESTS, "Gateway HTTP attempts, by outcome");
    describe_histogram!(GATEWAY_REQUEST_DURATION, "Gateway HTTP attempt duration");
    describe_counter!(GATEWAY_RETRIES, "Gateway retries scheduled, by reason");
    describe_counter!(DEDUP, "Deduplication events: replay, conflict, wait");
    describe_gauge!(INFLIGHT, "Deliveries being processed");
    describe_histogram!(
        INTENT_DURATION,
        "Delivery to settlement (ack, reject, requeue)"
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages dead-lettered by the worker, by reason"
    );
    describe_counter!(
        HANDED_BACK,
        "Intents handed back (requeued) after trying, by reason: publish_refused, redis_unusable, stored_unreadable, panic"
    );
    describe_gauge!(
        BREAKER_STATE,
        "Gateway circuit breaker: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(BREAKER_OPENED, "Times the gateway circuit breaker opened");
    describe_histogram!(CLAIM_WAIT, "Time spent waiting for another worker's claim");
    describe_counter!(CLAIM_TAKEOVERS, "Expired claims taken over");
    describe_counter!(CLAIM_LOST, "Claims lost to another worker during a call");
    describe_histogram!(PUBLISH_CONFIRM, "Time from publish to broker confirm");
    describe_counter!(PUBLISH_FAILURES, "Result publishes not confirmed");
    describe_counter!(
        REPLY_TO_FAILURES,
        "Best-effort reply_to copies the broker refused"
    );
    describe_counter!(
        REDIS_ERRORS,
        "Redis operations that failed, by operation and cause"
    );
    describe_counter!(AMQP_RECONNECTS, "RabbitMQ sessions rebuilt after a failure");
    describe_counter!(
        PANICS,
        "Intents whose processing panicked (handed back; a bug to report)"
    );
    describe_gauge!(READY, "1 while /readyz answers 200");
    describe_counter!(
        NOTIFIES,
        "Notifies received, by outcome (applied, duplicate, no_change, bad_signature, bad_request, unknown_payment, mismatch, foreign_message, unavailable)"
    );
    describe_histogram!(NOTIFY_DURATION, "Notify received to reply sent");
    describe_counter!(
        PAYMENT_EVENTS,
        "Payment events confirmed by the broker, by state (paid, failed, closed, unresolved, anomaly)"
    );
    describe_counter!(
        RECONCILE_CHECKS,
        "Payment checks run by the reconciler, by result"
    );
    describe_histogram!(RECONCILE_LAG, "How late a due payment check started");
    describe_gauge!(
        RECONCILE_OVERDUE,
        "Payment checks due and not yet picked up (seen by this replica's last poll)"
    );
    describe_gauge!(
        DLQ_REACHABLE,
        "1 when the last topology declare reached the dead-letter queue; 0 when it could not (its node down): intents go on"
    );
    describe_gauge!(
        INSECURE_GATEWAY,
        "1 when a gateway URL (url, query_url, close_url) is plain http to a host that is not loopback"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the label version is the running build's (as --version prints it)"
    );
    describe_counter!(
        HTTP_REFUSED,
        "HTTP connections closed at once because the server had its maximum open, by server"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one series in the exporter's text, 0 if absent.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn the_hot_series_count_through_their_handles_into_the_installed_recorder() {
        let Some(handle) = crate::telemetry::recorder() else {
            panic!("the Prometheus recorder could not be installed");
        };
        assert!(HOT.get().is_some(), "registering made the handles");
        let series = [
            "h5pay_intents_total{outcome=\"ready\"}",
            "h5pay_intents_total{outcome=\"payment_failed\"}",
            "h5pay_results_published_total{status=\"in_process\"}",
            "h5pay_gateway_requests_total{outcome=\"answered\"}",
            "h5pay_gateway_requests_total{outcome=\"http_5xx\"}",
            "h5pay_notifies_total{outcome=\"applied\"}",
            "h5pay_payment_events_total{state=\"paid\"}",
            "h5pay_reconcile_checks_total{result=\"open\"}",
            "h5pay_intent_duration_seconds_count",
            "h5pay_gateway_request_duration_seconds_count",
            "h5pay_publish_confirm_seconds_count",
            "h5pay_notify_duration_seconds_count",
            "h5pay_reconcile_lag_seconds_count",
        ];
        let before = handle.render();
        let took = Duration::from_millis(3);
        intent_settled(IntentOutcome::Ready);
        intent_settled(IntentOutcome::Failed(FailureKind::PaymentFailed));
        result_published(Status::InProcess);
        gateway_attempt(AttemptOutcome::Decided("answered"), took);
        gateway_attempt(AttemptOutcome::Transient(Transient::Http5xx), took);
        notify_answered(NotifyOutcome::Applied, took);
        payment_event(crate::domain::EventState::Paid);
        reconcile_check(CheckResult::Open);
        reconcile_lag(took);
        publish_confirmed(took);
        drop(InFlight::start());
        let after = handle.render();
        // Other tests count too, in parallel: at least one more each.
        for s in series {
            assert!(
                value(&after, s) >= value(&before, s) + 1.0,
                "{s}: {} then {}",
                value(&before, s),
                value(&after, s)
            );
        }
    }
}
