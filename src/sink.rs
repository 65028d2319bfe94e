//! The ports events leave through, below both the code that makes them
//! (the payment, the pipeline) and the broker edge that carries them
//! ([`crate::amqp`]): what a sink is asked, and how it can fail.

use std::future::Future;
use std::time::Duration;

use crate::domain::EventState;
use crate::telemetry::trace::TraceHeaders;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publish failed: {0}")]
    Channel(#[from] lapin::Error),
    #[error("the broker refused the result event (nack)")]
    Nacked,
    #[error("the result event was returned unroutable: {0}")]
    Returned(String),
    #[error("no broker confirm within {0:?}")]
    Timeout(Duration),
    #[error("not connected to RabbitMQ")]
    Unavailable,
}

impl PublishError {
    /// A failure of the connection or channel itself: the delivery it was
    /// for is gone with it and comes back on its own.
    pub fn channel_lost(&self) -> bool {
        matches!(self, PublishError::Channel(_))
    }
}

/// One payment event on its way to the broker.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub event_id: &'a str,
    pub state: EventState,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub correlation_id: &'a str,
    /// The event's `occurred_at` and pay_trace_no (CloudEvents `time`,
    /// `subject`).
    pub occurred_at: &'a str,
    pub subject: &'a str,
    /// The trace context to put on the event.
    pub trace: &'a TraceHeaders,
}

/// Where payment events go: the confirm-mode publisher in production, a
/// recorder in tests.
pub trait PaymentSink: Sync {
    /// Publishes the event and resolves once the broker confirmed it.
    fn publish_payment(
        &self,
        out: Outgoing<'_>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}
