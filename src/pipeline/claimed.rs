//! The claim loop of one valid intent: claim its identity, then wait for
//! another worker's claim, replay a stored outcome, refuse (conflict,
//! expired), or call the gateway under the claim.

use std::ops::ControlFlow;
use std::time::Duration;

use chrono::Utc;
use tracing::{Instrument, debug, error, info, warn};

use super::call::{Call, CallEnd};
use super::redis_retry::{Persist, RedisGaveUp};
use super::{Delivery, Disposition, Outgoing, Pipeline, ResultSink};
use crate::claim::{self, ClaimRequest, ClaimStep};
use crate::intent::{self, Intent};
use crate::keys::Institutions;
use crate::outcome::{Failure, FailureKind};
use crate::payment::Sent;
use crate::result_event::{self, ResultEvent};
use crate::telemetry::metrics::{self, Dedup, HandBack, IntentOutcome, RedisOp};
use crate::telemetry::trace;

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

/// What a delivery asks the claim for, the same on every try.
struct Asking {
    /// This delivery's owner token.
    token: String,
    fingerprint: String,
    /// The pay_time to fix if the identity is new.
    pay_time: String,
    pay_time_explicit: bool,
    too_old: bool,
    /// What is sent, and its JSON as stored with a new claim.
    sent: Sent,
    sent_json: String,
}

impl Asking {
    fn request(&self, reached: bool) -> ClaimRequest<'_> {
        ClaimRequest {
            token: &self.token,
            fingerprint: &self.fingerprint,
            pay_time: &self.pay_time,
            pay_time_explicit: self.pay_time_explicit,
            too_old: self.too_old,
            sent: &self.sent_json,
            reached,
        }
    }
}

/// What the claim script said when it gave this delivery the claim.
struct Claimed {
    /// Fixed for the identity.
    pay_time: String,
    takeover: bool,
    /// The earlier owner's `Sent` (JSON), if any.
    stored: String,
    /// An earlier attempt of this delivery may have reached the gateway.
    reached: bool,
}

impl Pipeline {
    /// The claim loop: claim, then call, store, publish; or replay, wait,
    /// refuse.
    pub(super) async fn claim_loop<S: ResultSink>(
        &self,
        intent: &Intent,
        d: &Delivery<'_, S>,
        institutions: &Institutions,
    ) -> Disposition {
        let asking = self.asking(intent, d);
        let id = &intent.identity;
        let mut waiting = Waiting::new();
        // An attempt of this delivery may have reached the gateway: kept for
        // the whole delivery, also when its claim vanished (an expiry, a
        // failover) and is taken again, and stored with that claim
        // (contract §5.6).
        let mut reached = false;
        loop {
            let request = asking.request(reached);
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
                ClaimStep::Wait(pause) => {
                    if !self.wait(pause, &mut waiting).await {
                        return Disposition::HandBack;
                    }
                }
                ClaimStep::Replay { event, duplicate } => {
                    waiting.over();
                    return self.replay(&event, duplicate, id, d).await;
                }
                ClaimStep::AckWithoutPublishing => {
                    waiting.over();
                    metrics::dedup(Dedup::Replay);
                    metrics::intent_settled(IntentOutcome::DuplicateDropped);
                    info!(
                        "duplicate of a confirmed outcome: acknowledged without publishing (duplicates = drop)"
                    );
                    return Disposition::Ack;
                }
                ClaimStep::Conflict { stored_pay_time } => {
                    metrics::dedup(Dedup::Conflict);
                    let message = conflict_message(intent, &stored_pay_time);
                    info!(%message, "conflicting intent");
                    let failure = Failure::new(FailureKind::Conflict, message);
                    return self.refuse(intent, failure, d).await;
                }
                ClaimStep::Expired => {
                    info!("expired intent");
                    let message = format!(
                        "older than worker.max_intent_age_secs ({}s); the gateway was not called",
                        self.settings.max_intent_age_secs
                    );
                    let failure = Failure::new(FailureKind::Expired, message);
                    return self.refuse(intent, failure, d).await;
                }
                ClaimStep::Call {
                    pay_time,
                    takeover,
                    sent: stored,
                } => {
                    waiting.over();
                    let claimed = Claimed {
                        pay_time,
                        takeover,
                        stored,
                        reached,
                    };
                    match self
                        .call_claimed(intent, &asking, claimed, d, institutions)
                        .await
                    {
                        ControlFlow::Break(disposition) => return disposition,
                        ControlFlow::Continue(attempted) => reached |= attempted,
                    }
                }
            }
        }
    }

    /// What this delivery asks the claim for.
    fn asking<S>(&self, intent: &Intent, d: &Delivery<'_, S>) -> Asking {
        let now = Utc::now();
        let made = intent::intent_time(
            d.msg.timestamp,
            intent.pay_time.as_deref(),
            self.settings.offset,
        );
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
        Asking {
            token: claim::new_token(),
            fingerprint: intent.fingerprint(),
            pay_time: intent
                .pay_time
                .clone()
                .unwrap_or_else(|| intent::format_pay_time(now, self.settings.offset)),
            pay_time_explicit: intent.pay_time.is_some(),
            too_old: intent::is_expired(made, now, self.settings.max_intent_age_secs),
            sent_json: serde_json::to_string(&sent).unwrap_or_default(),
            sent,
        }
    }

    /// Calls the gateway under the claim just taken, then publishes the
    /// stored outcome. `Continue(attempted)`: the claim was lost, claim
    /// again (`attempted`: the gateway may have seen the request).
    async fn call_claimed<S: ResultSink>(
        &self,
        intent: &Intent,
        asking: &Asking,
        claimed: Claimed,
        d: &Delivery<'_, S>,
        institutions: &Institutions,
    ) -> ControlFlow<Disposition, bool> {
        let id = &intent.identity;
        let Claimed {
            pay_time,
            takeover,
            stored,
            reached,
        } = claimed;
        if reached {
            info!("claimed again after losing the claim mid-call; sending the identical request");
        } else if takeover {
            metrics::claim_taken_over();
            info!("took over an expired claim; sending the identical request");
        }
        // The claim's notify_url: for a takeover, the one the earlier owner
        // sent (a claim stored before it was kept sends the intent's own).
        let notify_url = if stored.is_empty() {
            intent.notify_url.clone()
        } else if stored == asking.sent_json {
            // This delivery's own (a fresh claim): nothing to read back.
            asking.sent.notify_url.clone()
        } else {
            serde_json::from_str::<Sent>(&stored)
                .map(|s| s.notify_url)
                .unwrap_or_else(|_| asking.sent.notify_url.clone())
        };
        let call = Call {
            intent,
            token: &asking.token,
            pay_time: &pay_time,
            notify_url: notify_url.as_deref(),
            takeover,
        };
        match self.call_and_store(&call, institutions).await {
            // The first check was stored with the outcome.
            CallEnd::Stored {
                out,
                scheduled: true,
            } => ControlFlow::Break(self.publish_outcome(&out, d, Some(id)).await),
            // Scheduled (if followed) alongside the publish, and both come
            // before the ack.
            CallEnd::Stored {
                out,
                scheduled: false,
            } => ControlFlow::Break(self.publish_and_schedule(&out, d, id, Some(id)).await),
            CallEnd::HandBack => ControlFlow::Break(Disposition::HandBack),
            CallEnd::Unusable => ControlFlow::Break(self.unusable(d.msg)),
            // Another worker owns the identity now (its outcome wins), or
            // the claim vanished: claim again.
            CallEnd::ClaimLost { attempted } => {
                metrics::claim_lost();
                warn!(
                    attempted,
                    "lost the claim mid-call; claiming again (another worker's outcome wins)"
                );
                ControlFlow::Continue(attempted)
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
        self.publish_and_schedule(&Outgoing::new(event), d, id, mark)
            .await
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
