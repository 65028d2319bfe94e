//! The processes a run starts (sandbox, worker, skeleton) and what /proc
//! says about them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use lapin::Connection;

use crate::driver::{Names, cleanup, declare, measure};
use crate::report::RunReport;
use crate::{Opts, SANDBOX_KEY};

pub use crate::net::free_port;
pub use crate::procfs::proc_stats;

pub fn worker_bin(opts: &Opts) -> anyhow::Result<PathBuf> {
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
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("h5pay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct ChildGuard(pub Child);

/// The sandbox gateway in a process of its own, and its pay URL.
pub async fn start_sandbox(
    bin: &std::path::Path,
    dir: &TempDir,
    latency_ms: u64,
) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let cfg = dir.path().join("sandbox.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[institutions]]\ninst_no = \"60000001\"\nkey = \"{SANDBOX_KEY}\"\n[log]\nlevel = \"warn\"\n"
        ),
    )?;
    let child = ChildGuard(
        Command::new(bin)
            .args([
                "sandbox",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--latency-ms",
                &latency_ms.to_string(),
                "--config",
            ])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the sandbox")?,
    );
    wait_port(port).await?;
    let gateway = format!("http://127.0.0.1:{port}{}", h5pay_worker::sandbox::PAY_PATH);
    Ok((child, gateway))
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn config_toml(opts: &Opts, n: &Names, gateway: &str, admin_port: u16) -> String {
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
retention_secs = 172800
wait_replicas = {wait_replicas}

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
        ex = n.amqp.intent_exchange,
        q = n.amqp.intent_queue,
        dlx = n.amqp.dead_letter_exchange,
        dlq = n.amqp.dead_letter_queue,
        res = n.amqp.result_exchange,
        prefetch = opts.prefetch,
        queue_type = opts.queue_type,
        redis = opts.redis_url,
        prefix = n.key_prefix,
        wait_replicas = opts.wait_replicas,
        level = opts.log_level,
    )
}

/// `bin command --config cfg`, its output discarded (the bench reads the
/// admin endpoints, not logs), killed when the guard drops.
pub fn spawn(
    bin: &std::path::Path,
    command: &str,
    cfg: &std::path::Path,
) -> std::io::Result<ChildGuard> {
    Command::new(bin)
        .args([command, "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(ChildGuard)
}

pub async fn wait_ready(admin_port: u16) -> anyhow::Result<()> {
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

pub async fn wait_port(port: u16) -> anyhow::Result<()> {
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

/// A worker run; `reconcile`: with the reconciler on (every payment's first
/// check scheduled before its ack) or off.
pub async fn run_worker(
    opts: &Opts,
    conn: &Connection,
    bin: &std::path::Path,
    dir: &TempDir,
    gateway: &str,
    reconcile: bool,
    sandbox_pid: u32,
) -> anyhow::Result<RunReport> {
    let n = Names::new("w", opts);
    declare(conn, &n).await?;
    let admin_port = free_port()?;
    let cfg = dir.path().join("worker.toml");
    std::fs::write(
        &cfg,
        config_toml(opts, &n, gateway, admin_port)
            + &format!("\n[reconcile]\nenabled = {reconcile}\n"),
    )?;
    let worker = spawn(bin, "run", &cfg).context("starting the worker")?;
    let pid = worker.0.id();
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
    let what = if reconcile { "worker" } else { "worker-rc-off" };
    let r = measure(what, conn, &n, opts, pid, sandbox_pid).await;
    drop(worker);
    // The first worker run leaves its event for the skeleton runs.
    let sample = sample_path(dir);
    if let Some(ev) = n.sample.get()
        && !sample.exists()
    {
        ev.write(&sample)?;
    }
    cleanup(conn, &n, &opts.redis_url).await;
    r
}

/// Where a worker run leaves a result event of its own for the skeleton.
fn sample_path(dir: &TempDir) -> PathBuf {
    dir.path().join("event-sample.json")
}

pub async fn run_skeleton(
    opts: &Opts,
    conn: &Connection,
    dir: &TempDir,
    gateway: &str,
    sandbox_pid: u32,
) -> anyhow::Result<RunReport> {
    let n = Names::new("s", opts);
    declare(conn, &n).await?;
    let bin = match &opts.skeleton_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut cmd = Command::new(bin);
    cmd.args([
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
        &n.amqp.intent_queue,
        "--result-exchange",
        &n.amqp.result_exchange,
        "--gateway",
        gateway,
        "--key-prefix",
        &n.key_prefix,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    let sample = sample_path(dir);
    if sample.exists() {
        cmd.arg("--event-sample").arg(sample);
    }
    let child = cmd.spawn().context("starting the skeleton")?;
    let pid = child.id();
    let skel = ChildGuard(child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("skeleton: {} intents", opts.intents);
    let r = measure("skeleton", conn, &n, opts, pid, sandbox_pid).await;
    drop(skel);
    cleanup(conn, &n, &opts.redis_url).await;
    r
}
