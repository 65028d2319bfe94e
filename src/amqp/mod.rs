//! The AMQP edge: connecting, declaring the topology, publishing with
//! publisher confirms, and settling deliveries. Consuming lives in [`crate::worker`].

pub mod link;
pub mod publisher;
pub mod settler;
pub mod topology;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::config::{AmqpSettings, SecretUrl};

pub use publisher::{PublishError, Publisher};
pub use settler::{SettleError, Settlement, Settler};
pub use topology::{TopologyError, declare};

/// The largest frame this client asks for (see [`connect`]).
const FRAME_MAX: u32 = 32 * 1024;

/// Connects with a recognisable connection name (`rabbitmqctl
/// list_connections client_properties` shows it). No lapin auto-recovery:
/// the worker's supervisor rebuilds connection, channels, topology and
/// consumer from scratch, which is simpler to reason about for
/// at-least-once delivery (deliveries of a lost connection come back
/// anyway, and their acks can only fail).
///
/// Unless the URL says otherwise, heartbeats are every 10 s (a silently
/// dead peer is noticed in about 20 s, not the broker default's 2 minutes),
/// connecting gives up after 5 s, and frames are at most 32 KiB: lapin
/// keeps two buffers of 32 frames each per connection, 8 MiB resident at
/// the broker's default 128 KiB, 2 MiB at 32 KiB. Intents and events are a
/// few hundred bytes; a larger body is simply split into more frames.
pub async fn connect(url: &SecretUrl, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match url.expose().parse::<AMQPUri>() {
        Ok(mut uri) => {
            uri.query.heartbeat.get_or_insert(10);
            uri.query.connection_timeout.get_or_insert(5000);
            uri.query.frame_max.get_or_insert(FRAME_MAX);
            Connection::connect_uri(uri, props).await
        }
        // Let lapin report what is wrong with it.
        Err(_) => Connection::connect(url.expose(), props).await,
    }
}

/// Which broker node to connect to next (contract §14): the nodes of
/// `amqp.urls`, or `amqp.url` alone when that list is empty. The first is
/// chosen at random, so replicas spread over the cluster; every later
/// connect (after a failed try or a lost connection) moves on to the next
/// one, round the list.
#[derive(Debug, Clone)]
pub struct Nodes {
    urls: Vec<SecretUrl>,
    next: usize,
}

impl Nodes {
    pub fn new(settings: &AmqpSettings) -> Nodes {
        let urls = if settings.urls.is_empty() {
            vec![settings.url.clone()]
        } else {
            settings.urls.clone()
        };
        let next = rand::random_range(0..urls.len());
        Nodes { urls, next }
    }

    /// How many nodes there are (at least one).
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never: there is always `amqp.url` at least.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The node to connect to now; the next call names the one after it.
    /// Log it with `Display`, which hides its password.
    pub fn next_url(&mut self) -> SecretUrl {
        let i = self.next % self.urls.len().max(1);
        self.next = i + 1;
        self.urls
            .get(i)
            .cloned()
            .unwrap_or_else(|| SecretUrl::new(""))
    }
}

/// A one-shot command's connection: each node tried once, from a random
/// one, until one answers; otherwise the last node's error.
pub async fn connect_any(settings: &AmqpSettings, name: &str) -> Result<Connection, ConnectFailed> {
    let mut nodes = Nodes::new(settings);
    let mut tries = nodes.len();
    loop {
        let url = nodes.next_url();
        match connect(&url, name).await {
            Ok(c) => return Ok(c),
            Err(source) if tries <= 1 => return Err(ConnectFailed { url, source }),
            Err(e) => {
                tracing::warn!(node = %url, error = %e, "cannot reach this RabbitMQ node; trying the next");
                tries -= 1;
            }
        }
    }
}

/// No node answered; `url`'s `Display` hides its password.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {source}")]
pub struct ConnectFailed {
    pub url: SecretUrl,
    #[source]
    pub source: lapin::Error,
}

/// A connection name like `h5pay-worker run@host#pid`.
pub fn connection_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("h5pay-worker {role}@{host}#{}", std::process::id())
}

/// A server-named queue of this connection's own (exclusive, auto-delete:
/// gone with it), for a command or a test that watches the events.
pub async fn private_queue(ch: &lapin::Channel) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(
        "".into(),
        lapin::options::QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
}

/// Closes one channel (best effort, bounded).
pub async fn close_channel(ch: &lapin::Channel) {
    if ch.status().connected() {
        let close = ch.close(200, "closing".into());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), close).await;
    }
}

/// Closes the given channels, then the connection. Closing channels first
/// keeps lapin from closing a dropped channel while the connection is
/// already closing (which it reports as a connection error).
pub async fn close(conn: &Connection, channels: &[&lapin::Channel], reason: &str) {
    for ch in channels {
        close_channel(ch).await;
    }
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.close(200, reason.into()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(urls: &[&str]) -> AmqpSettings {
        AmqpSettings {
            urls: urls.iter().map(|u| SecretUrl::new(*u)).collect(),
            ..AmqpSettings::default()
        }
    }

    #[test]
    fn without_urls_the_one_url_is_every_next_node() {
        let s = settings(&[]);
        let mut nodes = Nodes::new(&s);
        assert_eq!(nodes.len(), 1);
        for _ in 0..3 {
            assert_eq!(nodes.next_url(), s.url);
        }
    }

    #[test]
    fn nodes_start_at_random_and_each_reconnect_moves_to_the_next() {
        let urls = ["amqp://a/%2f", "amqp://b/%2f", "amqp://c/%2f"];
        let s = settings(&urls);
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut nodes = Nodes::new(&s);
            let first = nodes.next_url();
            firsts.insert(first.expose().to_owned());
            let start = urls
                .iter()
                .position(|u| *u == first.expose())
                .unwrap_or_else(|| panic!("{first} is not a node"));
            for step in 1..=7 {
                assert_eq!(nodes.next_url().expose(), urls[(start + step) % 3]);
            }
        }
        assert_eq!(firsts.len(), 3, "every node is sometimes first: {firsts:?}");
    }
}
