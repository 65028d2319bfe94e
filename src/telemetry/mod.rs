//! Logs (tracing: JSON by default, pretty for terminals) and the
//! Prometheus recorder; every metric itself is in [`metrics`]. Logs go to stderr so that commands like
//! `publish --wait` keep stdout for their output.

mod json_log;
pub mod metrics;
pub mod trace;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings, OtelSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over
/// `log.level`. Safe to call twice (the second call does nothing).
pub fn init_logging(log: &LogSettings) {
    install(log, None);
}

/// Logs, and spans exported over OTLP when `[otel] endpoint` is set
/// (issue 15). The returned provider must live as long as the process; shut
/// it down at the end to flush the last spans.
pub fn init_tracing(
    log: &LogSettings,
    otel: &OtelSettings,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, trace::OtelError> {
    let provider = trace::provider(otel)?;
    install(log, provider.as_ref());
    Ok(provider)
}

fn install(log: &LogSettings, provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = subscriber(log.format, filter, provider).try_init();
}

/// The subscriber: JSON (or pretty) logs at `filter`, and spans to
/// `provider` when there is one.
fn subscriber(
    format: LogFormat,
    filter: EnvFilter,
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(json_log::JsonFields)
            .event_format(json_log::JsonLine)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .compact()
            .boxed(),
    };
    // Each layer filters on its own: the log level never decides what a
    // trace contains, and the log shows the log spans (a line's `span` is
    // its intent or check, with the identity), never a step span.
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    // The step-span filter adds no level of its own: the hint keeps the
    // log level's (without it the combined hint is "unknown", and every
    // disabled callsite of every crate is asked again and again).
    let logged = filter.and(
        filter_fn(|m| !trace::is_step_span(m))
            .with_max_level_hint(tracing::level_filters::LevelFilter::TRACE),
    );
    let otel = provider.map(|p| {
        trace::layer(p).with_filter(
            filter_fn(trace::exported)
                .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
        )
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(logged))
        .with(otel)
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Seconds-scale buckets for gateway calls, confirms and whole intents.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide Prometheus recorder once and returns its
/// handle (None if another recorder was installed first).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            metrics::describe();
            metrics::register();
            Some(handle)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Subscriber as _;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn the_subscriber_tells_tracing_the_log_level_so_disabled_callsites_stay_off() {
        // Without a known maximum, tracing asks every disabled callsite of
        // every crate again each time (BENCHMARKS.md: -10 % throughput).
        for (level, want) in [("warn", LevelFilter::WARN), ("info", LevelFilter::INFO)] {
            let s = subscriber(LogFormat::Json, EnvFilter::new(level), None);
            assert_eq!(s.max_level_hint(), Some(want), "{level}");
        }
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let s = subscriber(LogFormat::Json, EnvFilter::new("warn"), Some(&provider));
        assert_eq!(
            s.max_level_hint(),
            Some(LevelFilter::INFO),
            "exported spans are at info"
        );
    }
}
