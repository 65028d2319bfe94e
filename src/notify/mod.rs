//! The notify receiver (contract §11): `POST notify.path` from the gateway,
//! each one verified ([`parse`]), applied to the payment
//! ([`crate::payment::apply`]) with its event confirmed, and only then
//! answered with the exact SUCCESS reply the gateway stops on. Anything the
//! gateway should send again (Redis or the broker away, an event not
//! confirmed) is answered 503 with nothing changed.

pub mod parse;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use crate::config::NotifySettings;
use crate::gateway::object::Object;
use crate::http_server::BodyReadTimeout;
use crate::intent::Identity;
use crate::keys::KeyRing;
use crate::payment::apply::{self, Applied, ApplyError, PaymentSink};
use crate::payment::event::{Anomaly, AnomalyKind, parse_end_time};
use crate::payment::{EvidenceSource, Known, PaymentStore};
use crate::reconcile::ChecksStore;
use crate::telemetry::metrics::{self, Label, NotifyOutcome};
use crate::telemetry::trace;
use parse::Refused;

/// The reply both known gateway clients stop on (gateway-lifecycle.md).
pub const SUCCESS_REPLY: &str = r#"{"return_code":"SUCCESS","return_msg":"成功"}"#;

pub struct Receiver<S> {
    pub payments: PaymentStore,
    pub sink: S,
    /// Institution keys (the receiver's own copy; read at start).
    pub keys: Arc<KeyRing>,
    pub settings: NotifySettings,
    /// The reconciler's schedule, to query a payment at once after a notify
    /// that does not match (`None`: the reconciler is off).
    pub checks: Option<ChecksStore>,
}

/// The receiver's route: `POST notify.path` and nothing else (the admin
/// endpoints are served on `admin.listen`).
pub fn app<S: PaymentSink + Send + 'static>(receiver: Arc<Receiver<S>>) -> Router {
    let path = receiver.settings.path.clone();
    Router::new()
        .route(&path, post(notify::<S>))
        .with_state(receiver)
}

/// How a notify was answered.
struct Answer {
    outcome: NotifyOutcome,
    status: StatusCode,
    /// For a FAIL reply.
    reason: String,
}

impl Answer {
    fn success(outcome: NotifyOutcome) -> Self {
        Answer {
            outcome,
            status: StatusCode::OK,
            reason: String::new(),
        }
    }

    fn fail(outcome: NotifyOutcome, status: StatusCode, reason: impl Into<String>) -> Self {
        Answer {
            outcome,
            status,
            reason: reason.into(),
        }
    }

    fn unavailable(e: &ApplyError) -> Self {
        warn!(error = %e, "notify not applied: Redis or the broker is unavailable (the gateway sends it again)");
        Answer::fail(
            NotifyOutcome::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable: send it again",
        )
    }

    fn into_response(self) -> Response {
        let body = if self.status == StatusCode::OK {
            SUCCESS_REPLY.to_owned()
        } else {
            serde_json::json!({"return_code": "FAIL", "return_msg": self.reason}).to_string()
        };
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

async fn notify<S: PaymentSink + Send + 'static>(
    State(r): State<Arc<Receiver<S>>>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let answer = match axum::body::to_bytes(body, r.settings.body_limit_bytes).await {
        // Boxed: axum and tower move the handler's future by value a few
        // times per request, and the notify's own state is kilobytes (9.6
        // KB when measured; BENCHMARKS.md, ninth sitting).
        Ok(bytes) => Box::pin(r.handle(&bytes)).await,
        // The body did not come in time (contract §9): nothing was read.
        Err(e) if BodyReadTimeout::caused(&e) => Answer::fail(
            NotifyOutcome::BadRequest,
            StatusCode::REQUEST_TIMEOUT,
            BodyReadTimeout.to_string(),
        ),
        Err(_) => Answer::fail(
            NotifyOutcome::BadRequest,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {} bytes", r.settings.body_limit_bytes),
        ),
    };
    metrics::notify_answered(answer.outcome, started.elapsed());
    answer.into_response()
}

impl<S: PaymentSink> Receiver<S> {
    /// One notify, to its answer. Nothing here logs a key, a sign or a
    /// code_url.
    async fn handle(&self, body: &[u8]) -> Answer {
        let fields = match parse::read(body) {
            Ok(m) => m,
            Err(e) => return refused(&e),
        };
        let inst_no = match parse::verify(&fields, &self.keys.current()) {
            Ok(i) => i,
            Err(e) => return refused(&e),
        };
        let id = parse::identity(&fields, &inst_no);
        let answer = self.apply(&id, &fields).await;
        info!(
            inst_no = id.inst_no.as_str(),
            mch_no = id.mch_no.as_str(),
            pay_trace_no = id.pay_trace_no.as_str(),
            result_code = fields.text("result_code").as_deref().unwrap_or(""),
            outcome = answer.outcome.as_str(),
            "notify"
        );
        answer
    }

    async fn apply(&self, id: &Identity, fields: &Object<'_>) -> Answer {
        // A signed message of another kind is not a notify: not counted.
        let foreign = parse::foreign(fields);
        let view = if foreign.is_none() {
            self.payments.view_counting_notify(id).await
        } else {
            self.payments.view(id).await
        };
        let view = match view {
            Ok(v) => v,
            Err(e) => return Answer::unavailable(&ApplyError::Redis(e)),
        };
        let (span, record) = trace::joining(&view.trace(), || {
            tracing::info_span!(
                "notify",
                otel.name = "POST notify",
                otel.kind = "server",
                http.request.method = "POST",
            )
        });
        let applied = self.apply_viewed(id, fields, foreign, view);
        trace::scoped(record, applied.instrument(span)).await
    }

    async fn apply_viewed(
        &self,
        id: &Identity,
        fields: &Object<'_>,
        foreign: Option<String>,
        view: crate::payment::View,
    ) -> Answer {
        let now = Utc::now();
        let sign = fields.text("sign").unwrap_or_default();
        // A transition whose event never reached the broker goes first
        // (contract §10 rule 7).
        if let Err(e) = apply::settle_unconfirmed(&self.payments, &self.sink, id, &view).await {
            return Answer::unavailable(&e);
        }
        // A signed message of another kind is decided first, whatever else
        // is wrong with it: an anomaly, then 400 (contract §11.5).
        if let Some(message) = foreign {
            let a = Anomaly {
                kind: AnomalyKind::ForeignMessage,
                message,
            };
            return match apply::anomaly(
                &self.payments,
                &self.sink,
                id,
                &view,
                a,
                EvidenceSource::Notify,
                &sign,
                now,
            )
            .await
            {
                Ok(_) => Answer::fail(
                    NotifyOutcome::Foreign,
                    StatusCode::BAD_REQUEST,
                    "not a notify: it carries fields of another gateway message",
                ),
                Err(e) => Answer::unavailable(&e),
            };
        }
        let evidence = match parse::evidence(fields) {
            Ok(e) => e,
            Err(message) => {
                let a = Anomaly {
                    kind: AnomalyKind::Unexpected,
                    message: format!("a notify the worker cannot place: {message}"),
                };
                return self.anomaly_and_query(id, &view, a, &sign, now).await;
            }
        };
        if view.known != Known::Unknown {
            let wrong = parse::mismatches(fields, &view);
            if !wrong.is_empty() {
                let a = Anomaly {
                    kind: AnomalyKind::Mismatch,
                    message: format!("a signed notify that differs: {}", wrong.join("; ")),
                };
                return self.anomaly_and_query(id, &view, a, &sign, now).await;
            }
        }
        let paid_at = fields.text("end_time").and_then(|t| parse_end_time(&t));
        let applied = apply::apply(
            &self.payments,
            &self.sink,
            id,
            view,
            &evidence,
            EvidenceSource::Notify,
            paid_at,
            &sign,
            now,
        )
        .await;
        match applied {
            Ok(Applied::Moved(_)) => Answer::success(NotifyOutcome::Applied),
            Ok(Applied::Already) => Answer::success(NotifyOutcome::Duplicate),
            Ok(Applied::NoChange) => Answer::success(NotifyOutcome::NoChange),
            Ok(Applied::Anomaly(ev)) => Answer::success(match ev.anomaly.map(|a| a.kind) {
                Some(AnomalyKind::UnknownPayment) => NotifyOutcome::UnknownPayment,
                _ => NotifyOutcome::Mismatch,
            }),
            Err(e) => Answer::unavailable(&e),
        }
    }

    /// The gateway says something else than the worker knows (a mismatch,
    /// an answer it cannot place): an anomaly, then a query at once
    /// (contract §11.5). If that cannot be scheduled, the notify is refused
    /// and comes again (its anomaly has the same event_id).
    async fn anomaly_and_query(
        &self,
        id: &Identity,
        view: &crate::payment::View,
        a: Anomaly,
        sign: &str,
        now: chrono::DateTime<Utc>,
    ) -> Answer {
        if let Err(e) = apply::anomaly(
            &self.payments,
            &self.sink,
            id,
            view,
            a,
            EvidenceSource::Notify,
            sign,
            now,
        )
        .await
        {
            return Answer::unavailable(&e);
        }
        if let Some(checks) = &self.checks
            && let Err(e) = checks.bring_forward(id, now.timestamp_millis()).await
        {
            return Answer::unavailable(&ApplyError::Redis(e));
        }
        Answer::success(NotifyOutcome::Mismatch)
    }
}

fn refused(e: &Refused) -> Answer {
    warn!(reason = %e, "notify refused");
    match e {
        Refused::TooLarge(_) => Answer::fail(
            NotifyOutcome::BadRequest,
            StatusCode::PAYLOAD_TOO_LARGE,
            e.to_string(),
        ),
        Refused::NotScalars(_) => Answer::fail(
            NotifyOutcome::BadRequest,
            StatusCode::BAD_REQUEST,
            e.to_string(),
        ),
        Refused::UnknownInstitution(_) | Refused::BadSign(_) => Answer::fail(
            NotifyOutcome::BadSignature,
            StatusCode::BAD_REQUEST,
            e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn of two owned arguments returns.
    fn future_size<A, B, F: std::future::Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// axum and tower move the handler's future by value on every request:
    /// the notify's own work stays behind a box, or each move copies it.
    #[test]
    fn the_handler_future_that_is_moved_per_request_stays_small() {
        let size = future_size(notify::<crate::amqp::link::Link>);
        assert!(size <= 1024, "the notify handler's future is {size} bytes");
    }
}
