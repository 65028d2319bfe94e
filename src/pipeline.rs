//! One intent, from delivery to disposition: read → validate → claim →
//! gateway → store → publish → mark confirmed. The caller acts on the
//! returned [`Disposition`]; nothing here acknowledges a message.
//!
//! Order matters and is the point of this module (contract §5):
//! claim before call, store before publish, publish (confirmed) before ack.
//! Each step is a method of its own; [`Pipeline::decide`] is the claim
//! loop that chooses between them. Results go out through a
//! [`ResultSink`], so tests can watch the order directly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{FixedOffset, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::amqp::{PublishError, Publisher};
use crate::claim::lease::keep_lease;
use crate::claim::{self, ClaimError, ClaimRequest, ClaimStore, Release, Step, StoredOutcome};
use crate::config::{Config, DuplicatePolicy, QueueType};
use crate::gateway::retry::{Backoff, RetryPolicy};
use crate::gateway::{Abandon, Gateway};
use crate::intent::{self, Intent, InvalidIntent, Rules, Unreadable};
use crate::keys::{Institutions, KeyRing};
use crate::outcome::{Failure, FailureKind};
use crate::payment::Sent;
use crate::payment::store::is_followed;
use crate::reconcile::Scheduling;
use crate::result_event::{self, ResultEvent};
use crate::telemetry::metrics::{self, Dedup, HandBack, IntentOutcome, Label, RedisOp};
use crate::telemetry::trace::{self, TraceHeaders};

/// What to do with the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The result event is confirmed (or deliberately not published): ack.
    Ack,
    /// Cannot be an intent at all: reject without requeue (dead-letter).
    DeadLetter,
    /// Not started, or its result could not be published: requeue it, so
    /// it comes again (and counts toward the delivery limit).
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
    /// The W3C trace context of the intent's headers.
    pub trace: &'a TraceHeaders,
}

/// Where result events go: the confirm-mode publisher in production, a
/// recorder in tests of the pipeline's order.
pub trait ResultSink: Sync {
    /// Publishes `event` (serialised as `body`) and resolves once the
    /// broker confirmed it.
    fn publish(
        &self,
        event: &ResultEvent,
        body: &[u8],
        correlation_id: &str,
        reply_to: Option<&str>,
        trace: &TraceHeaders,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl ResultSink for Publisher {
    fn publish(
        &self,
        event: &ResultEvent,
        body: &[u8],
        correlation_id: &str,
        reply_to: Option<&str>,
        trace: &TraceHeaders,
    ) -> impl Future<Output = Result<(), PublishError>> + Send {
        self.publish_result(event, body, correlation_id, reply_to, trace)
    }
}

/// Settings the pipeline decides with.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub default_mch_no: Option<String>,
    /// `notify.public_url`: the notify_url sent for intents that bring none.
    pub notify_url: Option<String>,
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
            notify_url: Some(s.notify.public_url.clone()).filter(|u| !u.is_empty()),
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
    pub gateway: Arc<Gateway>,
    /// Institution keys; replaced on SIGHUP.
    pub keys: Arc<KeyRing>,
    pub settings: PipelineSettings,
    /// Cancelled when the worker stops taking intents: work not yet at the
    /// gateway is handed back.
    pub stop: CancellationToken,
    /// First checks of followed payments (`None`: the reconciler is off).
    pub scheduling: Option<Scheduling>,
}

/// One delivery on its way: what every step after validation needs.
struct Delivery<'a, S> {
    msg: &'a Incoming<'a>,
    /// The result's correlation_id.
    correlation: String,
    sink: &'a S,
}

/// How long a delivery has waited for another worker's claim.
struct Waiting {
    times: u32,
    since: tokio::time::Instant,
}

impl Waiting {
    fn new() -> Self {
        Waiting {
            times: 0,
            since: tokio::time::Instant::now(),
        }
    }

    /// Records the wait once it is over.
    fn over(&self) {
        if self.times > 0 {
            metrics::claim_waited(self.since.elapsed());
        }
    }
}

impl Pipeline {
    /// Processes one delivery to a disposition. With spans exported, the
    /// intent's trace is sampled first: an intent whose trace is not
    /// recorded creates no span at all.
    pub async fn process<S: ResultSink>(&self, msg: Incoming<'_>, sink: &S) -> Disposition {
        if !trace::enabled() {
            return self.traced(msg, sink).await;
        }
        match trace::sample(msg.trace) {
            None => trace::scoped(true, self.traced(msg, sink)).await,
            Some(carried) => {
                let msg = Incoming {
                    trace: &carried,
                    ..msg
                };
                trace::scoped(false, self.traced(msg, sink)).await
            }
        }
    }

    /// Reading and validating run before the intent's span exists, so the
    /// span is created once with its identity (recording fields later
    /// re-formats them, per field).
    async fn traced<S: ResultSink>(&self, msg: Incoming<'_>, sink: &S) -> Disposition {
        let obj = match intent::read(msg.body) {
            Ok(o) => o,
            Err(why) => return self.unreadable(&msg, &why),
        };
        let institutions = self.keys.current();
        let rules = Rules {
            institutions: &institutions,
            default_mch_no: self.settings.default_mch_no.as_deref(),
            max_amount: self.settings.max_amount,
        };
        // The consumer span of the trace (only when spans are exported),
        // continuing the publisher's; the intent's own span sits inside it.
        let process = crate::step_span!(
            "process",
            otel.name = "process h5pay.intents",
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = "h5pay.intents",
            messaging.message.id = msg.message_id.unwrap_or(""),
        );
        trace::continue_trace(&process, msg.trace);
        match intent::validate(&obj, rules) {
            Ok(intent) => {
                let id = &intent.identity;
                let span = info_span!(
                    parent: &process,
                    "intent",
                    inst_no = id.inst_no.as_str(),
                    mch_no = id.mch_no.as_str(),
                    pay_trace_no = id.pay_trace_no.as_str(),
                    message_id = msg.message_id.unwrap_or(""),
                    redelivered = msg.redelivered,
                    trace_id = trace::trace_id(&process, msg.trace).as_str(),
                );
                let d = Delivery {
                    msg: &msg,
                    correlation: correlation_id(&msg, Some(&id.pay_trace_no)),
                    sink,
                };
                // Entering `process` too makes it the parent of every step
                // span in the exported trace (the log span is not exported).
                self.decide(&intent, &d, &institutions)
                    .instrument(span)
                    .instrument(process.clone())
                    .await
            }
            Err(invalid) => self.invalid(&invalid, &msg, sink).instrument(process).await,
        }
    }

    /// What cannot be an intent at all is dead-lettered, with a log line.
    fn unreadable(&self, msg: &Incoming<'_>, why: &Unreadable) -> Disposition {
        warn!(
            reason = why.reason().as_str(),
            error = %why,
            bytes = msg.body.len(),
            message_id = msg.message_id.unwrap_or(""),
            "not an intent: dead-lettering it"
        );
        metrics::dead_lettered(why.reason());
        metrics::intent_settled(IntentOutcome::Unreadable);
        Disposition::DeadLetter
    }

    /// An intent that breaks rules of §3 gets an `invalid_intent` event.
    async fn invalid<S: ResultSink>(
        &self,
        invalid: &InvalidIntent,
        msg: &Incoming<'_>,
        sink: &S,
    ) -> Disposition {
        info!(
            mch_no = invalid.mch_no.as_deref().unwrap_or("_"),
            pay_trace_no = invalid.pay_trace_no.as_deref().unwrap_or(""),
            message_id = msg.message_id.unwrap_or(""),
            error = %invalid.message(),
            "invalid intent"
        );
        let d = Delivery {
            msg,
            correlation: correlation_id(msg, invalid.pay_trace_no.as_deref()),
            sink,
        };
        let event = ResultEvent::invalid(invalid, msg.body, Utc::now());
        self.publish_outcome(&Outgoing::new(event), &d, None).await
    }

    /// The claim loop: claim, then call, store, publish; or replay, wait,
    /// refuse.
    async fn decide<S: ResultSink>(
        &self,
        intent: &Intent,
        d: &Delivery<'_, S>,
        institutions: &Institutions,
    ) -> Disposition {
        let now = Utc::now();
        let made = intent::intent_time(
            d.msg.timestamp,
            intent.pay_time.as_deref(),
            self.settings.offset,
        );
        let candidate_pay_time = intent
            .pay_time
            .clone()
            .unwrap_or_else(|| intent::format_pay_time(now, self.settings.offset));
        let fingerprint = intent.fingerprint();
        let token = claim::new_token();
        // What is sent, stored with a new claim: a retry or a takeover sends
        // the same notify_url, and a payment event can be built even before
        // the outcome is stored.
        let sent = Sent {
            pay_type: intent.pay_type,
            total_amount: intent.total_amount,
            notify_url: intent
                .notify_url
                .clone()
                .or_else(|| self.settings.notify_url.clone()),
            correlation_id: d.correlation.clone(),
            metadata: intent.metadata.clone(),
            // Payment events of the identity continue this intent's trace.
            trace: trace::outgoing(d.msg.trace),
        };
        let sent_json = serde_json::to_string(&sent).unwrap_or_default();
        let request = ClaimRequest {
            token: &token,
            fingerprint: &fingerprint,
            pay_time: &candidate_pay_time,
            pay_time_explicit: intent.pay_time.is_some(),
            too_old: intent::is_expired(made, now, self.settings.max_intent_age_secs),
            sent: &sent_json,
            reached: false,
        };
        let id = &intent.identity;
        let mut waiting = Waiting::new();
        // An attempt of this delivery may have reached the gateway: kept for
        // the whole delivery, also when its claim vanished (an expiry, a
        // failover) and is taken again, and stored with that claim
        // (contract §5.6).
        let mut reached = false;
        loop {
            let request = ClaimRequest { reached, ..request };
            let claimed = self
                .redis(RedisOp::Claim, Persist::UntilStop, || {
                    self.claims.claim(id, &request)
                })
                .instrument(crate::step_span!(
                    "claim",
                    otel.kind = "client",
                    db.system = "redis"
                ))
                .await;
            let reply = match claimed {
                Ok(r) => r,
                Err(RedisGaveUp::Stopping) => {
                    info!("stopping: handing the intent back before its claim");
                    return Disposition::HandBack;
                }
                Err(RedisGaveUp::Unusable) => return self.unusable(d.msg),
            };
            match claim::next_step(reply, self.settings.duplicates, waiting.times) {
                Step::Wait(pause) => {
                    if !self.wait(pause, &mut waiting).await {
                        return Disposition::HandBack;
                    }
                }
                Step::Replay { event, duplicate } => {
                    waiting.over();
                    return self.replay(&event, duplicate, id, d).await;
                }
                Step::AckWithoutPublishing => {
                    waiting.over();
                    metrics::dedup(Dedup::Replay);
                    metrics::intent_settled(IntentOutcome::DuplicateDropped);
                    info!(
                        "duplicate of a confirmed outcome: acknowledged without publishing (duplicates = drop)"
                    );
                    return Disposition::Ack;
                }
                Step::Conflict { stored_pay_time } => {
                    metrics::dedup(Dedup::Conflict);
                    let message = conflict_message(intent, &stored_pay_time);
                    info!(%message, "conflicting intent");
                    let failure = Failure::new(FailureKind::Conflict, message);
                    return self.refuse(intent, failure, d).await;
                }
                Step::Expired => {
                    info!("expired intent");
                    let message = format!(
                        "older than worker.max_intent_age_secs ({}s); the gateway was not called",
                        self.settings.max_intent_age_secs
                    );
                    let failure = Failure::new(FailureKind::Expired, message);
                    return self.refuse(intent, failure, d).await;
                }
                Step::Call {
                    pay_time,
                    takeover,
                    sent: stored,
                } => {
                    waiting.over();
                    if reached {
                        info!(
                            "claimed again after losing the claim mid-call; sending the identical request"
                        );
                    } else if takeover {
                        metrics::claim_taken_over();
                        info!("took over an expired claim; sending the identical request");
                    }
                    // The claim's notify_url: for a takeover, the one the
                    // earlier owner sent (a claim stored before it was kept
                    // sends the intent's own).
                    let notify_url = if stored.is_empty() {
                        intent.notify_url.clone()
                    } else {
                        serde_json::from_str::<Sent>(&stored)
                            .map(|s| s.notify_url)
                            .unwrap_or_else(|_| sent.notify_url.clone())
                    };
                    let call = Call {
                        intent,
                        token: &token,
                        pay_time: &pay_time,
                        notify_url: notify_url.as_deref(),
                        takeover,
                    };
                    match self.call_and_store(&call, institutions).await {
                        CallEnd::Stored(out) => {
                            // The first check is scheduled alongside the
                            // publish, and both come before the ack.
                            let (disposition, scheduled) = tokio::join!(
                                self.publish_outcome(&out, d, Some(id)),
                                self.schedule_first_check(id, &out.event),
                            );
                            return self.unless_unscheduled(disposition, scheduled, d.msg);
                        }
                        CallEnd::HandBack => return Disposition::HandBack,
                        CallEnd::Unusable => return self.unusable(d.msg),
                        // Another worker owns the identity now (its outcome
                        // wins), or the claim vanished: claim again.
                        CallEnd::ClaimLost { attempted } => {
                            reached |= attempted;
                            metrics::claim_lost();
                            warn!(
                                attempted,
                                "lost the claim mid-call; claiming again (another worker's outcome wins)"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Waits for another worker's claim; `false` when stopping.
    async fn wait(&self, pause: Duration, waiting: &mut Waiting) -> bool {
        if waiting.times == 0 {
            metrics::dedup(Dedup::Wait);
            debug!("another worker holds this identity: waiting for its outcome");
        }
        waiting.times = waiting.times.saturating_add(1);
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// Publishes a stored outcome again (a duplicate, or a redelivery).
    async fn replay<S: ResultSink>(
        &self,
        stored: &str,
        duplicate: bool,
        id: &intent::Identity,
        d: &Delivery<'_, S>,
    ) -> Disposition {
        metrics::dedup(Dedup::Replay);
        let event = match result_event::replay(stored, duplicate) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "stored outcome is unreadable; leaving the intent for redelivery");
                metrics::handed_back(HandBack::StoredUnreadable);
                return self.unusable(d.msg);
            }
        };
        info!(
            duplicate,
            status = event.status.as_str(),
            "replaying the stored outcome"
        );
        // An outcome not yet confirmed is marked once this replay is.
        let mark = (!duplicate).then_some(id);
        // Scheduling again is idempotent: a crash between the store and the
        // schedule loses nothing.
        let out = Outgoing::new(event);
        let (disposition, scheduled) = tokio::join!(
            self.publish_outcome(&out, d, mark),
            self.schedule_first_check(id, &out.event),
        );
        self.unless_unscheduled(disposition, scheduled, d.msg)
    }

    /// Schedules the payment's first check if the outcome is followed
    /// (contract §12). `false`: Redis could not be used; the intent must
    /// not be acknowledged.
    async fn schedule_first_check(&self, id: &intent::Identity, event: &ResultEvent) -> bool {
        let Some(s) = &self.scheduling else {
            return true;
        };
        if !is_followed(event.status, event.error.as_ref().map(|e| e.kind)) {
            return true;
        }
        let placed = event.placed_at().unwrap_or_else(Utc::now);
        self.redis(RedisOp::Schedule, Persist::WhileAlive, || {
            s.first_check(id, placed)
        })
        .await
        .is_ok()
    }

    /// An outcome whose first check is not scheduled is not acknowledged:
    /// its redelivery replays it and schedules again.
    fn unless_unscheduled(
        &self,
        d: Disposition,
        scheduled: bool,
        msg: &Incoming<'_>,
    ) -> Disposition {
        if d == Disposition::Ack && !scheduled {
            return self.unusable(msg);
        }
        d
    }

    /// A failure decided without the gateway (`conflict`, `expired`): not
    /// stored as the identity's outcome.
    async fn refuse<S: ResultSink>(
        &self,
        intent: &Intent,
        failure: Failure,
        d: &Delivery<'_, S>,
    ) -> Disposition {
        let event = ResultEvent::refused(intent, failure, d.msg.body, Utc::now());
        self.publish_outcome(&Outgoing::new(event), d, None).await
    }

    /// Calls the gateway under the claim (renewing the lease meanwhile) and
    /// stores the outcome.
    async fn call_and_store(&self, call: &Call<'_>, institutions: &Institutions) -> CallEnd {
        let id = &call.intent.identity;
        let release = if call.takeover {
            Release::KeepPayTime
        } else {
            Release::Forget
        };
        let Some(key) = institutions.key(&id.inst_no) else {
            // Validation used the same key snapshot, so this cannot happen;
            // if it does, nothing was sent: give the claim back.
            error!("no key for a validated institution");
            let _ = self.claims.release(id, call.token, release).await;
            return CallEnd::HandBack;
        };
        let lost = CancellationToken::new();
        let request = call.intent.request(call.pay_time, call.notify_url);
        // After a takeover the earlier owner may have sent this very request.
        let earlier = call
            .takeover
            .then_some("an earlier worker's claim on this identity lapsed mid-call");
        // The lease is renewed alongside the call and the store, in the same
        // task: a Redis outage after the gateway answered must not let the
        // lease lapse while the answer waits to be stored.
        let claims = &self.claims;
        let renew = keep_lease(claims.lease(), &lost, || async {
            claims
                .renew(id, call.token)
                .await
                .inspect_err(|e| warn!(error = %e, "could not renew the claim's lease"))
        });
        tokio::pin!(renew);
        let abandon = Abandon {
            any_time: &lost,
            before_first: &self.stop,
            unless: None,
        };
        let h5pay = self
            .gateway
            .h5pay(&request, key, abandon, earlier)
            .instrument(crate::step_span!(
                "h5pay",
                otel.name = "POST /api/openpay/v3/h5pay",
                otel.kind = "client",
                http.request.method = "POST",
            ));
        let result = tokio::select! {
            biased;
            r = h5pay => r,
            never = &mut renew => match never {},
        };
        let result = match result {
            Ok(r) => r,
            Err(abandoned) if lost.is_cancelled() => {
                debug!(attempts = abandoned.attempts, "claim lost during the call");
                return CallEnd::ClaimLost {
                    attempted: call.takeover || abandoned.attempts > 0,
                };
            }
            Err(_) => {
                // Stopping before the first attempt: give the claim back so
                // the redelivery need not wait for the lease.
                if let Err(e) = self.claims.release(id, call.token, release).await {
                    debug!(error = %e, "could not release the claim; it lapses with its lease");
                }
                info!("stopping: handing the intent back before the gateway call");
                return CallEnd::HandBack;
            }
        };
        let out = Outgoing::new(ResultEvent::decided(
            call.intent,
            call.pay_time,
            &result,
            Utc::now(),
        ));
        // Store before publish: never give up on a decided outcome while the
        // process lives; a crash here replays through the gateway's own
        // idempotency with the identical request.
        let outcome = StoredOutcome {
            event: &out.body,
            followed: is_followed(out.event.status, out.event.error.as_ref().map(|e| e.kind)),
            trade_no: result.trade_no.as_deref(),
        };
        let store = self
            .redis(RedisOp::Store, Persist::WhileAlive, || {
                self.claims.store(id, call.token, &outcome)
            })
            .instrument(crate::step_span!(
                "store",
                otel.kind = "client",
                db.system = "redis"
            ));
        let stored = tokio::select! {
            biased;
            r = store => r,
            never = &mut renew => match never {},
        };
        match stored {
            Ok(true) => {
                let event = &out.event;
                info!(
                    status = event.status.as_str(),
                    error_kind = event.error_kind().unwrap_or(""),
                    attempts = result.attempts,
                    code_url_host = event.code_url.as_deref().and_then(url_host).unwrap_or(""),
                    "outcome decided and stored"
                );
                CallEnd::Stored(Box::new(out))
            }
            // The gateway answered: it has seen this request.
            Ok(false) => CallEnd::ClaimLost { attempted: true },
            Err(RedisGaveUp::Stopping) => CallEnd::HandBack,
            Err(RedisGaveUp::Unusable) => CallEnd::Unusable,
        }
    }

    /// Publishes the outcome's event (confirmed) and, when `mark` names the
    /// identity, marks its stored outcome confirmed. `Ack` only then: it
    /// does not acknowledge anything itself.
    async fn publish_outcome<S: ResultSink>(
        &self,
        out: &Outgoing,
        d: &Delivery<'_, S>,
        mark: Option<&intent::Identity>,
    ) -> Disposition {
        if let Some(refused) = self.publish_until_confirmed(out, d).await {
            return refused;
        }
        let event = &out.event;
        metrics::result_published(event.status);
        metrics::intent_settled(IntentOutcome::of(
            event.status,
            event.error.as_ref().map(|e| e.kind),
        ));
        if let Some(id) = mark
            && self
                .redis(RedisOp::MarkConfirmed, Persist::WhileAlive, || {
                    self.claims.mark_confirmed(id)
                })
                .await
                .is_err()
        {
            // The event is confirmed, only the mark is missing: the
            // redelivery replays it with duplicate: false, which is still true.
            return self.unusable(d.msg);
        }
        Disposition::Ack
    }

    /// What becomes of a delivery that Redis cannot serve (contract §5.13):
    /// handed back, so the quorum queue's delivery limit moves it to the
    /// DLQ. A classic queue counts no deliveries, so there a delivery that
    /// already came back once is dead-lettered at once instead of looping.
    fn unusable(&self, msg: &Incoming<'_>) -> Disposition {
        if !self.settings.delivery_limit_applies && msg.redelivered {
            metrics::dead_lettered(metrics::DeadLetter::RedisUnusable);
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
    async fn publish_until_confirmed<S: ResultSink>(
        &self,
        out: &Outgoing,
        d: &Delivery<'_, S>,
    ) -> Option<Disposition> {
        let started = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let span = trace::publish_span(&out.event.event_id);
            let outgoing = span.in_scope(|| trace::outgoing(d.msg.trace));
            let published = d
                .sink
                .publish(
                    &out.event,
                    &out.body,
                    &d.correlation,
                    d.msg.reply_to,
                    &outgoing,
                )
                .instrument(span)
                .await;
            let e = match published {
                Ok(()) => return None,
                Err(e) => e,
            };
            metrics::publish_failed();
            if e.channel_lost() {
                warn!(error = %e, "result event not confirmed: the channel is gone; the intent will come again");
                return Some(Disposition::ConnectionLost);
            }
            failures += 1;
            let next = self.settings.publish_retry.next(
                failures,
                started.elapsed(),
                None,
                &mut rand::rng(),
            );
            let wait = match next {
                Backoff::Wait(w) => w,
                Backoff::GiveUp(_) => {
                    warn!(error = %e, failures, "result event still not confirmed after amqp.publish_retry_ms; handing the intent back");
                    metrics::handed_back(HandBack::PublishRefused);
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
    async fn redis<T, F, Fut>(&self, op: RedisOp, persist: Persist, f: F) -> Result<T, RedisGaveUp>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ClaimError>>,
    {
        let mut backoff = crate::reconnect::Reconnect::redis();
        let mut failures = 0u32;
        let mut unusable = 0u32;
        loop {
            if persist == Persist::UntilStop && self.stop.is_cancelled() {
                return Err(RedisGaveUp::Stopping);
            }
            let e = match f().await {
                Ok(v) => {
                    if failures > 0 {
                        info!(op = op.as_str(), failures, "redis answers again");
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let cause = e.cause();
            metrics::redis_error(op, cause);
            if cause.is_unusable() {
                unusable += 1;
                if unusable >= UNUSABLE_TRIES {
                    error!(op = op.as_str(), cause = cause.as_str(), error = %e, "redis answered something no retry can fix; handing the intent back (the delivery limit moves it to the DLQ)");
                    metrics::handed_back(HandBack::RedisUnusable);
                    return Err(RedisGaveUp::Unusable);
                }
            } else if failures == 0 {
                warn!(op = op.as_str(), error = %e, "redis unavailable: the intent waits (no gateway call, no ack)");
            }
            failures += 1;
            let jittered = backoff.next_delay();
            if persist == Persist::UntilStop {
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(RedisGaveUp::Stopping),
                    _ = tokio::time::sleep(jittered) => {}
                }
            } else {
                tokio::time::sleep(jittered).await;
            }
        }
    }
}

/// One gateway call under a claim.
struct Call<'a> {
    intent: &'a Intent,
    token: &'a str,
    /// Fixed for the identity: the claim's.
    pay_time: &'a str,
    /// Fixed for the identity: the claim's.
    notify_url: Option<&'a str>,
    /// An earlier owner's lease lapsed: it may have sent this request.
    takeover: bool,
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
    /// Stopping before the gateway saw the request.
    HandBack,
    /// The claim was lost during the call or before its store; `attempted`:
    /// the gateway may have seen this request.
    ClaimLost {
        attempted: bool,
    },
    /// Redis answered something no retry can fix.
    Unusable,
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
            trace: &NO_TRACE,
        }
    }

    static NO_TRACE: TraceHeaders = TraceHeaders {
        traceparent: None,
        tracestate: None,
    };

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
