//! Verified evidence → at most one transition and its confirmed event
//! (contract §10 rules 1–3, §11.3–5, §12): look, decide with
//! [`state::next`](super::state::next), compare-and-set, publish with
//! confirms, mark confirmed. A refused event takes its transition back, so
//! whoever brought the evidence (the gateway's notify, a check) brings it
//! again and nothing is lost; a duplicate publishes an event the broker has
//! not confirmed yet.

use chrono::{DateTime, Utc};

use super::event::{Anomaly, AnomalyKind, EventState, EvidenceSource, Facts, PaymentEvent};
use super::state::{Evidence, Step, next};
use super::store::{Attention, Moved, PaymentStore, View};
use crate::claim::StoreError;
use crate::intent::Identity;
use crate::sink::PublishError;
pub use crate::sink::{Outgoing, PaymentSink};
use crate::telemetry::metrics;
use crate::telemetry::trace::{self, TraceHeaders};
use tracing::Instrument;

/// What applying evidence did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A transition, its event confirmed.
    Moved(Box<PaymentEvent>),
    /// Already in that state (its event confirmed, again if need be).
    Already,
    /// Nothing to change.
    NoChange,
    /// An anomaly event, confirmed; the state did not change.
    Anomaly(Box<PaymentEvent>),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("redis: {0}")]
    Redis(#[from] StoreError),
    #[error("payment event not confirmed: {0}")]
    Publish(#[from] PublishError),
    #[error("the payment kept changing under this transition")]
    Contended,
}

/// Rounds of look → decide → compare-and-set before giving up (each lost
/// round means another transition won; a few are plenty).
const ROUNDS: usize = 5;

/// The facts of a view, for building events.
fn facts<'a>(id: &'a Identity, view: &'a View, trade_no: Option<&'a str>) -> Facts<'a> {
    Facts {
        identity: id,
        sent: view.sent.as_ref(),
        pay_time: view.pay_time.as_deref(),
        trade_no: trade_no.or(view.trade_no.as_deref()),
    }
}

fn correlation<'a>(id: &'a Identity, view: &'a View) -> &'a str {
    view.sent
        .as_ref()
        .map(|s| s.correlation_id.as_str())
        .filter(|c| !c.is_empty())
        .unwrap_or(&id.pay_trace_no)
}

async fn publish(
    sink: &impl PaymentSink,
    ev: &PaymentEvent,
    body: &[u8],
    correlation: &str,
    trace: &TraceHeaders,
) -> Result<(), PublishError> {
    let key = ev.routing_key();
    let span = trace::publish_span(&ev.event_id);
    let outgoing = span.in_scope(|| trace::outgoing(trace));
    sink.publish_payment(Outgoing {
        event_id: &ev.event_id,
        state: ev.state,
        routing_key: &key,
        body,
        correlation_id: correlation,
        occurred_at: &ev.occurred_at,
        subject: &ev.pay_trace_no,
        trace: &outgoing,
    })
    .instrument(span)
    .await?;
    metrics::payment_event(ev.state);
    Ok(())
}

/// Publishes an anomaly about `id` (the state does not change). `sign`:
/// the received message's sign, so one signed message sent again is one
/// anomaly event (contract §10).
#[allow(clippy::too_many_arguments)]
pub async fn anomaly(
    store: &PaymentStore,
    sink: &impl PaymentSink,
    id: &Identity,
    view: &View,
    anomaly: Anomaly,
    source: EvidenceSource,
    sign: &str,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    let current = view.known.state();
    let ev = PaymentEvent::anomaly(&facts(id, view, None), anomaly, current, source, sign, now);
    if let Some(a) = &ev.anomaly {
        let last = serde_json::json!({
            "kind": a.kind.as_str(),
            "message": a.message,
            "source": source.as_str(),
            "at": ev.occurred_at,
            "event_id": ev.event_id,
        })
        .to_string();
        store
            .note_attention(Attention::Anomaly, id, now.timestamp_millis(), Some(&last))
            .await?;
    }
    publish(
        sink,
        &ev,
        &ev.to_json(),
        correlation(id, view),
        &view.trace(),
    )
    .await?;
    Ok(Applied::Anomaly(Box::new(ev)))
}

/// Publishes the payment's last event if the broker never confirmed it (a
/// process that died between a transition and the confirm), and marks it
/// confirmed: whoever reads the payment next does this before anything
/// else (contract §10 rule 7). `true` when it published one.
pub async fn settle_unconfirmed(
    store: &PaymentStore,
    sink: &impl PaymentSink,
    id: &Identity,
    view: &View,
) -> Result<bool, ApplyError> {
    let Some((event_id, json)) = &view.unconfirmed else {
        return Ok(false);
    };
    let ev = match serde_json::from_str::<PaymentEvent>(json) {
        Ok(ev) => ev,
        Err(e) => {
            // Only this process's own JSON is stored there; never seen.
            tracing::error!(error = %e, event_id = event_id.as_str(), "an unconfirmed payment event is unreadable");
            return Ok(false);
        }
    };
    publish(
        sink,
        &ev,
        json.as_bytes(),
        correlation(id, view),
        &view.trace(),
    )
    .await?;
    store.confirm(id, event_id).await?;
    tracing::info!(
        event_id = event_id.as_str(),
        state = ev.state.as_str(),
        "published a payment event the broker had not confirmed"
    );
    Ok(true)
}

/// Applies verified, matching evidence. `view` is what the caller already
/// read (and checked the echoes against); it is read again only if another
/// transition wins the race. `sign` is the evidence's sign (an anomaly's
/// id derives from it).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    store: &PaymentStore,
    sink: &impl PaymentSink,
    id: &Identity,
    mut view: View,
    evidence: &Evidence,
    source: EvidenceSource,
    paid_at: Option<DateTime<Utc>>,
    sign: &str,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    let learned = match evidence {
        Evidence::Paid { trade_no } => trade_no.as_deref(),
        _ => None,
    };
    for round in 0..ROUNDS {
        if round > 0 {
            view = store.view(id).await?;
        }
        match next(view.known, evidence) {
            Step::NoChange => return Ok(Applied::NoChange),
            Step::UnknownPayment => {
                let a = Anomaly {
                    kind: AnomalyKind::UnknownPayment,
                    message: "no payment of this identity is known".to_owned(),
                };
                return anomaly(store, sink, id, &view, a, source, sign, now).await;
            }
            Step::Unexpected(message) => {
                let a = Anomaly {
                    kind: AnomalyKind::Unexpected,
                    message,
                };
                return anomaly(store, sink, id, &view, a, source, sign, now).await;
            }
            Step::Already(_) => {
                // A transition whose event was never confirmed (a crash, a
                // refusal) is published now, before the answer.
                settle_unconfirmed(store, sink, id, &view).await?;
                return Ok(Applied::Already);
            }
            Step::Transition { from, to, late } => {
                let Some(state) = to.event() else {
                    return Ok(Applied::NoChange);
                };
                let paid_at = if state == EventState::Paid {
                    paid_at
                } else {
                    None
                };
                let ev = PaymentEvent::transition(
                    &facts(id, &view, learned),
                    state,
                    from,
                    late,
                    source,
                    paid_at,
                    now,
                );
                let body = ev.to_json();
                // A payment that needs a person is in its index before its
                // event can be seen.
                let attention = match (to, late) {
                    (_, true) => Some(Attention::Late),
                    (super::state::PaymentState::Unresolved, _) => Some(Attention::Unresolved),
                    _ => None,
                };
                if let Some(kind) = attention {
                    store
                        .note_attention(kind, id, now.timestamp_millis(), None)
                        .await?;
                }
                let moved = store
                    .transition(id, &view.raw_state, to, &ev.event_id, &body, learned)
                    .await?;
                match moved {
                    Moved::Raced => continue,
                    Moved::Gone => {
                        view.known = super::state::Known::Unknown;
                        continue;
                    }
                    Moved::Yes => {}
                }
                if let Err(e) =
                    publish(sink, &ev, &body, correlation(id, &view), &view.trace()).await
                {
                    // Nothing changed, so the evidence comes again.
                    if let Err(undo) = store.undo(id, &ev.event_id, &view.raw_state).await {
                        tracing::warn!(error = %undo, "could not take back an unconfirmed transition; the next evidence publishes its event");
                    }
                    return Err(e.into());
                }
                store.confirm(id, &ev.event_id).await?;
                return Ok(Applied::Moved(Box::new(ev)));
            }
        }
    }
    Err(ApplyError::Contended)
}
