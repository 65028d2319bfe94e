//! `h5pay-worker run`: the worker, its admin endpoints, and key rotation
//! on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, GatewaySettings, SecretUrl};
use crate::signals;
use crate::telemetry::metrics;
use crate::worker::{Worker, WorkerError};
use crate::{admin, telemetry};

/// Runs the worker until SIGTERM/SIGINT. `source` is the settings file,
/// read again on SIGHUP.
pub async fn run(config: Config, source: Option<PathBuf>) -> Result<ExitCode, WorkerError> {
    // Before anything else: a signal during start-up is handled, not fatal.
    let (stop, hangups) = signals::install();
    let tracer = super::start_telemetry(&config.settings);
    let listen = config.settings.admin.listen.clone();
    tracing::info!(
        source = ?config.source,
        amqp = %config.settings.amqp.url,
        amqp_urls = ?config.settings.amqp.urls,
        redis = %config.settings.redis.url,
        redis_urls = ?config.settings.redis.urls,
        gateway = %SecretUrl::new(config.settings.gateway.url.clone()),
        institutions = ?config.institutions,
        "h5pay-worker starting"
    );
    warn_about_the_gateway(&config.settings.gateway);
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
    let reloader = tokio::spawn(signals::reload_keys_on_hangup(
        hangups,
        source,
        worker.keys(),
    ));
    let result = worker.run(stop.recv()).await;
    if let Some(t) = admin_task {
        t.abort();
    }
    upkeep.abort();
    reloader.abort();
    if let Some(t) = tracer {
        telemetry::trace::shutdown(t).await;
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// What contract §5.7 asks start-up to say about the gateway settings: a
/// warning when h5pay answers go unverified, and one per endpoint reached
/// over plain `http` off this host (also the `h5pay_insecure_gateway`
/// gauge).
fn warn_about_the_gateway(g: &GatewaySettings) {
    if !g.verify_response_sign {
        tracing::warn!(
            "gateway.verify_response_sign = false: h5pay answers are taken without checking \
             their sign (queryorder, closeorder and notify answers are still always verified)"
        );
    }
    let insecure = g.insecure_endpoints();
    for (key, url) in &insecure {
        tracing::warn!(
            key = %key,
            url = %SecretUrl::new(*url),
            "{key} is plain http to a host that is not loopback: requests, answers and their \
             signs cross the network unencrypted"
        );
    }
    metrics::insecure_gateway(!insecure.is_empty());
}
