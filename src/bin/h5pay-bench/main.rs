//! `h5pay-bench`: the end-to-end benchmark (see BENCHMARKS.md).
//!
//! Starts the sandbox gateway and the worker as child processes (so their
//! CPU and memory are their own), publishes intents from a separate
//! connection with publisher confirms, and measures from the first publish
//! to the last result event: throughput, per-intent latency percentiles,
//! the worker's peak RSS and CPU time. In the same run it measures this
//! machine's ceiling with a pipeline skeleton (`h5pay-bench skeleton`, also
//! a child process) that does only the worker's I/O — consume, the same
//! Redis scripts and round trips, one HTTP POST to the sandbox, a confirmed
//! publish of a result event of the worker's own (same bytes, same
//! properties), an ack — and reports the worker as a ratio of it. Each run
//! also shows where the rest of the machine's CPU went per intent (broker,
//! Redis, sandbox, the bench itself), so that a ratio can be read.
//!
//! `h5pay-bench notify` measures the notify receiver instead
//! ([`notify_load`]).

mod checks;
mod driver;
mod notify_load;
mod timers;
// The one free_port of the project, shared with the tests.
#[path = "../../../tests/common/net.rs"]
mod net;
mod processes;
mod procfs;
mod report;
mod sample;
mod skeleton;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lapin::{Connection, ConnectionProperties};

use processes::{TempDir, run_skeleton, run_worker, start_sandbox, worker_bin};

pub const SANDBOX_KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

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
pub struct Opts {
    /// Intents per measured run.
    #[arg(long, default_value_t = 20_000)]
    pub intents: usize,
    /// Sandbox gateway latency.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// Paced mode: publish at this rate (intents/s) instead of as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Skip the skeleton run.
    #[arg(long)]
    pub no_skeleton: bool,
    /// The intent queue's type: quorum (the default, as in production) or classic.
    #[arg(long, default_value = "quorum")]
    pub queue_type: String,
    /// Repeat worker and skeleton runs (alternating) and report medians.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Skip the worker run.
    #[arg(long)]
    pub no_worker: bool,
    /// The h5pay-worker binary (default: next to this one).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// The binary the sandbox gateway runs from (default: the worker's).
    /// Comparing two workers, give both the same sandbox: it shares the cores.
    #[arg(long)]
    pub sandbox_bin: Option<PathBuf>,
    /// The binary the skeleton runs from (default: this one), e.g. a wrapper
    /// that profiles it; it is given the skeleton's arguments.
    #[arg(long)]
    pub skeleton_bin: Option<PathBuf>,
    /// Append one JSON line per run to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Intents processed (at the same rate) before each measured run and left
    /// out of it: connections, pools, caches and the allocator warm up, as
    /// they are in a worker that has been running.
    #[arg(long, default_value_t = 2000)]
    pub warmup: usize,
    /// Write each run's per-intent latencies ("index ms", in publish order)
    /// to PREFIX.<run name>, to see whether a tail is spread out or a stall.
    #[arg(long, value_name = "PREFIX")]
    pub latency_trace: Option<PathBuf>,
    /// Worker log level during the run (the worker logs one line per intent at info).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Worker runs with the reconciler on, off, or both (alternating): the
    /// cost of scheduling every payment's first check.
    #[arg(long, value_enum, default_value = "both")]
    pub reconcile: Reconcile,
    /// The worker's `redis.wait_replicas`: a `WAIT` for this many replicas
    /// after each state write (`--redis-url` must then name a master with
    /// replicas; `scripts/redis-replica.sh` starts one beside the machine's).
    #[arg(long, default_value_t = 0)]
    pub wait_replicas: u32,
    /// Every intent's total_amount (a sandbox scenario); default: 100-1099.
    #[arg(long)]
    pub amount: Option<u64>,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reconcile {
    On,
    Off,
    Both,
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
        /// A result event of the worker's (body and properties) to publish
        /// for each intent; without it, a small stand-in event.
        #[arg(long)]
        event_sample: Option<PathBuf>,
    },
    /// The notify receiver under load: orders placed by the worker, then
    /// signed notifies at a fixed rate and at the maximum.
    Notify(notify_load::NotifyOpts),
    /// The reconciler: checks/s one replica sustains and the lag from due
    /// time to the payment event.
    Checks(checks::CheckOpts),
    /// What keeping a due check costs: a Redis sorted set against broker
    /// TTL queues.
    Timers(timers::TimerOpts),
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
            event_sample,
        }) => rt.block_on(skeleton::run(
            cli.opts,
            queue,
            result_exchange,
            gateway,
            key_prefix,
            event_sample,
        )),
        Some(Mode::Notify(n)) => rt.block_on(notify_load::run(cli.opts, n)),
        Some(Mode::Checks(c)) => rt.block_on(checks::run(cli.opts, c)),
        Some(Mode::Timers(t)) => rt.block_on(timers::run(cli.opts, t)),
        None => rt.block_on(bench(cli.opts)),
    }
}

/// The benchmark: one sandbox, then worker and skeleton runs, alternating.
async fn bench(opts: Opts) -> anyhow::Result<()> {
    let bin = worker_bin(&opts)?;
    let dir = TempDir::new()?;
    let conn = Connection::connect(&opts.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| "RabbitMQ (make services)")?;

    // One sandbox for both runs, in its own process.
    let sandbox_bin = opts.sandbox_bin.clone().unwrap_or_else(|| bin.clone());
    let (sandbox, gateway) = start_sandbox(&sandbox_bin, &dir, opts.latency_ms).await?;
    let sandbox_pid = sandbox.0.id();
    let mut reports = Vec::new();
    // Worker and skeleton runs alternate, so that the machine's noise hits both.
    for run in 1..=opts.runs {
        if opts.runs > 1 {
            eprintln!("run {run} of {}", opts.runs);
        }
        if !opts.no_worker {
            if opts.reconcile != Reconcile::Off {
                reports
                    .push(run_worker(&opts, &conn, &bin, &dir, &gateway, true, sandbox_pid).await?);
            }
            if opts.reconcile != Reconcile::On {
                reports.push(
                    run_worker(&opts, &conn, &bin, &dir, &gateway, false, sandbox_pid).await?,
                );
            }
        }
        if !opts.no_skeleton {
            reports.push(run_skeleton(&opts, &conn, &dir, &gateway, sandbox_pid).await?);
        }
    }

    report::print(&opts, &reports)?;
    let _ = conn.close(200, "bench done".into()).await;
    Ok(())
}
