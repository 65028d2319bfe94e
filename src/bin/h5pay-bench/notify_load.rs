//! `h5pay-bench notify`: the notify receiver under load (BENCHMARKS.md).
//!
//! Places real orders first (sandbox + worker, as in production, every one
//! `ready`), then sends the receiver signed `PAY_SUCCESS` notifies for
//! them from this process: at a fixed rate (open loop: each notify's
//! latency counts from when it was due, so a receiver that falls behind is
//! charged for the wait) and as fast as `--concurrency` connections allow.
//! The worker keeps running beside the receiver, placing
//! `--beside-rate` intents/s on the same cores meanwhile.
//! Every notify is a first-time `paid` transition with its event confirmed,
//! except in the duplicate phase, which sends the notifies again. Every
//! reply must be the exact SUCCESS reply, and every `paid` event must
//! arrive, or the run fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::driver::{Names, cleanup, declare, drive, subscribe};
use crate::processes::{
    TempDir, config_toml, free_port, proc_stats, spawn, start_sandbox, wait_ready, worker_bin,
};
use crate::procfs::{CpuOf, cpu_of, machine_busy_secs};
use crate::report::append_json;
use crate::report::percentile;
use crate::{Opts, SANDBOX_KEY};

#[derive(clap::Args, Clone)]
pub struct NotifyOpts {
    /// Notifies per measured phase.
    #[arg(long, default_value_t = 15_000)]
    pub notifies: usize,
    /// The paced phase's rate (notifies/s).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Connections in flight in the maximum-rate phases.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Notifies sent (at the paced rate) before the measured phases.
    #[arg(long, default_value_t = 2000)]
    pub notify_warmup: usize,
    /// Intents per second the worker places beside the receiver, on the
    /// same cores, while the phases are measured (its reconciler on); 0:
    /// the receiver alone.
    #[arg(long, default_value_t = 500)]
    pub beside_rate: u64,
}

/// An order placed by the worker: what its notify echoes.
#[derive(Clone)]
struct Order {
    pay_trace_no: String,
    pay_time: String,
    total_amount: u64,
    trade_no: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub notifies: usize,
    /// 0: as fast as the connections allow.
    pub rate: u64,
    /// Intents/s the worker placed meanwhile (0: the receiver alone).
    pub beside_rate: u64,
    pub seconds: f64,
    pub notifies_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub peak_rss_mib: f64,
    pub cpu_us_per_notify: f64,
    /// What the whole machine spent per notify meanwhile (the receiver, the
    /// worker beside it, this client, RabbitMQ, Redis): at most two cores'
    /// worth, so it bounds notifies/s on this machine.
    pub machine_us_per_notify: f64,
    /// RabbitMQ's share (`beam.smp`) and this client's own.
    pub broker_us_per_notify: f64,
    pub client_us_per_notify: f64,
}

pub async fn run(opts: Opts, n_opts: NotifyOpts) -> anyhow::Result<()> {
    let bin = worker_bin(&opts)?;
    let dir = TempDir::new()?;
    let conn = Connection::connect(&opts.amqp_url, ConnectionProperties::default())
        .await
        .context("RabbitMQ (make services)")?;
    let names = Names::new("n", &opts);
    declare(&conn, &names).await?;
    let result = measure(&opts, &n_opts, &conn, &bin, &dir, &names).await;
    cleanup(&conn, &names, &opts.redis_url).await;
    let _ = conn.close(200, "bench done".into()).await;
    let reports = result?;
    print(&opts, &reports)
}

async fn measure(
    opts: &Opts,
    n_opts: &NotifyOpts,
    conn: &Connection,
    bin: &std::path::Path,
    dir: &TempDir,
    names: &Names,
) -> anyhow::Result<Vec<PhaseReport>> {
    let notify_port = free_port()?;
    let notify_url = format!("http://127.0.0.1:{notify_port}/h5pay/notify");
    // Nothing pays on the sandbox here, so it sends no notifies of its own:
    // every notify is the benchmark's.
    let (_sandbox, gateway) = start_sandbox(bin, dir, 0).await?;
    let notify_section = format!(
        "\n[notify]\nlisten = \"127.0.0.1:{notify_port}\"\npath = \"/h5pay/notify\"\npublic_url = \"{notify_url}\"\n"
    );

    // 1. Orders, placed by the real worker.
    let total = n_opts.notify_warmup + 2 * n_opts.notifies;
    let worker_admin = free_port()?;
    let worker_cfg = dir.path().join("worker.toml");
    std::fs::write(
        &worker_cfg,
        config_toml(opts, names, &gateway, worker_admin) + &notify_section,
    )?;
    let worker = spawn(bin, "run", &worker_cfg).context("starting the worker")?;
    wait_ready(worker_admin).await?;
    eprintln!("placing {total} orders through the worker");
    let orders = place_orders(conn, names, opts, total).await?;

    // 2. The receiver, in its own process, on the same names.
    let receiver_admin = free_port()?;
    let receiver_cfg = dir.path().join("notify.toml");
    std::fs::write(
        &receiver_cfg,
        config_toml(opts, names, &gateway, receiver_admin) + &notify_section,
    )?;
    let receiver = spawn(bin, "notify", &receiver_cfg).context("starting the receiver")?;
    let pid = receiver.0.id();
    wait_ready(receiver_admin).await?;

    let paid = count_paid_events(conn, names).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(n_opts.concurrency.max(256))
        // Idle connections are dropped before the receiver closes them (its
        // header-read timeout also ends an idle keep-alive connection):
        // reusing one it is closing failed a run with "connection closed
        // before message completed".
        .pool_idle_timeout(h5pay_worker::http_server::HEADER_READ_TIMEOUT / 2)
        .timeout(Duration::from_secs(10))
        .build()?;
    let key = SecretString::from(SANDBOX_KEY.to_owned());
    let bodies: Vec<Vec<u8>> = orders.iter().map(|o| notify_body(o, &key)).collect();
    let (warm, rest) = bodies.split_at(n_opts.notify_warmup);
    let (paced, fastest) = rest.split_at(n_opts.notifies);

    eprintln!("warm-up: {} notifies at {}/s", warm.len(), n_opts.rate);
    send(&http, &notify_url, warm, Load::Rate(n_opts.rate)).await?;
    let beside = beside(opts, names, n_opts.beside_rate);
    let mut reports = Vec::new();
    let phases: [(&str, &[Vec<u8>], Load); 3] = [
        ("paid", paced, Load::Rate(n_opts.rate)),
        ("paid", fastest, Load::Connections(n_opts.concurrency)),
        // The same notifies again: each one a duplicate, answered SUCCESS.
        ("duplicate", paced, Load::Connections(n_opts.concurrency)),
    ];
    for (phase, bodies, load) in phases {
        eprintln!("{phase}: {} notifies, {load}", bodies.len());
        let (_, cpu_before) = proc_stats(pid);
        let shares_before = shares();
        let (seconds, latencies) = send(&http, &notify_url, bodies, load).await?;
        let (hwm_kib, cpu_after) = proc_stats(pid);
        let per_notify = |before: f64, after: f64| (after - before) * 1e6 / bodies.len() as f64;
        let shares_after = shares();
        reports.push(PhaseReport {
            phase: phase.to_owned(),
            notifies: bodies.len(),
            rate: match load {
                Load::Rate(r) => r,
                Load::Connections(_) => 0,
            },
            beside_rate: n_opts.beside_rate,
            seconds,
            notifies_per_sec: bodies.len() as f64 / seconds.max(1e-9),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: latencies.last().copied().unwrap_or(0.0),
            peak_rss_mib: hwm_kib as f64 / 1024.0,
            cpu_us_per_notify: per_notify(cpu_before, cpu_after),
            machine_us_per_notify: per_notify(shares_before.0, shares_after.0),
            broker_us_per_notify: per_notify(0.0, shares_after.1.since(&shares_before.1)),
            client_us_per_notify: per_notify(shares_before.2, shares_after.2),
        });
    }
    if let Some(b) = beside {
        b.abort();
    }
    drop(worker);
    // Every first notify made exactly one paid event; duplicates none.
    let expected = orders.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while paid.load() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if paid.load() != expected {
        bail!("{} paid events for {expected} paid orders", paid.load());
    }
    Ok(reports)
}

/// The driver placing intents beside the receiver: its throughput and
/// latencies, if it ever ends.
type Placing = tokio::task::JoinHandle<anyhow::Result<(f64, Vec<f64>)>>;

/// The worker beside the receiver: `rate` intents/s until the returned
/// task is aborted (the bench's end cleans their names up); none at 0.
fn beside(opts: &Opts, names: &Names, rate: u64) -> Option<Placing> {
    if rate == 0 {
        return None;
    }
    eprintln!("beside: the worker places {rate} intents/s");
    let placing = Opts {
        intents: usize::try_from(rate).unwrap_or(0) * 600,
        rate,
        amount: None,
        latency_trace: None,
        ..opts.clone()
    };
    let names = names.clone();
    Some(tokio::spawn(async move {
        let conn = Connection::connect(&placing.amqp_url, ConnectionProperties::default()).await?;
        drive(&conn, &names, &placing, &format!("{}-beside", names.id)).await
    }))
}

/// Publishes `count` intents through the worker and keeps each `ready`
/// event's echoes.
async fn place_orders(
    conn: &Connection,
    names: &Names,
    opts: &Opts,
    count: usize,
) -> anyhow::Result<Vec<Order>> {
    let (ch, mut consumer) =
        subscribe(conn, &names.amqp.result_exchange, "h5pay.result.ready.#").await?;
    let collect = tokio::spawn(async move {
        let mut orders = HashMap::new();
        while orders.len() < count {
            let Some(Ok(d)) = consumer.next().await else {
                break;
            };
            let Ok(ev) = serde_json::from_slice::<Value>(&d.data) else {
                continue;
            };
            let field = |k: &str| ev[k].as_str().map(str::to_owned);
            if let (Some(t), Some(p), Some(tn), Some(a)) = (
                field("pay_trace_no"),
                field("pay_time"),
                field("trade_no"),
                ev["total_amount"].as_u64(),
            ) {
                orders.insert(
                    t.clone(),
                    Order {
                        pay_trace_no: t,
                        pay_time: p,
                        total_amount: a,
                        trade_no: tn,
                    },
                );
            }
        }
        orders
    });
    let placing = Opts {
        intents: count,
        rate: 0,
        latency_trace: None,
        ..opts.clone()
    };
    drive(conn, names, &placing, &names.id).await?;
    let orders = tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .context("the ready events did not all arrive")??;
    let _ = ch.close(200, "placed".into()).await;
    if orders.len() != count {
        bail!("{} of {count} orders placed", orders.len());
    }
    let mut orders: Vec<Order> = orders.into_values().collect();
    orders.sort_by(|a, b| a.pay_trace_no.cmp(&b.pay_trace_no));
    Ok(orders)
}

/// The gateway's notify of a paid order, signed as the gateway signs it.
fn notify_body(o: &Order, key: &SecretString) -> Vec<u8> {
    let mut m = Map::new();
    for (k, v) in [
        ("return_code", json!("SUCCESS")),
        ("return_msg", json!("支付成功")),
        ("result_code", json!("PAY_SUCCESS")),
        ("inst_no", json!("60000001")),
        ("mch_no", json!("BENCH01")),
        ("pay_trace_no", json!(o.pay_trace_no)),
        ("pay_time", json!(o.pay_time)),
        ("pay_type", json!("400")),
        ("total_amount", json!(o.total_amount.to_string())),
        ("pay_amount", json!(o.total_amount.to_string())),
        ("trade_no", json!(o.trade_no)),
        ("trade_type", json!("1")),
        ("end_time", json!("20261130120000")),
    ] {
        m.insert(k.to_owned(), v);
    }
    let sign = h5pay_worker::gateway::sign::sign(&m, key);
    m.insert("sign".to_owned(), Value::String(sign));
    serde_json::to_vec(&m).unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Load {
    /// Open loop: notify i is due at i / rate seconds.
    Rate(u64),
    /// Closed loop: this many in flight, each sent when one is answered.
    Connections(usize),
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Rate(r) => write!(f, "at {r}/s"),
            Load::Connections(c) => write!(f, "as fast as {c} connections go"),
        }
    }
}

/// Sends every body; returns (seconds, sorted latencies in ms). Any answer
/// but the exact SUCCESS reply fails the run.
async fn send(
    http: &reqwest::Client,
    url: &str,
    bodies: &[Vec<u8>],
    load: Load,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let limit = match load {
        Load::Rate(_) => 1024,
        Load::Connections(c) => c,
    };
    let slots = Arc::new(Semaphore::new(limit));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.iter().enumerate() {
        let due = match load {
            Load::Rate(r) => {
                let due = started + Duration::from_secs_f64(i as f64 / r as f64);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            Load::Connections(_) => Instant::now(),
        };
        let permit = slots.clone().acquire_owned().await?;
        let (http, url, body) = (http.clone(), url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = r.status();
            let text = r.text().await?;
            let ms = due.elapsed().as_secs_f64() * 1000.0;
            drop(permit);
            if status != reqwest::StatusCode::OK || text != h5pay_worker::notify::SUCCESS_REPLY {
                bail!("the receiver answered {status}: {text}");
            }
            anyhow::Ok(ms)
        }));
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    for t in tasks {
        latencies.push(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok((seconds, latencies))
}

/// Counts the `paid` events on the run's result exchange.
async fn count_paid_events(conn: &Connection, names: &Names) -> anyhow::Result<Counter> {
    let (ch, mut consumer) =
        subscribe(conn, &names.amqp.result_exchange, "h5pay.payment.paid.#").await?;
    let counter = Counter::default();
    let c = counter.clone();
    tokio::spawn(async move {
        let mut ids = std::collections::HashSet::new();
        while let Some(Ok(d)) = consumer.next().await {
            if let Ok(ev) = serde_json::from_slice::<Value>(&d.data)
                && let Some(id) = ev["event_id"].as_str()
                && ids.insert(id.to_owned())
            {
                c.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        drop(ch);
    });
    Ok(counter)
}

/// Distinct `paid` event ids seen.
#[derive(Clone, Default)]
struct Counter(Arc<std::sync::atomic::AtomicUsize>);

impl Counter {
    fn load(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// CPU seconds so far of the machine, RabbitMQ and this process.
fn shares() -> (f64, CpuOf, f64) {
    (
        machine_busy_secs(),
        cpu_of("beam.smp"),
        proc_stats(std::process::id()).1,
    )
}

fn print(opts: &Opts, reports: &[PhaseReport]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "{:<10} {:>8} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>11} {:>11} {:>10} {:>10}",
        "phase",
        "notifies",
        "rate",
        "notifies/s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "rss_MiB",
        "cpu_us/ntf",
        "machine_us",
        "broker_us",
        "client_us"
    )?;
    for r in reports {
        writeln!(
            out,
            "{:<10} {:>8} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>11.1} {:>11.1} {:>10.1} {:>10.1}",
            r.phase,
            r.notifies,
            if r.rate == 0 {
                "max".to_owned()
            } else {
                r.rate.to_string()
            },
            r.notifies_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.peak_rss_mib,
            r.cpu_us_per_notify,
            r.machine_us_per_notify,
            r.broker_us_per_notify,
            r.client_us_per_notify
        )?;
    }
    if let Some(path) = &opts.json {
        append_json(path, reports)?;
    }
    Ok(())
}
