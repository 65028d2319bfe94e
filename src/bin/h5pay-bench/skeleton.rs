//! The I/O-only pipeline skeleton (`h5pay-bench skeleton`): this machine's
//! ceiling for the worker's I/O, measured in the same run.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use futures_util::StreamExt;
use h5pay_worker::amqp::{Settlement, Settler};
use h5pay_worker::claim::scripts;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use secrecy::SecretString;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::sample::EventSample;
use crate::{Opts, SANDBOX_KEY};

/// The claim's owner token and the intent's fingerprint: 32 hex chars each,
/// as the worker's.
const TOKEN: &str = "5f2b9c0e7d1a4b3c5f2b9c0e7d1a4b3c";
const FINGERPRINT: &str = "0e7d1a4b3c5f2b9c0e7d1a4b3c5f2b9c";

/// A gateway trade_no, stored with the outcome as the worker stores the
/// sandbox's (reading it from the answer would be the worker's work).
const TRADE_NO: &str = "20000112026112600000000000001";

/// Per-stage time sums of the skeleton (µs), printed as means every 5000
/// intents: where an intent's prefetch slot goes besides the gateway.
static STAGE_US: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static STAGE_N: AtomicU64 = AtomicU64::new(0);

/// The I/O of the worker's pipeline and nothing else: consume, claim
/// (the worker's claim script), one HTTP POST, store (its store script,
/// the payment's state `open` with it) and the first check (1 ZADD NX) in
/// one pipelined round trip, confirmed publish (a result event of the
/// worker's, same bytes and properties), mark (its confirm script), ack
/// (through the worker's settler). The scripts get arguments of the sizes
/// the worker's carry, so Redis does the same work in both runs.
pub async fn run(
    opts: Opts,
    queue: String,
    result_exchange: String,
    gateway: String,
    key_prefix: String,
    event_sample: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let sample = event_sample.as_deref().map(EventSample::read).transpose()?;
    if sample.is_none() {
        eprintln!("skeleton: no event of the worker's to publish; a small stand-in event instead");
    }
    let properties = sample.as_ref().map_or_else(
        || BasicProperties::default().with_delivery_mode(2),
        EventSample::properties,
    );
    let conn = Connection::connect(&opts.amqp_url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(opts.prefetch, BasicQosOptions::default())
        .await?;
    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let redis = redis::Client::open(opts.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let http = reqwest::Client::builder().build()?;
    let gateway = reqwest::Url::parse(&gateway)?;
    let worker_redis = WorkerRedis::new(key_prefix);
    // The store is sent by hash in a pipeline: loaded first.
    let mut loading = redis.clone();
    worker_redis.store.load_async(&mut loading).await?;
    let key = SecretString::from(SANDBOX_KEY);
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "skeleton".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let shared = Arc::new(Shared {
        pch,
        http,
        gateway,
        result_exchange,
        key,
        sample,
        properties,
        redis: worker_redis,
    });
    // Acks are settled as the worker settles them (contiguous ones coalesced).
    let settler = Settler::start();
    while let Some(d) = consumer.next().await {
        let d = d?;
        settler.delivered(d.delivery_tag);
        let settler = settler.clone();
        let shared = shared.clone();
        let mut conn = redis.clone();
        tokio::spawn(async move {
            let mut t = Instant::now();
            let mut lap = |i: usize| {
                let now = Instant::now();
                STAGE_US[i].fetch_add((now - t).as_micros() as u64, Relaxed);
                t = now;
            };
            let sh = &*shared;
            // Only what the I/O needs, borrowed from the body: reading the
            // intent is the worker's work, not the ceiling's.
            let head: IntentHead<'_> = serde_json::from_slice(&d.data).unwrap_or_default();
            let sent = sent_record(&head);
            let trace = head.pay_trace_no.into_owned();
            let claimed = sh.redis.claim(&mut conn, &trace, &sent).await;
            lap(0);
            let mut req = serde_json::Map::new();
            for (f, val) in [
                ("inst_no", "60000001"),
                ("mch_no", "BENCH01"),
                ("pay_type", "400"),
                ("pay_trace_no", trace.as_str()),
                ("pay_time", "20261126000000"),
                ("total_amount", "100"),
            ] {
                req.insert(f.into(), Value::from(val));
            }
            let sign = h5pay_worker::gateway::sign::sign(&req, &sh.key);
            req.insert("sign".into(), Value::from(sign));
            let body = serde_json::to_vec(&req).unwrap_or_default();
            // Read in full, as the worker reads it; its content is the worker's work.
            let _answer = match sh
                .http
                .post(sh.gateway.clone())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.bytes().await.unwrap_or_default(),
                Err(_) => Default::default(),
            };
            lap(1);
            let event = match &sh.sample {
                Some(s) => s.body_for(&trace),
                None => serde_json::to_vec(
                    &serde_json::json!({"pay_trace_no": trace, "status": "ready"}),
                )
                .unwrap_or_default(),
            };
            let stored = sh.redis.store_and_schedule(&mut conn, &trace, &event).await;
            not_the_workers_io(claimed.map(|_| ()).and(stored.map(|(n, _)| n)));
            lap(2);
            let props = sh
                .properties
                .clone()
                .with_correlation_id(trace.as_str().into());
            if let Ok(c) = sh
                .pch
                .basic_publish(
                    sh.result_exchange.as_str().into(),
                    "h5pay.result.ready.BENCH01".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &event,
                    props,
                )
                .await
            {
                let _ = c.await;
            }
            lap(3);
            let _ = sh.redis.mark(&mut conn, &trace).await;
            lap(4);
            let _ = settler
                .settle(d.delivery_tag, d.acker.clone(), Settlement::Ack)
                .await;
            lap(5);
            let n = STAGE_N.fetch_add(1, Relaxed) + 1;
            if n.is_multiple_of(5000) {
                let avg: Vec<String> = STAGE_US
                    .iter()
                    .map(|s| format!("{:.2}", s.load(Relaxed) as f64 / n as f64 / 1000.0))
                    .collect();
                eprintln!(
                    "skeleton stage means over {n} intents, ms (claim http store+schedule publish+confirm mark ack): {}",
                    avg.join(" ")
                );
            }
        });
    }
    Ok(())
}

/// The fields of an intent the skeleton's I/O needs (the key; the amount
/// and metadata for the worker's `Sent` record).
#[derive(serde::Deserialize, Default)]
struct IntentHead<'a> {
    #[serde(borrow, default)]
    pay_trace_no: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    total_amount: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

/// The record the worker stores with its claim (`payment::Sent`), with the
/// bytes the worker writes for the driver's intents (all `wechat`, the
/// gateway's `400`; no notify_url or trace), written from borrowed parts.
fn sent_record(head: &IntentHead<'_>) -> String {
    #[derive(serde::Serialize)]
    struct SentBytes<'a> {
        pay_type: &'a str,
        total_amount: Option<&'a RawValue>,
        correlation_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a RawValue>,
    }
    serde_json::to_string(&SentBytes {
        pay_type: "400",
        total_amount: head.total_amount,
        correlation_id: &head.pay_trace_no,
        metadata: head.metadata,
    })
    .unwrap_or_default()
}

/// What every intent's task shares.
struct Shared {
    pch: lapin::Channel,
    http: reqwest::Client,
    /// Parsed once, as the worker parses its gateway URL once.
    gateway: reqwest::Url,
    result_exchange: String,
    /// The sandbox institution's key, to sign the request.
    key: SecretString,
    sample: Option<EventSample>,
    /// The sample's properties, built once.
    properties: BasicProperties,
    redis: WorkerRedis,
}

/// The worker's claim, store and confirm scripts (`claim::scripts`, the
/// same text) with arguments of the worker's order and sizes.
struct WorkerRedis {
    claim: redis::Script,
    store: redis::Script,
    mark: redis::Script,
    key_prefix: String,
}

impl WorkerRedis {
    fn new(key_prefix: String) -> Self {
        WorkerRedis {
            claim: redis::Script::new(scripts::CLAIM),
            store: redis::Script::new(scripts::STORE),
            mark: redis::Script::new(scripts::CONFIRM),
            key_prefix,
        }
    }

    fn key(&self, trace: &str) -> String {
        format!("{}:{trace}", self.key_prefix)
    }

    /// A new identity's claim, with `sent` stored beside it.
    async fn claim(
        &self,
        conn: &mut MultiplexedConnection,
        trace: &str,
        sent: &str,
    ) -> RedisResult<redis::Value> {
        self.claim
            .key(self.key(trace))
            .arg(TOKEN)
            .arg(FINGERPRINT)
            .arg("20261126000000")
            .arg("0")
            .arg(30_000)
            .arg(172_800)
            .arg("0")
            .arg(sent)
            .arg("0")
            .invoke_async(conn)
            .await
    }

    /// The outcome stored under the claim, the payment's state `open` with
    /// it, and its first check (contract §12): one pipelined round trip, as
    /// the worker does it on one Redis. The store's reply: 1 when stored.
    async fn store_and_schedule(
        &self,
        conn: &mut MultiplexedConnection,
        trace: &str,
        event: &[u8],
    ) -> RedisResult<(i64, i64)> {
        let due_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64 + 30_000)
            .unwrap_or(0);
        redis::pipe()
            .cmd("EVALSHA")
            .arg(self.store.get_hash())
            .arg(1)
            .arg(self.key(trace))
            .arg(TOKEN)
            .arg(event)
            .arg(172_800)
            .arg("1")
            .arg(TRADE_NO)
            .cmd("ZADD")
            .arg(format!("{}:checks:0", self.key_prefix))
            .arg("NX")
            .arg(due_ms)
            .arg(trace)
            .query_async(conn)
            .await
    }

    /// The stored outcome marked confirmed: 1 when this call marked it.
    async fn mark(&self, conn: &mut MultiplexedConnection, trace: &str) -> RedisResult<i64> {
        self.mark.key(self.key(trace)).invoke_async(conn).await
    }
}

/// Says once, loudly, when the worker's scripts did not take the
/// skeleton's arguments (a script's arguments changed): the skeleton then
/// skips Redis work the worker does, and its ratio is wrong.
fn not_the_workers_io(stored: RedisResult<i64>) {
    static SAID: AtomicBool = AtomicBool::new(false);
    let why = match stored {
        Ok(1) => return,
        Ok(n) => format!("the store script answered {n}, not 1"),
        Err(e) => e.to_string(),
    };
    if !SAID.swap(true, Relaxed) {
        eprintln!(
            "skeleton: the worker's claim and store did not take the skeleton's arguments ({why}): it is not doing the worker's Redis I/O, and the ratio is wrong"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skeleton reads the key of an intent of the driver's shape (a
    /// wrong key would put every intent on one claim) and stores with its
    /// claim the bytes the worker's own `Sent` record has for it.
    #[test]
    fn the_skeleton_stores_the_workers_sent_record() -> anyhow::Result<()> {
        let body = br#"{"pay_trace_no":"run-7","mch_no":"BENCH01","pay_type":"wechat","total_amount":107,"metadata":{"i": 7}}"#;
        let head: IntentHead<'_> = serde_json::from_slice(body)?;
        assert_eq!(head.pay_trace_no, "run-7");
        let workers: h5pay_worker::payment::Sent = serde_json::from_str(
            r#"{"pay_type":"400","total_amount":107,"correlation_id":"run-7","metadata":{"i": 7}}"#,
        )?;
        assert_eq!(sent_record(&head), serde_json::to_string(&workers)?);
        Ok(())
    }

    /// The skeleton's arguments still fit the worker's scripts: claimed,
    /// stored (with its first check) and marked, on a real Redis.
    #[tokio::test]
    async fn the_worker_scripts_take_the_skeletons_arguments() {
        let url = std::env::var("H5PAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
        let Ok(mut conn) = async {
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        }
        .await
        else {
            panic!("no Redis at {url}");
        };
        let prefix = format!("h5pay-bench-test:{}", std::process::id());
        let r = WorkerRedis::new(prefix.clone());
        let loaded = r.store.load_async(&mut conn).await;
        assert!(loaded.is_ok(), "{loaded:?}");
        let claimed = r.claim(&mut conn, "T1", r#"{"pay_type":"wechat"}"#).await;
        let stored = r.store_and_schedule(&mut conn, "T1", b"{}").await;
        let marked = r.mark(&mut conn, "T1").await;
        let _: RedisResult<i64> = redis::cmd("DEL")
            .arg(r.key("T1"))
            .arg(format!("{prefix}:checks:0"))
            .query_async(&mut conn)
            .await;
        match claimed {
            Ok(redis::Value::Array(v)) => assert_eq!(
                v.first(),
                Some(&redis::Value::BulkString(b"claimed".to_vec())),
                "{v:?}"
            ),
            other => panic!("claim answered {other:?}"),
        }
        assert_eq!(
            stored.ok(),
            Some((1, 1)),
            "stored, and its first check added"
        );
        assert_eq!(marked.ok(), Some(1), "marked confirmed");
    }
}
