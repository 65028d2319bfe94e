//! The commands besides the worker's own loop: `run` (its wiring: admin
//! endpoints, key reload), `notify`, `sandbox`, `publish`, `sign`, `demo`,
//! `dlq`, `inspect`, `events`, `payments`, `check`.

pub mod check;
pub mod demo;
pub mod dlq;
pub mod events;
pub mod inspect;
pub mod notify;
pub mod payments;
pub mod publish;
pub mod run;
pub mod sandbox;
pub mod sign;

/// `--config`, shared by every command that reads settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Settings file (default: config/default.toml, else the built-in local defaults).
    #[arg(long, short = 'c', env = "H5PAY_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}
