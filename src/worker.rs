//! `h5pay-worker run`: the supervisor that keeps a connection, its topology,
//! a confirm-mode publisher and a consumer alive, and runs every delivery
//! through the [`Pipeline`] concurrently (up to `amqp.prefetch` at once).
//!
//! Connection loss, a broker restart or a channel error rebuild everything
//! from scratch with backoff; deliveries in progress at that moment finish
//! their gateway call and store their outcome, and their redelivery replays
//! it. A stop (`shutdown` resolving) follows contract §5.8.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::Health;
use crate::amqp::{self, Publisher, Settlement, Settler, TopologyError};
use crate::claim::{self, ClaimStore};
use crate::config::{Config, SecretUrl};
use crate::gateway::Gateway;
use crate::gateway::breaker::Breaker;
use crate::keys::KeyRing;
use crate::pipeline::{Disposition, Incoming, Pipeline, PipelineSettings};
use crate::reconcile::{Checker, ChecksStore, Reconciler, Schedule, Scheduling};
use crate::telemetry::metrics::{self, HandBack};
use crate::telemetry::trace::TraceHeaders;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("redis.url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::ClientError),
}

/// Everything a running worker shares.
pub struct Worker {
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
    /// Deliveries being processed.
    tasks: TaskTracker,
}

impl Worker {
    /// Builds the worker's parts without touching the network.
    pub fn new(config: Config) -> Result<Worker, WorkerError> {
        let config = Arc::new(config);
        let s = &config.settings;
        let breaker = Arc::new(Breaker::new(&s.breaker));
        let gateway = Arc::new(Gateway::new(&s.gateway, &s.retry, breaker.clone())?);
        let claims = ClaimStore::open(&s.redis)?;
        let health = Arc::new(Health::new(breaker));
        let scheduling = s.reconcile.enabled.then(|| Scheduling {
            checks: ChecksStore::new(claims.clone(), s.reconcile.schedule_shards as usize),
            schedule: Schedule::new(&s.reconcile),
        });
        let pipeline = Arc::new(Pipeline {
            claims,
            gateway,
            keys: Arc::new(KeyRing::new(config.institutions.clone())),
            settings: PipelineSettings::from_config(&config),
            stop: CancellationToken::new(),
            scheduling,
        });
        Ok(Worker {
            config,
            pipeline,
            health,
            tasks: TaskTracker::new(),
        })
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The institution keys in use: `replace` them to rotate keys.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.pipeline.keys.clone()
    }

    /// Runs until `shutdown` resolves, then stops gracefully. Returns an
    /// error only for what retrying cannot fix (a topology mismatch).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let stop = self.pipeline.stop.clone();
        let pinger = tokio::spawn(crate::admin::ping_redis(
            self.pipeline.claims.clone(),
            self.health.clone(),
        ));
        // The reconciler publishes payment events over a connection of its
        // own, kept until its last check is done.
        let link_stop = CancellationToken::new();
        let reconciler = self.pipeline.scheduling.as_ref().map(|sch| {
            let s = &self.config.settings;
            let link =
                crate::amqp::link::Link::start(s.amqp.clone(), "reconcile", link_stop.clone());
            let checker = Arc::new(Checker {
                payments: crate::payment::PaymentStore::new(self.pipeline.claims.clone()),
                checks: sch.checks.clone(),
                gateway: self.pipeline.gateway.clone(),
                keys: self.pipeline.keys.clone(),
                sink: link,
                schedule: sch.schedule.clone(),
                offset: s.worker.offset(),
                lease_ms: s.redis.lease_ms,
                stop: stop.clone(),
            });
            let grace = Duration::from_secs(s.worker.shutdown_grace_secs);
            let reconciler = Reconciler {
                checker,
                concurrency: s.reconcile.concurrency,
            };
            tokio::spawn(reconciler.run(stop.clone(), grace))
        });
        let supervise = self.supervise();
        tokio::pin!(supervise);
        let outcome = tokio::select! {
            r = &mut supervise => r,
            _ = shutdown => {
                info!("stop requested: not taking new intents");
                self.health.set_stopping();
                stop.cancel();
                // The supervisor cancels the consumer and hands back what
                // was received but not started.
                supervise.await
            }
        };
        if let Some(r) = reconciler {
            stop.cancel();
            let _ = r.await;
        }
        link_stop.cancel();
        pinger.abort();
        outcome
    }

    async fn supervise(&self) -> Result<(), WorkerError> {
        let a = &self.config.settings.amqp;
        let stop = self.pipeline.stop.clone();
        let mut backoff = crate::reconnect::Reconnect::broker();
        let mut nodes = amqp::Nodes::new(a);
        // Kept open through the drain: in-progress deliveries ack on it.
        let mut kept: Option<(Arc<Connection>, Channel, Publisher)> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            // Every try, after a failure or a lost session, goes to the
            // next node of amqp.urls.
            let node = nodes.next_url();
            let session = tokio::select! {
                s = self.open_session(&node) => s,
                _ = stop.cancelled() => break,
            };
            let Session {
                conn,
                publisher,
                channel,
                consumer,
            } = match session {
                Ok(s) => s,
                Err(SessionError::Topology(e)) if e.is_mismatch() => {
                    self.health.set_stopping();
                    return Err(WorkerError::Topology(e));
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, %node, retry_in_ms = delay.as_millis() as u64, "cannot reach RabbitMQ; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => break,
                    }
                    continue;
                }
            };
            backoff.reset();
            info!(queue = %a.intent_queue, prefetch = a.prefetch, %node, "consuming intents");
            self.health.set_consuming(true);
            let broken = CancellationToken::new();
            let settler = Settler::start();
            let ended = self
                .consume(&channel, consumer, &publisher, &settler, &broken)
                .await;
            self.health.set_consuming(false);
            match ended {
                ConsumeEnd::Stopped => {
                    kept = Some((conn, channel, publisher));
                    break;
                }
                ConsumeEnd::Lost(why) => {
                    metrics::amqp_reconnected();
                    warn!(reason = %why, "lost the RabbitMQ session; reconnecting");
                    // Unacked deliveries of this connection go back to the
                    // queue when it closes.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        conn.close(200, "reconnecting".into()),
                    )
                    .await;
                }
            }
        }
        self.drain().await;
        if let Some((conn, channel, publisher)) = kept {
            // Whatever is still unacknowledged returns to the queue.
            amqp::close(&conn, &[&channel, &publisher.channel()], "worker stopped").await;
        }
        info!("worker stopped");
        Ok(())
    }

    async fn open_session(&self, node: &SecretUrl) -> Result<Session, SessionError> {
        let a = &self.config.settings.amqp;
        let conn = Arc::new(amqp::connect(node, &amqp::connection_name("run")).await?);
        amqp::declare(&conn, a).await?;
        let publisher = Publisher::open(&conn, &a.result_exchange).await?;
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(a.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                a.intent_queue.as_str().into(),
                format!("h5pay-worker-{}", claim::new_token()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            conn,
            publisher,
            channel,
            consumer,
        })
    }

    /// Feeds deliveries to tasks until the stop, or until the session breaks.
    async fn consume(
        &self,
        channel: &Channel,
        mut consumer: Consumer,
        publisher: &Publisher,
        settler: &Settler,
        broken: &CancellationToken,
    ) -> ConsumeEnd {
        let stop = self.pipeline.stop.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.hand_back_buffered(channel, consumer).await;
                    return ConsumeEnd::Stopped;
                }
                _ = broken.cancelled() => return ConsumeEnd::Lost("a channel failed".into()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        settler.delivered(delivery.delivery_tag);
                        self.spawn(delivery, publisher.clone(), settler.clone(), broken.clone());
                    }
                    Some(Err(e)) => return ConsumeEnd::Lost(e.to_string()),
                    None => return ConsumeEnd::Lost("the broker cancelled the consumer".into()),
                },
            }
        }
    }

    /// Cancels the consumer and requeues what arrived but was not started.
    async fn hand_back_buffered(&self, channel: &Channel, mut consumer: Consumer) {
        // Bounded: a broker that went silent must not hold up the stop.
        let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(Duration::from_secs(2), cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not cancel the consumer"),
            Err(_) => warn!("the broker did not confirm the consumer's cancel in 2 s"),
        }
        let mut handed_back = 0u32;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await
        {
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
            handed_back += 1;
        }
        if handed_back > 0 {
            info!(handed_back, "handed back deliveries that had not started");
        }
    }

    fn spawn(
        &self,
        delivery: Delivery,
        publisher: Publisher,
        settler: Settler,
        broken: CancellationToken,
    ) {
        let pipeline = self.pipeline.clone();
        self.tasks.spawn(async move {
            let in_flight = metrics::InFlight::start();
            let p = &delivery.properties;
            let trace = TraceHeaders::from_amqp(p.headers().as_ref());
            let incoming = Incoming {
                body: &delivery.data,
                message_id: p.message_id().as_ref().map(|s| s.as_str()),
                correlation_id: p.correlation_id().as_ref().map(|s| s.as_str()),
                reply_to: p.reply_to().as_ref().map(|s| s.as_str()),
                timestamp: *p.timestamp(),
                redelivered: delivery.redelivered,
                trace: &trace,
            };
            // A panic must not strand the delivery unsettled (it would hold a
            // prefetch slot until the connection closes): hand it back, so
            // the delivery limit moves a poison message to the DLQ.
            // Boxed: the pipeline's future is about 8 KB, and tokio moves a
            // spawned future by value several times (spawn, the task cell, its
            // completion); boxed, those moves copy a pointer (BENCHMARKS.md).
            let processing = Box::pin(pipeline.process(incoming, &publisher));
            let disposition = match std::panic::AssertUnwindSafe(processing)
                .catch_unwind()
                .await
            {
                Ok(d) => d,
                Err(_) => {
                    error!("processing an intent panicked; handing it back");
                    metrics::panicked();
                    metrics::handed_back(HandBack::Panic);
                    Disposition::HandBack
                }
            };
            let how = match disposition {
                Disposition::Ack => Some(Settlement::Ack),
                Disposition::DeadLetter => Some(Settlement::DeadLetter),
                Disposition::HandBack => Some(Settlement::HandBack),
                Disposition::ConnectionLost => {
                    broken.cancel();
                    None
                }
            };
            let acked = match how {
                Some(how) => settler.settle(delivery.delivery_tag, delivery.acker, how).await,
                None => Ok(()),
            };
            if let Err(e) = acked {
                // The delivery comes again after the reconnect.
                warn!(error = %e, ?disposition, "could not settle a delivery; rebuilding the session");
                broken.cancel();
            }
            drop(in_flight);
        });
    }

    /// Waits for deliveries in progress, up to the grace period.
    async fn drain(&self) {
        self.tasks.close();
        let grace = Duration::from_secs(self.config.settings.worker.shutdown_grace_secs);
        if self.tasks.is_empty() {
            return;
        }
        info!(
            in_progress = self.tasks.len(),
            grace_secs = grace.as_secs(),
            "finishing intents in progress"
        );
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            error!(
                left = self.tasks.len(),
                "grace period over: leaving the rest unacknowledged for redelivery"
            );
        }
    }
}

struct Session {
    conn: Arc<Connection>,
    publisher: Publisher,
    /// The consumer's channel: acks go here, and the cancel at a stop.
    channel: Channel,
    consumer: Consumer,
}

enum ConsumeEnd {
    Stopped,
    Lost(String),
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}
