//! The end of a delivery with an outcome: its event published until the
//! broker confirms it, its stored outcome marked confirmed, and the
//! payment's first check scheduled, all before the ack.

use chrono::Utc;
use tracing::{Instrument, info, warn};

use super::redis_retry::Persist;
use super::{Delivery, Disposition, Outgoing, Pipeline, ResultOut, ResultSink};
use crate::gateway::retry::Backoff;
use crate::intent;
use crate::payment::store::is_followed;
use crate::result_event::ResultEvent;
use crate::telemetry::metrics::{self, HandBack, IntentOutcome, RedisOp};
use crate::telemetry::trace;

impl Pipeline {
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

    /// [`Self::publish_outcome`] with the payment's first check scheduled
    /// beside it (when the store did not carry it). An outcome whose first
    /// check is not scheduled is not acknowledged: its redelivery replays it
    /// and schedules again (idempotent: `ZADD NX`).
    pub(super) async fn publish_and_schedule<S: ResultSink>(
        &self,
        out: &Outgoing,
        d: &Delivery<'_, S>,
        id: &intent::Identity,
        mark: Option<&intent::Identity>,
    ) -> Disposition {
        let (disposition, scheduled) = tokio::join!(
            self.publish_outcome(out, d, mark),
            self.schedule_first_check(id, &out.event),
        );
        if disposition == Disposition::Ack && !scheduled {
            return self.unusable(d.msg);
        }
        disposition
    }

    /// Publishes the outcome's event (confirmed) and, when `mark` names the
    /// identity, marks its stored outcome confirmed. `Ack` only then: it
    /// does not acknowledge anything itself.
    pub(super) async fn publish_outcome<S: ResultSink>(
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
                .publish(ResultOut {
                    event: &out.event,
                    body: &out.body,
                    correlation_id: &d.correlation,
                    reply_to: d.msg.reply_to,
                    trace: &outgoing,
                })
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
}
