//! One gateway call under the claim: the lease renewed alongside, the
//! outcome stored (compare-and-set on the claim) before anything is
//! published.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use super::redis_retry::{Persist, RedisGaveUp};
use super::{Outgoing, Pipeline, url_host};
use crate::claim::lease::keep_lease;
use crate::claim::{Release, StoredOutcome};
use crate::gateway::Abandon;
use crate::intent::Intent;
use crate::keys::Institutions;
use crate::outcome::CallResult;
use crate::payment::store::is_followed;
use crate::result_event::ResultEvent;
use crate::telemetry::metrics::RedisOp;

/// One gateway call under a claim.
pub(super) struct Call<'a> {
    pub(super) intent: &'a Intent,
    pub(super) token: &'a str,
    /// Fixed for the identity: the claim's.
    pub(super) pay_time: &'a str,
    /// Fixed for the identity: the claim's.
    pub(super) notify_url: Option<&'a str>,
    /// An earlier owner's lease lapsed: it may have sent this request.
    pub(super) takeover: bool,
}

pub(super) enum CallEnd {
    /// Stored; `scheduled`: its first check with it.
    Stored { out: Box<Outgoing>, scheduled: bool },
    /// Stopping before the gateway saw the request.
    HandBack,
    /// The claim was lost during the call or before its store; `attempted`:
    /// the gateway may have seen this request.
    ClaimLost { attempted: bool },
    /// Redis answered something no retry can fix.
    Unusable,
}

impl Pipeline {
    /// Calls the gateway under the claim (renewing the lease meanwhile) and
    /// stores the outcome.
    pub(super) async fn call_and_store(
        &self,
        call: &Call<'_>,
        institutions: &Institutions,
    ) -> CallEnd {
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
            .instrument(crate::gateway_span!("h5pay"));
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
        self.store_outcome(call, &result, renew.as_mut()).await
    }

    /// Stores the decided outcome under the claim, its lease still kept by
    /// `renew` meanwhile.
    async fn store_outcome<R>(
        &self,
        call: &Call<'_>,
        result: &CallResult,
        mut renew: Pin<&mut R>,
    ) -> CallEnd
    where
        R: Future<Output = Infallible>,
    {
        let id = &call.intent.identity;
        let out = Outgoing::new(ResultEvent::decided(
            call.intent,
            call.pay_time,
            result,
            Utc::now(),
        ));
        // Store before publish: never give up on a decided outcome while the
        // process lives; a crash here replays through the gateway's own
        // idempotency with the identical request.
        let followed = is_followed(out.event.status, out.event.error.as_ref().map(|e| e.kind));
        // On one Redis a followed payment's first check is written with its
        // state, in the same round trip, before anything is published
        // (contract §12); on a cluster it is scheduled beside the publish.
        let first_check = match &self.scheduling {
            Some(s) if followed && self.claims.shares_round_trips() => {
                Some(s.first_entry(id, out.event.placed_at().unwrap_or_else(Utc::now)))
            }
            _ => None,
        };
        let scheduled = first_check.is_some();
        let outcome = StoredOutcome {
            event: &out.body,
            followed,
            trade_no: result.trade_no.as_deref(),
            first_check: first_check.as_ref(),
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
                CallEnd::Stored {
                    out: Box::new(out),
                    scheduled,
                }
            }
            // The gateway answered: it has seen this request.
            Ok(false) => CallEnd::ClaimLost { attempted: true },
            Err(RedisGaveUp::Stopping) => CallEnd::HandBack,
            Err(RedisGaveUp::Unusable) => CallEnd::Unusable,
        }
    }
}
