//! One intent, from delivery to disposition: read → validate → claim →
//! gateway → store → publish → mark confirmed. The caller acts on the
//! returned [`Disposition`]; nothing here acknowledges a message.
//!
//! Order matters and is the point of this module (contract §5):
//! claim before call, store before publish, publish (confirmed) before ack.
//! Each step is a method of its own; `claimed` holds the claim
//! loop that chooses between them. Results go out through a
//! [`ResultSink`], so tests can watch the order directly.
//!
//! The files: this one reads, validates and routes a delivery; `claimed`
//! is the claim loop (wait | replay | refuse | call); `call` calls the
//! gateway under the claim and stores the outcome; `publish` publishes it
//! until confirmed, marks it confirmed and schedules the first check;
//! `redis_retry` is the retry around every Redis step.

use std::sync::Arc;
use std::time::Duration;

use chrono::{FixedOffset, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error_span, info, warn};

pub use crate::amqp::publisher::{ResultOut, ResultSink};
use crate::claim::ClaimStore;
use crate::config::{Config, DuplicatePolicy, QueueType};
use crate::gateway::Gateway;
use crate::gateway::retry::RetryPolicy;
use crate::intent::{self, InvalidIntent, Rules, Unreadable};
use crate::keys::KeyRing;
use crate::reconcile::Scheduling;
use crate::result_event::ResultEvent;
use crate::telemetry::metrics::{self, IntentOutcome, Label};
use crate::telemetry::trace::{self, TraceHeaders};

mod call;
mod claimed;
mod publish;
mod redis_retry;

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
pub(super) struct Delivery<'a, S> {
    msg: &'a Incoming<'a>,
    /// The result's correlation_id.
    correlation: String,
    sink: &'a S,
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
        let process = crate::messaging_span!(
            "process",
            "consumer",
            "h5pay.intents",
            msg.message_id.unwrap_or("")
        );
        trace::continue_trace(&process, msg.trace);
        match intent::validate(&obj, rules) {
            Ok(intent) => {
                let id = &intent.identity;
                // At ERROR, so that it exists whenever any line does: a
                // span's level only decides whether it is made, and a line
                // kept under a lowered level (a warning under `warn`, the
                // audit lines under `warn,h5pay_worker::audit=info`) must
                // still name its payment.
                let span = error_span!(
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
                // Boxed on both paths: held inline, the claim loop's 7 KB
                // future made every intent's task 15 KB to move and keep;
                // boxed, the task is 1 KB (BENCHMARKS.md, seventh sitting).
                Box::pin(self.claim_loop(&intent, &d, &institutions))
                    .instrument(span)
                    .instrument(process.clone())
                    .await
            }
            Err(invalid) => {
                Box::pin(self.invalid(&invalid, &msg, sink))
                    .instrument(process)
                    .await
            }
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

    /// What becomes of a delivery that Redis cannot serve (contract §5.13):
    /// handed back, so the quorum queue's delivery limit moves it to the
    /// DLQ. A classic queue counts no deliveries, so there a delivery that
    /// already came back once is dead-lettered at once instead of looping.
    pub(super) fn unusable(&self, msg: &Incoming<'_>) -> Disposition {
        if !self.settings.delivery_limit_applies && msg.redelivered {
            metrics::dead_lettered(metrics::DeadLetter::RedisUnusable);
            Disposition::DeadLetter
        } else {
            Disposition::HandBack
        }
    }
}

/// A result event and its serialised body: serialised once, stored and
/// published as the same bytes.
pub(super) struct Outgoing {
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
