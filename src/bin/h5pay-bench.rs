//! `h5pay-bench`: the end-to-end benchmark (see BENCHMARKS.md).
//!
//! Starts the sandbox gateway and the worker as child processes (so their
//! CPU and memory are their own), publishes intents from a separate
//! connection with publisher confirms, and measures from the first publish
//! to the last result event: throughput, per-intent latency percentiles,
//! the worker's peak RSS and CPU time. In the same run it measures this
//! machine's ceiling with a pipeline skeleton (`h5pay-bench skeleton`, also
//! a child process) that does only the worker's I/O — consume, the same
//! Redis round trips, one HTTP POST to the sandbox, a confirmed publish, an
//! ack — and reports the worker as a ratio of it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h5pay_worker::amqp::{Settlement, Settler};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::{Value, json};

const SANDBOX_KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

#[derive(Parser)]
#[command(
    name = "h5pay-bench",
    about = "End-to-end benchmark of h5pay-worker against its skeleton"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Clone)]
struct Opts {
    /// Intents per measured run.
    #[arg(long, default_value_t = 20_000)]
    intents: usize,
    /// Sandbox gateway latency.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Paced mode: publish at this rate (intents/s) instead of as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Skip the skeleton run.
    #[arg(long)]
    no_skeleton: bool,
    /// The intent queue's type: quorum (the default, as in production) or classic.
    #[arg(long, default_value = "quorum")]
    queue_type: String,
    /// Repeat worker and skeleton runs (alternating) and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Skip the worker run.
    #[arg(long)]
    no_worker: bool,
    /// The h5pay-worker binary (default: next to this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Append one JSON line per run to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Intents processed (at the same rate) before each measured run and left
    /// out of it: connections, pools, caches and the allocator warm up, as
    /// they are in a worker that has been running.
    #[arg(long, default_value_t = 2000)]
    warmup: usize,
    /// Write each run's per-intent latencies ("index ms", in publish order)
    /// to PREFIX.<run name>, to see whether a tail is spread out or a stall.
    #[arg(long, value_name = "PREFIX")]
    latency_trace: Option<PathBuf>,
    /// Worker log level during the run (the worker logs one line per intent at info).
    #[arg(long, default_value = "info")]
    log_level: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
}

#[derive(Subcommand)]
enum Mode {
    /// The I/O-only pipeline skeleton (started by the benchmark itself).
    Skeleton {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        result_exchange: String,
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        key_prefix: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.mode {
        Some(Mode::Skeleton {
            queue,
            result_exchange,
            gateway,
            key_prefix,
        }) => rt.block_on(skeleton(
            cli.opts,
            queue,
            result_exchange,
            gateway,
            key_prefix,
        )),
        None => rt.block_on(bench(cli.opts)),
    }
}

/// Names of one run: unique, cleaned up afterwards.
struct Names {
    id: String,
    exchange: String,
    queue: String,
    dlx: String,
    dlq: String,
    results: String,
    key_prefix: String,
}

impl Names {
    fn new(tag: &str) -> Names {
        let id = format!("{tag}-{}", &h5pay_worker::claim::new_token()[..8]);
        Names {
            exchange: format!("h5pay-bench-{id}.intents"),
            queue: format!("h5pay-bench-{id}.intents"),
            dlx: format!("h5pay-bench-{id}.dlx"),
            dlq: format!("h5pay-bench-{id}.intents.dlq"),
            results: format!("h5pay-bench-{id}.results"),
            key_prefix: format!("h5pay-bench:{id}"),
            id,
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn worker_bin(opts: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(p) = &opts.worker_bin {
        return Ok(p.clone());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("h5pay-worker");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --worker-bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("h5pay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_toml(opts: &Opts, n: &Names, gateway: &str, admin_port: u16) -> String {
    format!(
        r#"[amqp]
url = "{amqp}"
intent_exchange = "{ex}"
intent_queue = "{q}"
dead_letter_exchange = "{dlx}"
dead_letter_queue = "{dlq}"
result_exchange = "{res}"
prefetch = {prefetch}
queue_type = "{queue_type}"

[redis]
url = "{redis}"
key_prefix = "{prefix}"
retention_secs = 3600

[gateway]
url = "{gateway}"

[[institutions]]
inst_no = "60000001"
key = "{SANDBOX_KEY}"

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
format = "json"
level = "{level}"
"#,
        amqp = opts.amqp_url,
        ex = n.exchange,
        q = n.queue,
        dlx = n.dlx,
        dlq = n.dlq,
        res = n.results,
        prefetch = opts.prefetch,
        queue_type = opts.queue_type,
        redis = opts.redis_url,
        prefix = n.key_prefix,
        level = opts.log_level,
    )
}

/// /proc facts about a child process.
fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 after ")".
    let cpu_secs = (ticks(11) + ticks(12)) as f64 / 100.0;
    (hwm_kib, cpu_secs)
}

async fn wait_ready(admin_port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
    for _ in 0..300 {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the worker did not become ready within 30 s")
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("port {port} did not open")
}

#[derive(Debug, Clone, serde::Serialize)]
struct RunReport {
    what: String,
    intents: usize,
    latency_ms: u64,
    prefetch: u16,
    rate: u64,
    seconds: f64,
    intents_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    peak_rss_mib: f64,
    cpu_secs: f64,
    cpu_us_per_intent: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn declare(conn: &Connection, n: &Names, queue_type: &str) -> anyhow::Result<()> {
    let settings = h5pay_worker::config::AmqpSettings {
        queue_type: if queue_type == "classic" {
            h5pay_worker::config::QueueType::Classic
        } else {
            h5pay_worker::config::QueueType::Quorum
        },
        intent_exchange: n.exchange.clone(),
        intent_queue: n.queue.clone(),
        dead_letter_exchange: n.dlx.clone(),
        dead_letter_queue: n.dlq.clone(),
        result_exchange: n.results.clone(),
        ..Default::default()
    };
    h5pay_worker::amqp::declare(conn, &settings).await?;
    Ok(())
}

async fn cleanup(conn: &Connection, n: &Names, redis_url: &str) {
    if let Ok(ch) = conn.create_channel().await {
        let unrouted = format!("{}.unrouted", n.results);
        for q in [&n.queue, &n.dlq, &unrouted] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [&n.exchange, &n.dlx, &n.results, &unrouted] {
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    if let Ok(client) = redis::Client::open(redis_url)
        && let Ok(mut c) = client.get_multiplexed_async_connection().await
    {
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", n.key_prefix))
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut c)
                .await
            else {
                break;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> =
                    redis::cmd("UNLINK").arg(keys).query_async(&mut c).await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// Runs `--warmup` intents through the same path, unmeasured.
async fn warm_up(conn: &Connection, n: &Names, opts: &Opts) -> anyhow::Result<()> {
    if opts.warmup == 0 {
        return Ok(());
    }
    let warm = Opts {
        intents: opts.warmup,
        latency_trace: None,
        ..opts.clone()
    };
    drive(conn, n, &warm, &format!("{}-warmup", n.id)).await?;
    Ok(())
}

/// Publishes `count` intents (at `rate`/s, or as fast as confirms allow)
/// and waits for every result event. Returns (seconds, latencies in ms).
async fn drive(
    conn: &Connection,
    n: &Names,
    opts: &Opts,
    run_tag: &str,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let (count, rate) = (opts.intents, opts.rate);
    // Results: an exclusive queue, auto-ack, bound before publishing.
    let rch = conn.create_channel().await?;
    let q = rch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    rch.queue_bind(
        q.name().clone(),
        n.results.as_str().into(),
        "h5pay.result.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut results = rch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;

    let published: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; count]));
    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = n.exchange.clone();
    let pub_times = published.clone();
    let tag = run_tag.to_owned();
    let publisher = tokio::spawn(async move {
        let mut pending = FuturesUnordered::new();
        let started = Instant::now();
        for i in 0..count {
            if rate > 0 {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let body = serde_json::to_vec(&json!({
                "pay_trace_no": format!("{tag}-{i}"), "mch_no": "BENCH01", "pay_type": "wechat",
                "total_amount": 100 + (i % 1000) as u64, "metadata": {"i": i}
            }))?;
            if let Ok(mut t) = pub_times.lock() {
                t[i] = Some(Instant::now());
            }
            let confirm = pch
                .basic_publish(
                    exchange.as_str().into(),
                    "h5pay.intent.bench".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            pending.push(confirm);
            while pending.len() >= 2000 {
                if let Some(r) = pending.next().await {
                    r?;
                }
            }
        }
        while let Some(r) = pending.next().await {
            r?;
        }
        anyhow::Ok(())
    });

    let mut latencies = Vec::with_capacity(count);
    let mut trace = Vec::with_capacity(count);
    let mut seen = vec![false; count];
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120 + (count as u64 / 500));
    let prefix = format!("{run_tag}-");
    while latencies.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = match tokio::time::timeout(left, results.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => bail!("result consumer: {e}"),
            _ => bail!("only {} of {count} result events arrived", latencies.len()),
        };
        let now = Instant::now();
        let Ok(ev) = serde_json::from_slice::<Value>(&d.data) else {
            continue;
        };
        let Some(i) = ev["pay_trace_no"]
            .as_str()
            .and_then(|t| t.strip_prefix(&prefix))
            .and_then(|t| t.parse::<usize>().ok())
        else {
            continue;
        };
        if i >= count || seen[i] {
            continue;
        }
        if ev["status"] != "ready" {
            bail!("intent {i} ended {}: {}", ev["status"], ev["error"]);
        }
        seen[i] = true;
        let sent = published.lock().ok().and_then(|t| t[i]);
        if let Some(sent) = sent {
            first = Some(first.map_or(sent, |f: Instant| f.min(sent)));
            latencies.push(now.duration_since(sent).as_secs_f64() * 1000.0);
            trace.push((i, now.duration_since(sent).as_secs_f64() * 1000.0));
        }
        last = now;
    }
    publisher.await??;
    let first_publish = published
        .lock()
        .ok()
        .and_then(|t| t.iter().flatten().min().copied())
        .or(first)
        .unwrap_or(last);
    let seconds = last.duration_since(first_publish).as_secs_f64();
    if let Some(prefix) = &opts.latency_trace {
        let mut path = prefix.clone().into_os_string();
        path.push(format!(".{run_tag}"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        trace.sort_unstable_by_key(|&(i, _)| i);
        for (i, l) in &trace {
            writeln!(f, "{i} {l:.2}")?;
        }
        eprintln!("latency trace: {}", PathBuf::from(path).display());
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok((seconds, latencies))
}

fn report(what: &str, opts: &Opts, seconds: f64, lat: &[f64], proc: (u64, f64)) -> RunReport {
    let (count, (rss_kib, cpu)) = (opts.intents, proc);
    RunReport {
        what: what.to_owned(),
        intents: count,
        latency_ms: opts.latency_ms,
        prefetch: opts.prefetch,
        rate: opts.rate,
        seconds,
        intents_per_sec: count as f64 / seconds.max(1e-9),
        p50_ms: percentile(lat, 0.50),
        p99_ms: percentile(lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
        peak_rss_mib: rss_kib as f64 / 1024.0,
        cpu_secs: cpu,
        cpu_us_per_intent: cpu * 1e6 / count as f64,
    }
}

async fn bench(opts: Opts) -> anyhow::Result<()> {
    let bin = worker_bin(&opts)?;
    let dir = TempDir::new()?;
    let conn = Connection::connect(&opts.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| "RabbitMQ (make services)")?;

    // One sandbox for both runs, in its own process.
    let sandbox_port = free_port()?;
    let sandbox_cfg = dir.path().join("sandbox.toml");
    std::fs::write(
        &sandbox_cfg,
        format!(
            "[[institutions]]\ninst_no = \"60000001\"\nkey = \"{SANDBOX_KEY}\"\n[log]\nlevel = \"warn\"\n"
        ),
    )?;
    let _sandbox = ChildGuard(
        Command::new(&bin)
            .args([
                "sandbox",
                "--listen",
                &format!("127.0.0.1:{sandbox_port}"),
                "--latency-ms",
                &opts.latency_ms.to_string(),
                "--config",
            ])
            .arg(&sandbox_cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the sandbox")?,
    );
    wait_port(sandbox_port).await?;
    let gateway = format!(
        "http://127.0.0.1:{sandbox_port}{}",
        h5pay_worker::sandbox::PAY_PATH
    );
    let mut reports = Vec::new();
    // Worker and skeleton runs alternate, so that the machine's noise hits both.
    for run in 1..=opts.runs {
        if opts.runs > 1 {
            eprintln!("run {run} of {}", opts.runs);
        }
        if !opts.no_worker {
            reports.push(run_worker(&opts, &conn, &bin, &dir, &gateway).await?);
        }
        if !opts.no_skeleton {
            reports.push(run_skeleton(&opts, &conn, &gateway).await?);
        }
    }

    let mut out = std::io::stdout();
    writeln!(
        out,
        "{:<9} {:>8} {:>7} {:>8} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "run",
        "intents",
        "lat_ms",
        "prefetch",
        "rate",
        "intents/s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "rss_MiB",
        "cpu_us/int"
    )?;
    for r in &reports {
        writeln!(
            out,
            "{:<9} {:>8} {:>7} {:>8} {:>6} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1}",
            r.what,
            r.intents,
            r.latency_ms,
            r.prefetch,
            r.rate,
            r.intents_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.peak_rss_mib,
            r.cpu_us_per_intent
        )?;
    }
    let median = |what: &str| -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = reports
            .iter()
            .filter(|r| r.what == what)
            .map(|r| r.intents_per_sec)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        Some((*v.get(v.len() / 2)?, *v.first()?, *v.last()?))
    };
    if opts.runs > 1 {
        for what in ["worker", "skeleton"] {
            if let Some((m, lo, hi)) = median(what) {
                writeln!(
                    out,
                    "{what}: median {m:.0} intents/s (min {lo:.0}, max {hi:.0}) over {} runs",
                    opts.runs
                )?;
            }
        }
    }
    if let (Some((w, ..)), Some((s, ..))) = (median("worker"), median("skeleton")) {
        writeln!(
            out,
            "worker / skeleton throughput (medians): {:.2}",
            w / s.max(1e-9)
        )?;
    }
    if let Some(path) = &opts.json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for r in &reports {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
    }
    let _ = conn.close(200, "bench done".into()).await;
    Ok(())
}

async fn run_worker(
    opts: &Opts,
    conn: &Connection,
    bin: &std::path::Path,
    dir: &TempDir,
    gateway: &str,
) -> anyhow::Result<RunReport> {
    let n = Names::new("w");
    declare(conn, &n, &opts.queue_type).await?;
    let admin_port = free_port()?;
    let cfg = dir.path().join("worker.toml");
    std::fs::write(&cfg, config_toml(opts, &n, gateway, admin_port))?;
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the worker")?;
    let pid = child.id();
    let worker = ChildGuard(child);
    wait_ready(admin_port).await?;
    eprintln!(
        "worker: {} intents, gateway latency {} ms, prefetch {}{}",
        opts.intents,
        opts.latency_ms,
        opts.prefetch,
        if opts.rate > 0 {
            format!(", paced at {}/s", opts.rate)
        } else {
            String::new()
        }
    );
    let r = measure("worker", conn, &n, opts, pid).await;
    drop(worker);
    cleanup(conn, &n, &opts.redis_url).await;
    r
}

async fn run_skeleton(opts: &Opts, conn: &Connection, gateway: &str) -> anyhow::Result<RunReport> {
    let n = Names::new("s");
    declare(conn, &n, &opts.queue_type).await?;
    let me = std::env::current_exe()?;
    let child = Command::new(me)
        .args([
            "--prefetch",
            &opts.prefetch.to_string(),
            "--amqp-url",
            &opts.amqp_url,
            "--redis-url",
            &opts.redis_url,
        ])
        .args([
            "skeleton",
            "--queue",
            &n.queue,
            "--result-exchange",
            &n.results,
            "--gateway",
            gateway,
            "--key-prefix",
            &n.key_prefix,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the skeleton")?;
    let pid = child.id();
    let skel = ChildGuard(child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("skeleton: {} intents", opts.intents);
    let r = measure("skeleton", conn, &n, opts, pid).await;
    drop(skel);
    cleanup(conn, &n, &opts.redis_url).await;
    r
}

/// One measured run against a started process `pid`: warm-up, then the
/// intents, then its peak RSS and the CPU time of the measured part.
async fn measure(
    what: &str,
    conn: &Connection,
    n: &Names,
    opts: &Opts,
    pid: u32,
) -> anyhow::Result<RunReport> {
    warm_up(conn, n, opts).await?;
    let (_, cpu_before) = proc_stats(pid);
    let (secs, lat) = drive(conn, n, opts, &n.id).await?;
    let (hwm, cpu_after) = proc_stats(pid);
    Ok(report(
        what,
        opts,
        secs,
        &lat,
        (hwm, cpu_after - cpu_before),
    ))
}

/// Per-stage time sums of the skeleton (µs), printed as means every 5000
/// intents: where an intent's prefetch slot goes besides the gateway.
static STAGE_US: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static STAGE_N: AtomicU64 = AtomicU64::new(0);

/// The I/O of the worker's pipeline and nothing else: consume, claim
/// (1 script), one HTTP POST, store (1 script), confirmed publish, mark
/// (1 script), ack (through the worker's settler).
async fn skeleton(
    opts: Opts,
    queue: String,
    result_exchange: String,
    gateway: String,
    key_prefix: String,
) -> anyhow::Result<()> {
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
    let claim = Arc::new(redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end redis.call('HSET', KEYS[1], 'own', ARGV[1], 'st', 'c') redis.call('EXPIRE', KEYS[1], 3600) return 1",
    ));
    let store = Arc::new(redis::Script::new(
        "if redis.call('HGET', KEYS[1], 'own') ~= ARGV[1] then return 0 end redis.call('HSET', KEYS[1], 'st', 'd', 'ev', ARGV[2]) return 1",
    ));
    let mark = Arc::new(redis::Script::new(
        "redis.call('HSET', KEYS[1], 'cf', '1') return 1",
    ));
    let key = SecretString::from(SANDBOX_KEY);
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "skeleton".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let shared = Arc::new((pch, http, gateway, result_exchange, key_prefix, key));
    // Acks are settled as the worker settles them (contiguous ones coalesced).
    let settler = Settler::start();
    while let Some(d) = consumer.next().await {
        let d = d?;
        settler.delivered(d.delivery_tag);
        let settler = settler.clone();
        let shared = shared.clone();
        let (claim, store, mark) = (claim.clone(), store.clone(), mark.clone());
        let mut redis = redis.clone();
        tokio::spawn(async move {
            let mut t = Instant::now();
            let mut lap = |i: usize| {
                let now = Instant::now();
                STAGE_US[i].fetch_add((now - t).as_micros() as u64, Relaxed);
                t = now;
            };
            let (pch, http, gateway, result_exchange, key_prefix, key) = &*shared;
            let v: Value = serde_json::from_slice(&d.data).unwrap_or_default();
            let trace = v["pay_trace_no"].as_str().unwrap_or("x").to_owned();
            let k = format!("{key_prefix}:{trace}");
            let _: i64 = claim
                .key(&k)
                .arg("tok")
                .invoke_async(&mut redis)
                .await
                .unwrap_or(0);
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
                req.insert(f.into(), json!(val));
            }
            let s = h5pay_worker::gateway::sign::sign(&req, key);
            req.insert("sign".into(), json!(s));
            let body = serde_json::to_vec(&req).unwrap_or_default();
            let answer = match http
                .post(gateway.as_str())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.bytes().await.unwrap_or_default(),
                Err(_) => Default::default(),
            };
            lap(1);
            let _: i64 = store
                .key(&k)
                .arg("tok")
                .arg(answer.as_ref())
                .invoke_async(&mut redis)
                .await
                .unwrap_or(0);
            lap(2);
            let event = serde_json::to_vec(&json!({"pay_trace_no": trace, "status": "ready"}))
                .unwrap_or_default();
            if let Ok(c) = pch
                .basic_publish(
                    result_exchange.as_str().into(),
                    "h5pay.result.ready.BENCH01".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &event,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
            {
                let _ = c.await;
            }
            lap(3);
            let _: i64 = mark.key(&k).invoke_async(&mut redis).await.unwrap_or(0);
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
                    "skeleton stage means over {n} intents, ms (claim http store publish+confirm mark ack): {}",
                    avg.join(" ")
                );
            }
        });
    }
    Ok(())
}
