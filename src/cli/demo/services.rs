//! Starting what the demo runs against, in one process: the sandbox
//! gateway, the notify receiver, the broker's listeners and a worker; and
//! stopping them again, removing the demo's names from RabbitMQ and Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::DemoError;
use crate::amqp;
use crate::amqp::link::Link;
use crate::claim::ClaimStore;
use crate::cli::publish::{event_listener, result_listener};
use crate::config::{AmqpSettings, Config, RedisSettings, Settings};
use crate::keys::KeyRing;
use crate::notify::Receiver;
use crate::payment::PaymentStore;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::telemetry::metrics::Server;
use crate::worker::{Worker, WorkerError};

/// Names of the demo's own, and timings that run a payment's whole
/// lifecycle in seconds.
pub(super) fn isolate(s: &mut Settings, run_id: &str) {
    let prefix = format!("h5pay-demo-{run_id}");
    s.amqp = s.amqp.isolated(&prefix);
    s.redis.key_prefix = format!("h5pay-demo:{run_id}");
    // The floor the settings allow: the demo's keys are removed at the end.
    s.redis.retention_secs = s.min_retention_secs();
    // Quick retries so the demo's retry scenarios finish in seconds.
    s.retry.initial_ms = 50;
    s.retry.max_interval_ms = 200;
    s.retry.max_attempts = 3;
    s.retry.max_elapsed_ms = 10_000;
    s.gateway.request_timeout_ms = 1000;
    // A payment lifecycle in seconds: checks after 2 s, unpaid orders
    // closed after 6 s, given up after 40 s.
    s.reconcile.enabled = true;
    s.reconcile.check_after_secs = vec![2, 4];
    s.reconcile.order_ttl_secs = 5;
    s.reconcile.close_unpaid = true;
    s.reconcile.close_grace_secs = 1;
    s.reconcile.max_age_secs = 40;
}

/// Everything running for the demo, and what the demo reads from it.
pub(super) struct Services {
    pub sandbox_addr: SocketAddr,
    pub notify_addr: SocketAddr,
    pub amqp: AmqpSettings,
    pub conn: lapin::Connection,
    /// The result events.
    pub results: lapin::Consumer,
    /// The payment events.
    pub payments: lapin::Consumer,
    redis: RedisSettings,
    stop_worker: oneshot::Sender<()>,
    worker_task: JoinHandle<Result<(), WorkerError>>,
    stop_notify: CancellationToken,
    notify_task: JoinHandle<()>,
    sandbox_task: JoinHandle<()>,
}

impl Services {
    /// Starts them in order: each later one is pointed at the earlier ones.
    pub(super) async fn start(mut config: Config) -> Result<Services, DemoError> {
        check_redis(&config.settings.redis).await?;
        let (sandbox_addr, sandbox_task) = start_sandbox(&config).await?;
        config.settings.gateway.url = format!("http://{sandbox_addr}{}", crate::sandbox::PAY_PATH);
        let amqp_settings = config.settings.amqp.clone();
        let redis_settings = config.settings.redis.clone();
        let stop_notify = CancellationToken::new();
        let (notify_addr, notify_task) = start_notify(&mut config, &stop_notify).await?;

        let conn = amqp::connect(&amqp_settings.url, &amqp::connection_name("demo"))
            .await
            .map_err(|source| DemoError::Amqp {
                url: amqp_settings.url.redacted(),
                source,
            })?;
        amqp::declare(&conn, &amqp_settings).await?;
        let results = result_listener(&conn, &amqp_settings.result_exchange).await?;
        let payments =
            event_listener(&conn, &amqp_settings.result_exchange, &["h5pay.payment.#"]).await?;
        let (stop_worker, stop_rx) = oneshot::channel::<()>();
        let worker = Worker::new(config)?;
        let worker_task = tokio::spawn(worker.run(async {
            let _ = stop_rx.await;
        }));
        Ok(Services {
            sandbox_addr,
            notify_addr,
            amqp: amqp_settings,
            conn,
            results,
            payments,
            redis: redis_settings,
            stop_worker,
            worker_task,
            stop_notify,
            notify_task,
            sandbox_task,
        })
    }

    /// Stops the worker, then the receiver; removes the demo's queues,
    /// exchanges and keys; closes the connection (and `ch`, the intents'
    /// channel), then the sandbox.
    pub(super) async fn stop(self, ch: lapin::Channel) {
        // Fields moved out one by one (no destructuring copy of the struct).
        let _ = self.stop_worker.send(());
        let _ = self.worker_task.await;
        self.stop_notify.cancel();
        let _ = self.notify_task.await;
        amqp::topology::remove(&self.conn, &self.amqp).await;
        let redis = &self.redis;
        let _ = crate::claim::remove_keys(redis.url.expose(), &redis.key_prefix).await;
        drop(self.results);
        amqp::close(&self.conn, &[&ch], "demo done").await;
        self.sandbox_task.abort();
        // The order `run` dropped them in before it was split into stages,
        // so shutdown talks to the broker as it did.
        drop(ch);
        drop(self.payments);
        drop(self.conn);
    }
}

/// Fails early, with a hint, if Redis is not there.
async fn check_redis(redis: &RedisSettings) -> Result<(), DemoError> {
    let ping = async {
        let client = redis::Client::open(redis.url.expose())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    ping.await.map(drop).map_err(|source| DemoError::Redis {
        url: redis.url.redacted(),
        source,
    })
}

/// The sandbox gateway on a free local port.
async fn start_sandbox(config: &Config) -> Result<(SocketAddr, JoinHandle<()>), DemoError> {
    let (listener, addr) = crate::http_server::loopback()
        .await
        .map_err(DemoError::Sandbox)?;
    let sandbox = Sandbox::new(
        config.institutions.clone(),
        SandboxOptions {
            hang: Duration::from_secs(20),
            public_url: crate::sandbox::local_url(addr),
            ..SandboxOptions::default()
        },
    );
    let task = tokio::spawn(crate::sandbox::serve(
        listener,
        sandbox,
        std::future::pending(),
    ));
    Ok((addr, task))
}

/// The notify receiver, where the sandbox sends its notifies: every intent
/// without a notify_url is sent with this one (set in `config`).
async fn start_notify(
    config: &mut Config,
    stop: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), DemoError> {
    let redis_settings = &config.settings.redis;
    let (notify_listener, notify_addr) = crate::http_server::loopback()
        .await
        .map_err(DemoError::Sandbox)?;
    config.settings.notify.public_url =
        format!("http://{notify_addr}{}", config.settings.notify.path);
    let claims = ClaimStore::new(
        crate::claim::connect(redis_settings).map_err(|source| DemoError::Redis {
            url: redis_settings.url.redacted(),
            source,
        })?,
        redis_settings,
    );
    let link = Link::start(config.settings.amqp.clone(), "demo-notify", stop.clone());
    let receiver = Arc::new(Receiver {
        payments: PaymentStore::new(claims.clone()),
        sink: link,
        keys: Arc::new(KeyRing::new(config.institutions.clone())),
        settings: config.settings.notify.clone(),
        checks: Some(crate::reconcile::ChecksStore::new(
            claims,
            config.settings.reconcile.schedule_shards as usize,
        )),
    });
    let task = tokio::spawn(crate::http_server::serve(
        notify_listener,
        crate::notify::app(receiver),
        Server::Notify,
        stop.clone().cancelled_owned(),
    ));
    Ok((notify_addr, task))
}
