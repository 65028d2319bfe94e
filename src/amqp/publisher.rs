//! Publishing result events with publisher confirms and `mandatory`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::telemetry::trace::TraceHeaders;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::time::Instant;

use crate::result_event::ResultEvent;
pub use crate::sink::PublishError;
use crate::sink::{Outgoing, PaymentSink};

/// How long a broker confirm may take before the publish counts as failed.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// A confirm-mode channel for result events, and a channel of its own for
/// the best-effort copies sent to an intent's `reply_to`.
#[derive(Clone)]
pub struct Publisher {
    confirms: Arc<Confirms>,
    exchange: ShortString,
    replies: Arc<Replies>,
}

/// The confirm-mode channel, replaced when the broker refuses a publish on
/// it. RabbitMQ (3.10 here) can keep nacking every later publish of a
/// channel whose first publish to a quorum queue came while that queue
/// was electing a leader — a worker that reconnects at once after its node
/// died publishes just then — while a new channel on the same connection
/// is confirmed (found by the cluster scenarios, tests/clusters). So a
/// nack or a missing confirm costs one channel: the retry goes out on a
/// fresh one, and the refused channel closes once its last publish is
/// settled.
struct Confirms {
    conn: Arc<Connection>,
    current: std::sync::Mutex<Channel>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
}

impl Confirms {
    fn current(&self) -> Channel {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new confirm channel in place of `refused`, unless another
    /// publish did already. A connection that cannot open one is failing
    /// anyway: its session is rebuilt.
    async fn replace(&self, refused: &Channel) {
        let _one = self.replacing.lock().await;
        if self.current().id() != refused.id() {
            return;
        }
        let fresh = async {
            let c = self.conn.create_channel().await?;
            c.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<Channel, lapin::Error>(c)
        };
        match fresh.await {
            Ok(c) => {
                tracing::info!(
                    refused = refused.id(),
                    channel = c.id(),
                    "publishing on a new channel: the broker refused a publish on the last one"
                );
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = c;
            }
            Err(e) => tracing::debug!(error = %e, "no new channel to publish on"),
        }
    }
}

/// The `reply_to` channel. A broker refusal (access refused, a bad name)
/// closes the channel it happens on: here that is this channel alone, never
/// the one carrying other intents' confirms, so it is opened again on the
/// next reply instead of resetting the session.
struct Replies {
    conn: Arc<Connection>,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl Replies {
    async fn publish(&self, queue: ShortString, body: &[u8], props: BasicProperties) {
        let mut slot = self.channel.lock().await;
        let open = slot.take().filter(|c| c.status().connected());
        let channel = match open {
            Some(c) => c,
            None => match self.conn.create_channel().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "no channel for reply_to (best effort)");
                    return;
                }
            },
        };
        match channel
            .basic_publish(
                "".into(),
                queue,
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
        {
            Ok(_) => *slot = Some(channel),
            Err(e) => {
                crate::telemetry::metrics::reply_to_failed();
                tracing::debug!(error = %e, "reply_to publish failed (best effort)");
            }
        }
    }
}

impl Publisher {
    pub async fn open(conn: &Arc<Connection>, result_exchange: &str) -> Result<Self, lapin::Error> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            confirms: Arc::new(Confirms {
                conn: conn.clone(),
                current: std::sync::Mutex::new(channel),
                replacing: tokio::sync::Mutex::new(()),
            }),
            exchange: ShortString::from(result_exchange),
            replies: Arc::new(Replies {
                conn: conn.clone(),
                channel: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The channel publishes go out on now.
    pub fn channel(&self) -> Channel {
        self.confirms.current()
    }

    /// Publishes a payment event (contract §10) and waits for the confirm.
    pub async fn publish_payment(&self, out: Outgoing<'_>) -> Result<(), PublishError> {
        let mut headers = vec![("x-state", out.state.as_str())];
        headers.extend(out.trace.pairs());
        let ce_type = format!("h5pay.payment.{}", out.state.as_str());
        let cloud = CloudEvent {
            ce_type: &ce_type,
            time: out.occurred_at,
            subject: Some(out.subject),
        };
        let props = properties(
            out.event_id,
            crate::payment::event::SCHEMA,
            &headers,
            &cloud,
            out.correlation_id,
        );
        self.publish_confirmed(out.routing_key, out.body, props, None)
            .await
    }

    /// Publishes to the result exchange, mandatory, and waits (bounded) for
    /// the broker's confirm; a copy goes to `reply`, best effort.
    async fn publish_confirmed(
        &self,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        reply: Option<ShortString>,
    ) -> Result<(), PublishError> {
        // Held until the confirm is in: a replaced channel closes only
        // once nothing waits on it.
        let channel = self.confirms.current();
        let outcome = self
            .publish_on(&channel, routing_key, body, props, reply)
            .await;
        if matches!(
            outcome,
            Err(PublishError::Nacked | PublishError::Timeout(_))
        ) {
            self.confirms.replace(&channel).await;
        }
        outcome
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        reply: Option<ShortString>,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        // The properties are copied only for a reply: their header table is
        // a tree of owned strings, and almost no intent asks for one.
        let reply = reply.map(|queue| (queue, props.clone()));
        let confirm = channel
            .basic_publish(
                self.exchange.clone(),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await?;
        if let Some((queue, props)) = reply {
            // Not mandatory, not confirmed: the reply queue may be gone, and
            // that must not hold the intent back.
            self.replies.publish(queue, body, props).await;
        }
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| PublishError::Timeout(CONFIRM_TIMEOUT))??;
        crate::telemetry::metrics::publish_confirmed(started.elapsed());
        match outcome {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) => {
                Err(PublishError::Returned(returned.reply_text.to_string()))
            }
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }
}

/// One result event to publish: the event, its serialised body, and how
/// it travels (the payment events' [`crate::sink::Outgoing`], for results).
#[derive(Clone, Copy)]
pub struct ResultOut<'a> {
    pub event: &'a ResultEvent,
    pub body: &'a [u8],
    pub correlation_id: &'a str,
    /// The publisher's `reply_to`: it also gets the event, best effort.
    pub reply_to: Option<&'a str>,
    /// The trace context to put on the event.
    pub trace: &'a TraceHeaders,
}

/// Where result events go: the confirm-mode publisher in production, a
/// recorder in tests of the pipeline's order. Here, not in the pipeline,
/// so the publisher implements it directly (no forwarding copy).
pub trait ResultSink: Sync {
    /// Publishes `out.event` and resolves once the broker confirmed it.
    fn publish(&self, out: ResultOut<'_>) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl ResultSink for Publisher {
    /// Publishes the event and waits for the broker's confirm. `reply_to`,
    /// if any, also gets it, best effort: not mandatory, not awaited.
    async fn publish(&self, out: ResultOut<'_>) -> Result<(), PublishError> {
        let ResultOut {
            event,
            body,
            correlation_id,
            reply_to,
            trace,
        } = out;
        let mut headers = vec![("x-status", event.status.as_str())];
        if let Some(kind) = event.error_kind() {
            headers.push(("x-error-kind", kind));
        }
        headers.extend(trace.pairs());
        let cloud = CloudEvent {
            ce_type: event.status.event_type(),
            time: &event.occurred_at,
            subject: event.pay_trace_no.as_deref(),
        };
        let props = properties(
            &event.event_id,
            crate::result_event::SCHEMA,
            &headers,
            &cloud,
            correlation_id,
        );
        let reply = reply_to.and_then(|q| ShortString::try_new(q).ok());
        self.publish_confirmed(&event.routing_key(), body, props, reply)
            .await
    }
}

impl PaymentSink for Publisher {
    fn publish_payment(
        &self,
        out: Outgoing<'_>,
    ) -> impl std::future::Future<Output = Result<(), PublishError>> + Send {
        Publisher::publish_payment(self, out)
    }
}

/// The CloudEvents attributes of an event that are not fixed (issue 14:
/// the AMQP binding's `cloudEvents_` application properties, body
/// unchanged).
pub struct CloudEvent<'a> {
    /// `h5pay.result.<status>` / `h5pay.payment.<state>`.
    pub ce_type: &'a str,
    /// The event's `occurred_at`.
    pub time: &'a str,
    /// The pay_trace_no, when the event has one.
    pub subject: Option<&'a str>,
}

/// `cloudEvents_source` of every event.
pub const CLOUDEVENTS_SOURCE: &str = "urn:h5pay-worker";

/// The properties of an event: persistent JSON, `message_id = event_id`,
/// the schema as `type`, its headers with the CloudEvents attributes, the
/// correlation_id.
fn properties(
    event_id: &str,
    schema: &str,
    headers: &[(&str, &str)],
    cloud: &CloudEvent<'_>,
    correlation_id: &str,
) -> BasicProperties {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    let mut put = |k: &str, v: &str| {
        table.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    };
    put("cloudEvents_specversion", "1.0");
    put("cloudEvents_id", event_id);
    put("cloudEvents_source", CLOUDEVENTS_SOURCE);
    put("cloudEvents_type", cloud.ce_type);
    put("cloudEvents_time", cloud.time);
    put("cloudEvents_datacontenttype", "application/json");
    if let Some(subject) = cloud.subject {
        put("cloudEvents_subject", subject);
    }
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(event_id))
        .with_timestamp(now)
        .with_app_id("h5pay-worker".into())
        .with_type(ShortString::from(schema))
        .with_headers(table);
    // An intent with no correlation_id, message_id or readable pay_trace_no
    // has nothing to correlate by: the property is left out, not empty.
    if !correlation_id.is_empty()
        && let Ok(c) = ShortString::try_new(correlation_id)
    {
        props = props.with_correlation_id(c);
    }
    props
}
