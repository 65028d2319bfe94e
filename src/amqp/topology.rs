//! The topology of contract §2, declared idempotently at start-up and after
//! every reconnect.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

use crate::config::{AmqpSettings, QueueType};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// An object exists with other arguments or another type.
    #[error(
        "{object} already exists with other arguments ({detail}); delete it or make the amqp.* settings match"
    )]
    Mismatch { object: String, detail: String },
    #[error("cannot declare {object}: {source}")]
    Broker {
        object: String,
        #[source]
        source: lapin::Error,
    },
}

impl TopologyError {
    /// A mismatch will not fix itself; broker errors may (a reconnect).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, TopologyError::Mismatch { .. })
    }
}

fn classify(object: String, e: lapin::Error) -> TopologyError {
    if let ErrorKind::ProtocolError(amqp) = e.kind()
        && matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        )
    {
        return TopologyError::Mismatch {
            object,
            detail: amqp.get_message().to_string(),
        };
    }
    TopologyError::Broker { object, source: e }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The intent queue's arguments: exactly what the contract names, so a
/// queue declared by operators from the same contract is equivalent.
pub fn intent_queue_arguments(a: &AmqpSettings) -> FieldTable {
    let mut args = FieldTable::default();
    if a.queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(a.delivery_limit).unwrap_or(i32::MAX)),
        );
    }
    args.insert(
        "x-dead-letter-exchange".into(),
        long(&a.dead_letter_exchange),
    );
    args
}

fn queue_type_arguments(a: &AmqpSettings) -> FieldTable {
    let mut args = FieldTable::default();
    if a.queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long("quorum"));
    }
    args
}

/// Declares every exchange, queue and binding of the topology.
pub async fn declare(conn: &Connection, a: &AmqpSettings) -> Result<(), TopologyError> {
    // A failed declare closes its channel, so the error is final for this
    // round; the caller decides whether to retry.
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| TopologyError::Broker {
            object: "a channel".into(),
            source: e,
        })?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let unrouted = a.unrouted_exchange();

    exchange(
        &ch,
        &a.dead_letter_exchange,
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    queue(&ch, &a.dead_letter_queue, queue_type_arguments(a)).await?;
    bind(&ch, &a.dead_letter_queue, &a.dead_letter_exchange, "").await?;

    exchange(
        &ch,
        &a.intent_exchange,
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    queue(&ch, &a.intent_queue, intent_queue_arguments(a)).await?;
    bind(&ch, &a.intent_queue, &a.intent_exchange, "#").await?;

    exchange(
        &ch,
        &unrouted,
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    queue(&ch, &unrouted, queue_type_arguments(a)).await?;
    bind(&ch, &unrouted, &unrouted, "").await?;
    let mut result_args = FieldTable::default();
    result_args.insert("alternate-exchange".into(), long(&unrouted));
    exchange(
        &ch,
        &a.result_exchange,
        ExchangeKind::Topic,
        durable,
        result_args,
    )
    .await?;

    // Dropping the last handle closes the channel.
    drop(ch);
    Ok(())
}

async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> Result<(), TopologyError> {
    ch.exchange_declare(ShortString::from(name), kind, options, args)
        .await
        .map_err(|e| classify(format!("exchange '{name}'"), e))
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), TopologyError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(ShortString::from(name), options, args)
        .await
        .map(|_| ())
        .map_err(|e| classify(format!("queue '{name}'"), e))
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), TopologyError> {
    ch.queue_bind(
        ShortString::from(queue),
        ShortString::from(exchange),
        ShortString::from(key),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| {
        classify(
            format!("binding of queue '{queue}' to exchange '{exchange}'"),
            e,
        )
    })
}
