//! `h5pay-worker sandbox`: the gateway simulator as a process of its own.

use std::time::Duration;

use crate::keys::Institutions;
use crate::sandbox::{self, Sandbox, SandboxOptions};

/// `h5pay-worker sandbox`'s own arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Where it listens: loopback unless told otherwise (it is a test tool).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Added to every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of calls answered HTTP 503 at random (0.0-1.0).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Where payers reach the sandbox: the base of every code_url
    /// (default: http:// and the address it listens on).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Send notifies without `inst_no` (as one known gateway does).
    #[arg(long)]
    pub notify_without_inst_no: bool,
    /// When a paid order's notify is sent, in seconds after the payment,
    /// until it is answered with the SUCCESS reply.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,2,4,8,15,30,60,120,300"
    )]
    pub notify_schedule_secs: Vec<u64>,
    /// How queryorder answers: `result-code`, or the older `trade-state`.
    #[arg(long, value_enum, default_value = "result-code")]
    pub query_shape: sandbox::QueryShape,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxCommandError {
    #[error("--error-rate must be between 0.0 and 1.0")]
    ErrorRate,
    #[error("--public-url must be an absolute http(s) URL")]
    PublicUrl,
    #[error("--listen {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(institutions: Institutions, args: SandboxArgs) -> Result<(), SandboxCommandError> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err(SandboxCommandError::ErrorRate);
    }
    if let Some(u) = &args.public_url
        && !matches!(url::Url::parse(u), Ok(p) if matches!(p.scheme(), "http" | "https"))
    {
        return Err(SandboxCommandError::PublicUrl);
    }
    let listen_error = |source| SandboxCommandError::Listen {
        listen: args.listen.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| sandbox::local_url(addr));
    let sandbox = Sandbox::new(
        institutions,
        SandboxOptions {
            latency: Duration::from_millis(args.latency_ms),
            error_rate: args.error_rate,
            public_url: public_url.clone(),
            notify_inst_no: !args.notify_without_inst_no,
            query_shape: args.query_shape,
            notify_schedule: args
                .notify_schedule_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            ..SandboxOptions::default()
        },
    );
    tracing::info!(%addr, %public_url, latency_ms = args.latency_ms, error_rate = args.error_rate, "sandbox gateway listening");
    sandbox::serve(listener, sandbox, crate::signals::stopped()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn the_sandbox_listens_on_loopback_unless_told_otherwise() {
        let default = Cli::try_parse_from(["sandbox"]).map(|c| c.args.listen);
        let addr: Option<std::net::SocketAddr> = default.ok().and_then(|l| l.parse().ok());
        assert!(addr.is_some_and(|a| a.ip().is_loopback()), "{addr:?}");
        let told =
            Cli::try_parse_from(["sandbox", "--listen", "0.0.0.0:8090"]).map(|c| c.args.listen);
        assert_eq!(told.ok().as_deref(), Some("0.0.0.0:8090"));
    }
}
