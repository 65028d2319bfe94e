//! The AMQP edge: connecting, declaring the topology, publishing with
//! publisher confirms, and settling deliveries. Consuming lives in [`crate::worker`].

pub mod link;
pub mod publisher;
pub mod settler;
pub mod topology;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::config::SecretUrl;

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

/// A connection name like `h5pay-worker run@host#pid`.
pub fn connection_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("h5pay-worker {role}@{host}#{}", std::process::id())
}

/// Closes the given channels, then the connection. Closing channels first
/// keeps lapin from closing a dropped channel while the connection is
/// already closing (which it reports as a connection error).
pub async fn close(conn: &Connection, channels: &[&lapin::Channel], reason: &str) {
    for ch in channels {
        if ch.status().connected() {
            let close = ch.close(200, "closing".into());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), close).await;
        }
    }
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.close(200, reason.into()),
    )
    .await;
}
