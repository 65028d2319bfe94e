//! A broker connection kept alive in the background for a process that
//! only publishes (the notify receiver): connected, topology declared (or,
//! for a user that may only publish, the result exchange found), a
//! confirm-mode publisher ready, rebuilt with backoff whenever it breaks.
//! Callers never wait for a connection: without one they answer at once
//! that the broker is unavailable.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ExchangeKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{PublishError, Publisher};
use crate::config::{AmqpSettings, SecretUrl};
use crate::sink::{Outgoing, PaymentSink};

/// How often a live connection is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What a link does about the topology each time it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Declares all of it, idempotently (its user needs the configure
    /// permission): the worker's reconciler, the demo.
    Declare,
    /// Declares nothing. A passive declare — which needs no permission at
    /// all — checks that the result exchange exists; until it does, the
    /// link stays down. For the notify receiver, whose broker user may only
    /// write to the result exchange (deploy/rabbitmq/local-users.json).
    Passive,
}

/// The current publisher, if connected. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    current: watch::Receiver<Option<Publisher>>,
    /// Asks the keeper to rebuild now (a publish found the channel gone).
    broken: Arc<tokio::sync::Notify>,
}

impl Link {
    /// Starts keeping a connection named `role` that declares the topology;
    /// stops when `stop` is cancelled.
    pub fn start(settings: AmqpSettings, role: &'static str, stop: CancellationToken) -> Link {
        Self::start_with(settings, role, Topology::Declare, stop)
    }

    /// [`Link::start`], doing `topology` on every connect.
    pub fn start_with(
        settings: AmqpSettings,
        role: &'static str,
        topology: Topology,
        stop: CancellationToken,
    ) -> Link {
        let (tx, rx) = watch::channel(None);
        let broken = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(keep(settings, role, topology, tx, broken.clone(), stop));
        Link {
            current: rx,
            broken,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.current.borrow().is_some()
    }

    fn publisher(&self) -> Option<Publisher> {
        self.current.borrow().clone()
    }
}

impl PaymentSink for Link {
    async fn publish_payment(&self, out: Outgoing<'_>) -> Result<(), PublishError> {
        let Some(publisher) = self.publisher() else {
            return Err(PublishError::Unavailable);
        };
        let result = publisher.publish_payment(out).await;
        if matches!(&result, Err(e) if e.channel_lost()) {
            self.broken.notify_one();
        }
        result
    }
}

async fn keep(
    settings: AmqpSettings,
    role: &'static str,
    topology: Topology,
    tx: watch::Sender<Option<Publisher>>,
    broken: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut backoff = crate::reconnect::Reconnect::broker();
    let mut nodes = super::Nodes::new(&settings);
    loop {
        // Every try, after a failure or a lost connection, goes to the next
        // node of amqp.urls.
        let node = nodes.next_url();
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            o = open(&settings, &node, role, topology) => o,
        };
        let (conn, publisher) = match opened {
            Ok(c) => c,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, %node, retry_in_ms = delay.as_millis() as u64, "cannot reach RabbitMQ; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        backoff.reset();
        tracing::info!(%node, "connected to RabbitMQ");
        tx.send_replace(Some(publisher.clone()));
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    tx.send_replace(None);
                    super::close(&conn, &[&publisher.channel()], "stopping").await;
                    return;
                }
                _ = broken.notified() => break,
                _ = tokio::time::sleep(WATCH_EVERY) => {
                    if !conn.status().connected() || !publisher.channel().status().connected() {
                        break;
                    }
                }
            }
        }
        tx.send_replace(None);
        crate::telemetry::metrics::amqp_reconnected();
        tracing::warn!("lost the RabbitMQ connection; reconnecting");
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            conn.close(200, "reconnecting".into()),
        )
        .await;
    }
}

async fn open(
    settings: &AmqpSettings,
    node: &SecretUrl,
    role: &str,
    topology: Topology,
) -> Result<(Arc<Connection>, Publisher), OpenError> {
    let conn = Arc::new(super::connect(node, &super::connection_name(role)).await?);
    let ready = match topology {
        Topology::Declare => super::declare(&conn, settings)
            .await
            .map_err(OpenError::from),
        Topology::Passive => result_exchange_exists(&conn, &settings.result_exchange).await,
    };
    if let Err(e) = ready {
        super::close(&conn, &[], "topology not ready").await;
        return Err(e);
    }
    let publisher = Publisher::open(&conn, &settings.result_exchange).await?;
    Ok((conn, publisher))
}

/// A passive declare of the result exchange on a channel of its own (the
/// broker closes the channel when the exchange is missing). Public so the
/// tests check for the exchange the way the link does.
pub async fn result_exchange_exists(conn: &Connection, exchange: &str) -> Result<(), OpenError> {
    let ch = conn.create_channel().await?;
    let found = ch
        .exchange_declare(
            ShortString::from(exchange),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match found {
        Ok(()) => {
            super::close_channel(&ch).await;
            Ok(())
        }
        Err(source) => Err(OpenError::NoResultExchange {
            exchange: exchange.to_owned(),
            source,
        }),
    }
}

/// Why a link did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Topology(#[from] super::TopologyError),
    #[error(
        "the result exchange '{exchange}' cannot be found ({source}); this process declares \
         nothing: start the worker (it declares the topology) or import \
         deploy/rabbitmq/definitions.json"
    )]
    NoResultExchange {
        exchange: String,
        source: lapin::Error,
    },
}
