//! The `h5pay-worker` binary: parses the command line and calls the
//! library. Errors end here as one line on stderr and a non-zero exit:
//! 2 for settings or arguments that cannot be used, 1 for the rest.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use h5pay_worker::cli::{self, ConfigArg, publish::PublishArgs, sandbox::SandboxArgs, sign};
use h5pay_worker::config::{Config, LogFormat, LogSettings};
use h5pay_worker::telemetry;
use h5pay_worker::text::terminal_safe;

#[derive(Parser)]
#[command(
    name = "h5pay-worker",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("H5PAY_COMMIT"), ")"),
    about = "Payment intents from RabbitMQ → payable H5 links, exactly once per identity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker.
    Run(ConfigArg),
    /// Run the local gateway simulator.
    Sandbox {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        args: SandboxArgs,
    },
    /// Publish intents (and with --wait, print their result events).
    Publish {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        args: PublishArgs,
    },
    /// Print the sign of a JSON object read from stdin, or check its `sign`.
    Sign {
        #[command(flatten)]
        key: sign::KeySource,
        /// Check the `sign` field instead: exit 0 if valid, 1 if not.
        #[arg(long)]
        verify: bool,
    },
    /// Sandbox + worker in one process: a tour of every outcome.
    Demo(ConfigArg),
    /// Run the notify receiver (the gateway's payment notifications).
    Notify(ConfigArg),
    /// What the worker knows of one payment.
    Inspect {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        args: cli::inspect::InspectArgs,
    },
    /// Print result and payment events as they are published (a queue of
    /// its own, deleted when it ends).
    Events {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        args: cli::events::EventsArgs,
    },
    /// The payments that need a person: unresolved, with an anomaly, or
    /// paid late (a table or CSV, from small indexes, never a keyspace scan).
    Payments {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        args: cli::payments::PaymentsArgs,
    },
    /// Check a deployment before it takes traffic: config, keys, RabbitMQ
    /// (permissions, topology), Redis (noeviction, AOF, cluster), the
    /// gateway (DNS, TLS), the clock. Exit 1 on any ✗.
    Check(ConfigArg),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `h5pay-worker man > h5pay-worker.1`.
    Man,
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
        /// Show at most this many messages (from the head of the DLQ).
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
        /// Look at most at this many messages (from the head of the DLQ).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only say what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Also replay messages older than redis.retention_secs (their stored
        /// outcome may be gone: check the identity first).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        select: DlqSelect,
    },
    /// Remove dead letters by message, by payment, or the unreadable ones
    /// (one of them is required; the rest stay).
    Delete {
        #[command(flatten)]
        config: ConfigArg,
        /// Look at most at this many messages (from the head of the DLQ).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        select: DlqSelect,
    },
}

/// Which dead letters: all of those given must match.
#[derive(clap::Args)]
struct DlqSelect {
    /// Only the message with this AMQP message_id.
    #[arg(long)]
    message_id: Option<String>,
    /// Only messages of this payment.
    #[arg(long)]
    pay_trace_no: Option<String>,
    /// Only bodies that cannot be an intent at all.
    #[arg(long)]
    unreadable: bool,
}

impl DlqSelect {
    fn into_select(self) -> cli::dlq::Select {
        cli::dlq::Select {
            message_id: self.message_id,
            pay_trace_no: self.pay_trace_no,
            unreadable: self.unreadable,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Sign { key, verify } => return sign::main(key, *verify),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "h5pay-worker",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match page.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("h5pay-worker: cannot write the man page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        // An error may quote what a broker, Redis or a file said: printed
        // terminal-safe like every other output (contract §7).
        Err(Failed::Usage(why)) => {
            eprintln!("h5pay-worker: {}", terminal_safe(&why));
            ExitCode::from(2)
        }
        Err(Failed::Runtime(e)) => {
            eprintln!("h5pay-worker: {}", terminal_safe(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// How a command failed: settings or arguments (exit 2), or at run time.
enum Failed {
    Usage(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed::Runtime(e.into())
    }
}

fn load(c: &ConfigArg) -> Result<Config, Failed> {
    Config::load(c.config.as_deref()).map_err(|e| Failed::Usage(e.to_string()))
}

/// Tools print to the terminal: pretty, warnings only unless RUST_LOG asks.
fn quiet_logs(config: &Config) {
    telemetry::init_logging(&LogSettings {
        format: LogFormat::Pretty,
        level: if std::env::var_os("RUST_LOG").is_some() {
            config.settings.log.level.clone()
        } else {
            "warn".into()
        },
    });
}

async fn dispatch(command: Command) -> Result<ExitCode, Failed> {
    match command {
        Command::Run(c) => {
            let config = load(&c)?;
            let code = cli::run::run(config, c.config).await.map_err(|e| {
                tracing::error!(error = %e, "worker stopped on an error");
                e
            })?;
            Ok(code)
        }
        Command::Sandbox { config, args } => {
            // A test tool: institution keys inline only (contract §8).
            let config = Config::load_inline_keys(config.config.as_deref())
                .map_err(|e| Failed::Usage(e.to_string()))?;
            telemetry::init_logging(&config.settings.log);
            cli::sandbox::run(config.institutions, args)
                .await
                .map_err(|e| match e {
                    cli::sandbox::SandboxCommandError::Listen { .. } => Failed::Runtime(e.into()),
                    _ => Failed::Usage(e.to_string()),
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish { config, args } => {
            let config = load(&config)?;
            quiet_logs(&config);
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            cli::publish::run(&config.settings.amqp, &args, &mut out, &mut err).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { config, args } => {
            let config = load(&config)?;
            quiet_logs(&config);
            cli::inspect::run(&config, &args, &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { config, args } => {
            let config = load(&config)?;
            quiet_logs(&config);
            cli::events::run(&config.settings.amqp, &args, &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Payments { config, args } => {
            let config = load(&config)?;
            quiet_logs(&config);
            cli::payments::run(&config, &args, &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(c) => {
            let config = load(&c)?;
            quiet_logs(&config);
            let passed = cli::check::run(&config, &mut std::io::stdout())
                .await
                .map_err(|e| Failed::Runtime(e.into()))?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Notify(c) => {
            let config = load(&c)?;
            cli::notify::run(config, c.config).await?;
            Ok(ExitCode::SUCCESS)
        }
        // Handled before the runtime starts.
        Command::Sign { key, verify } => Ok(sign::main(&key, verify)),
        Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
        Command::Demo(c) => {
            // It runs the sandbox too: institution keys inline only.
            let config = Config::load_inline_keys(c.config.as_deref())
                .map_err(|e| Failed::Usage(e.to_string()))?;
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
        Command::Dlq { action } => dlq(action).await,
    }
}

/// `dlq list`, `dlq replay`, `dlq delete`.
async fn dlq(action: DlqAction) -> Result<ExitCode, Failed> {
    let mut out = std::io::stdout();
    match action {
        DlqAction::List {
            config,
            limit,
            json,
        } => {
            let config = load(&config)?;
            quiet_logs(&config);
            cli::dlq::list(&config.settings.amqp, limit, json, &mut out).await?;
        }
        DlqAction::Replay {
            config,
            limit,
            dry_run,
            force,
            select,
        } => {
            let config = load(&config)?;
            quiet_logs(&config);
            let options = cli::dlq::ReplayOptions {
                limit,
                dry_run,
                retention: Duration::from_secs(config.settings.redis.retention_secs),
                force,
                select: select.into_select(),
            };
            cli::dlq::replay(&config.settings.amqp, options, &mut out).await?;
        }
        DlqAction::Delete {
            config,
            limit,
            dry_run,
            select,
        } => {
            let config = load(&config)?;
            quiet_logs(&config);
            let select = select.into_select();
            cli::dlq::delete(&config.settings.amqp, &select, limit, dry_run, &mut out).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it does.
    #[test]
    fn every_argument_of_every_command_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "h5pay-worker", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
