//! Driving a run: its own topology and keys, the warm-up, publishing the
//! intents and timing every result event.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use serde_json::{Value, json};

use crate::Opts;
use crate::procfs::{CpuOf, cpu_of, machine_busy_secs, proc_stats};
use crate::report::{RunReport, report};
use crate::sample::EventSample;

/// Names of one run: unique, cleaned up afterwards.
#[derive(Clone)]
pub struct Names {
    pub id: String,
    /// The run's own exchanges and queues.
    pub amqp: h5pay_worker::config::AmqpSettings,
    pub key_prefix: String,
    /// The run's first `ready` event (see `sample.rs`).
    pub sample: Arc<OnceLock<EventSample>>,
}

impl Names {
    pub fn new(tag: &str, opts: &Opts) -> Names {
        let id = format!("{tag}-{}", &h5pay_worker::claim::new_token()[..8]);
        let base = h5pay_worker::config::AmqpSettings {
            url: h5pay_worker::config::SecretUrl::new(opts.amqp_url.clone()),
            queue_type: if opts.queue_type == "classic" {
                h5pay_worker::config::QueueType::Classic
            } else {
                h5pay_worker::config::QueueType::Quorum
            },
            ..Default::default()
        };
        Names {
            amqp: base.isolated(&format!("h5pay-bench-{id}")),
            key_prefix: format!("h5pay-bench:{id}"),
            sample: Arc::default(),
            id,
        }
    }
}

pub async fn declare(conn: &Connection, n: &Names) -> anyhow::Result<()> {
    h5pay_worker::amqp::declare(conn, &n.amqp).await?;
    Ok(())
}

/// Removes the run's topology and keys.
pub async fn cleanup(conn: &Connection, n: &Names, redis_url: &str) {
    h5pay_worker::amqp::topology::remove(conn, &n.amqp).await;
    let _ = h5pay_worker::claim::remove_keys(redis_url, &n.key_prefix).await;
}

/// A queue of this process's own (exclusive, auto-ack, gone with its
/// channel) bound to `exchange` with `key`, and its consumer.
pub async fn subscribe(
    conn: &Connection,
    exchange: &str,
    key: &str,
) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
    let ch = conn.create_channel().await?;
    let q = h5pay_worker::amqp::private_queue(&ch).await?;
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let consumer = ch
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
    Ok((ch, consumer))
}

/// Persistent publishes whose confirms are awaited as they come, at most
/// 2000 at once: the broker kept busy, memory bounded.
#[derive(Default)]
pub struct Window(FuturesUnordered<PublisherConfirm>);

impl Window {
    pub async fn publish(
        &mut self,
        ch: &Channel,
        exchange: &str,
        key: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        self.0.push(confirm);
        while self.0.len() >= 2000 {
            if let Some(r) = self.0.next().await {
                r?;
            }
        }
        Ok(())
    }

    /// Waits for every confirm still awaited.
    pub async fn drain(mut self) -> anyhow::Result<()> {
        while let Some(r) = self.0.next().await {
            r?;
        }
        Ok(())
    }
}

/// Runs `--warmup` intents through the same path, unmeasured.
pub async fn warm_up(conn: &Connection, n: &Names, opts: &Opts) -> anyhow::Result<()> {
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
pub async fn drive(
    conn: &Connection,
    n: &Names,
    opts: &Opts,
    run_tag: &str,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let (count, rate, amount) = (opts.intents, opts.rate, opts.amount);
    // Results: bound before publishing.
    let (_rch, mut results) = subscribe(conn, &n.amqp.result_exchange, "h5pay.result.#").await?;

    let published: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; count]));
    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = n.amqp.intent_exchange.clone();
    let pub_times = published.clone();
    let tag = run_tag.to_owned();
    let publisher = tokio::spawn(async move {
        let mut pending = Window::default();
        let started = Instant::now();
        for i in 0..count {
            // Paced: latency counts from when the intent was due, not from
            // when a late publisher got to it (no coordinated omission).
            let due = (rate > 0).then(|| started + Duration::from_secs_f64(i as f64 / rate as f64));
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            let body = serde_json::to_vec(&json!({
                "pay_trace_no": format!("{tag}-{i}"), "mch_no": "BENCH01", "pay_type": "wechat",
                "total_amount": amount.unwrap_or(100 + (i % 1000) as u64), "metadata": {"i": i}
            }))?;
            if let Ok(mut t) = pub_times.lock() {
                t[i] = Some(due.unwrap_or_else(Instant::now));
            }
            pending
                .publish(&pch, &exchange, "h5pay.intent.bench", &body)
                .await?;
        }
        pending.drain().await
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
        if n.sample.get().is_none()
            && let Some(ev) = ev["pay_trace_no"]
                .as_str()
                .and_then(|t| EventSample::of(&d, t))
        {
            let _ = n.sample.set(ev);
        }
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

/// One measured run against a started process `pid`: warm-up, then the
/// intents, then its peak RSS and the CPU time of the measured part, and
/// where the rest of the machine's CPU went meanwhile.
pub async fn measure(
    what: &str,
    conn: &Connection,
    n: &Names,
    opts: &Opts,
    pid: u32,
    sandbox_pid: u32,
) -> anyhow::Result<RunReport> {
    warm_up(conn, n, opts).await?;
    let before = MachineCpu::now(pid, sandbox_pid);
    let (secs, lat) = drive(conn, n, opts, &n.id).await?;
    let after = MachineCpu::now(pid, sandbox_pid);
    let mut r = report(
        what,
        opts,
        secs,
        &lat,
        (after.subject_hwm_kib, after.subject - before.subject),
    );
    r.others = after.since(&before, opts.intents);
    Ok(r)
}

/// CPU seconds so far: the measured process, the machine's other parts on
/// the path, and the whole machine.
struct MachineCpu {
    subject: f64,
    /// The measured process's peak RSS (read with its CPU time).
    subject_hwm_kib: u64,
    broker: CpuOf,
    redis: CpuOf,
    sandbox: f64,
    bench: f64,
    machine: f64,
}

impl MachineCpu {
    fn now(pid: u32, sandbox_pid: u32) -> MachineCpu {
        let (subject_hwm_kib, subject) = proc_stats(pid);
        MachineCpu {
            subject,
            subject_hwm_kib,
            broker: cpu_of("beam.smp"),
            redis: cpu_of("redis-server"),
            sandbox: proc_stats(sandbox_pid).1,
            bench: proc_stats(std::process::id()).1,
            machine: machine_busy_secs(),
        }
    }

    fn since(&self, before: &MachineCpu, intents: usize) -> crate::report::Others {
        let per_intent = |secs: f64| secs * 1e6 / intents.max(1) as f64;
        crate::report::Others {
            broker_us: per_intent(self.broker.since(&before.broker)),
            redis_us: per_intent(self.redis.since(&before.redis)),
            sandbox_us: per_intent(self.sandbox - before.sandbox),
            bench_us: per_intent(self.bench - before.bench),
            machine_us: per_intent(self.machine - before.machine),
        }
    }
}
