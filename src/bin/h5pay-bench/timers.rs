//! `h5pay-bench timers`: what a due check costs to keep, measured both
//! ways the contract allows (§12), on this machine, before choosing:
//!
//! * Redis: `ZADD NX` per timer (the pipeline's one extra command), then the
//!   reconciler's pick-up script (`due.lua`: re-score to now + lease) and a
//!   `ZREM` per fired timer.
//! * RabbitMQ: a persistent publish (confirmed) per timer to a quorum queue
//!   with a per-queue TTL, dead-lettered at least once (3.10's
//!   `x-dead-letter-strategy = at-least-once`, which needs
//!   `x-overflow = reject-publish`) to a quorum queue that is consumed and
//!   acked.
//!
//! For each: timers per second end to end, and the CPU the server process
//! (redis-server, beam.smp) spent per timer, read from /proc.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

use crate::Opts;
use crate::driver::Window;
use crate::procfs::proc_stats;

#[derive(clap::Args, Clone)]
pub struct TimerOpts {
    /// Timers per way.
    #[arg(long, default_value_t = 20_000)]
    pub timers: usize,
    /// How long a timer waits before it fires.
    #[arg(long, default_value_t = 1000)]
    pub delay_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TimerReport {
    pub way: String,
    pub timers: usize,
    /// From the first schedule to the last fire, the delay left out.
    pub seconds: f64,
    pub timers_per_sec: f64,
    /// The server process's CPU per timer (schedule, fire, done).
    pub server_cpu_us_per_timer: f64,
    /// This process's CPU per timer (the client side).
    pub client_cpu_us_per_timer: f64,
}

/// The pid of the first process whose command line starts with `name`.
fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let first = cmd.split(|b| *b == 0).next()?;
        let exe = String::from_utf8_lossy(first);
        exe.rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with(name))
            .then_some(pid)
    })
}

fn cpu(pid: Option<u32>) -> f64 {
    pid.map(|p| proc_stats(p).1).unwrap_or(0.0)
}

fn own_cpu() -> f64 {
    proc_stats(std::process::id()).1
}

pub async fn run(opts: Opts, t: TimerOpts) -> anyhow::Result<()> {
    let redis = redis_way(&opts, &t).await.context("the Redis way")?;
    let broker = broker_way(&opts, &t).await.context("the RabbitMQ way")?;
    println!(
        "{:<40} {:>7} {:>9} {:>9} {:>16} {:>16}",
        "way", "timers", "seconds", "timers/s", "server_cpu_us/t", "client_cpu_us/t"
    );
    for r in [&redis, &broker] {
        println!(
            "{:<40} {:>7} {:>9.2} {:>9.0} {:>16.1} {:>16.1}",
            r.way,
            r.timers,
            r.seconds,
            r.timers_per_sec,
            r.server_cpu_us_per_timer,
            r.client_cpu_us_per_timer
        );
    }
    if let Some(path) = &opts.json {
        crate::report::append_json(path, &[redis, broker])?;
    }
    Ok(())
}

fn report(way: &str, n: usize, seconds: f64, server: f64, client: f64) -> TimerReport {
    TimerReport {
        way: way.to_owned(),
        timers: n,
        seconds,
        timers_per_sec: n as f64 / seconds.max(1e-9),
        server_cpu_us_per_timer: server * 1e6 / n as f64,
        client_cpu_us_per_timer: client * 1e6 / n as f64,
    }
}

async fn redis_way(opts: &Opts, t: &TimerOpts) -> anyhow::Result<TimerReport> {
    let client = redis::Client::open(opts.redis_url.as_str())?;
    let conn = client.get_multiplexed_async_connection().await?;
    let key = format!(
        "h5pay-bench:timers:{}",
        &h5pay_worker::claim::new_token()[..8]
    );
    let due = redis::Script::new(include_str!("../../reconcile/due.lua"));
    let server = pid_of("redis-server");
    let (s0, c0) = (cpu(server), own_cpu());
    let started = Instant::now();
    let fire_at = chrono::Utc::now().timestamp_millis() + i64::try_from(t.delay_ms).unwrap_or(0);
    // Schedule: one ZADD NX per timer, 256 in flight (the pipeline's shape).
    let mut pending = FuturesUnordered::new();
    for i in 0..t.timers {
        let mut c = conn.clone();
        let key = key.clone();
        pending.push(async move {
            redis::cmd("ZADD")
                .arg(&key)
                .arg("NX")
                .arg(fire_at)
                .arg(format!("60000001:BENCH01:T-{i}"))
                .query_async::<i64>(&mut c)
                .await
        });
        while pending.len() >= 256 {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let scheduled = started.elapsed();
    tokio::time::sleep_until((started + Duration::from_millis(t.delay_ms)).into()).await;
    // Fire: pick-ups of 256 with a lease, then a ZREM per timer (done).
    let fire_started = Instant::now();
    let mut fired = 0usize;
    let mut c = conn.clone();
    while fired < t.timers {
        let reply: Vec<String> = due
            .key(&key)
            .arg(30_000)
            .arg(256)
            .invoke_async(&mut c)
            .await?;
        let members: Vec<String> = reply.iter().skip(1).step_by(2).cloned().collect();
        if members.is_empty() {
            if fire_started.elapsed() > Duration::from_secs(60) {
                bail!("only {fired} of {} timers fired", t.timers);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let mut done = FuturesUnordered::new();
        for m in members {
            let mut c = conn.clone();
            let key = key.clone();
            done.push(async move {
                redis::cmd("ZREM")
                    .arg(&key)
                    .arg(m)
                    .query_async::<i64>(&mut c)
                    .await
            });
        }
        while let Some(r) = done.next().await {
            r?;
            fired += 1;
        }
    }
    let seconds = scheduled.as_secs_f64() + fire_started.elapsed().as_secs_f64();
    let (s1, c1) = (cpu(server), own_cpu());
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
    Ok(report(
        "Redis sorted set (ZADD, due.lua, ZREM)",
        t.timers,
        seconds,
        s1 - s0,
        c1 - c0,
    ))
}

async fn broker_way(opts: &Opts, t: &TimerOpts) -> anyhow::Result<TimerReport> {
    let conn = Connection::connect(&opts.amqp_url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let id = &h5pay_worker::claim::new_token()[..8];
    let (wait_q, fire_q) = (
        format!("h5pay-bench-timers-{id}.wait"),
        format!("h5pay-bench-timers-{id}.fire"),
    );
    let quorum = |extra: &[(&str, AMQPValue)]| {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        for (k, v) in extra {
            args.insert((*k).into(), v.clone());
        }
        args
    };
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(fire_q.as_str().into(), durable, quorum(&[]))
        .await?;
    ch.queue_declare(
        wait_q.as_str().into(),
        durable,
        quorum(&[
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(i64::try_from(t.delay_ms).unwrap_or(1000)),
            ),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(fire_q.as_str().into()),
            ),
            (
                "x-dead-letter-strategy",
                AMQPValue::LongString("at-least-once".into()),
            ),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    )
    .await?;
    let server = pid_of("beam.smp");
    let (s0, c0) = (cpu(server), own_cpu());
    let started = Instant::now();
    let cch = conn.create_channel().await?;
    cch.basic_qos(500, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            fire_q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let n = t.timers;
    let firing = tokio::spawn(async move {
        let mut fired = 0usize;
        while fired < n {
            match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    d.acker.ack(BasicAckOptions::default()).await?;
                    fired += 1;
                }
                _ => bail!("only {fired} of {n} timers fired"),
            }
        }
        anyhow::Ok(())
    });
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut pending = Window::default();
    for i in 0..t.timers {
        let body = format!("60000001:BENCH01:T-{i}");
        pending.publish(&ch, "", &wait_q, body.as_bytes()).await?;
    }
    pending.drain().await?;
    firing.await??;
    // The delay itself is not work: leave it out, like the Redis way's.
    let seconds = (started.elapsed().as_secs_f64() - t.delay_ms as f64 / 1000.0).max(1e-3);
    let (s1, c1) = (cpu(server), own_cpu());
    for q in [&wait_q, &fire_q] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "timers done".into()).await;
    Ok(report(
        "RabbitMQ TTL quorum queue, DLX at least once",
        t.timers,
        seconds,
        s1 - s0,
        c1 - c0,
    ))
}
