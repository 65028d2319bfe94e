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
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .or_else(|| {
            EnvFilter::try_new(&log.level)
                .is_ok()
                .then(|| log.level.clone())
        })
        .unwrap_or_else(|| "info".to_owned());
    let _ = subscriber(log.format, &directives, provider).try_init();
}

/// The log level's filter. `EnvFilter` hooks every span's entry and exit
/// (a shared lock, twice per poll of an intent) for its span and field
/// directives; a plain list needs none of that, and [`plain_levels`] reads
/// it the same way without the hooks.
fn level_filter<S>(directives: &str) -> Box<dyn tracing_subscriber::layer::Filter<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt;
    match plain_levels(directives) {
        Some(targets) => targets.boxed(),
        None => EnvFilter::try_new(directives)
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .boxed(),
    }
}

/// `directives` as `Targets` when they are a plain list (`level`,
/// `target` or `target=level`, comma-separated): read as `EnvFilter` reads
/// them (the longest matching target wins, anything unmatched is off).
/// `None` for anything else (spans, fields, spaces), which keeps the
/// `EnvFilter`.
fn plain_levels(directives: &str) -> Option<tracing_subscriber::filter::Targets> {
    let kept: Vec<&str> = directives.split(',').filter(|d| !d.is_empty()).collect();
    let plain = !kept.is_empty()
        && kept.iter().all(|d| {
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_:=".contains(&b))
                && d.split('=').all(|part| !part.is_empty())
                && d.split('=').count() <= 2
        });
    if !plain {
        return None;
    }
    kept.join(",").parse().ok()
}

/// The subscriber: JSON (or pretty) logs at `directives` (an `EnvFilter`
/// string), and spans to `provider` when there is one.
fn subscriber(
    format: LogFormat,
    directives: &str,
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
    let logged = level_filter(directives).and(
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
            let s = subscriber(LogFormat::Json, level, None);
            assert_eq!(s.max_level_hint(), Some(want), "{level}");
        }
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let s = subscriber(LogFormat::Json, "warn", Some(&provider));
        assert_eq!(
            s.max_level_hint(),
            Some(LevelFilter::INFO),
            "exported spans are at info"
        );
    }

    #[test]
    fn plain_level_lists_filter_as_the_env_filter_would() {
        use tracing::Level;
        use tracing_subscriber::layer::SubscriberExt;
        // What each filter lets through, asked through a subscriber of its own.
        fn lets_through<F>(filter: F) -> Vec<bool>
        where
            F: tracing_subscriber::layer::Filter<tracing_subscriber::Registry>
                + Send
                + Sync
                + 'static,
        {
            use tracing_subscriber::Layer;
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(filter);
            let s = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(s, || {
                vec![
                    tracing::enabled!(target: "h5pay_worker::pipeline", Level::DEBUG),
                    tracing::enabled!(target: "h5pay_worker::pipeline", Level::INFO),
                    tracing::enabled!(target: "h5pay_worker", Level::TRACE),
                    tracing::enabled!(target: "h5pay_worker_x", Level::INFO),
                    tracing::enabled!(target: "lapin::channel", Level::INFO),
                    tracing::enabled!(target: "lapin::channel", Level::WARN),
                    tracing::enabled!(target: "lapin", Level::ERROR),
                    tracing::enabled!(target: "redis", Level::DEBUG),
                    tracing::enabled!(target: "hyper_util::client", Level::TRACE),
                    tracing::enabled!(target: "other", Level::WARN),
                ]
            })
        }
        for directives in [
            "info",
            "WARN",
            "3",
            "off",
            "lapin",
            "h5pay_worker=debug",
            "warn,h5pay_worker::pipeline=debug",
            "info,lapin=warn,lapin::channel=error",
            "h5pay_worker=trace,h5pay_worker::pipeline=info,debug",
            "lapin=off,trace",
            "info,,lapin=warn,",
        ] {
            let plain = lets_through(level_filter::<tracing_subscriber::Registry>(directives));
            let env = lets_through(EnvFilter::new(directives));
            assert_eq!(plain, env, "{directives}");
        }
        // Span and field directives, and anything else out of the plain
        // form, keep the EnvFilter, which reads them.
        for directives in [
            "info,[intent]=debug",
            "h5pay_worker[intent]=debug",
            "info,h5pay_worker[{pay_trace_no}]=trace",
            "info, lapin=warn",
            "=info",
            "lapin=",
            "a=b=c",
            "",
            ",",
        ] {
            assert!(plain_levels(directives).is_none(), "{directives:?}");
        }
        assert!(plain_levels("info,,lapin=warn,").is_some());
    }
}
