//! The topology of contract §2, as data ([`plan`]), as the act of
//! declaring it ([`declare`], idempotently at start-up and after every
//! reconnect), and of removing it ([`remove`], for the isolated topologies
//! of the demo, tests and benchmark: [`AmqpSettings::isolated`]).
//! `deploy/rabbitmq/definitions.json` is checked against the same plan by a
//! test.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
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

/// An argument value: the topology uses strings and integers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Str(String),
    Int(i64),
}

/// One exchange to declare (always durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeDecl {
    pub name: String,
    /// `topic` or `fanout`.
    pub kind: &'static str,
    pub arguments: Vec<(&'static str, Arg)>,
}

/// One queue to declare (always durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDecl {
    pub name: String,
    pub arguments: Vec<(&'static str, Arg)>,
}

/// One binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingDecl {
    pub exchange: String,
    pub queue: String,
    pub routing_key: &'static str,
}

/// Everything the worker declares, in declaration order (what an
/// alternate exchange or a dead-letter exchange names exists first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declarations {
    pub exchanges: Vec<ExchangeDecl>,
    pub queues: Vec<QueueDecl>,
    pub bindings: Vec<BindingDecl>,
}

/// The topology for these settings. Queue arguments are exactly what the
/// contract names, so a queue declared by operators from the same contract
/// is equivalent; policies (e.g. at-least-once dead-lettering) go on top.
pub fn plan(a: &AmqpSettings) -> Declarations {
    let quorum = a.queue_type == QueueType::Quorum;
    let typed = || {
        if quorum {
            vec![("x-queue-type", Arg::Str("quorum".into()))]
        } else {
            Vec::new()
        }
    };
    let mut intent_args = typed();
    if quorum {
        // RabbitMQ counts deliveries on quorum queues only.
        intent_args.push(("x-delivery-limit", Arg::Int(i64::from(a.delivery_limit))));
    }
    intent_args.push((
        "x-dead-letter-exchange",
        Arg::Str(a.dead_letter_exchange.clone()),
    ));
    let unrouted = a.unrouted_exchange();
    Declarations {
        exchanges: vec![
            ExchangeDecl {
                name: a.dead_letter_exchange.clone(),
                kind: "fanout",
                arguments: vec![],
            },
            ExchangeDecl {
                name: a.intent_exchange.clone(),
                kind: "topic",
                arguments: vec![],
            },
            ExchangeDecl {
                name: unrouted.clone(),
                kind: "fanout",
                arguments: vec![],
            },
            ExchangeDecl {
                name: a.result_exchange.clone(),
                kind: "topic",
                arguments: vec![("alternate-exchange", Arg::Str(unrouted.clone()))],
            },
        ],
        queues: vec![
            // Classic whatever amqp.queue_type says: a classic queue counts
            // no deliveries, so reading it (`dlq list`, a replay's dry run)
            // never uses up a delivery limit, and no broker default (RabbitMQ
            // 4.x gives quorum queues 20) can ever drop a dead letter.
            QueueDecl {
                name: a.dead_letter_queue.clone(),
                arguments: vec![],
            },
            QueueDecl {
                name: a.intent_queue.clone(),
                arguments: intent_args,
            },
            QueueDecl {
                name: unrouted.clone(),
                arguments: typed(),
            },
        ],
        bindings: vec![
            BindingDecl {
                exchange: a.dead_letter_exchange.clone(),
                queue: a.dead_letter_queue.clone(),
                routing_key: "",
            },
            BindingDecl {
                exchange: a.intent_exchange.clone(),
                queue: a.intent_queue.clone(),
                routing_key: "#",
            },
            BindingDecl {
                exchange: unrouted.clone(),
                queue: unrouted,
                routing_key: "",
            },
        ],
    }
}

fn field_table(args: &[(&'static str, Arg)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            Arg::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            // Integers go out as signed 32-bit ('I'), as most clients send them.
            Arg::Int(n) => AMQPValue::LongInt(i32::try_from(*n).unwrap_or(i32::MAX)),
        };
        t.insert((*k).into(), value);
    }
    t
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

/// A channel for declaring (a failed declare closes its channel).
async fn channel(conn: &Connection) -> Result<Channel, TopologyError> {
    conn.create_channel()
        .await
        .map_err(|e| TopologyError::Broker {
            object: "a channel".into(),
            source: e,
        })
}

/// Declares every exchange, queue and binding of the plan.
pub async fn declare(conn: &Connection, a: &AmqpSettings) -> Result<(), TopologyError> {
    // A failed declare closes its channel, so the error is final for this
    // round; the caller decides whether to retry.
    let ch = channel(conn).await?;
    let p = plan(a);
    let is_dlq = |name: &str| name == a.dead_letter_queue;
    for x in &p.exchanges {
        declare_exchange(&ch, x).await?;
    }
    for q in p.queues.iter().filter(|q| !is_dlq(&q.name)) {
        declare_queue(&ch, q).await?;
    }
    for b in p.bindings.iter().filter(|b| !is_dlq(&b.queue)) {
        bind(&ch, b).await?;
    }
    // Dropping the last handle closes the channel.
    drop(ch);
    declare_dlq(conn, &p, a).await
}

/// The dead-letter queue last, on a channel of its own: a classic queue
/// whose node is down cannot be declared (404), and that must not stop
/// intents (contract §14). It is reported instead: a log line and
/// `h5pay_dlq_reachable` 0; the next declare (every reconnect) tries again.
/// A mismatch is still an error: it will not fix itself.
async fn declare_dlq(
    conn: &Connection,
    p: &Declarations,
    a: &AmqpSettings,
) -> Result<(), TopologyError> {
    let attempt = async {
        let ch = channel(conn).await?;
        for q in p.queues.iter().filter(|q| q.name == a.dead_letter_queue) {
            declare_queue(&ch, q).await?;
        }
        for b in p.bindings.iter().filter(|b| b.queue == a.dead_letter_queue) {
            bind(&ch, b).await?;
        }
        Ok::<(), TopologyError>(())
    };
    match attempt.await {
        Ok(()) => {
            crate::telemetry::metrics::dlq_reachable(true);
            Ok(())
        }
        Err(e) if e.is_mismatch() => Err(e),
        Err(e) => {
            crate::telemetry::metrics::dlq_reachable(false);
            tracing::error!(
                error = %e,
                queue = a.dead_letter_queue.as_str(),
                "the dead-letter queue cannot be reached; intents go on, and what is dead-lettered meanwhile may be lost: bring its node back"
            );
            Ok(())
        }
    }
}

/// Deletes every queue and exchange of the plan, whatever they hold: for
/// an isolated topology ([`AmqpSettings::isolated`]) at the end of its run.
/// Best effort: what is already gone is not an error.
pub async fn remove(conn: &Connection, a: &AmqpSettings) {
    let p = plan(a);
    for q in &p.queues {
        // A failed delete closes its channel: one channel each.
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for x in p.exchanges.iter().rev() {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(x.name.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

async fn declare_exchange(ch: &Channel, x: &ExchangeDecl) -> Result<(), TopologyError> {
    let kind = if x.kind == "fanout" {
        ExchangeKind::Fanout
    } else {
        ExchangeKind::Topic
    };
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        ShortString::from(x.name.as_str()),
        kind,
        options,
        field_table(&x.arguments),
    )
    .await
    .map_err(|e| classify(format!("exchange '{}'", x.name), e))
}

async fn declare_queue(ch: &Channel, q: &QueueDecl) -> Result<(), TopologyError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(
        ShortString::from(q.name.as_str()),
        options,
        field_table(&q.arguments),
    )
    .await
    .map(|_| ())
    .map_err(|e| classify(format!("queue '{}'", q.name), e))
}

async fn bind(ch: &Channel, b: &BindingDecl) -> Result<(), TopologyError> {
    ch.queue_bind(
        ShortString::from(b.queue.as_str()),
        ShortString::from(b.exchange.as_str()),
        ShortString::from(b.routing_key),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| {
        classify(
            format!(
                "binding of queue '{}' to exchange '{}'",
                b.queue, b.exchange
            ),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_is_the_contract_topology() {
        let p = plan(&AmqpSettings::default());
        let names: Vec<(&str, &str)> = p
            .exchanges
            .iter()
            .map(|x| (x.name.as_str(), x.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("h5pay.dlx", "fanout"),
                ("h5pay.intents", "topic"),
                ("h5pay.results.unrouted", "fanout"),
                ("h5pay.results", "topic")
            ]
        );
        let intents = p.queues.iter().find(|q| q.name == "h5pay.intents");
        assert_eq!(
            intents.map(|q| q.arguments.clone()),
            Some(vec![
                ("x-queue-type", Arg::Str("quorum".into())),
                ("x-delivery-limit", Arg::Int(5)),
                ("x-dead-letter-exchange", Arg::Str("h5pay.dlx".into())),
            ])
        );
        assert!(
            p.bindings
                .iter()
                .any(|b| b.exchange == "h5pay.intents" && b.routing_key == "#")
        );
    }

    #[test]
    fn classic_queues_carry_no_type_and_no_delivery_limit() {
        let a = AmqpSettings {
            queue_type: QueueType::Classic,
            ..AmqpSettings::default()
        };
        let p = plan(&a);
        for q in &p.queues {
            assert!(
                q.arguments
                    .iter()
                    .all(|(k, _)| *k != "x-queue-type" && *k != "x-delivery-limit"),
                "{q:?}"
            );
        }
    }
}
