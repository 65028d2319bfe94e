//! The pipeline's ordering guarantees (contract §5.2, §5.3), watched
//! directly: a [`ResultSink`] that records what Redis held at the moment of
//! each publish, and refuses publishes on demand. Real Redis, the sandbox
//! over HTTP; no broker needed to see the order.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use h5pay_worker::amqp::PublishError;
use h5pay_worker::gateway::Gateway;
use h5pay_worker::gateway::breaker::Breaker;
use h5pay_worker::keys::KeyRing;
use h5pay_worker::pipeline::{
    Disposition, Incoming, Pipeline, PipelineSettings, ResultOut, ResultSink,
};
use tokio_util::sync::CancellationToken;

use crate::support::{REDIS_URL, TestEnv, intent};

/// What Redis said about the identity when a publish was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// `st`: `d` once an outcome is stored.
    state: Option<String>,
    /// The stored event is the body being published.
    stored_is_published: bool,
    /// `cf`: the outcome already marked confirmed.
    confirmed: Option<String>,
}

struct Recorder {
    key: String,
    /// Publishes to refuse (nack) before accepting.
    refuse: AtomicU32,
    seen: Mutex<Vec<Seen>>,
}

impl ResultSink for Recorder {
    async fn publish(&self, out: ResultOut<'_>) -> Result<(), PublishError> {
        let body = out.body;
        let mut r = redis::Client::open(REDIS_URL)
            .expect("a Redis client")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis");
        let (state, stored, confirmed): (Option<String>, Option<Vec<u8>>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&self.key)
                .arg("st")
                .arg("ev")
                .arg("cf")
                .query_async(&mut r)
                .await
                .expect("HMGET");
        self.seen.lock().expect("not poisoned").push(Seen {
            state,
            stored_is_published: stored.as_deref() == Some(body),
            confirmed,
        });
        let refusing = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refusing {
            Err(PublishError::Nacked)
        } else {
            Ok(())
        }
    }
}

pub fn pipeline(env: &TestEnv, publish_retry_ms: u64) -> Pipeline {
    let mut config = env.config.clone();
    config.settings.amqp.publish_retry_ms = publish_retry_ms;
    let s = &config.settings;
    Pipeline {
        claims: env.claim_store(),
        gateway: Arc::new(
            Gateway::new(&s.gateway, &s.retry, Arc::new(Breaker::disabled()))
                .expect("a gateway client"),
        ),
        keys: Arc::new(KeyRing::new(config.institutions.clone())),
        settings: PipelineSettings::from_config(&config),
        stop: CancellationToken::new(),
        scheduling: None,
    }
}

static NO_TRACE: h5pay_worker::telemetry::trace::TraceHeaders =
    h5pay_worker::telemetry::trace::TraceHeaders {
        traceparent: None,
        tracestate: None,
    };

fn incoming(body: &[u8]) -> Incoming<'_> {
    Incoming {
        body,
        message_id: None,
        correlation_id: None,
        reply_to: None,
        timestamp: None,
        redelivered: false,
        trace: &NO_TRACE,
    }
}

fn recorder(env: &TestEnv, trace: &str, refuse: u32) -> Recorder {
    Recorder {
        key: format!(
            "{}:60000001:M1:{trace}",
            env.config.settings.redis.key_prefix
        ),
        refuse: AtomicU32::new(refuse),
        seen: Mutex::new(Vec::new()),
    }
}

async fn confirmed_mark(key: &str) -> Option<String> {
    let mut r = redis::Client::open(REDIS_URL)
        .expect("a Redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    redis::cmd("HGET")
        .arg(key)
        .arg("cf")
        .query_async(&mut r)
        .await
        .expect("HGET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_is_stored_before_its_event_is_published_and_marked_only_after() {
    let env = TestEnv::new().await;
    let p = pipeline(&env, 1000);
    let sink = recorder(&env, "ORDER-1", 0);
    let body = serde_json::to_vec(&intent("ORDER-1", "M1", 100)).expect("json");
    assert_eq!(p.process(incoming(&body), &sink).await, Disposition::Ack);
    let seen = sink.seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        vec![Seen {
            state: Some("d".into()),
            stored_is_published: true,
            confirmed: None,
        }],
        "published exactly once, after the store, before the mark"
    );
    assert_eq!(confirmed_mark(&sink.key).await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_broker_refuses_is_never_acked_and_its_stored_outcome_waits() {
    let env = TestEnv::new().await;
    // Refuses for longer than the publish retries last: handed back.
    let p = pipeline(&env, 300);
    let sink = recorder(&env, "ORDER-2", u32::MAX);
    let body = serde_json::to_vec(&intent("ORDER-2", "M1", 100)).expect("json");
    assert_eq!(
        p.process(incoming(&body), &sink).await,
        Disposition::HandBack
    );
    let tries = sink.seen.lock().expect("not poisoned").len();
    assert!(tries >= 2, "published again with backoff: {tries} tries");
    assert_eq!(confirmed_mark(&sink.key).await, None, "never marked");
    // The redelivery replays the stored outcome: no second gateway call.
    let accepting = recorder(&env, "ORDER-2", 2);
    assert_eq!(
        p.process(incoming(&body), &accepting).await,
        Disposition::Ack
    );
    let seen = accepting.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 3, "two refusals, then the confirm");
    assert!(
        seen.iter()
            .all(|s| s.stored_is_published && s.confirmed.is_none())
    );
    assert_eq!(confirmed_mark(&accepting.key).await.as_deref(), Some("1"));
    assert_eq!(env.calls("M1", "ORDER-2"), 1);
}
