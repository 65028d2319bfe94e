//! The fault-injection harness: the real binary as separate processes (a
//! sandbox and one or more workers), TCP proxies of our own between the
//! workers and RabbitMQ, Redis and the gateway, a vhost of the test's own
//! (so `rabbitmqctl close_all_connections -p` touches nobody else), and a
//! collector that records every result event.
//!
//! Nothing here stops or flushes the machine's RabbitMQ or Redis.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::worker_toml::worker_toml_rest;

pub const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");
pub const SANDBOX_KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

/// Scenario sizes: short in CI, full with H5PAY_CHAOS_FULL=1 (`make chaos`).
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub intents: usize,
    pub outage: Duration,
    pub gateway_outage: Duration,
}

pub fn scale() -> Scale {
    if std::env::var_os("H5PAY_CHAOS_FULL").is_some() {
        Scale {
            intents: 2000,
            outage: Duration::from_secs(10),
            gateway_outage: Duration::from_secs(30),
        }
    } else {
        Scale {
            intents: 400,
            outage: Duration::from_secs(4),
            gateway_outage: Duration::from_secs(6),
        }
    }
}

/// Runs scenarios one at a time: they share the machine's two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    crate::net::free_port().expect("a free port")
}

pub use crate::proxy::Proxy;
pub use crate::vhost::Vhost;

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout discarded and stderr in `log`.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("process started");
        Proc { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scenario's world.
pub struct Cluster {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub vhost: Vhost,
    pub amqp: Proxy,
    pub redis: Proxy,
    pub gateway: Proxy,
    pub sandbox: Proc,
    pub sandbox_port: u16,
    /// Where a receiver (`receiver()`) listens; the workers name it as
    /// notify.public_url.
    pub notify_port: u16,
    pub config: PathBuf,
    pub results: Arc<Mutex<Collected>>,
    collector: JoinHandle<()>,
    pub published: Vec<String>,
}

#[derive(Default)]
pub struct Collected {
    /// pay_trace_no → every result event received for it.
    pub events: HashMap<String, Vec<Value>>,
    /// pay_trace_no → every payment event received for it.
    pub payments: HashMap<String, Vec<Value>>,
    /// pay_trace_no → when its first result event arrived.
    pub first_at: HashMap<String, Instant>,
    /// When the last event arrived.
    pub last_at: Option<Instant>,
}

/// Records every event `consumer` delivers into `into`, acking each, until
/// the consumer or its connection ends.
pub async fn collect_from(mut consumer: lapin::Consumer, into: &Mutex<Collected>) {
    while let Some(Ok(d)) = consumer.next().await {
        if let Ok(ev) = serde_json::from_slice::<Value>(&d.data) {
            let trace = ev["pay_trace_no"].as_str().unwrap_or("").to_owned();
            if let Ok(mut r) = into.lock() {
                let now = Instant::now();
                if ev["schema"] == "h5pay.payment.v1" {
                    r.payments.entry(trace).or_default().push(ev);
                } else {
                    r.first_at.entry(trace.clone()).or_insert(now);
                    r.events.entry(trace).or_default().push(ev);
                }
                r.last_at = Some(now);
            }
        }
        let _ = d.acker.ack(BasicAckOptions::default()).await;
    }
}

/// What the result events received say of the identities sent.
pub struct Tally {
    /// Identities without a result event.
    pub lost: usize,
    pub events: usize,
    /// Identities with an event that is not `ready`.
    pub not_ready: usize,
    /// Of those, how many ended `gateway_unavailable`.
    pub unavailable: usize,
    /// Identities that got two different outcomes (event ids).
    pub split_outcomes: usize,
}

pub fn tally<'a>(
    events: &HashMap<String, Vec<Value>>,
    identities: impl IntoIterator<Item = &'a String>,
) -> Tally {
    let identities_where = |p: &dyn Fn(&[Value]) -> bool| events.values().filter(|e| p(e)).count();
    Tally {
        lost: identities
            .into_iter()
            .filter(|t| !events.contains_key(*t))
            .count(),
        events: events.values().map(Vec::len).sum(),
        not_ready: identities_where(&|evs| evs.iter().any(|e| e["status"] != "ready")),
        unavailable: identities_where(&|evs| {
            evs.iter()
                .any(|e| e["error"]["kind"] == "gateway_unavailable")
        }),
        split_outcomes: identities_where(&|evs| {
            let ids: std::collections::HashSet<&str> =
                evs.iter().filter_map(|e| e["event_id"].as_str()).collect();
            ids.len() > 1
        }),
    }
}

/// What a scenario is judged on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub published: usize,
    pub identities: usize,
    pub result_events: usize,
    pub lost: usize,
    pub two_requests: usize,
    pub extra_calls: u64,
    pub not_ready: usize,
    /// Of those, how many ended `gateway_unavailable`.
    pub unavailable: usize,
    /// Messages in the DLQ at the end (every intent here is readable).
    pub dead_lettered: u32,
    pub recover_secs: f64,
}

impl Cluster {
    pub async fn start(tag: &str, sandbox_latency_ms: u64) -> Cluster {
        // Checks far beyond a scenario's run.
        Self::start_with(
            tag,
            sandbox_latency_ms,
            "check_after_secs = [600]\nmax_age_secs = 3000",
        )
        .await
    }

    /// A cluster whose workers run with these `[reconcile]` settings.
    pub async fn start_with(tag: &str, sandbox_latency_ms: u64, reconcile: &str) -> Cluster {
        let id = format!("{tag}-{}", &h5pay_worker::claim::new_token()[..8]);
        let vhost = Vhost::create(&format!("h5pay-chaos-{id}"));
        let amqp = Proxy::start("127.0.0.1:5672".parse().expect("parses")).await;
        let redis = Proxy::start("127.0.0.1:6379".parse().expect("parses")).await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let sandbox_port = free_port();
        let sandbox_cfg = dir.path().join("sandbox.toml");
        std::fs::write(&sandbox_cfg, format!("[[institutions]]\ninst_no = \"60000001\"\nkey = \"{SANDBOX_KEY}\"\n[log]\nlevel = \"warn\"\n"))
            .expect("file written");
        let log = dir.path().join("sandbox.log");
        let sandbox = Proc::spawn(
            Command::new(BIN)
                .args([
                    "sandbox",
                    "--listen",
                    &format!("127.0.0.1:{sandbox_port}"),
                    "--latency-ms",
                    &sandbox_latency_ms.to_string(),
                    "--config",
                ])
                .arg(&sandbox_cfg),
            log,
        );
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", sandbox_port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let gateway =
            Proxy::start(format!("127.0.0.1:{sandbox_port}").parse().expect("parses")).await;
        let config = dir.path().join("worker.toml");
        let notify_port = free_port();
        std::fs::write(
            &config,
            format!(
                r#"[amqp]
url = "amqp://guest:guest@127.0.0.1:{amqp}/{vhost}?heartbeat=5"
prefetch = 64

[redis]
url = "redis://127.0.0.1:{redis}/0"
key_prefix = "h5pay-chaos:{id}"
lease_ms = 5000
retention_secs = 3600

{rest}
"#,
                rest = worker_toml_rest(gateway.port, SANDBOX_KEY, notify_port, reconcile),
                amqp = amqp.port,
                vhost = vhost.0,
                redis = redis.port,
            ),
        )
        .expect("config written");
        let results = Arc::new(Mutex::new(Collected::default()));
        let collector = tokio::spawn(collect(vhost.0.clone(), results.clone()));
        // The collector declared the topology and bound its queue.
        for _ in 0..100 {
            if results.lock().map(|_| ()).is_ok() && collector_ready(&vhost.0).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Cluster {
            id,
            dir,
            vhost,
            amqp,
            redis,
            gateway,
            sandbox,
            sandbox_port,
            notify_port,
            config,
            results,
            collector,
            published: Vec::new(),
        }
    }

    /// Starts a worker process; its admin port is its own.
    pub fn worker(&self, n: usize) -> (Proc, u16) {
        let admin = free_port();
        let log = self.dir.path().join(format!(
            "worker-{n}-{}.log",
            h5pay_worker::claim::new_token()[..4].to_owned()
        ));
        let worker = Proc::spawn(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&self.config)
                .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
                .env_remove("RUST_LOG"),
            log,
        );
        (worker, admin)
    }

    /// Starts a notify receiver process on `notify_port` (through the same
    /// proxies as the workers); returns it and its admin port.
    pub fn receiver(&self) -> (Proc, u16) {
        let admin = free_port();
        let log = self.dir.path().join(format!(
            "notify-{}.log",
            h5pay_worker::claim::new_token()[..4].to_owned()
        ));
        let p = Proc::spawn(
            Command::new(BIN)
                .args(["notify", "--config"])
                .arg(&self.config)
                .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
                .env_remove("RUST_LOG"),
            log,
        );
        (p, admin)
    }

    /// Payments that are final, by pay_trace_no: the distinct (state,
    /// event_id) pairs each got, anomalies left out.
    pub fn payment_states(&self) -> HashMap<String, std::collections::HashSet<(String, String)>> {
        let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        distinct_states(&r.payments)
    }

    /// Waits until every trace of `want` has a payment event in its state.
    pub async fn wait_payments(
        &self,
        want: &HashMap<String, &'static str>,
        within: Duration,
    ) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let states = self.payment_states();
            let done = want.iter().all(|(t, s)| {
                states
                    .get(t)
                    .is_some_and(|set| set.iter().any(|(state, _)| state == s))
            });
            if done {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Publishes intents straight to the broker (not through the proxy);
    /// every `dup_every`-th intent twice (0: none).
    pub async fn publish(&mut self, from: usize, count: usize, dup_every: usize) {
        let traces = publish_intents(&self.vhost.0, from, count, dup_every).await;
        self.published.extend(traces);
    }

    pub fn received(&self) -> usize {
        self.results.lock().map(|r| r.events.len()).unwrap_or(0)
    }

    /// Waits until every published identity has a result (or `within` passes).
    pub async fn wait_all(&self, within: Duration) -> bool {
        let want: std::collections::HashSet<&String> = self.published.iter().collect();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let done = self
                .results
                .lock()
                .map(|r| want.iter().all(|t| r.events.contains_key(*t)))
                .unwrap_or(false);
            if done {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub async fn wait_received(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.received() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn ready(&self, admin: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub async fn readyz(&self, admin: u16) -> Option<Value> {
        let r = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .ok()?;
        serde_json::from_slice(&r.bytes().await.ok()?).ok()
    }

    pub async fn sandbox_stats(&self) -> h5pay_worker::sandbox::Stats {
        let r = reqwest::get(format!(
            "http://127.0.0.1:{}/sandbox/stats",
            self.sandbox_port
        ))
        .await
        .expect("GET answered");
        serde_json::from_slice(&r.bytes().await.unwrap_or_default()).expect("a body")
    }

    pub async fn dlq_depth(&self) -> u32 {
        message_count(&self.vhost.0, "h5pay.intents.dlq")
            .await
            .unwrap_or(0)
    }

    /// Judges the run: nothing lost, one request per identity, one outcome.
    pub async fn report(&self, scenario: &str, recover_secs: f64) -> Report {
        let stats = self.sandbox_stats().await;
        let identities: std::collections::HashSet<&String> = self.published.iter().collect();
        let Tally {
            lost,
            events,
            not_ready,
            unavailable,
            split_outcomes,
        } = {
            let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
            tally(&r.events, identities.iter().copied())
        };
        assert_eq!(
            split_outcomes, 0,
            "{scenario}: an identity got two different outcomes"
        );
        let two_requests = stats
            .identities
            .iter()
            .filter(|i| i.distinct_requests > 1)
            .count();
        let dead_lettered = self.dlq_depth().await;
        let extra_calls: u64 = stats
            .identities
            .iter()
            .map(|i| i.calls.saturating_sub(1))
            .sum();
        let report = Report {
            scenario: scenario.to_owned(),
            published: self.published.len(),
            identities: identities.len(),
            result_events: events,
            lost,
            two_requests,
            extra_calls,
            not_ready,
            unavailable,
            dead_lettered,
            recover_secs,
        };
        append_report(&report);
        eprintln!("{}", serde_json::to_string(&report).unwrap_or_default());
        report
    }

    /// The tail of every log of this cluster, for a failing assertion.
    pub fn logs(&self) -> String {
        log_tails(self.dir.path(), 15)
    }
}

/// The last `lines` lines of every `*.log` in `dir`, each headed by its
/// path: what a failing assertion prints (the clusters suite uses it too).
pub fn log_tails(dir: &std::path::Path, lines: usize) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.collector.abort();
        // Redis keys of this scenario only.
        let prefix = format!("h5pay-chaos:{}", self.id);
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open("redis://127.0.0.1:6379/0") else {
                return;
            };
            let Ok(mut c) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut c);
            }
        })
        .join();
    }
}

fn append_report(r: &Report) {
    append_json(&serde_json::to_value(r).unwrap_or_default());
}

/// The distinct (state, event_id) pairs of each trace's payment events,
/// anomalies left out (the cluster suite judges its payments the same way).
pub fn distinct_states(
    payments: &HashMap<String, Vec<Value>>,
) -> HashMap<String, std::collections::HashSet<(String, String)>> {
    payments
        .iter()
        .map(|(t, evs)| {
            let set = evs
                .iter()
                .filter(|e| e["state"] != "anomaly")
                .map(|e| {
                    (
                        e["state"].as_str().unwrap_or_default().to_owned(),
                        e["event_id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (t.clone(), set)
        })
        .collect()
}

/// Appends one JSON line to `target/chaos-report.jsonl`.
pub fn append_json(v: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("chaos-report.jsonl");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(f, "{v}");
    }
}

/// Publishes `CH-<from..from+count>` to the vhost's intent exchange,
/// confirmed; returns their pay_trace_nos.
pub async fn publish_intents(
    vhost: &str,
    from: usize,
    count: usize,
    dup_every: usize,
) -> Vec<String> {
    publish_amounts(vhost, from, count, dup_every, |i| 100 + (i % 900) as u64).await
}

/// Like [`publish_intents`], each intent's amount chosen by `amount(i)`.
pub async fn publish_amounts(
    vhost: &str,
    from: usize,
    count: usize,
    dup_every: usize,
    amount: impl Fn(usize) -> u64,
) -> Vec<String> {
    let conn = connect(vhost).await;
    let ch = conn.create_channel().await.expect("a channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let mut pending = Vec::new();
    let mut traces = Vec::with_capacity(count);
    for i in from..from + count {
        let trace = format!("CH-{i}");
        let body = serde_json::to_vec(&json!({"pay_trace_no": trace, "mch_no": "CHAOS1", "pay_type": "wechat", "total_amount": amount(i)}))
            .unwrap_or_default();
        let times = if dup_every > 0 && i % dup_every == 0 {
            2
        } else {
            1
        };
        for _ in 0..times {
            let c = ch
                .basic_publish(
                    "h5pay.intents".into(),
                    "h5pay.intent.chaos".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(trace.as_str().into()),
                )
                .await
                .expect("published");
            pending.push(c);
        }
        traces.push(trace);
    }
    for c in pending {
        let confirm = c.await.expect("confirmed");
        assert!(confirm.is_ack(), "intent not confirmed by the broker");
    }
    let _ = conn.close(200, "published".into()).await;
    traces
}

pub async fn connect(vhost: &str) -> Connection {
    connect_url(&format!("amqp://guest:guest@127.0.0.1:5672/{vhost}")).await
}

/// A connection to `url`, tried for five seconds.
pub async fn connect_url(url: &str) -> Connection {
    let mut last = None;
    for _ in 0..50 {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}: {last:?}")
}

/// Messages ready in a queue of the vhost; None if it does not exist.
async fn message_count(vhost: &str, queue: &str) -> Option<u32> {
    let conn = connect(vhost).await;
    let count = count_on(&conn, queue).await;
    let _ = conn.close(200, "".into()).await;
    count
}

/// Messages ready in `queue` (a passive declare), on a connection the
/// caller closes; None if it does not exist. The clusters suite uses it too.
pub async fn count_on(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
    .ok()
}

async fn collector_ready(vhost: &str) -> bool {
    message_count(vhost, "chaos.results").await.is_some()
}

/// Records every result event; reconnects when the broker closes it, from
/// a durable queue, so nothing is missed meanwhile.
async fn collect(vhost: String, into: Arc<Mutex<Collected>>) {
    loop {
        let conn = connect(&vhost).await;
        let settings = h5pay_worker::config::AmqpSettings::default();
        if h5pay_worker::amqp::declare(&conn, &settings).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        let _ = ch.basic_qos(500, BasicQosOptions::default()).await;
        if ch
            .queue_declare(
                "chaos.results".into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_err()
        {
            continue;
        }
        let _ = ch
            .queue_bind(
                "chaos.results".into(),
                "h5pay.results".into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        let Ok(consumer) = ch
            .basic_consume(
                "chaos.results".into(),
                "collector".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            continue;
        };
        collect_from(consumer, &into).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
