//! Test harness: every test gets its own broker names, Redis key prefix and
//! sandbox gateway, so tests run in parallel and leave nothing behind.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use serde_json::Value;

use h5pay_worker::config::{Config, Source};
use h5pay_worker::sandbox::{Sandbox, SandboxOptions};
use h5pay_worker::worker::Worker;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const SANDBOX_KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";
pub const SECOND_KEY: &str = "second-institution-key-0001";

/// A check that cannot run on this machine says so on stderr and in the
/// list `make test` prints at its end (`H5PAY_SKIPS`, set by the Makefile),
/// so a missing tool is never a quiet line in the middle of the output.
pub fn skipped(what: &str) {
    eprintln!("SKIPPED {what}");
    if let Some(path) = std::env::var_os("H5PAY_SKIPS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{what}");
        }
    }
}

/// `h5pay-worker inspect` of M1's `trace` with the settings at `config`,
/// `extra` arguments after.
pub fn inspect(config: &std::path::Path, trace: &str, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_h5pay-worker"))
        .args(["inspect", "--config"])
        .arg(config)
        .args(["--mch-no", "M1", "--pay-trace-no", trace])
        .args(extra)
        .output()
        .expect("inspect ran")
}

/// Asserts that every line of `want` is in a command's output `text`.
pub fn assert_all_in(text: &str, want: &[&str]) {
    for w in want {
        assert!(text.contains(w), "{w} not in:\n{text}");
    }
}

/// Serves `app` on a free loopback port, in the background (a stand-in
/// gateway, collector or receiver a test points the worker at).
pub async fn serve(app: axum::Router) -> SocketAddr {
    let (listener, addr) = h5pay_worker::http_server::loopback().await.expect("a port");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Settings every test starts from: fast retries, short timeouts.
pub fn base_toml(id: &str, gateway_url: &str) -> String {
    // A topology of the test's own (see AmqpSettings::isolated).
    let a = h5pay_worker::config::AmqpSettings::default().isolated(&format!("h5pay-test-{id}"));
    format!(
        r#"
[amqp]
url = "{AMQP_URL}"
intent_exchange = "{intent_exchange}"
intent_queue = "{intent_queue}"
dead_letter_exchange = "{dlx}"
dead_letter_queue = "{dlq}"
result_exchange = "{results}"
prefetch = 64

[redis]
url = "{REDIS_URL}"
key_prefix = "h5pay-test:{id}"
lease_ms = 5000
retention_secs = 3600

[gateway]
url = "{gateway_url}"
connect_timeout_ms = 500
request_timeout_ms = 1500

[retry]
initial_ms = 10
multiplier = 2.0
max_interval_ms = 50
max_attempts = 4
max_elapsed_ms = 8000

[breaker]
enabled = false

[[institutions]]
inst_no = "60000001"
key = "{SANDBOX_KEY}"

[[institutions]]
inst_no = "60000002"
key = "{SECOND_KEY}"

[worker]
default_inst_no = "60000001"
shutdown_grace_secs = 5

[admin]
listen = "127.0.0.1:0"

# Checks far off: tests of the reconciler bring them close.
[reconcile]
check_after_secs = [600, 1200]
max_age_secs = 3000

[log]
level = "warn"
"#,
        intent_exchange = a.intent_exchange,
        intent_queue = a.intent_queue,
        dlx = a.dead_letter_exchange,
        dlq = a.dead_letter_queue,
        results = a.result_exchange,
    )
}

/// A sandbox gateway serving on a loopback port until stopped (or dropped).
pub struct SandboxServer {
    pub addr: SocketAddr,
    pub sandbox: Arc<Sandbox>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxServer {
    /// A new sandbox on a free port, its code_urls pointing at it.
    pub async fn start(
        institutions: h5pay_worker::keys::Institutions,
        options: SandboxOptions,
    ) -> SandboxServer {
        let (listener, addr) = h5pay_worker::http_server::loopback()
            .await
            .expect("a port for the sandbox");
        let sandbox = Sandbox::new(
            institutions,
            SandboxOptions {
                public_url: h5pay_worker::sandbox::local_url(addr),
                ..options
            },
        );
        Self::serve(listener, sandbox)
    }

    /// The same sandbox (its orders and counts) served again on its port.
    pub async fn restart(sandbox: Arc<Sandbox>, addr: SocketAddr) -> SandboxServer {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the sandbox's port is free again");
        Self::serve(listener, sandbox)
    }

    fn serve(listener: tokio::net::TcpListener, sandbox: Arc<Sandbox>) -> SandboxServer {
        let addr = listener.local_addr().expect("the sandbox's address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(h5pay_worker::sandbox::serve(
            listener,
            sandbox.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        SandboxServer {
            addr,
            sandbox,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Leaves it serving for the rest of the test process.
    pub fn detach(mut self) -> (SocketAddr, Arc<Sandbox>) {
        self.task = None;
        if let Some(stop) = self.stop.take() {
            // Never sent: the server's shutdown future stays pending.
            std::mem::forget(stop);
        }
        (self.addr, self.sandbox.clone())
    }

    /// Stops accepting and closes every connection: the gateway is down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn unique_id() -> String {
    h5pay_worker::claim::new_token()[..12].to_owned()
}

pub struct TestEnv {
    pub id: String,
    pub config: Config,
    pub sandbox: Arc<Sandbox>,
    pub sandbox_addr: SocketAddr,
    pub conn: Connection,
    sandbox_server: Option<SandboxServer>,
    /// The test's own vhost, when it asked for one (dropped last).
    pub vhost: Option<crate::vhost::Vhost>,
}

/// Options for [`TestEnv::start`].
#[derive(Default)]
pub struct EnvOptions {
    /// `H5PAY__SECTION__KEY`-style overrides.
    pub overrides: Vec<(&'static str, String)>,
    pub sandbox: SandboxOptions,
    /// Run on a vhost of the test's own (for broker users and permissions,
    /// and broker-side connection closes that touch nobody else).
    pub own_vhost: bool,
}

impl EnvOptions {
    /// A sandbox gateway that answers after `latency`, and `overrides`.
    pub fn gateway_latency(latency: Duration, overrides: Vec<(&'static str, String)>) -> Self {
        EnvOptions {
            overrides,
            sandbox: SandboxOptions {
                latency,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A sandbox gateway that hangs longer than any test waits (a call that
    /// times out), and `overrides`.
    pub fn gateway_hangs(overrides: Vec<(&'static str, String)>) -> Self {
        EnvOptions {
            overrides,
            sandbox: SandboxOptions {
                hang: Duration::from_secs(30),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::start(EnvOptions::default()).await
    }

    pub async fn with(overrides: &[(&'static str, &str)]) -> TestEnv {
        Self::start(EnvOptions {
            overrides: overrides.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ..EnvOptions::default()
        })
        .await
    }

    pub async fn start(options: EnvOptions) -> TestEnv {
        crate::traces::keep_callsites_live();
        let id = unique_id();
        let toml = base_toml(&id, "http://placeholder.invalid/");
        let institutions = Config::from_parts(&toml, Vec::new(), Source::BuiltIn)
            .expect("the base settings load")
            .institutions;
        let server = SandboxServer::start(institutions, options.sandbox).await;
        let (sandbox_addr, sandbox) = (server.addr, server.sandbox.clone());
        let gateway = format!("http://{sandbox_addr}{}", h5pay_worker::sandbox::PAY_PATH);
        let vhost = options
            .own_vhost
            .then(|| crate::vhost::Vhost::create(&format!("h5pay-test-{id}")));
        let amqp_url = vhost
            .as_ref()
            .map_or_else(|| AMQP_URL.to_owned(), |v| v.url());
        // Overrides apply in order (a stable sort by name): the test's own
        // come after the harness's and win.
        let mut env = vec![
            ("H5PAY__GATEWAY__URL".to_owned(), gateway),
            ("H5PAY__AMQP__URL".to_owned(), amqp_url.clone()),
        ];
        env.extend(
            options
                .overrides
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        let config = Config::from_parts(
            &base_toml(&id, "http://placeholder.invalid/"),
            env,
            Source::BuiltIn,
        )
        .expect("the base settings load");
        let conn = Connection::connect(&amqp_url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {amqp_url}: {e} (run `make services`)"));
        h5pay_worker::amqp::declare(&conn, &config.settings.amqp)
            .await
            .expect("topology declared");
        TestEnv {
            id,
            config,
            sandbox,
            sandbox_addr,
            conn,
            sandbox_server: Some(server),
            vhost,
        }
    }

    /// Takes the gateway down: nothing listens on its port any more.
    pub async fn stop_sandbox(&mut self) {
        if let Some(server) = self.sandbox_server.take() {
            server.stop().await;
        }
    }

    /// Brings the gateway back on its port, with what it knew before.
    pub async fn restart_sandbox(&mut self) {
        self.stop_sandbox().await;
        self.sandbox_server =
            Some(SandboxServer::restart(self.sandbox.clone(), self.sandbox_addr).await);
    }

    /// A settings file for a child process (`base_toml`, then `extra`), in
    /// a temp dir the caller keeps alive.
    pub fn config_file(&self, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, base_toml(&self.id, &self.gateway_url()) + extra)
            .expect("config written");
        (dir, path)
    }

    pub fn gateway_url(&self) -> String {
        format!(
            "http://{}{}",
            self.sandbox_addr,
            h5pay_worker::sandbox::PAY_PATH
        )
    }

    /// Starts a worker on this environment's settings.
    pub fn worker(&self) -> RunningWorker {
        self.worker_with(self.config.clone())
    }

    pub fn worker_with(&self, config: Config) -> RunningWorker {
        let worker = Worker::new(config).expect("a worker");
        let health = worker.health();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async {
            let _ = rx.await;
        }));
        RunningWorker {
            stop: Some(tx),
            task,
            health,
        }
    }

    /// A consumer of every result event, bound before anything is published.
    pub async fn results(&self) -> Results {
        Results::bind(
            &self.conn,
            &self.config.settings.amqp.result_exchange,
            "h5pay.result.#",
        )
        .await
    }

    /// A consumer of every payment event, bound before anything happens.
    pub async fn payments(&self) -> Results {
        Results::bind(
            &self.conn,
            &self.config.settings.amqp.result_exchange,
            "h5pay.payment.#",
        )
        .await
    }

    /// A notify receiver in this process on a free port, on this
    /// environment's settings (or `amqp_url`/`redis_url` instead: a proxy).
    pub async fn receiver(&self, via: Via) -> ReceiverServer {
        let mut settings = self.config.settings.clone();
        if let Some(url) = via.amqp_url {
            settings.amqp.url = h5pay_worker::config::SecretUrl::new(url);
        }
        if let Some(url) = via.redis_url {
            settings.redis.url = h5pay_worker::config::SecretUrl::new(url);
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let claims = h5pay_worker::claim::ClaimStore::new(
            h5pay_worker::claim::connect(&settings.redis).expect("a Redis client"),
            &settings.redis,
        );
        // Like `h5pay-worker notify`: it declares nothing.
        let link = h5pay_worker::amqp::link::Link::start_with(
            settings.amqp.clone(),
            "notify-test",
            h5pay_worker::amqp::link::Topology::Passive,
            stop.clone(),
        );
        let receiver = Arc::new(h5pay_worker::notify::Receiver {
            payments: h5pay_worker::payment::PaymentStore::new(claims.clone()),
            sink: link.clone(),
            keys: Arc::new(h5pay_worker::keys::KeyRing::new(
                self.config.institutions.clone(),
            )),
            settings: settings.notify.clone(),
            checks: Some(h5pay_worker::reconcile::ChecksStore::new(
                claims,
                settings.reconcile.schedule_shards as usize,
            )),
        });
        let (listener, addr) = h5pay_worker::http_server::loopback()
            .await
            .expect("a port for the receiver");
        let served = stop.clone();
        let task = tokio::spawn(h5pay_worker::http_server::serve(
            listener,
            h5pay_worker::notify::app(receiver),
            h5pay_worker::telemetry::metrics::Server::Notify,
            async move { served.cancelled().await },
        ));
        for _ in 0..200 {
            if link.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ReceiverServer {
            url: format!("http://{addr}{}", settings.notify.path),
            link,
            stop,
            task,
        }
    }

    /// These settings with notifies sent to `receiver` (notify.public_url).
    pub fn config_notifying(&self, receiver: &ReceiverServer) -> Config {
        let mut config = self.config.clone();
        config.settings.notify.public_url = receiver.url.clone();
        config
    }

    /// Pays an order on the sandbox, as a payer would.
    pub async fn pay(&self, mch_no: &str, pay_trace_no: &str) -> Value {
        let answer = reqwest::Client::new()
            .post(format!("http://{}/sandbox/pay", self.sandbox_addr))
            .header("content-type", "application/json")
            .body(serde_json::json!({"mch_no": mch_no, "pay_trace_no": pay_trace_no}).to_string())
            .send()
            .await
            .expect("the sandbox answers");
        assert!(answer.status().is_success(), "pay: {}", answer.status());
        let bytes = answer.bytes().await.expect("a body");
        serde_json::from_slice(&bytes).expect("a JSON answer")
    }

    /// The payment state (`ps`) Redis holds for an identity of mch M1.
    pub async fn payment_state(&self, trace: &str) -> Option<String> {
        let mut r = self.redis().await;
        redis::cmd("HGET")
            .arg(format!(
                "{}:60000001:M1:{trace}",
                self.config.settings.redis.key_prefix
            ))
            .arg("ps")
            .query_async(&mut r)
            .await
            .expect("HGET")
    }

    /// The sandbox's record of one identity of mch M1.
    pub fn sandbox_order(&self, trace: &str) -> Option<h5pay_worker::sandbox::IdentityStats> {
        self.sandbox
            .stats(&Default::default())
            .identities
            .into_iter()
            .find(|i| i.pay_trace_no == trace)
    }

    pub async fn publisher(&self) -> Channel {
        let ch = self.conn.create_channel().await.expect("a channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        ch
    }

    /// Publishes a body to the intent exchange, confirmed.
    pub async fn publish(&self, body: &[u8]) {
        self.publish_with(body, BasicProperties::default()).await;
    }

    pub async fn publish_with(&self, body: &[u8], props: BasicProperties) {
        let ch = self.publisher().await;
        publish_on(&ch, &self.config.settings.amqp.intent_exchange, body, props).await;
    }

    pub async fn publish_json(&self, v: &Value) {
        self.publish(&serde_json::to_vec(v).unwrap_or_default())
            .await;
    }

    /// Calls the sandbox recorded for (60000001, mch_no, pay_trace_no).
    pub fn calls(&self, mch_no: &str, pay_trace_no: &str) -> u64 {
        self.sandbox.calls("60000001", mch_no, pay_trace_no)
    }

    pub fn total_calls(&self) -> u64 {
        self.sandbox.stats(&Default::default()).total_calls
    }

    /// Messages waiting in a queue.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.expect("a channel");
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|q| q.message_count())
        .unwrap_or_else(|e| panic!("{queue}: {e}"))
    }

    /// Takes one message from a queue (acknowledged).
    pub async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        let ch = self.conn.create_channel().await.expect("a channel");
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
    }

    /// Takes one message from a queue, waiting up to 10 s for it.
    pub async fn get_within(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        for _ in 0..100 {
            if let Some(m) = self.get(queue).await {
                return Some(m);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Deletes an exchange behind the worker's back (fault injection).
    pub async fn delete_exchange(&self, name: &str) {
        let ch = self.conn.create_channel().await.expect("a channel");
        ch.exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .expect("a Redis client")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {REDIS_URL}: {e} (run `make services`)"))
    }

    pub fn claim_store(&self) -> h5pay_worker::claim::ClaimStore {
        self.claim_store_with_lease(self.config.settings.redis.lease_ms)
    }

    /// The reconciler's schedule on this environment's keys and shards.
    pub fn checks_store(&self) -> h5pay_worker::reconcile::ChecksStore {
        h5pay_worker::reconcile::ChecksStore::new(
            self.claim_store(),
            self.config.settings.reconcile.schedule_shards as usize,
        )
    }

    /// A claim store on this environment's keys with a lease of its own
    /// (shorter than settings allow: it stands for another worker, or
    /// tests the scripts alone).
    pub fn claim_store_with_lease(&self, lease_ms: u64) -> h5pay_worker::claim::ClaimStore {
        let settings = h5pay_worker::config::RedisSettings {
            lease_ms,
            ..self.config.settings.redis.clone()
        };
        let conn = h5pay_worker::claim::connect(&settings).expect("a Redis client");
        h5pay_worker::claim::ClaimStore::new(conn, &settings)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        drop(self.sandbox_server.take());
        let a = self.config.settings.amqp.clone();
        let prefix = self.config.settings.redis.key_prefix.clone();
        // Clean up on a thread of its own: Drop cannot await, and this runs
        // on a failing test too.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(cleanup(a, prefix));
        })
        .join();
    }
}

/// Removes a test's queues, exchanges and Redis keys.
pub async fn cleanup(a: h5pay_worker::config::AmqpSettings, prefix: String) {
    if let Ok(conn) = Connection::connect(a.url.expose(), ConnectionProperties::default()).await {
        h5pay_worker::amqp::topology::remove(&conn, &a).await;
        let _ = conn.close(200, "test cleanup".into()).await;
    }
    let _ = h5pay_worker::claim::remove_keys(REDIS_URL, &prefix).await;
}

/// Publishes on a confirm-mode channel and returns the broker's answer.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    ch.basic_publish(
        ShortString::from(exchange),
        ShortString::from(key),
        options,
        body,
        props,
    )
    .await
    .expect("published")
    .await
    .expect("confirmed")
}

pub async fn publish_on(ch: &Channel, exchange: &str, body: &[u8], props: BasicProperties) {
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = publish_confirmed(
        ch,
        exchange,
        "h5pay.intent.test",
        mandatory,
        body,
        props.with_delivery_mode(2),
    )
    .await;
    assert_eq!(confirm, Confirmation::Ack(None), "intent not confirmed");
}

pub struct RunningWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), h5pay_worker::worker::WorkerError>>,
    pub health: Arc<h5pay_worker::admin::Health>,
}

impl RunningWorker {
    /// Stops gracefully and returns the worker's result.
    pub async fn stop(mut self) -> Result<(), h5pay_worker::worker::WorkerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("worker task failed: {e}"),
            Err(_) => panic!("worker did not stop within 30 s"),
        }
    }

    /// Waits until the worker says it is ready.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if self.health.readiness().0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("worker not ready after 5 s: {}", self.health.readiness().1);
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where an in-process receiver connects, when not to this environment's
/// RabbitMQ and Redis directly.
#[derive(Default)]
pub struct Via {
    pub amqp_url: Option<String>,
    pub redis_url: Option<String>,
}

/// A notify receiver running in this process.
pub struct ReceiverServer {
    /// `http://addr/h5pay/notify`.
    pub url: String,
    pub link: h5pay_worker::amqp::link::Link,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ReceiverServer {
    /// POSTs a body; returns the status and the body as text.
    pub async fn post(&self, body: &[u8]) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("the receiver answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// Waits (up to 10 s) for the broker connection.
    pub async fn connected(&self) -> bool {
        for _ in 0..400 {
            if self.link.is_connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

impl Drop for ReceiverServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// A consumer of result events.
pub struct Results {
    consumer: Consumer,
}

/// A received result event with the properties that came with it.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    /// The body as published, byte for byte.
    pub body: Vec<u8>,
    pub props: BasicProperties,
    pub routing_key: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name).cloned())
            .and_then(|v| match v {
                lapin::types::AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            })
    }

    pub fn kind(&self) -> Option<&str> {
        self.event["error"]["kind"].as_str()
    }
}

impl Results {
    pub async fn bind(conn: &Connection, exchange: &str, key: &str) -> Results {
        let ch = conn.create_channel().await.expect("a channel");
        let q = h5pay_worker::amqp::private_queue(&ch)
            .await
            .expect("a results queue");
        ch.queue_bind(
            q.name().clone(),
            ShortString::from(exchange),
            ShortString::from(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bound to the results");
        let consumer = ch
            .basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consuming results");
        Results { consumer }
    }

    /// The next event of `trace`, passing over others (an earlier worker's
    /// replays come first); panics when none comes within `within` each.
    pub async fn next_for(&mut self, trace: &str, within: Duration) -> Received {
        loop {
            let r = self
                .next(within)
                .await
                .unwrap_or_else(|| panic!("no result for {trace}"));
            if r.event["pay_trace_no"] == trace {
                return r;
            }
        }
    }

    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        match tokio::time::timeout(within, self.consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                let event = serde_json::from_slice(&d.data)
                    .unwrap_or_else(|e| panic!("result is not JSON: {e}"));
                // Every event any test captures must match schemas/.
                crate::schemas::check_captured(&event, &d.properties);
                Some(Received {
                    event,
                    body: d.data.clone(),
                    props: d.properties.clone(),
                    routing_key: d.routing_key.to_string(),
                })
            }
            _ => None,
        }
    }

    /// Exactly `n` events within `within`, or a panic saying how many came.
    pub async fn take(&mut self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(r) => got.push(r),
                None => panic!(
                    "only {} of {n} result events arrived within {within:?}: {:?}",
                    got.len(),
                    got.iter().map(|r| &r.event).collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn none_for(&mut self, quiet: Duration) {
        if let Some(r) = self.next(quiet).await {
            panic!("unexpected result event: {}", r.event);
        }
    }
}

/// A claim as a worker makes it for a new intent without pay_time.
pub fn claim_request<'a>(
    token: &'a str,
    fingerprint: &'a str,
    pay_time: &'a str,
) -> h5pay_worker::claim::ClaimRequest<'a> {
    h5pay_worker::claim::ClaimRequest {
        token,
        fingerprint,
        pay_time,
        pay_time_explicit: false,
        too_old: false,
        sent: "",
        reached: false,
    }
}

/// An intent body for the default institution.
pub fn intent(trace: &str, mch: &str, amount: u64) -> Value {
    serde_json::json!({"pay_trace_no": trace, "mch_no": mch, "pay_type": "wechat", "total_amount": amount})
}

pub const WAIT: Duration = Duration::from_secs(20);

/// The headers the broker leaves on a dead-lettered message: one `x-death`
/// entry with `reason` and `count`, and `queue` and `routing-keys` when
/// given.
pub fn x_death(
    reason: &str,
    count: i64,
    queue: Option<&str>,
    routing_key: Option<&str>,
) -> FieldTable {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut death = FieldTable::default();
    death.insert("reason".into(), text(reason));
    death.insert("count".into(), AMQPValue::LongLongInt(count));
    if let Some(q) = queue {
        death.insert("queue".into(), text(q));
    }
    if let Some(k) = routing_key {
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![text(k)])),
        );
    }
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    headers
}
