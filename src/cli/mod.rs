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

/// Tracing and metrics for the long-running commands (`run`, `notify`). A
/// collector that cannot be set up is not a reason to stop taking payments:
/// said loudly, then run without exporting spans.
fn start_telemetry(
    settings: &crate::config::Settings,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let tracer = match crate::telemetry::init_tracing(&settings.log, &settings.otel) {
        Ok(t) => t,
        Err(e) => {
            crate::telemetry::init_logging(&settings.log);
            tracing::error!(error = %e, "otel.endpoint: spans are not exported");
            None
        }
    };
    let _ = crate::telemetry::recorder();
    tracer
}
