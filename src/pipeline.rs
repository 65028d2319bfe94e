//! One intent, from delivery to disposition: read → validate → claim →
//! gateway → store → publish → mark confirmed. The caller acts on the
//! returned [`Disposition`]; nothing here acknowledges a message.
//!
//! Order matters and is the point of this module (contract §5):
//! claim before call, store before publish, publish (confirmed) before ack.

use std::sync::Arc;
use std::time::Duration;

use chrono::{FixedOffset, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::amqp::Publisher;
use crate::claim::{self, ClaimError, ClaimStore, Step};
use crate::config::{Config, DuplicatePolicy, Institutions, KeyRing, QueueType};
use crate::gateway::GatewayClient;
use crate::gateway::retry::{Backoff, RetryPolicy};
use crate::intent::{self, Intent, Rules};
use crate::outcome::{Failure, FailureKind};
use crate::result_event::{self, ResultEvent};

/// What to do with the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The result event is confirmed (or deliberately not published): ack.
    Ack,
    /// Cannot be an intent at all: reject without requeue (dead-letter).
    DeadLetter,
    /// Not started, or its result could not be published: requeue.
    HandBack,
    /// The channel or connection failed: the delivery comes back by itself
    /// after the reconnect; the connection must be rebuilt.
    ConnectionLost,
}

/// The parts of a delivery the pipeline reads.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub body: &'a [u8],
    pub message_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    /// AMQP `timestamp`, seconds since the epoch.
    pub timestamp: Option<u64>,
    pub redelivered: bool,
}

/// Settings the pipeline decides with.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub default_mch_no: Option<String>,
    /// Backoff for result publishes the broker refuses.
    pub publish_retry: RetryPolicy,
    /// The intent queue counts deliveries (a quorum queue's delivery limit).
    pub delivery_limit_applies: bool,
    pub max_amount: u64,
    pub offset: FixedOffset,
    pub duplicates: DuplicatePolicy,
    pub max_intent_age_secs: u64,
}

impl PipelineSettings {
    pub fn from_config(c: &Config) -> Self {
        let s = &c.settings;
        PipelineSettings {
            default_mch_no: Some(s.worker.default_mch_no.clone()).filter(|m| !m.is_empty()),
            publish_retry: RetryPolicy {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max_interval: Duration::from_secs(5),
                max_attempts: u32::MAX,
                max_elapsed: s.amqp.publish_retry(),
            },
            delivery_limit_applies: s.amqp.queue_type == QueueType::Quorum,
            max_amount: s.gateway.max_amount,
            offset: s.worker.offset(),
            duplicates: s.worker.duplicates,
            max_intent_age_secs: s.worker.max_intent_age_secs,
        }
    }
}

pub struct Pipeline {
    pub claims: ClaimStore,
    pub gateway: Arc<GatewayClient>,
    /// Institution keys; replaced on SIGHUP.
    pub keys: Arc<KeyRing>,
    pub settings: PipelineSettings,
    /// Cancelled when the worker stops taking intents: work not yet at the
    /// gateway is handed back.
    pub stop: CancellationToken,
}

/// Backoff between Redis retries while it is unreachable.
const REDIS_RETRY_MIN: Duration = Duration::from_millis(50);
const REDIS_RETRY_MAX: Duration = Duration::from_secs(2);

impl Pipeline {
    /// Processes one delivery to a disposition. Reading and validating run
    /// before the intent's span exists, so the span is created once with
    /// its identity (recording fields later re-formats them, per field).
    pub async fn process(&self, msg: Incoming<'_>, publisher: &Publisher) -> Disposition {
        let obj = match intent::read(msg.body) {
            Ok(o) => o,
            Err(why) => {
                warn!(
                    reason = why.reason(),
                    error = %why,
                    bytes = msg.body.len(),
                    message_id = msg.message_id.unwrap_or(""),
                    "not an intent: dead-lettering it"
                );
                metrics::counter!("h5pay_dead_lettered_total", "reason" => why.reason())
                    .increment(1);
                metrics::counter!("h5pay_intents_total", "outcome" => "unreadable").increment(1);
                return Disposition::DeadLetter;
            }
        };
        let institutions = self.keys.current();
        let rules = Rules {
            institutions: &institutions,
            default_mch_no: self.settings.default_mch_no.as_deref(),
            max_amount: self.settings.max_amount,
        };
        match intent::validate(&obj, rules) {
            Ok(intent) => {
                let id = &intent.identity;
                let span = info_span!(
                    "intent",
                    inst_no = id.inst_no.as_str(),
                    mch_no = id.mch_no.as_str(),
                    pay_trace_no = id.pay_trace_no.as_str(),
                    message_id = msg.message_id.unwrap_or(""),
                    redelivered = msg.redelivered,
                );
                let correlation = correlation_id(&msg, Some(&id.pay_trace_no));
                self.decide(&intent, &msg, &correlation, publisher, &institutions)
                    .instrument(span)
                    .await
            }
            Err(invalid) => {
                let event = ResultEvent::invalid(&invalid, msg.body, Utc::now());
                info!(
                    mch_no = invalid.mch_no.as_deref().unwrap_or("_"),
                    pay_trace_no = invalid.pay_trace_no.as_deref().unwrap_or(""),
                    message_id = msg.message_id.unwrap_or(""),
                    error = %invalid.message(),
                    "invalid intent"
                );
                let correlation = correlation_id(&msg, invalid.pay_trace_no.as_deref());
                self.publish_and_ack(&Outgoing::new(event), &msg, &correlation, publisher, None)
                    .await
            }
        }
    }

    /// The claim loop: claim, then call, store, publish; or replay, wait,
    /// refuse.
    async fn decide(
        &self,
        intent: &Intent,
        msg: &Incoming<'_>,
        correlation: &str,
        publisher: &Publisher,
        institutions: &Institutions,
    ) -> Disposition {
        let now = Utc::now();
        let made = intent::intent_time(
            msg.timestamp,
            intent.pay_time.as_deref(),
            self.settings.offset,
        );
        let expired = intent::is_expired(made, now, self.settings.max_intent_age_secs);
        let candidate_pay_time = intent
            .pay_time
            .clone()
            .unwrap_or_else(|| intent::format_pay_time(now, self.settings.offset));
        let fingerprint = intent.fingerprint();
        let token = claim::new_token();
        let id = &intent.identity;
        let mut waited = 0u32;
        let wait_started = tokio::time::Instant::now();

        loop {
            let reply = self
                .redis("claim", Persist::UntilStop, || {
                    self.claims.claim(
                        id,
                        &token,
                        &fingerprint,
                        &candidate_pay_time,
                        intent.pay_time.is_some(),
                        expired,
                    )
                })
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(RedisGaveUp::Stopping) => {
                    info!("stopping: handing the intent back before its claim");
                    return Disposition::HandBack;
                }
                Err(RedisGaveUp::Unusable) => return self.unusable(msg),
            };
            match claim::next_step(reply, self.settings.duplicates, waited) {
                Step::Wait(pause) => {
                    if waited == 0 {
                        metrics::counter!("h5pay_dedup_total", "kind" => "wait").increment(1);
                        debug!("another worker holds this identity: waiting for its outcome");
                    }
                    waited = waited.saturating_add(1);
                    tokio::select! {
                        _ = self.stop.cancelled() => return Disposition::HandBack,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Step::Replay { event, duplicate } => {
                    record_wait(waited, wait_started);
                    metrics::counter!("h5pay_dedup_total", "kind" => "replay").increment(1);
                    let event = match result_event::replay(&event, duplicate) {
                        Ok(e) => e,
                        Err(e) => {
                            error!(error = %e, "stored outcome is unreadable; leaving the intent for redelivery");
                            metrics::counter!("h5pay_handed_back_total", "reason" => "stored_unreadable").increment(1);
                            return self.unusable(msg);
                        }
                    };
                    info!(
                        duplicate,
                        status = event.status.as_str(),
                        "replaying the stored outcome"
                    );
                    let mark = (!duplicate).then_some(id);
                    return self
                        .publish_and_ack(&Outgoing::new(event), msg, correlation, publisher, mark)
                        .await;
                }
                Step::AckWithoutPublishing => {
                    record_wait(waited, wait_started);
                    metrics::counter!("h5pay_dedup_total", "kind" => "replay").increment(1);
                    metrics::counter!("h5pay_intents_total", "outcome" => "duplicate_dropped")
                        .increment(1);
                    info!(
                        "duplicate of a confirmed outcome: acknowledged without publishing (duplicates = drop)"
                    );
                    return Disposition::Ack;
                }
                Step::Conflict { stored_pay_time } => {
                    metrics::counter!("h5pay_dedup_total", "kind" => "conflict").increment(1);
                    let message = conflict_message(intent, &stored_pay_time);
                    info!(%message, "conflicting intent");
                    let event = ResultEvent::refused(
                        intent,
                        Failure::new(FailureKind::Conflict, message),
                        msg.body,
                        Utc::now(),
                    );
                    return self
                        .publish_and_ack(&Outgoing::new(event), msg, correlation, publisher, None)
                        .await;
                }
                Step::Expired => {
                    let message = format!(
                        "older than worker.max_intent_age_secs ({}s); the gateway was not called",
                        self.settings.max_intent_age_secs
                    );
                    info!("expired intent");
                    let event = ResultEvent::refused(
                        intent,
                        Failure::new(FailureKind::Expired, message),
                        msg.body,
                        Utc::now(),
                    );
                    return self
                        .publish_and_ack(&Outgoing::new(event), msg, correlation, publisher, None)
                        .await;
                }
                Step::Call { pay_time, takeover } => {
                    record_wait(waited, wait_started);
                    if takeover {
                        metrics::counter!("h5pay_claim_takeovers_total").increment(1);
                        info!("took over an expired claim; sending the identical request");
                    }
                    match self
                        .call_and_store(intent, &token, &pay_time, takeover, institutions)
                        .await
                    {
                        CallEnd::Stored(event) => {
                            return self
                                .publish_and_ack(&event, msg, correlation, publisher, Some(id))
                                .await;
                        }
                        CallEnd::HandedBack => return Disposition::HandBack,
                        CallEnd::Unusable => return self.unusable(msg),
                        // Another worker owns the identity now: its outcome wins.
                        CallEnd::ClaimLost => {
                            metrics::counter!("h5pay_claim_lost_total").increment(1);
                            warn!("lost the claim to another worker; waiting for its outcome");
                            continue;
                        }
                    }
                }
            }
        }
    }

    /// Calls the gateway under the claim (renewing the lease meanwhile) and
    /// stores the outcome.
    async fn call_and_store(
        &self,
        intent: &Intent,
        token: &str,
        pay_time: &str,
        takeover: bool,
        institutions: &Institutions,
    ) -> CallEnd {
        let id = &intent.identity;
        let Some(key) = institutions.key(&id.inst_no) else {
            // Validation used the same key snapshot, so this cannot happen;
            // if it does, nothing was sent: give the claim back.
            error!("no key for a validated institution");
            let _ = self.claims.release(id, token, !takeover).await;
            return CallEnd::HandedBack;
        };
        let lost = CancellationToken::new();
        let request = intent.request(pay_time);
        // After a takeover the earlier owner may have sent this very request.
        let earlier =
            takeover.then_some("an earlier worker's claim on this identity lapsed mid-call");
        // The lease is renewed alongside the call and the store, in the same
        // task: a Redis outage after the gateway answered must not let the
        // lease lapse while the answer waits to be stored.
        let renew = renew_lease(&self.claims, id, token, &lost);
        tokio::pin!(renew);
        let call = tokio::select! {
            biased;
            r = self.gateway.call(&request, key, &lost, &self.stop, earlier) => r,
            never = &mut renew => match never {},
        };
        let call = match call {
            Ok(c) => c,
            Err(abandoned) if lost.is_cancelled() => {
                debug!(attempts = abandoned.attempts, "claim lost during the call");
                return CallEnd::ClaimLost;
            }
            Err(_) => {
                // Stopping before the first attempt: give the claim back so
                // the redelivery need not wait for the lease.
                let released = self.claims.release(id, token, !takeover).await;
                if let Err(e) = released {
                    debug!(error = %e, "could not release the claim; it lapses with its lease");
                }
                info!("stopping: handing the intent back before the gateway call");
                return CallEnd::HandedBack;
            }
        };
        let out = Outgoing::new(ResultEvent::decided(intent, pay_time, &call, Utc::now()));
        let event = &out.event;
        // Store before publish: never give up on a decided outcome while the
        // process lives; a crash here replays through the gateway's own
        // idempotency with the identical request.
        let stored = tokio::select! {
            biased;
            r = self.redis("store", Persist::WhileAlive, || self.claims.store(id, token, &out.body)) => r,
            never = &mut renew => match never {},
        };
        match stored {
            Ok(true) => {
                info!(
                    status = event.status.as_str(),
                    error_kind = event.error_kind().unwrap_or(""),
                    attempts = call.attempts,
                    code_url_host = event.code_url.as_deref().and_then(url_host).unwrap_or(""),
                    "outcome decided and stored"
                );
                CallEnd::Stored(Box::new(out))
            }
            Ok(false) => CallEnd::ClaimLost,
            Err(RedisGaveUp::Stopping) => CallEnd::HandedBack,
            Err(RedisGaveUp::Unusable) => CallEnd::Unusable,
        }
    }

    /// Publishes (confirmed), marks the stored outcome confirmed when
    /// `mark` names the identity, and says ack.
    async fn publish_and_ack(
        &self,
        out: &Outgoing,
        msg: &Incoming<'_>,
        correlation: &str,
        publisher: &Publisher,
        mark: Option<&intent::Identity>,
    ) -> Disposition {
        let event = &out.event;
        if let Some(d) = self
            .publish_until_confirmed(out, msg, correlation, publisher)
            .await
        {
            return d;
        }
        metrics::counter!("h5pay_results_published_total", "status" => event.status.as_str())
            .increment(1);
        let outcome = event.error_kind().unwrap_or(event.status.as_str());
        metrics::counter!("h5pay_intents_total", "outcome" => outcome).increment(1);
        if let Some(id) = mark
            && self
                .redis("mark_confirmed", Persist::WhileAlive, || {
                    self.claims.mark_confirmed(id)
                })
                .await
                .is_err()
        {
            // The event is confirmed, only the mark is missing: the
            // redelivery replays it with duplicate: false, which is still true.
            return self.unusable(msg);
        }
        Disposition::Ack
    }

    /// What becomes of a delivery that Redis cannot serve (contract §5.13):
    /// handed back, so the quorum queue's delivery limit moves it to the
    /// DLQ. A classic queue counts no deliveries, so there a delivery that
    /// already came back once is dead-lettered at once instead of looping.
    fn unusable(&self, msg: &Incoming<'_>) -> Disposition {
        if !self.settings.delivery_limit_applies && msg.redelivered {
            metrics::counter!("h5pay_dead_lettered_total", "reason" => "redis_unusable")
                .increment(1);
            Disposition::DeadLetter
        } else {
            Disposition::HandBack
        }
    }

    /// Publishes the event until the broker confirms it (contract §5.12):
    /// a nack, a return or a confirm timeout is retried with backoff for up
    /// to `amqp.publish_retry_ms` (the outcome is stored, so nothing is
    /// decided twice), and only then is the intent handed back. A full
    /// consumer queue must not turn into a requeue storm that burns the
    /// delivery limit in milliseconds. `None`: confirmed.
    async fn publish_until_confirmed(
        &self,
        out: &Outgoing,
        msg: &Incoming<'_>,
        correlation: &str,
        publisher: &Publisher,
    ) -> Option<Disposition> {
        let started = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let e = match publisher
                .publish_result(&out.event, &out.body, correlation, msg.reply_to)
                .await
            {
                Ok(()) => return None,
                Err(e) => e,
            };
            metrics::counter!("h5pay_publish_failures_total").increment(1);
            if e.channel_lost() {
                warn!(error = %e, "result event not confirmed: the channel is gone; the intent will come again");
                return Some(Disposition::ConnectionLost);
            }
            failures += 1;
            let wait = match self.settings.publish_retry.next(
                failures,
                started.elapsed(),
                None,
                &mut rand::rng(),
            ) {
                Backoff::Wait(d) => d,
                Backoff::GiveUp(_) => {
                    warn!(error = %e, failures, "result event still not confirmed after amqp.publish_retry_ms; handing the intent back");
                    metrics::counter!("h5pay_handed_back_total", "reason" => "publish_refused")
                        .increment(1);
                    return Some(Disposition::HandBack);
                }
            };
            if failures == 1 {
                warn!(error = %e, "result event not confirmed; publishing it again with backoff");
            }
            tokio::select! {
                _ = self.stop.cancelled() => {
                    info!("stopping: handing back an intent whose result is not confirmed yet (its outcome is stored)");
                    return Some(Disposition::HandBack);
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs a Redis operation until it succeeds, or until retrying cannot
    /// help: a reply the worker cannot use (contract §5.13) is tried
    /// [`UNUSABLE_TRIES`] times, then given up so the intent is handed back
    /// and the delivery limit moves it to the DLQ. `persist` says whether a
    /// stop interrupts the retries.
    async fn redis<T, F, Fut>(
        &self,
        op: &'static str,
        persist: Persist,
        f: F,
    ) -> Result<T, RedisGaveUp>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClaimError>>,
    {
        let mut delay = REDIS_RETRY_MIN;
        let mut failures = 0u32;
        let mut unusable = 0u32;
        loop {
            if persist == Persist::UntilStop && self.stop.is_cancelled() {
                return Err(RedisGaveUp::Stopping);
            }
            match f().await {
                Ok(v) => {
                    if failures > 0 {
                        info!(op, failures, "redis answers again");
                    }
                    return Ok(v);
                }
                Err(e) => {
                    let cause = e.label();
                    metrics::counter!("h5pay_redis_errors_total", "op" => op, "error" => cause)
                        .increment(1);
                    if e.is_unusable() {
                        unusable += 1;
                        if unusable >= UNUSABLE_TRIES {
                            error!(op, cause, error = %e, "redis answered something no retry can fix; handing the intent back (the delivery limit moves it to the DLQ)");
                            metrics::counter!("h5pay_handed_back_total", "reason" => "redis_unusable").increment(1);
                            return Err(RedisGaveUp::Unusable);
                        }
                    } else if failures == 0 {
                        warn!(op, error = %e, "redis unavailable: the intent waits (no gateway call, no ack)");
                    }
                    failures += 1;
                    let jittered = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    if persist == Persist::UntilStop {
                        tokio::select! {
                            _ = self.stop.cancelled() => return Err(RedisGaveUp::Stopping),
                            _ = tokio::time::sleep(jittered) => {}
                        }
                    } else {
                        tokio::time::sleep(jittered).await;
                    }
                    delay = (delay * 2).min(REDIS_RETRY_MAX);
                }
            }
        }
    }
}

/// Whether a stop interrupts a Redis step's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// Nothing is decided yet: a stop hands the intent back.
    UntilStop,
    /// The step after it must not be skipped (an outcome waits to be
    /// stored or marked): keep trying while the process lives.
    WhileAlive,
}

/// Why a Redis step was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedisGaveUp {
    Stopping,
    /// Redis answered something retrying cannot fix.
    Unusable,
}

/// Tries of a Redis step whose reply is unusable before the intent is
/// handed back.
const UNUSABLE_TRIES: u32 = 3;

enum CallEnd {
    Stored(Box<Outgoing>),
    HandedBack,
    ClaimLost,
    /// Redis answered something no retry can fix.
    Unusable,
}

/// Renews the lease every third of it; cancels `lost` when the claim is
/// no longer ours, then waits forever (the call notices and ends). Redis
/// errors are tolerated: the call goes on, and if the lease lapses
/// meanwhile the compare-and-set on store decides.
async fn renew_lease(
    claims: &ClaimStore,
    id: &intent::Identity,
    token: &str,
    lost: &CancellationToken,
) -> std::convert::Infallible {
    // On a fixed schedule, not "a third after the last renewal ended": a
    // renewal that times out must not push the next one past the lease.
    let period = claims.lease() / 3;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match claims.renew(id, token).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return std::future::pending().await;
            }
            Err(e) => warn!(error = %e, "could not renew the claim's lease"),
        }
    }
}

/// A result event and its serialised body: serialised once, stored and
/// published as the same bytes.
struct Outgoing {
    event: ResultEvent,
    body: Vec<u8>,
}

impl Outgoing {
    fn new(event: ResultEvent) -> Self {
        let body = event.to_json();
        Outgoing { event, body }
    }
}

fn record_wait(waited: u32, since: tokio::time::Instant) {
    if waited > 0 {
        metrics::histogram!("h5pay_claim_wait_seconds").record(since.elapsed().as_secs_f64());
    }
}

/// The result's correlation_id: the intent's, else its message_id, else
/// its pay_trace_no.
pub fn correlation_id(msg: &Incoming<'_>, pay_trace_no: Option<&str>) -> String {
    msg.correlation_id
        .filter(|c| !c.is_empty())
        .or(msg.message_id.filter(|m| !m.is_empty()))
        .or(pay_trace_no)
        .unwrap_or("")
        .to_owned()
}

fn conflict_message(intent: &Intent, stored_pay_time: &str) -> String {
    match &intent.pay_time {
        Some(pt) if pt != stored_pay_time => format!(
            "this identity was sent with pay_time {stored_pay_time}; this intent says {pt}"
        ),
        _ => "this identity was seen before with different parameters (pay_type, total_amount, open_id or notify_url)"
            .to_owned(),
    }
}

/// Only the host of a code_url is logged: the link itself lets anyone pay.
pub fn url_host(u: &str) -> Option<&str> {
    let rest = u.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    Some(host.rsplit_once('@').map_or(host, |(_, h)| h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(correlation: Option<&'a str>, message_id: Option<&'a str>) -> Incoming<'a> {
        Incoming {
            body: b"{}",
            message_id,
            correlation_id: correlation,
            reply_to: None,
            timestamp: None,
            redelivered: false,
        }
    }

    #[test]
    fn correlation_prefers_correlation_then_message_id_then_trace() {
        assert_eq!(correlation_id(&msg(Some("c"), Some("m")), Some("t")), "c");
        assert_eq!(correlation_id(&msg(None, Some("m")), Some("t")), "m");
        assert_eq!(correlation_id(&msg(Some(""), None), Some("t")), "t");
        assert_eq!(correlation_id(&msg(None, None), None), "");
    }

    #[test]
    fn only_the_host_of_a_code_url_is_shown() {
        assert_eq!(
            url_host("https://pay.example.com/pay?order=1&sign=x"),
            Some("pay.example.com")
        );
        assert_eq!(url_host("http://u:p@h:8090/x"), Some("h:8090"));
        assert_eq!(url_host("nonsense"), None);
    }
}
