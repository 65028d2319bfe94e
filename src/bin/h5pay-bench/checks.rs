//! `h5pay-bench checks`: the reconciler of one worker replica against the
//! sandbox. Orders that pay by themselves without a notify (sandbox
//! scenario 4021) are placed by the worker; each one's first check, due
//! `--check-after-secs` after it was placed, queries it and publishes its
//! `paid` event. Two phases:
//!
//! * paced: checks fall due at `--rate`/s, below saturation: the lag from
//!   due time to the `paid` event (query, transition and confirmed publish
//!   included);
//! * burst: `--burst` orders placed as fast as the worker goes, so their
//!   checks fall due together: the checks per second the replica sustains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use crate::Opts;
use crate::driver::{Names, cleanup, declare, drive, subscribe};
use crate::processes::{
    TempDir, config_toml, free_port, proc_stats, spawn, start_sandbox, wait_ready, worker_bin,
};
use crate::report::percentile;

#[derive(clap::Args, Clone)]
pub struct CheckOpts {
    /// Checks per second in the paced phase.
    #[arg(long, default_value_t = 300)]
    pub check_rate: u64,
    /// Payments in the paced phase.
    #[arg(long, default_value_t = 3000)]
    pub paced: usize,
    /// Payments in the burst phase.
    #[arg(long, default_value_t = 10_000)]
    pub burst: usize,
    /// When the first check is due after the order was placed.
    #[arg(long, default_value_t = 8)]
    pub check_after_secs: u64,
    /// The worker's `reconcile.concurrency` (checks in flight); raise it with
    /// the gateway's latency (`--latency-ms`).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub phase: String,
    pub payments: usize,
    /// Payments paid (events received) per second, from the first due time
    /// to the last event.
    pub checks_per_sec: f64,
    /// Due time → paid event received.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// The worker's own pick-up lag (`h5pay_reconcile_lag_seconds`), mean.
    pub pickup_lag_mean_ms: f64,
    pub worker_cpu_us_per_check: f64,
}

pub async fn run(opts: Opts, c: CheckOpts) -> anyhow::Result<()> {
    let bin = worker_bin(&opts)?;
    let dir = TempDir::new()?;
    let conn = Connection::connect(&opts.amqp_url, ConnectionProperties::default())
        .await
        .context("RabbitMQ (make services)")?;
    let names = Names::new("c", &opts);
    declare(&conn, &names).await?;
    let result = measure(&opts, &c, &conn, &bin, &dir, &names).await;
    cleanup(&conn, &names, &opts.redis_url).await;
    let _ = conn.close(200, "bench done".into()).await;
    let reports = result?;
    println!(
        "{:<8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>14} {:>13}",
        "phase",
        "payments",
        "checks/s",
        "lag_p50_ms",
        "lag_p99_ms",
        "lag_max_ms",
        "pickup_mean_ms",
        "cpu_us/check"
    );
    for r in &reports {
        println!(
            "{:<8} {:>8} {:>9.0} {:>10.0} {:>10.0} {:>10.0} {:>14.1} {:>13.1}",
            r.phase,
            r.payments,
            r.checks_per_sec,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.lag_max_ms,
            r.pickup_lag_mean_ms,
            r.worker_cpu_us_per_check
        );
    }
    if let Some(path) = &opts.json {
        crate::report::append_json(path, &reports)?;
    }
    Ok(())
}

async fn measure(
    opts: &Opts,
    c: &CheckOpts,
    conn: &Connection,
    bin: &std::path::Path,
    dir: &TempDir,
    names: &Names,
) -> anyhow::Result<Vec<CheckReport>> {
    let (_sandbox, gateway) = start_sandbox(bin, dir, opts.latency_ms).await?;
    let admin = free_port()?;
    let cfg = dir.path().join("worker.toml");
    let reconcile = format!(
        "\n[reconcile]\ncheck_after_secs = [{}]\nclose_unpaid = false\nmax_age_secs = 3600\nconcurrency = {}\n",
        c.check_after_secs, c.concurrency
    );
    std::fs::write(&cfg, config_toml(opts, names, &gateway, admin) + &reconcile)?;
    let worker = spawn(bin, "run", &cfg).context("starting the worker")?;
    let pid = worker.0.id();
    wait_ready(admin).await?;
    // Every order's ready event (its `occurred_at` is when it was placed,
    // the time the first check counts from) and its paid event, timed when
    // it arrives (while orders are still being placed).
    let (_ch, events) = subscribe(conn, &names.amqp.result_exchange, "h5pay.#").await?;
    let after_ms = i64::try_from(c.check_after_secs * 1000).unwrap_or(0);
    let seen_all: Arc<Mutex<HashMap<String, Timing>>> = Arc::default();
    let into = seen_all.clone();
    let collector = tokio::spawn(record_timings(events, after_ms, into));
    let mut reports = Vec::new();
    for (phase, count, rate) in [("paced", c.paced, c.check_rate), ("burst", c.burst, 0)] {
        let tag = format!("{}-{phase}-", names.id);
        eprintln!(
            "{phase}: {count} payments{}",
            if rate > 0 {
                format!(" at {rate}/s")
            } else {
                String::new()
            }
        );
        let (lag0_sum, lag0_n) = pickup_lag(admin).await;
        let (_, cpu0) = proc_stats(pid);
        let placing = Opts {
            intents: count,
            rate,
            amount: Some(4021),
            latency_trace: None,
            ..opts.clone()
        };
        drive(conn, names, &placing, &format!("{}-{phase}", names.id)).await?;
        // trace → (paid event received, check due), for the phase's paid
        // orders.
        let of_phase = || -> HashMap<String, (i64, i64)> {
            seen_all
                .lock()
                .map(|m| {
                    m.iter()
                        .filter(|(t, _)| t.starts_with(&tag))
                        .filter_map(|(t, v)| Some((t.clone(), (v.paid?, v.due?))))
                        .collect()
                })
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(120 + count as u64 / 50);
        let mut seen = of_phase();
        while seen.len() < count {
            if Instant::now() > deadline {
                collector.abort();
                bail!("{phase}: {} of {count} paid events", seen.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = of_phase();
        }
        let (_, cpu1) = proc_stats(pid);
        let (lag1_sum, lag1_n) = pickup_lag(admin).await;
        let first_due = seen.values().map(|(_, d)| *d).min().unwrap_or(0);
        let last = seen.values().map(|(r, _)| *r).max().unwrap_or(0);
        let mut lags: Vec<f64> = seen.values().map(|(r, d)| (r - d).max(0) as f64).collect();
        lags.sort_by(|a, b| a.total_cmp(b));
        let n_checks = (lag1_n - lag0_n).max(1.0);
        reports.push(CheckReport {
            phase: phase.to_owned(),
            payments: count,
            checks_per_sec: count as f64 / (((last - first_due).max(1)) as f64 / 1000.0),
            lag_p50_ms: percentile(&lags, 0.50),
            lag_p99_ms: percentile(&lags, 0.99),
            lag_max_ms: lags.last().copied().unwrap_or(0.0),
            pickup_lag_mean_ms: (lag1_sum - lag0_sum) * 1000.0 / n_checks,
            // The worker also placed the orders: its CPU per check includes
            // placing one order (measured alone by the main benchmark).
            worker_cpu_us_per_check: (cpu1 - cpu0) * 1e6 / count as f64,
        });
    }
    collector.abort();
    Ok(reports)
}

/// Records each order's due time (from its ready event) and when its paid
/// event (found by a query) arrived.
async fn record_timings(
    mut events: lapin::Consumer,
    after_ms: i64,
    into: Arc<Mutex<HashMap<String, Timing>>>,
) {
    while let Some(Ok(d)) = events.next().await {
        let now = chrono::Utc::now().timestamp_millis();
        let Ok(ev) = serde_json::from_slice::<Value>(&d.data) else {
            continue;
        };
        let trace = ev["pay_trace_no"].as_str().unwrap_or_default().to_owned();
        let placed = (ev["status"] == "ready")
            .then(|| ev["occurred_at"].as_str())
            .flatten()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        let paid = ev["state"] == "paid" && ev["source"] == "query";
        if let Ok(mut m) = into.lock() {
            let t = m.entry(trace).or_default();
            if let Some(p) = placed {
                t.due = Some(p + after_ms);
            }
            if paid && t.paid.is_none() {
                t.paid = Some(now);
            }
        }
    }
}

/// One order's times, ms since the epoch.
#[derive(Default)]
struct Timing {
    /// When its first check was due: placed (its ready event's
    /// `occurred_at`, ms precision) + `check_after_secs`. Not `pay_time`,
    /// which has whole seconds and would add up to a second of lag.
    due: Option<i64>,
    /// When its paid event (found by a query) arrived.
    paid: Option<i64>,
}

/// The worker's `h5pay_reconcile_lag_seconds` sum and count.
async fn pickup_lag(admin: u16) -> (f64, f64) {
    let text = match reqwest::get(format!("http://127.0.0.1:{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return (0.0, 0.0),
    };
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("h5pay_reconcile_lag_seconds_sum"),
        value("h5pay_reconcile_lag_seconds_count"),
    )
}
