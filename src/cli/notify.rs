//! `h5pay-worker notify`: the notify receiver as a process of its own
//! (contract §11), its admin endpoints on `admin.listen`, key rotation on
//! SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::amqp::link::{Link, Topology};
use crate::claim::ClaimStore;
use crate::config::Config;
use crate::keys::KeyRing;
use crate::notify::{self, Receiver};
use crate::payment::PaymentStore;
use crate::reconcile::ChecksStore;
use crate::telemetry::{self, metrics::Server};
use crate::{http_server, signals};

#[derive(Debug, thiserror::Error)]
pub enum NotifyCommandError {
    #[error("redis.url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("notify.listen {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("admin.listen {listen}: {source}")]
    Admin {
        listen: String,
        source: std::io::Error,
    },
}

/// Serves notifies until SIGTERM/SIGINT; on SIGHUP reads `source` (the
/// settings file) again and rotates the institution keys, like `run`.
pub async fn run(config: Config, source: Option<PathBuf>) -> Result<(), NotifyCommandError> {
    let (stop_signal, hangups) = signals::install();
    let tracer = super::start_telemetry(&config.settings);
    let s = &config.settings;
    let stop = CancellationToken::new();
    let claims = ClaimStore::open(&s.redis)?;
    let health = Arc::new(Health::receiver());
    // Its broker user may only publish to the result exchange: it declares
    // nothing (deploy/rabbitmq/local-users.json, OPERATIONS.md §13).
    let link = Link::start_with(s.amqp.clone(), "notify", Topology::Passive, stop.clone());
    let keys = Arc::new(KeyRing::new(config.institutions.clone()));
    let receiver = Arc::new(Receiver {
        payments: PaymentStore::new(claims.clone()),
        sink: link.clone(),
        keys: keys.clone(),
        settings: s.notify.clone(),
        checks: s
            .reconcile
            .enabled
            .then(|| ChecksStore::new(claims.clone(), s.reconcile.schedule_shards as usize)),
    });
    let listener = tokio::net::TcpListener::bind(&s.notify.listen)
        .await
        .map_err(|source| NotifyCommandError::Listen {
            listen: s.notify.listen.clone(),
            source,
        })?;
    let admin_listen = receiver_admin_listen(&s.admin.listen);
    let (admin_addr, admin_server) =
        admin::bind(admin_listen, health.clone())
            .await
            .map_err(|source| NotifyCommandError::Admin {
                listen: admin_listen.to_owned(),
                source,
            })?;
    tracing::info!(
        listen = %s.notify.listen,
        path = %s.notify.path,
        admin = %admin_addr,
        amqp = %s.amqp.url,
        amqp_urls = ?s.amqp.urls,
        redis = %s.redis.url,
        redis_urls = ?s.redis.urls,
        institutions = ?config.institutions,
        "notify receiver listening"
    );
    let admin_task = tokio::spawn(admin_server);
    let pinger = tokio::spawn(admin::ping_redis(claims, health.clone()));
    let watcher = tokio::spawn(watch_broker(link, health.clone()));
    let reloader = tokio::spawn(signals::reload_keys_on_hangup(hangups, source, keys));
    let stopped = {
        let health = health.clone();
        let stop = stop.clone();
        async move {
            stop_signal.recv().await;
            tracing::info!("stop requested: finishing the notifies in progress");
            health.set_stopping();
            stop.cancel();
        }
    };
    http_server::serve(listener, notify::app(receiver), Server::Notify, stopped).await;
    watcher.abort();
    reloader.abort();
    pinger.abort();
    admin_task.abort();
    tracing::info!("notify receiver stopped");
    if let Some(t) = tracer {
        telemetry::trace::shutdown(t).await;
    }
    Ok(())
}

/// Readiness follows the broker connection.
async fn watch_broker(link: Link, health: Arc<Health>) {
    loop {
        health.set_consuming(link.is_connected());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The receiver's admin address: `admin.listen` when it is set, else the
/// receiver's own default, 127.0.0.1:9465, so that a worker and a receiver
/// started by hand on the default config do not clash on 9464.
pub fn receiver_admin_listen(admin_listen: &str) -> &str {
    if admin_listen == crate::config::AdminSettings::default().listen {
        RECEIVER_ADMIN_LISTEN
    } else {
        admin_listen
    }
}

/// The receiver's default admin address.
pub const RECEIVER_ADMIN_LISTEN: &str = "127.0.0.1:9465";

#[cfg(test)]
mod admin_port_tests {
    #[test]
    fn the_receiver_has_an_admin_port_of_its_own_unless_one_is_set() {
        assert_eq!(
            super::receiver_admin_listen("127.0.0.1:9464"),
            "127.0.0.1:9465"
        );
        assert_eq!(super::receiver_admin_listen("0.0.0.0:9464"), "0.0.0.0:9464");
        assert_eq!(
            super::receiver_admin_listen("127.0.0.1:7000"),
            "127.0.0.1:7000"
        );
    }
}
