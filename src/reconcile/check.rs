//! One check of one payment (contract §12): hold the identity's lease,
//! look at the payment, then query — or close and query, or query one last
//! time and give up — and apply what the gateway said (§10), then schedule
//! the next check or none. A check that fails midway (Redis, the broker)
//! leaves its pick-up lease in the schedule: it runs again after the lease.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::evidence::{check_result, evidence_of, result_of};
use super::schedule::{Plan, Schedule};
use super::store::{ChecksStore, Due, Lease, identity};
use crate::claim::lease::keep_lease;
use crate::claim::{self, StoreError};
use crate::gateway::close::CloseAnswer;
use crate::gateway::query::{QueryAnswer, QueryExpect};
use crate::gateway::signed_call::StillWanted;
use crate::gateway::{Abandon, Abandoned, CloseRequest, Gateway, QueryBy, QueryRequest};
use crate::intent::{Identity, format_pay_time};
use crate::keys::KeyRing;
use crate::payment::apply::{self, Applied, ApplyError, PaymentSink};
use crate::payment::event::Anomaly;
use crate::payment::{EventState, Evidence, EvidenceSource, PaymentState, PaymentStore, View};
use crate::telemetry::metrics::{self, CheckResult, Label};
use crate::telemetry::trace;
use crate::text::gateway_text;

/// What a check needs; one per process.
pub struct Checker<S> {
    pub payments: PaymentStore,
    pub checks: ChecksStore,
    pub gateway: Arc<Gateway>,
    pub keys: Arc<KeyRing>,
    pub sink: S,
    pub schedule: Schedule,
    pub offset: chrono::FixedOffset,
    /// The identity's lease while a check works (`redis.lease_ms`).
    pub lease_ms: u64,
    /// Cancelled at a stop: a check not yet at the gateway gives up.
    pub stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("redis: {0}")]
    Redis(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("abandoned: {0}")]
    Abandoned(#[from] Abandoned),
}

/// What one check did, for its record and the metric.
struct Done {
    result: CheckResult,
    plan: Option<Plan>,
    detail: String,
}

impl<S: PaymentSink> Checker<S> {
    /// Runs the check picked up as `due` at `now_ms` (Redis's clock).
    pub async fn run(&self, due: &Due, now_ms: i64) -> CheckResult {
        metrics::reconcile_lag(Duration::from_millis(
            u64::try_from(now_ms.saturating_sub(due.due_ms)).unwrap_or(0),
        ));
        let result = self.run_inner(due).await;
        metrics::reconcile_check(result);
        result
    }

    async fn run_inner(&self, member: &Due) -> CheckResult {
        let Some(id) = identity(&member.member) else {
            warn!(
                member = member.member.as_str(),
                "a scheduled check names no identity; removing it"
            );
            let _ = self.checks.remove(member).await;
            return CheckResult::Gone;
        };
        let token = claim::new_token();
        match self.checks.lease(&id, &token, self.lease_ms).await {
            Ok(Lease::Taken) => {}
            Ok(Lease::Gone) => {
                let _ = self.checks.remove(member).await;
                return CheckResult::Gone;
            }
            Ok(Lease::Busy(ms)) => {
                // Another check is on it (or the intent is mid-call): try
                // again once that lease is over.
                let at = Utc::now().timestamp_millis() + i64::try_from(ms).unwrap_or(0) + 100;
                let _ = self.checks.reschedule(member, at).await;
                return CheckResult::Busy;
            }
            Err(e) => {
                warn!(error = %e, "check could not take its lease; it runs again after its pick-up lease");
                return CheckResult::Error;
            }
        }
        let lost = CancellationToken::new();
        let (checks, lease_ms) = (&self.checks, self.lease_ms);
        let renew = keep_lease(Duration::from_millis(lease_ms), &lost, || async {
            // Busy or gone: the identity is no longer this check's.
            Ok::<_, StoreError>(checks.lease(&id, &token, lease_ms).await? == Lease::Taken)
        });
        tokio::pin!(renew);
        // Its own span for the logs (the exported span, if any, is made
        // once the payment's trace is known: `work`); at ERROR, as the
        // intent's, so that every line kept under a lowered level names
        // the payment.
        let span = tracing::error_span!(
            "check",
            inst_no = id.inst_no.as_str(),
            mch_no = id.mch_no.as_str(),
            pay_trace_no = id.pay_trace_no.as_str()
        );
        let worked = tokio::select! {
            biased;
            r = tracing::Instrument::instrument(self.work(&id, member, &lost), span) => r,
            never = &mut renew => match never {},
        };
        if let Err(e) = self.checks.release(&id, &token).await {
            debug!(error = %e, "check lease not released; it lapses");
        }
        match worked {
            Ok(done) => {
                let record = json!({
                    "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "plan": done.plan.map(plan_word),
                    "result": done.result.as_str(),
                    "detail": gateway_text(&done.detail),
                })
                .to_string();
                if let Err(e) = self.checks.note(&id, false, &[("lc", &record)]).await {
                    debug!(error = %e, "last check not recorded");
                }
                done.result
            }
            Err(CheckError::Abandoned(_)) => {
                info!("check abandoned (stopping, or its lease was lost); it runs again later");
                CheckResult::Error
            }
            Err(e) => {
                warn!(error = %e, "check failed; it runs again after its pick-up lease");
                CheckResult::Error
            }
        }
    }

    async fn work(
        &self,
        id: &Identity,
        member: &Due,
        lost: &CancellationToken,
    ) -> Result<Done, CheckError> {
        let view = self.payments.view(id).await?;
        // The check joins the trace of the intent that placed the order,
        // and is recorded only if that trace is.
        let (traced, record) = trace::joining(&view.trace(), || {
            tracing::info_span!(
                "check",
                otel.name = "reconcile check",
                otel.kind = "internal"
            )
        });
        trace::scoped(
            record,
            tracing::Instrument::instrument(self.work_viewed(id, member, lost, view), traced),
        )
        .await
    }

    async fn work_viewed(
        &self,
        id: &Identity,
        member: &Due,
        lost: &CancellationToken,
        view: View,
    ) -> Result<Done, CheckError> {
        // A transition whose event never reached the broker is published
        // before anything else (contract §10 rule 7): above all for a
        // payment that only queries can follow.
        apply::settle_unconfirmed(&self.payments, &self.sink, id, &view).await?;
        match view.known.state() {
            Some(PaymentState::Open) => {}
            Some(state) => {
                let detail = format!("already {}", state.as_str());
                return self.unscheduled(member, CheckResult::Final, detail).await;
            }
            None => {
                return self
                    .unscheduled(member, CheckResult::Gone, "no payment".into())
                    .await;
            }
        }
        // Every time counts from when the order was placed, never from the
        // publisher's pay_time (contract §12).
        let Some(placed) = view.outcome.as_ref().and_then(|o| o.placed_at()) else {
            warn!("a followed payment without a readable outcome; no more checks");
            let detail = "no stored outcome".into();
            return self.unscheduled(member, CheckResult::Gone, detail).await;
        };
        let now = Utc::now();
        let facts = self.checks.facts(id).await?;
        let plan = self
            .schedule
            .plan(placed, now, view.trade_no.is_some(), facts.closed);
        let Some(key) = self.keys.current().key(&id.inst_no).cloned() else {
            // Nothing can sign a query: wait on the schedule, and give up
            // at max_age like any payment that stays open.
            return self.orphaned(id, member, plan, placed, now).await;
        };
        let abandon = Abandon {
            any_time: lost,
            before_first: &self.stop,
            unless: None,
        };
        let mut closed = facts.closed;
        let mut detail = String::new();
        if plan == Plan::Close
            && let Some(trade_no) = view.trade_no.clone()
        {
            closed |= self
                .close(id, &trade_no, &key, abandon, now, &mut detail)
                .await?;
        }
        let query_trace_no = claim::new_token();
        let answer = self
            .query(id, &view, &query_trace_no, &key, abandon, &mut detail)
            .await?;
        self.anomaly(id, &view, &answer, now).await?;
        let (evidence, source, paid_at) = evidence_of(&answer, closed);
        let mut moved = None;
        if let Some(e) = &evidence {
            let applied = apply::apply(
                &self.payments,
                &self.sink,
                id,
                view.clone(),
                e,
                source,
                paid_at,
                &query_trace_no,
                now,
            )
            .await?;
            moved = final_state(&applied);
        }
        if moved.is_none() && plan == Plan::GiveUp {
            moved = self.give_up(id, placed, now, &mut detail).await?;
        }
        if moved.is_some() {
            self.checks.remove(member).await?;
        } else {
            // Still open (or moved by someone else meanwhile: the next check
            // finds it final and stops).
            self.next(member, placed).await?;
        }
        let result = check_result(moved, &answer);
        info!(
            plan = plan_word(plan),
            result = result.as_str(),
            answer = answer.word(),
            "payment checked"
        );
        Ok(Done {
            result,
            plan: Some(plan),
            detail,
        })
    }

    /// No more checks of this payment: its schedule entry goes.
    async fn unscheduled(
        &self,
        member: &Due,
        result: CheckResult,
        detail: String,
    ) -> Result<Done, CheckError> {
        self.checks.remove(member).await?;
        Ok(Done {
            result,
            plan: None,
            detail,
        })
    }

    /// queryorder, described into `detail`; an order number the payment
    /// did not know is noted: an outcome_unknown payment learns its order
    /// this way, and can then be closed.
    async fn query(
        &self,
        id: &Identity,
        view: &View,
        query_trace_no: &str,
        key: &secrecy::SecretString,
        abandon: Abandon<'_>,
        detail: &mut String,
    ) -> Result<QueryAnswer, CheckError> {
        let pay_time = view.pay_time.clone().unwrap_or_default();
        let by = match &view.trade_no {
            Some(t) => QueryBy::TradeNo(t.clone()),
            None => QueryBy::Trace {
                pay_trace_no: id.pay_trace_no.clone(),
                pay_time: pay_time.clone(),
            },
        };
        let req = QueryRequest {
            inst_no: id.inst_no.clone(),
            mch_no: id.mch_no.clone(),
            query_trace_no: query_trace_no.to_owned(),
            by,
        };
        let expect = QueryExpect {
            verify_key: None,
            mch_no: &id.mch_no,
            pay_trace_no: &id.pay_trace_no,
            pay_time: &pay_time,
            total_amount: view.total_amount(),
            trade_no: view.trade_no.as_deref(),
            query_trace_no,
        };
        let answer = self.gateway.query(&req, key, expect, abandon).await?;
        detail.push_str(&describe(&answer));
        if let Some(t) = answer.trade_no()
            && view.trade_no.is_none()
        {
            self.checks.note(id, true, &[("tn", t)]).await?;
        }
        Ok(answer)
    }

    /// A verified answer that is not evidence becomes an anomaly event.
    async fn anomaly(
        &self,
        id: &Identity,
        view: &View,
        answer: &QueryAnswer,
        now: DateTime<Utc>,
    ) -> Result<(), CheckError> {
        let QueryAnswer::Anomaly {
            kind,
            message,
            sign,
        } = answer
        else {
            return Ok(());
        };
        let a = Anomaly {
            kind: *kind,
            message: message.clone(),
        };
        apply::anomaly(
            &self.payments,
            &self.sink,
            id,
            view,
            a,
            EvidenceSource::Query,
            sign,
            now,
        )
        .await?;
        Ok(())
    }

    /// A followed payment whose institution left the config: never
    /// queried (nothing can sign the query), checked on its schedule, and
    /// `unresolved` at `max_age_secs` (contract §12), never a loop.
    async fn orphaned(
        &self,
        id: &Identity,
        member: &Due,
        plan: Plan,
        placed: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Done, CheckError> {
        let mut detail = "no key for the institution: not queried".to_owned();
        if plan == Plan::GiveUp
            && let Some(state) = self.give_up(id, placed, now, &mut detail).await?
        {
            self.checks.remove(member).await?;
            return Ok(Done {
                result: result_of(state),
                plan: Some(plan),
                detail,
            });
        }
        warn!("no key for the payment's institution; checking it later");
        self.next(member, placed).await?;
        Ok(Done {
            result: CheckResult::NoAnswer,
            plan: Some(plan),
            detail,
        })
    }

    /// Gives a payment still open at `max_age_secs` up: `unresolved`.
    async fn give_up(
        &self,
        id: &Identity,
        placed: DateTime<Utc>,
        now: DateTime<Utc>,
        detail: &mut String,
    ) -> Result<Option<EventState>, CheckError> {
        let applied = apply::apply(
            &self.payments,
            &self.sink,
            id,
            self.payments.view(id).await?,
            &Evidence::GiveUp,
            EvidenceSource::Query,
            None,
            "give up",
            now,
        )
        .await?;
        let moved = final_state(&applied);
        if moved == Some(EventState::Unresolved) {
            warn!("payment unresolved: still open after reconcile.max_age_secs");
            detail.push_str(&format!(
                "; still open {} s after it was placed: given up",
                (now - placed).num_seconds()
            ));
        }
        Ok(moved)
    }

    async fn next(&self, member: &Due, placed: DateTime<Utc>) -> Result<(), StoreError> {
        let at = self.schedule.next(placed, Utc::now());
        self.checks.reschedule(member, at.timestamp_millis()).await
    }

    /// closeorder with the payment's close pair; `true` when it said closed.
    async fn close(
        &self,
        id: &Identity,
        trade_no: &str,
        key: &secrecy::SecretString,
        abandon: Abandon<'_>,
        now: DateTime<Utc>,
        detail: &mut String,
    ) -> Result<bool, CheckError> {
        let Some((close_trace_no, close_time)) = self
            .checks
            .close_pair(id, &claim::new_token(), &format_pay_time(now, self.offset))
            .await?
        else {
            return Ok(false);
        };
        let req = CloseRequest {
            inst_no: id.inst_no.clone(),
            mch_no: id.mch_no.clone(),
            close_trace_no,
            close_time,
            trade_no: trade_no.to_owned(),
        };
        // Sent only while the payment is still open: read again before
        // every attempt, retries included (contract §12). The check holds
        // the identity's lease, but a notify does not take it.
        let still_open = StillOpen {
            payments: &self.payments,
            id,
            not_open: std::sync::atomic::AtomicBool::new(false),
        };
        let guarded = Abandon {
            unless: Some(&still_open),
            ..abandon
        };
        let answer = match self.gateway.close(&req, key, guarded).await {
            Ok(a) => a,
            Err(_)
                if still_open
                    .not_open
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                info!("closeorder not sent: the payment is no longer open");
                detail.push_str("closeorder: not sent, the payment is no longer open; ");
                return Ok(false);
            }
            Err(abandoned) => return Err(abandoned.into()),
        };
        let closed = answer == CloseAnswer::Closed;
        if closed {
            self.checks.note(id, false, &[("xd", "1")]).await?;
        }
        detail.push_str(&match &answer {
            CloseAnswer::Closed => "closeorder: closed; ".to_owned(),
            CloseAnswer::NotClosed(m) => format!("closeorder: not closed ({m}); "),
            CloseAnswer::Unknown(m) => format!("closeorder: {m}; "),
        });
        Ok(closed)
    }
}

/// The close's condition: the payment, read again, is still open.
struct StillOpen<'a> {
    payments: &'a PaymentStore,
    id: &'a Identity,
    /// Set when a read found it not open (or could not read it).
    not_open: std::sync::atomic::AtomicBool,
}

impl StillWanted for StillOpen<'_> {
    fn still_wanted(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let open = match self.payments.view(self.id).await {
                Ok(v) => v.known.state() == Some(PaymentState::Open),
                Err(e) => {
                    warn!(error = %e, "cannot read the payment before closeorder; not closing now");
                    false
                }
            };
            if !open {
                self.not_open
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            open
        })
    }
}

/// The state a payment moved to, if `applied` moved it (or found it there).
fn final_state(applied: &Applied) -> Option<EventState> {
    match applied {
        Applied::Moved(ev) => Some(ev.state),
        Applied::Already | Applied::NoChange | Applied::Anomaly(_) => None,
    }
}

fn plan_word(plan: Plan) -> &'static str {
    match plan {
        Plan::Query => "query",
        Plan::Close => "close",
        Plan::GiveUp => "give_up",
    }
}

fn describe(answer: &QueryAnswer) -> String {
    match answer {
        QueryAnswer::Anomaly { message, .. } => format!("queryorder: {message}"),
        QueryAnswer::NoAnswer(m) => format!("queryorder: {m}"),
        other => format!("queryorder: {}", other.word()),
    }
}
