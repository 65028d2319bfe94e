//! Real clusters for the fault suite (contract §14): `scripts/clusters.sh`
//! starts a Redis Cluster (three masters, one replica each) and a
//! three-node RabbitMQ cluster beside the machine's own services, and tears
//! them down when [`Clusters`] drops — or, if this process dies without
//! unwinding, its watchdog does (`--owner-pid`). Each scenario gets a
//! [`World`]: a vhost of its own on the RabbitMQ cluster, a key prefix of
//! its own on the Redis Cluster, a sandbox gateway, a collector of every
//! result and payment event, and the real `h5pay-worker` binary as
//! processes (the fault suite's [`Proc`]).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::worker_toml::worker_toml_rest;

pub use crate::chaos::{BIN, Collected, Proc, SANDBOX_KEY};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/clusters.sh");

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn free_port() -> u16 {
    crate::net::free_port().expect("a free port")
}

/// Runs the script on `dir`; its stdout, or its stderr.
fn try_script(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(SCRIPT)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{SCRIPT}: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "scripts/clusters.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs the script on `dir`; its stdout, or a panic with its stderr.
fn script(dir: &Path, args: &[&str]) -> String {
    try_script(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The two clusters, torn down on drop.
pub struct Clusters {
    pub dir: PathBuf,
    pub redis_ports: Vec<u16>,
    pub amqp_ports: Vec<u16>,
    pub node_names: Vec<String>,
    pub start_secs: f64,
    /// RabbitMQ nodes (0-based) killed and not revived yet.
    down: Mutex<HashSet<usize>>,
}

fn env_list<T: std::str::FromStr>(out: &str, key: &str) -> Vec<T> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Clusters {
    pub fn start() -> Clusters {
        let dir = std::env::temp_dir().join(format!(
            "h5pay-clusters-{}-{}",
            std::process::id(),
            &h5pay_worker::claim::new_token()[..6]
        ));
        let t0 = Instant::now();
        let owner = std::process::id().to_string();
        // H5PAY_CLUSTERS_KEEP: the clusters outlive the test, for a look at
        // their logs (`scripts/clusters.sh stop --dir …` ends them).
        let args: &[&str] = if keep() {
            &["start"]
        } else {
            &["start", "--owner-pid", &owner]
        };
        // A second try if the first fails (it tears down what it started):
        // three Erlang VMs booting at once on a busy two-core machine.
        let out = try_script(&dir, args).unwrap_or_else(|first| {
            eprintln!("{first}\nstarting the clusters again");
            try_script(&dir, args).unwrap_or_else(|second| panic!("{first}\n{second}"))
        });
        let c = Clusters {
            redis_ports: env_list(&out, "REDIS_PORTS"),
            amqp_ports: env_list(&out, "AMQP_PORTS"),
            node_names: env_list(&out, "RABBIT_NODES"),
            dir,
            start_secs: secs(t0.elapsed()),
            down: Mutex::new(HashSet::new()),
        };
        assert_eq!(c.redis_ports.len(), 6, "{out}");
        assert_eq!(c.amqp_ports.len(), 3, "{out}");
        assert_eq!(c.node_names.len(), 3, "{out}");
        c
    }

    pub fn amqp_url(&self, node: usize, vhost: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{vhost}?heartbeat=5",
            self.amqp_ports[node]
        )
    }

    /// The RabbitMQ node (0-based) that serves this AMQP port.
    pub fn node_of_port(&self, port: u16) -> Option<usize> {
        self.amqp_ports.iter().position(|p| *p == port)
    }

    /// The node (0-based) named `name` (`h5pay-…-rmqN@localhost`).
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.node_names
            .iter()
            .position(|n| name.contains(n.as_str()))
    }

    pub fn is_down(&self, node: usize) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&node)
    }

    pub fn live_nodes(&self) -> Vec<usize> {
        (0..3).filter(|n| !self.is_down(*n)).collect()
    }

    /// `rabbitmqctl` against a live node; its stdout, or None.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        for n in self.live_nodes() {
            let node = (n + 1).to_string();
            let out = Command::new(SCRIPT)
                .arg("ctl")
                .arg("--dir")
                .arg(&self.dir)
                .arg(&node)
                .args(args)
                .output()
                .ok()?;
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).into_owned());
            }
        }
        None
    }

    pub fn kill_rabbit(&self, node: usize) {
        script(&self.dir, &["kill", "rabbit", &(node + 1).to_string()]);
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node);
    }

    pub fn kill_redis(&self, port: u16) {
        script(&self.dir, &["kill", "redis", &port.to_string()]);
    }

    /// Starts every dead node again and waits until both clusters are
    /// whole; how long it took.
    pub fn revive(&self) -> f64 {
        let t0 = Instant::now();
        script(&self.dir, &["revive"]);
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clear();
        secs(t0.elapsed())
    }

    pub fn add_vhost(&self, vhost: &str) {
        assert!(self.ctl(&["add_vhost", vhost]).is_some(), "add_vhost");
        assert!(
            self.ctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])
                .is_some(),
            "set_permissions"
        );
    }

    /// Rows of `list_queues` for the vhost: name → (leader node, home node
    /// of a classic queue).
    pub fn queue_nodes(&self, vhost: &str) -> HashMap<String, (Option<usize>, Option<usize>)> {
        let out = self
            .ctl(&[
                "list_queues",
                "-p",
                vhost,
                "-q",
                "--no-table-headers",
                "name",
                "leader",
                "pid",
            ])
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let name = f.next()?.trim().to_owned();
                let leader = f.next().and_then(|x| self.node_named(x));
                let pid = f.next().and_then(|x| self.node_named(x));
                Some((name, (leader, pid)))
            })
            .collect()
    }

    /// The nodes the worker processes' consuming sessions are connected to
    /// (pid from the connection name `h5pay-worker run@host#pid`).
    pub fn worker_nodes(&self, vhost: &str) -> Vec<(u32, usize)> {
        self.connections(vhost, "run")
    }

    /// The nodes of the connections named `h5pay-worker <role>@host#pid`
    /// (`run`: consuming sessions; `reconcile`: the reconcilers' links).
    pub fn connections(&self, vhost: &str, role: &str) -> Vec<(u32, usize)> {
        let out = self
            .ctl(&[
                "list_connections",
                "-q",
                "--no-table-headers",
                "vhost",
                "port",
                "client_properties",
            ])
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                if f.next()?.trim() != vhost {
                    return None;
                }
                let node = self.node_of_port(f.next()?.trim().parse().ok()?)?;
                let props = f.next()?;
                let at = props.find(&format!("h5pay-worker {role}@"))?;
                let rest = &props[at..];
                let pid: String = rest[rest.find('#')? + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                Some((pid.parse().ok()?, node))
            })
            .collect()
    }

    pub fn redis_cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Redis masters that hold slots: (port, the port of its replica).
    pub fn redis_masters(&self) -> Vec<(u16, Option<u16>)> {
        let nodes = self
            .redis_ports
            .iter()
            .map(|p| self.redis_cli(*p, &["cluster", "nodes"]))
            .find(|s| !s.trim().is_empty())
            .unwrap_or_default();
        // <id> <ip:port@bus> <flags> <master id|-> ...
        let rows: Vec<Vec<&str>> = nodes
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let port_of = |r: &Vec<&str>| -> Option<u16> {
            r.get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        };
        rows.iter()
            .filter(|r| {
                r.get(2)
                    .is_some_and(|f| f.contains("master") && !f.contains("fail"))
                    && r.len() > 8
            })
            .filter_map(|m| {
                let port = port_of(m)?;
                let replica = rows
                    .iter()
                    .find(|r| {
                        r.get(3) == m.first() && r.get(2).is_some_and(|f| !f.contains("fail"))
                    })
                    .and_then(port_of);
                Some((port, replica))
            })
            .collect()
    }

    pub fn role(&self, port: u16) -> String {
        self.redis_cli(port, &["info", "replication"])
            .lines()
            .find_map(|l| l.strip_prefix("role:"))
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    pub fn repl_offset(&self, port: u16) -> Option<u64> {
        self.redis_cli(port, &["info", "replication"])
            .lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .and_then(|v| v.trim().parse().ok())
    }

    pub async fn redis(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self
            .redis_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        redis::cluster::ClusterClientBuilder::new(seeds)
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("a cluster client")
            .get_async_connection()
            .await
            .expect("connected to the Redis Cluster")
    }
}

fn keep() -> bool {
    std::env::var_os("H5PAY_CLUSTERS_KEEP").is_some()
}

impl Drop for Clusters {
    fn drop(&mut self) {
        if keep() {
            eprintln!(
                "clusters kept: scripts/clusters.sh stop --dir {}",
                self.dir.display()
            );
            return;
        }
        let _ = Command::new(SCRIPT)
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir)
            .output();
    }
}

/// What a scenario's world is made of.
pub struct Options {
    pub tag: &'static str,
    pub sandbox_latency_ms: u64,
    pub prefetch: u16,
    pub wait_replicas: u32,
    /// The node the test declares the topology on (the intent queue's
    /// leader and the classic DLQ start there).
    pub declare_on: usize,
    /// Moves the DLQ to this node.
    pub dlq_on: Option<usize>,
}

/// The reconciler's schedule in these scenarios: checks 2 and 4 s after
/// pay_time, unpaid orders closed after 8 s.
pub const LIFECYCLE: &str =
    "check_after_secs = [2, 4]\norder_ttl_secs = 6\nclose_grace_secs = 2\nmax_age_secs = 600";

/// Amounts of the load: paid without a notify (4021: only a query finds
/// it), paid by itself with a notify (4020), never paid (closed).
pub fn amount(i: usize) -> u64 {
    match i % 3 {
        0 => 4021,
        1 => 4020,
        _ => 100 + (i % 900) as u64,
    }
}

/// The final state a payment of `amount(i)` must reach.
pub fn final_state(i: usize) -> &'static str {
    if i % 3 == 2 { "closed" } else { "paid" }
}

/// A published identity: its number and when its batch was first sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub i: usize,
    pub trace: String,
    pub first_try: Instant,
}

pub struct World<'a> {
    pub cl: &'a Clusters,
    pub id: String,
    pub vhost: String,
    pub dir: tempfile::TempDir,
    pub sandbox: Proc,
    pub sandbox_port: u16,
    pub notify_port: u16,
    pub config: PathBuf,
    pub results: Arc<Mutex<Collected>>,
    collector: JoinHandle<()>,
    pub sent: Arc<Mutex<Vec<Sent>>>,
    pub prefix: String,
}

impl<'a> World<'a> {
    pub async fn start(cl: &'a Clusters, o: Options) -> World<'a> {
        let id = format!("{}-{}", o.tag, &h5pay_worker::claim::new_token()[..6]);
        let vhost = format!("h5c-{id}");
        cl.add_vhost(&vhost);
        let dir = tempfile::tempdir().expect("a temp dir");
        let sandbox_port = free_port();
        let sandbox_cfg = dir.path().join("sandbox.toml");
        std::fs::write(
            &sandbox_cfg,
            format!("[[institutions]]\ninst_no = \"60000001\"\nkey = \"{SANDBOX_KEY}\"\n[log]\nlevel = \"warn\"\n"),
        )
        .expect("file written");
        let notify_port = free_port();
        let sandbox = Proc::spawn(
            Command::new(BIN)
                .args([
                    "sandbox",
                    "--listen",
                    &format!("127.0.0.1:{sandbox_port}"),
                    "--latency-ms",
                    &o.sandbox_latency_ms.to_string(),
                    "--public-url",
                    &format!("http://127.0.0.1:{sandbox_port}"),
                    "--config",
                ])
                .arg(&sandbox_cfg),
            dir.path().join("sandbox.log"),
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
        let prefix = format!("h5c:{id}");
        let amqp_urls: Vec<String> = (0..3)
            .map(|n| format!("\"{}\"", cl.amqp_url(n, &vhost)))
            .collect();
        let redis_urls: Vec<String> = cl.redis_ports[1..]
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect();
        let config = dir.path().join("worker.toml");
        std::fs::write(
            &config,
            format!(
                r#"[amqp]
urls = [{amqp_urls}]
prefetch = {prefetch}

[redis]
cluster = true
url = "redis://127.0.0.1:{redis0}"
urls = [{redis_urls}]
key_prefix = "{prefix}"
lease_ms = 5000
retention_secs = 3600
wait_replicas = {wait}

{rest}
"#,
                rest = worker_toml_rest(sandbox_port, SANDBOX_KEY, notify_port, LIFECYCLE),
                amqp_urls = amqp_urls.join(", "),
                prefetch = o.prefetch,
                redis0 = cl.redis_ports[0],
                redis_urls = redis_urls.join(", "),
                wait = o.wait_replicas,
            ),
        )
        .expect("config written");
        // The topology first, on one node, so the intent queue's leader and
        // the DLQ's home are known; the collector's own queue is a quorum
        // queue, so no result is lost while a node is down.
        let conn = connect(cl, o.declare_on, &vhost).await;
        let settings = h5pay_worker::config::AmqpSettings::default();
        h5pay_worker::amqp::declare(&conn, &settings)
            .await
            .expect("topology declared");
        declare_results_queue(&conn).await.expect("results queue");
        let _ = conn.close(200, "declared".into()).await;
        if let Some(n) = o.dlq_on {
            move_dlq(cl, n, &vhost, &settings).await;
        }
        let results = Arc::new(Mutex::new(Collected::default()));
        let collector = tokio::spawn(collect(
            (0..3).map(|n| cl.amqp_url(n, &vhost)).collect(),
            results.clone(),
        ));
        World {
            cl,
            id,
            vhost,
            dir,
            sandbox,
            sandbox_port,
            notify_port,
            config,
            results,
            collector,
            sent: Arc::new(Mutex::new(Vec::new())),
            prefix,
        }
    }

    /// Starts a worker process; returns it and its admin port.
    pub fn worker(&self, n: usize) -> (Proc, u16) {
        self.spawn("run", n)
    }

    /// Starts the notify receiver on `notify_port`.
    pub fn receiver(&self) -> (Proc, u16) {
        self.spawn("notify", 0)
    }

    fn spawn(&self, what: &str, n: usize) -> (Proc, u16) {
        let admin = free_port();
        let log = self.dir.path().join(format!(
            "{what}-{n}-{}.log",
            &h5pay_worker::claim::new_token()[..4]
        ));
        let p = Proc::spawn(
            Command::new(BIN)
                .args([what, "--config"])
                .arg(&self.config)
                .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
                .env_remove("RUST_LOG"),
            log,
        );
        (p, admin)
    }

    /// Starts a worker and waits until its `/readyz` says 200.
    pub async fn ready_worker(&self, n: usize) -> (Proc, u16) {
        let (w, admin) = self.worker(n);
        assert!(
            ready(admin, Duration::from_secs(60)).await,
            "worker {n} not ready\n{}",
            self.logs()
        );
        (w, admin)
    }

    /// Publishes `count` intents from `from`, `rate` a second, through the
    /// nodes in turn from `node` (the next one whenever a batch is not
    /// confirmed); in the background.
    pub fn publish(&self, node: usize, from: usize, count: usize, rate: usize) -> JoinHandle<()> {
        let urls: Vec<String> = (0..3).map(|n| self.cl.amqp_url(n, &self.vhost)).collect();
        tokio::spawn(publish_paced(
            urls,
            node,
            from,
            count,
            rate,
            self.sent.clone(),
        ))
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn received(&self) -> usize {
        self.results
            .lock()
            .map(|r| r.events.len())
            .unwrap_or_default()
    }

    pub async fn wait_received(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.received() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits until every sent identity has a result (or `within` passes).
    pub async fn wait_all(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let sent = self.sent();
            let done = self
                .results
                .lock()
                .map(|r| sent.iter().all(|s| r.events.contains_key(&s.trace)))
                .unwrap_or(false);
            if done {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// When the first intent whose batch was first sent after `t` got its
    /// result.
    pub fn first_result_sent_after(&self, t: Instant) -> Option<Instant> {
        let sent = self.sent();
        let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .filter(|s| s.first_try > t)
            .filter_map(|s| r.first_at.get(&s.trace).copied())
            .min()
    }

    /// Results that arrived in [from, to).
    pub fn results_between(&self, from: Instant, to: Instant) -> usize {
        let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.first_at
            .values()
            .filter(|t| **t >= from && **t < to)
            .count()
    }

    /// Payments by pay_trace_no: the distinct (state, event_id) pairs each
    /// got, anomalies left out.
    pub fn payment_states(&self) -> HashMap<String, HashSet<(String, String)>> {
        let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        crate::chaos::distinct_states(&r.payments)
    }

    /// Payments (of every sent identity) not yet in their final state.
    pub fn payments_not_final(&self) -> Vec<String> {
        let states = self.payment_states();
        self.sent()
            .iter()
            .filter(|s| {
                !states
                    .get(&s.trace)
                    .is_some_and(|set| set.iter().any(|(state, _)| state == final_state(s.i)))
            })
            .map(|s| s.trace.clone())
            .collect()
    }

    pub async fn wait_payments(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.payments_not_final().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
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

    /// Messages in the DLQ (None while its node is down).
    pub async fn dlq_depth(&self) -> Option<u32> {
        for n in self.cl.live_nodes() {
            if let Ok(conn) = Connection::connect(
                &self.cl.amqp_url(n, &self.vhost),
                ConnectionProperties::default(),
            )
            .await
            {
                let count = crate::chaos::count_on(&conn, "h5pay.intents.dlq").await;
                let _ = conn.close(200, "".into()).await;
                return count;
            }
        }
        None
    }

    /// Sent identities whose acknowledged outcome is not in the Redis
    /// Cluster (state `d` with the event_id that was published).
    pub async fn outcomes_missing(&self) -> Vec<String> {
        let mut conn = self.cl.redis().await;
        let events: Vec<(String, String)> = {
            let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
            r.events
                .iter()
                .filter_map(|(t, evs)| {
                    Some((t.clone(), evs.first()?["event_id"].as_str()?.to_owned()))
                })
                .collect()
        };
        let mut missing = Vec::new();
        for (trace, event_id) in events {
            let key = self.key(&trace);
            let got: (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("st")
                .arg("ev")
                .query_async(&mut conn)
                .await
                .unwrap_or((None, None));
            let stored_id = got
                .1
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok())
                .and_then(|v| v["event_id"].as_str().map(str::to_owned));
            if got.0.as_deref() != Some("d") || stored_id.as_deref() != Some(event_id.as_str()) {
                missing.push(trace);
            }
        }
        missing
    }

    /// Judges the intents: nothing lost, one request per identity, one
    /// outcome per identity. Figures as JSON.
    pub async fn judge(&self) -> Judged {
        let stats = self.sandbox_stats().await;
        let sent = self.sent();
        let identities: HashSet<&String> = sent.iter().map(|s| &s.trace).collect();
        let crate::chaos::Tally {
            lost,
            events: result_events,
            not_ready,
            split_outcomes,
            ..
        } = {
            let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
            crate::chaos::tally(&r.events, identities.iter().copied())
        };
        let states = self.payment_states();
        let payment_split = states
            .values()
            .filter(|set| {
                let mut per: HashMap<&str, usize> = HashMap::new();
                for (st, _) in set.iter() {
                    *per.entry(st.as_str()).or_default() += 1;
                }
                per.values().any(|n| *n > 1)
            })
            .count();
        let two_final = states.values().filter(|set| set.len() > 1).count();
        Judged {
            published: sent.len(),
            identities: identities.len(),
            result_events,
            lost,
            not_ready,
            split_outcomes,
            two_requests: stats
                .identities
                .iter()
                .filter(|i| i.distinct_requests > 1)
                .count(),
            extra_calls: stats
                .identities
                .iter()
                .map(|i| i.calls.saturating_sub(1))
                .sum(),
            extra_call_identities: stats
                .identities
                .iter()
                .filter(|i| i.calls > 1)
                .take(10)
                .map(|i| i.pay_trace_no.clone())
                .collect(),
            overlapping_checks: stats
                .identities
                .iter()
                .filter(|i| i.max_overlap > 1)
                .count(),
            queries: stats.identities.iter().map(|i| i.queries).sum(),
            closes: stats.identities.iter().map(|i| i.closes).sum(),
            payments_not_final: self.payments_not_final().len(),
            payment_split,
            two_final_states: two_final,
        }
    }

    /// The tail of every log of this world.
    pub fn logs(&self) -> String {
        crate::chaos::log_tails(self.dir.path(), 12)
    }

    /// Lines of every worker log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .lines()
                            .filter(|l| l.contains(needle))
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        self.collector.abort();
        // Logs kept for a failed scenario, or on request.
        if std::thread::panicking() || keep() {
            self.dir.disable_cleanup(true);
            eprintln!("logs kept in {}", self.dir.path().display());
        }
    }
}

/// What a world's intents and payments came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Judged {
    pub published: usize,
    pub identities: usize,
    pub result_events: usize,
    pub lost: usize,
    pub not_ready: usize,
    pub split_outcomes: usize,
    pub two_requests: usize,
    pub extra_calls: u64,
    /// Up to ten identities called more than once.
    pub extra_call_identities: Vec<String>,
    pub overlapping_checks: usize,
    pub queries: u64,
    pub closes: u64,
    pub payments_not_final: usize,
    pub payment_split: usize,
    pub two_final_states: usize,
}

impl Judged {
    /// The promises of contract §5 and §14 that hold in every scenario.
    pub fn assert_clean(&self, scenario: &str, logs: &str) {
        assert_eq!(self.lost, 0, "{scenario}: intents lost {self:?}\n{logs}");
        assert_eq!(
            self.two_requests, 0,
            "{scenario}: an identity was sent two different requests {self:?}"
        );
        assert_eq!(
            self.split_outcomes, 0,
            "{scenario}: an identity got two different outcomes {self:?}"
        );
        assert_eq!(
            self.not_ready, 0,
            "{scenario}: intents that did not end ready {self:?}\n{logs}"
        );
        assert_eq!(
            self.payments_not_final, 0,
            "{scenario}: payments not final {self:?}\n{logs}"
        );
        assert_eq!(
            self.payment_split, 0,
            "{scenario}: one payment state got two event_ids {self:?}"
        );
        assert_eq!(
            self.two_final_states, 0,
            "{scenario}: a payment reached two final states {self:?}"
        );
        assert_eq!(
            self.overlapping_checks, 0,
            "{scenario}: two checks of one payment ran at once {self:?}"
        );
    }
}

/// Appends one JSON line to `target/chaos-clusters-report.jsonl`.
pub fn record(v: &Value) {
    eprintln!("{v}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("chaos-clusters-report.jsonl");
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(f, "{v}");
    }
}

pub async fn ready(admin: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if readyz_ok(admin).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("a client")
}

pub async fn readyz_ok(admin: u16) -> bool {
    http()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// A gauge's value on a process's `/metrics`.
pub async fn gauge(admin: u16, name: &str) -> Option<f64> {
    let text = http()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/readyz` of each admin port every 100 ms until stopped; the
/// longest run of answers that were not 200 (a timeout counts), per port.
pub struct ReadyWatch {
    stop: tokio_util::sync::CancellationToken,
    handle: JoinHandle<HashMap<u16, (Duration, usize)>>,
}

impl ReadyWatch {
    pub fn start(admins: Vec<u16>) -> ReadyWatch {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let mut worst: HashMap<u16, (Duration, usize)> = HashMap::new();
            let mut since: HashMap<u16, Option<Instant>> = HashMap::new();
            while !token.is_cancelled() {
                let polls = admins
                    .iter()
                    .map(|a| async move { (*a, readyz_ok(*a).await) });
                for (admin, ok) in futures_util::future::join_all(polls).await {
                    let entry = worst.entry(admin).or_default();
                    let start = since.entry(admin).or_default();
                    if ok {
                        if let Some(s) = start.take() {
                            entry.0 = entry.0.max(s.elapsed());
                        }
                    } else {
                        entry.1 += 1;
                        if start.is_none() {
                            *start = Some(Instant::now());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for (admin, s) in since {
                if let Some(s) = s {
                    let e = worst.entry(admin).or_default();
                    e.0 = e.0.max(s.elapsed());
                }
            }
            worst
        });
        ReadyWatch { stop, handle }
    }

    /// Per admin port: the longest non-200 run and how many polls were not 200.
    pub async fn finish(self) -> HashMap<u16, (Duration, usize)> {
        self.stop.cancel();
        self.handle.await.unwrap_or_default()
    }
}

pub async fn connect(cl: &Clusters, node: usize, vhost: &str) -> Connection {
    crate::chaos::connect_url(&cl.amqp_url(node, vhost)).await
}

const RESULTS_QUEUE: &str = "clusters.results";

async fn declare_results_queue(conn: &Connection) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        RESULTS_QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        RESULTS_QUEUE.into(),
        "h5pay.results".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Declares the (classic) DLQ again from `node`, so that its home is there.
async fn move_dlq(
    cl: &Clusters,
    node: usize,
    vhost: &str,
    settings: &h5pay_worker::config::AmqpSettings,
) {
    let conn = connect(cl, node, vhost).await;
    let ch = conn.create_channel().await.expect("a channel");
    ch.queue_delete(
        settings.dead_letter_queue.as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await
    .expect("DLQ deleted");
    drop(ch);
    h5pay_worker::amqp::declare(&conn, settings)
        .await
        .expect("topology declared");
    let _ = conn.close(200, "declared".into()).await;
}

/// Records every result and payment event; reconnects to the next node
/// whenever its connection is lost. Its queue is a quorum queue: nothing
/// is missed meanwhile.
async fn collect(urls: Vec<String>, into: Arc<Mutex<Collected>>) {
    let mut n = 0usize;
    loop {
        n += 1;
        let url = &urls[n % urls.len()];
        let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        let _ = ch.basic_qos(500, BasicQosOptions::default()).await;
        let Ok(consumer) = ch
            .basic_consume(
                RESULTS_QUEUE.into(),
                "collector".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        crate::chaos::collect_from(consumer, &into).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes in batches of a tenth of `rate` every 100 ms, confirmed; a
/// batch that is not confirmed (its node died, a leader is being elected)
/// is sent again through the next node. Identities are idempotent, so a
/// batch sent twice is safe.
async fn publish_paced(
    urls: Vec<String>,
    start: usize,
    from: usize,
    count: usize,
    rate: usize,
    sent: Arc<Mutex<Vec<Sent>>>,
) {
    let batch = (rate / 10).max(1);
    let mut node = start;
    let mut chan: Option<(Connection, lapin::Channel)> = None;
    let mut i = from;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while i < from + count {
        tick.tick().await;
        let upto = (i + batch).min(from + count);
        let first_try = Instant::now();
        loop {
            if chan.is_none() {
                chan = open_publisher(&urls[node % urls.len()]).await;
                if chan.is_none() {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let Some((_, ch)) = chan.as_ref() else {
                continue;
            };
            if publish_batch(ch, i, upto).await {
                break;
            }
            if let Some((conn, _)) = chan.take() {
                let _ = conn.close(200, "".into()).await;
            }
            node += 1;
        }
        let mut s = sent.lock().unwrap_or_else(|p| p.into_inner());
        for j in i..upto {
            s.push(Sent {
                i: j,
                trace: format!("CL-{j}"),
                first_try,
            });
        }
        drop(s);
        i = upto;
    }
    if let Some((conn, _)) = chan {
        let _ = conn.close(200, "published".into()).await;
    }
}

async fn open_publisher(url: &str) -> Option<(Connection, lapin::Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()?;
    let ch = conn.create_channel().await.ok()?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    Some((conn, ch))
}

async fn publish_batch(ch: &lapin::Channel, from: usize, to: usize) -> bool {
    let mut pending = Vec::new();
    for i in from..to {
        let trace = format!("CL-{i}");
        let body = json!({"pay_trace_no": trace, "mch_no": "CLUSTERS1", "pay_type": "wechat", "total_amount": amount(i)}).to_string();
        match ch
            .basic_publish(
                "h5pay.intents".into(),
                "h5pay.intent.clusters".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(trace.as_str().into()),
            )
            .await
        {
            Ok(c) => pending.push(c),
            Err(_) => return false,
        }
    }
    for c in pending {
        match tokio::time::timeout(Duration::from_secs(15), c).await {
            // Acknowledged and not returned unroutable.
            Ok(Ok(confirm)) if confirm.is_ack() => {
                if confirm.take_message().is_some() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// A key's Redis Cluster slot (CRC16/XMODEM mod 16384; the keys here carry
/// no hash tag).
pub fn key_slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for b in key.bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl Clusters {
    /// The slot ranges a master serves.
    pub fn master_slots(&self, port: u16) -> Vec<(u16, u16)> {
        let nodes = self.redis_cli(port, &["cluster", "nodes"]);
        nodes
            .lines()
            .find(|l| l.contains("myself"))
            .map(|l| {
                l.split_whitespace()
                    .skip(8)
                    .filter_map(|r| {
                        let mut it = r.split('-');
                        let a: u16 = it.next()?.parse().ok()?;
                        let b: u16 = it.next().map_or(Some(a), |x| x.parse().ok())?;
                        Some((a, b))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl World<'_> {
    /// The Redis key of an identity of this world.
    pub fn key(&self, trace: &str) -> String {
        format!("{}:60000001:CLUSTERS1:{trace}", self.prefix)
    }
}
