//! What a run measured, and the table, medians and JSON lines printed from it.

use std::io::Write;

use crate::Opts;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub what: String,
    pub intents: usize,
    pub latency_ms: u64,
    pub prefetch: u16,
    pub rate: u64,
    pub seconds: f64,
    pub intents_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    pub max_ms: f64,
    pub peak_rss_mib: f64,
    pub cpu_secs: f64,
    pub cpu_us_per_intent: f64,
    /// The rest of the machine's CPU per intent during the measured part.
    pub others: Others,
}

/// CPU per intent (µs) of what shares the machine with the measured
/// process: an intent costs the broker, Redis and the sandbox something in
/// either run, and the ratio is only the worker's own work if those match.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Others {
    pub broker_us: f64,
    pub redis_us: f64,
    pub sandbox_us: f64,
    /// h5pay-bench itself: publishing intents, reading result events.
    pub bench_us: f64,
    /// Every process of the machine (busy time of /proc/stat).
    pub machine_us: f64,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A run's figures.
pub fn report(what: &str, opts: &Opts, seconds: f64, lat: &[f64], proc: (u64, f64)) -> RunReport {
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
        others: Others::default(),
    }
}

/// The table on stdout, the medians over `--runs`, the JSON lines.
pub fn print(opts: &Opts, reports: &[RunReport]) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    writeln!(
        out,
        "{:<13} {:>8} {:>7} {:>8} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11}",
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
    for r in reports {
        writeln!(
            out,
            "{:<13} {:>8} {:>7} {:>8} {:>6} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1}",
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
    writeln!(
        out,
        "\nCPU per intent, µs, during each run: the measured process and what it shares the machine with"
    )?;
    writeln!(
        out,
        "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "run", "itself", "broker", "redis", "sandbox", "bench", "machine"
    )?;
    for r in reports {
        let o = &r.others;
        writeln!(
            out,
            "{:<13} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            r.what,
            r.cpu_us_per_intent,
            o.broker_us,
            o.redis_us,
            o.sandbox_us,
            o.bench_us,
            o.machine_us
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
        for what in ["worker", "worker-rc-off", "skeleton"] {
            if let Some((m, lo, hi)) = median(what) {
                writeln!(
                    out,
                    "{what}: median {m:.0} intents/s (min {lo:.0}, max {hi:.0}) over {} runs",
                    opts.runs
                )?;
            }
        }
    }
    if let (Some((on, ..)), Some((off, ..))) = (median("worker"), median("worker-rc-off")) {
        writeln!(
            out,
            "reconciler on / off throughput (medians): {:.3} (the contract's bar: at least 0.85)",
            on / off.max(1e-9)
        )?;
    }
    if let (Some((w, ..)), Some((s, ..))) = (median("worker"), median("skeleton")) {
        writeln!(
            out,
            "worker / skeleton throughput (medians): {:.3}",
            w / s.max(1e-9)
        )?;
    }
    if let Some(path) = &opts.json {
        append_json(path, reports)?;
    }
    Ok(())
}

/// One JSON line per report, appended to `path`.
pub fn append_json<T: serde::Serialize>(
    path: &std::path::Path,
    reports: &[T],
) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for r in reports {
        writeln!(f, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}
