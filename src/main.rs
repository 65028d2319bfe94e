//! The `h5pay-worker` binary: parses the command line and calls the
//! library. Errors end here as one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use h5pay_worker::cli::{self, publish::PublishArgs, sign::Verified};
use h5pay_worker::config::{Config, LogFormat, LogSettings};
use h5pay_worker::sandbox::{Sandbox, SandboxOptions};
use h5pay_worker::{admin, telemetry, worker::Worker};

#[derive(Parser)]
#[command(
    name = "h5pay-worker",
    version,
    about = "Payment intents from RabbitMQ → payable H5 links, exactly once per identity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Settings file (default: config/default.toml, else the built-in local defaults).
    #[arg(long, short = 'c', env = "H5PAY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker.
    Run(ConfigArg),
    /// Run the local gateway simulator.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Added to every answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Share of calls answered HTTP 503 at random (0.0-1.0).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Where payers reach the sandbox: the base of every code_url
        /// (default: http:// and the address it listens on).
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Publish intents (and with --wait, print their result events).
    Publish {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        mch_no: String,
        /// 300/400/600 or alipay/wechat/unionpay.
        #[arg(long)]
        pay_type: String,
        /// In fen.
        #[arg(long)]
        amount: String,
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Wait for the result events and print them, one JSON per line.
        #[arg(long)]
        wait: bool,
        /// pay_trace_no (with --count > 1, the prefix of `<prefix>-<i>`).
        #[arg(long)]
        pay_trace_no: Option<String>,
        #[arg(long)]
        inst_no: Option<String>,
        #[arg(long)]
        open_id: Option<String>,
        #[arg(long)]
        notify_url: Option<String>,
        #[arg(long)]
        pay_time: Option<String>,
        /// A JSON object echoed in the result.
        #[arg(long)]
        metadata: Option<String>,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Print the sign of a JSON object read from stdin, or check its `sign`.
    Sign {
        /// The key (visible in `ps`: prefer --key-env or --key-file).
        #[arg(long, conflicts_with_all = ["key_env", "key_file"])]
        key: Option<String>,
        #[arg(long, conflicts_with = "key_file")]
        key_env: Option<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Check the `sign` field instead: exit 0 if valid, 1 if not.
        #[arg(long)]
        verify: bool,
    },
    /// Sandbox + worker in one process: a tour of every outcome.
    Demo(ConfigArg),
    /// Inspect or replay the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Show what is in the DLQ and why.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Move messages back to the intent exchange.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        dry_run: bool,
        /// Also replay messages older than redis.retention_secs (their stored
        /// outcome may be gone: check the identity first).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("h5pay-worker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("h5pay-worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads settings, or prints the one-line reason and exits 2.
fn load(c: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load(c.config.as_deref()).map_err(|e| {
        eprintln!("h5pay-worker: {e}");
        ExitCode::from(2)
    })
}

fn quiet_logs(config: &Config) {
    // Tools print to the terminal: pretty, warnings only unless asked.
    telemetry::init_logging(&LogSettings {
        format: LogFormat::Pretty,
        level: if std::env::var_os("RUST_LOG").is_some() {
            config.settings.log.level.clone()
        } else {
            "warn".into()
        },
    });
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(c) => {
            let config = match load(&c) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            run(config, c).await
        }
        Command::Sandbox {
            listen,
            config,
            latency_ms,
            error_rate,
            public_url,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if !(0.0..=1.0).contains(&error_rate) {
                eprintln!("h5pay-worker: --error-rate must be between 0.0 and 1.0");
                return Ok(ExitCode::from(2));
            }
            if let Some(u) = &public_url
                && !matches!(url::Url::parse(u), Ok(p) if matches!(p.scheme(), "http" | "https"))
            {
                eprintln!("h5pay-worker: --public-url must be an absolute http(s) URL");
                return Ok(ExitCode::from(2));
            }
            telemetry::init_logging(&config.settings.log);
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("--listen {listen}"))?;
            let addr = listener.local_addr()?;
            let public_url = public_url.unwrap_or_else(|| h5pay_worker::sandbox::local_url(addr));
            let sandbox = Sandbox::new(
                config.institutions.clone(),
                SandboxOptions {
                    latency: Duration::from_millis(latency_ms),
                    error_rate,
                    public_url: public_url.clone(),
                    ..SandboxOptions::default()
                },
            );
            tracing::info!(%addr, %public_url, latency_ms, error_rate, "sandbox gateway listening");
            h5pay_worker::sandbox::serve(listener, sandbox, cli::stop_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            config,
            mch_no,
            pay_type,
            amount,
            count,
            wait,
            pay_trace_no,
            inst_no,
            open_id,
            notify_url,
            pay_time,
            metadata,
            timeout_secs,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            quiet_logs(&config);
            let metadata = match metadata
                .map(|m| serde_json::from_str::<serde_json::Value>(&m))
                .transpose()
            {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("h5pay-worker: --metadata is not JSON: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let args = PublishArgs {
                inst_no,
                mch_no,
                pay_type,
                amount,
                count,
                wait,
                pay_trace_no,
                open_id,
                notify_url,
                pay_time,
                metadata,
                timeout: Duration::from_secs(timeout_secs),
            };
            let mut out = std::io::stdout();
            let mut err = std::io::stderr();
            cli::publish::run(&config.settings.amqp, &args, &mut out, &mut err).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign {
            key,
            key_env,
            key_file,
            verify,
        } => sign(key, key_env, key_file, verify),
        Command::Demo(c) => {
            let config = match load(&c) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            // The demo dead-letters a body on purpose: only errors are news.
            telemetry::init_logging(&LogSettings {
                format: LogFormat::Pretty,
                level: std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            });
            let ok = cli::demo::run(config, &mut std::io::stdout()).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Dlq { action } => {
            let mut out = std::io::stdout();
            match action {
                DlqAction::List {
                    config,
                    limit,
                    json,
                } => {
                    let config = match load(&config) {
                        Ok(c) => c,
                        Err(code) => return Ok(code),
                    };
                    quiet_logs(&config);
                    cli::dlq::list(&config.settings.amqp, limit, json, &mut out).await?;
                }
                DlqAction::Replay {
                    config,
                    limit,
                    dry_run,
                    force,
                } => {
                    let config = match load(&config) {
                        Ok(c) => c,
                        Err(code) => return Ok(code),
                    };
                    quiet_logs(&config);
                    let options = cli::dlq::ReplayOptions {
                        limit,
                        dry_run,
                        retention: Duration::from_secs(config.settings.redis.retention_secs),
                        force,
                    };
                    cli::dlq::replay(&config.settings.amqp, options, &mut out).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(config: Config, source: ConfigArg) -> anyhow::Result<ExitCode> {
    // Before anything else: a signal during start-up is handled, not fatal.
    let stop = cli::StopSignals::install();
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hangup: Option<()> = None;
    telemetry::init_logging(&config.settings.log);
    let _ = telemetry::metrics();
    let listen = config.settings.admin.listen.clone();
    tracing::info!(
        source = ?config.source,
        amqp = %config.settings.amqp.url,
        redis = %config.settings.redis.url,
        gateway = %h5pay_worker::config::SecretUrl::new(config.settings.gateway.url.clone()),
        institutions = ?config.institutions,
        "h5pay-worker starting"
    );
    let worker = Worker::new(config)?;
    // A second worker on one host with the default port must still work:
    // without its endpoints (said loudly), not without its intents.
    let admin_task = match admin::bind(&listen, worker.health()).await {
        Ok((addr, admin_server)) => {
            tracing::info!(%addr, "admin endpoints: /healthz /readyz /metrics");
            Some(tokio::spawn(admin_server))
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                listen = %listen,
                "admin.listen cannot be bound: /healthz, /readyz and /metrics are off for this process"
            );
            None
        }
    };
    let upkeep = tokio::spawn(admin::metrics_upkeep());
    let reloader = tokio::spawn(reload_keys_on_sighup(hangup, source, worker.keys()));
    let result = worker.run(stop.recv()).await;
    if let Some(t) = admin_task {
        t.abort();
    }
    upkeep.abort();
    reloader.abort();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!(error = %e, "worker stopped on an error");
            eprintln!("h5pay-worker: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Key rotation without a restart: on SIGHUP the settings are read again
/// (file and environment) and, if valid, the institution keys are replaced.
/// Other settings take effect only at the next start.
#[cfg(unix)]
async fn reload_keys_on_sighup(
    hangup: Option<tokio::signal::unix::Signal>,
    source: ConfigArg,
    keys: std::sync::Arc<h5pay_worker::config::KeyRing>,
) {
    {
        let Some(mut hup) = hangup else {
            return;
        };
        while hup.recv().await.is_some() {
            match Config::load(source.config.as_deref()) {
                Ok(c) => {
                    let inst_nos: Vec<String> = c
                        .institutions
                        .inst_nos()
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                    keys.replace(c.institutions);
                    tracing::info!(
                        ?inst_nos,
                        "SIGHUP: institution keys reloaded (other settings need a restart)"
                    );
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: settings not reloaded; the current keys stay"
                ),
            }
        }
    }
}

#[cfg(not(unix))]
async fn reload_keys_on_sighup(
    _hangup: Option<()>,
    _source: ConfigArg,
    _keys: std::sync::Arc<h5pay_worker::config::KeyRing>,
) {
}

fn sign(
    key: Option<String>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
    verify: bool,
) -> anyhow::Result<ExitCode> {
    let key = match (key, key_env, key_file) {
        (Some(k), _, _) => k,
        (_, Some(var), _) => match std::env::var(&var) {
            Ok(k) => k,
            Err(_) => {
                eprintln!("h5pay-worker: --key-env {var}: the variable is not set");
                return Ok(ExitCode::from(2));
            }
        },
        (_, _, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(k) => k.trim_end().to_owned(),
            Err(e) => {
                eprintln!("h5pay-worker: --key-file {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        },
        _ => {
            eprintln!("h5pay-worker: sign needs --key, --key-env or --key-file");
            return Ok(ExitCode::from(2));
        }
    };
    let key = SecretString::from(key);
    let input = cli::sign::read_stdin()?;
    if verify {
        match cli::sign::verify_input(&input, &key) {
            Ok(Verified::Valid) => {
                println!("valid");
                Ok(ExitCode::SUCCESS)
            }
            Ok(Verified::Invalid(why)) => {
                println!("invalid: {why}");
                Ok(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("h5pay-worker: {e}");
                Ok(ExitCode::from(2))
            }
        }
    } else {
        match cli::sign::sign_input(&input, &key) {
            Ok(s) => {
                println!("{s}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("h5pay-worker: {e}");
                Ok(ExitCode::from(2))
            }
        }
    }
}
