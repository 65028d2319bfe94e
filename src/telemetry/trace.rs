//! Distributed tracing (issue 15): the W3C trace context of an intent
//! (`traceparent`, `tracestate` AMQP headers, as the Spring AMQP, amqplib
//! and pika instrumentations inject them) is continued through the
//! intent's processing and put on its result event and on every payment
//! event of the identity.
//!
//! With `[otel] endpoint` set, the worker's tracing spans become
//! OpenTelemetry spans (tracing-opentelemetry) exported over OTLP/HTTP:
//! the intent's `process` span is a child of the publisher's, and the
//! events carry the worker's own span as their parent. Without it, nothing
//! is created or exported: the incoming context is copied onto the events
//! unchanged, so a trace still joins up across services that do trace.
//!
//! Span names and attributes follow the OpenTelemetry semantic conventions
//! for messaging (RabbitMQ) as of v1.27, which are still "development":
//! `process h5pay.intents` (consumer), `publish h5pay.results` (producer),
//! `POST <endpoint>` for gateway calls (client). No span name carries a
//! merchant or a payment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::OtelSettings;

/// The semantic-conventions version the span names and attributes follow.
pub const SEMCONV_VERSION: &str = "1.27.0";

/// A message's W3C trace context, as carried in its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// The context read from AMQP headers. A malformed `traceparent` is
    /// dropped (with its `tracestate`), never copied on.
    pub fn from_amqp(headers: Option<&FieldTable>) -> TraceHeaders {
        let get = |k: &str| {
            headers
                .and_then(|h| h.inner().get(k))
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => {
                        std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
                    }
                    AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                    _ => None,
                })
        };
        TraceHeaders::parse(get("traceparent"), get("tracestate"))
    }

    /// Keeps a `traceparent` only if it is well formed (version 00, ids
    /// not all zero), and a `tracestate` only with it (at most 512 bytes).
    pub fn parse(traceparent: Option<String>, tracestate: Option<String>) -> TraceHeaders {
        let traceparent = traceparent.filter(|t| is_traceparent(t));
        let tracestate = traceparent
            .as_ref()
            .and(tracestate)
            .filter(|s| s.len() <= 512 && s.is_ascii());
        TraceHeaders {
            traceparent,
            tracestate,
        }
    }

    /// The headers to put on an AMQP message.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("traceparent", self.traceparent.as_deref()),
            ("tracestate", self.tracestate.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zero.
pub fn is_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [v, trace, span, flags]
        if *v == "00" && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'))
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (OTel on): only then are the extra spans of
/// an intent's steps created.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns the extra spans on or off (set by [`provider`]; tests set it with
/// their own in-memory exporter).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Makes `span`'s parent the remote context in `incoming` (a no-op when
/// OTel is off or there is none).
pub fn continue_trace(span: &tracing::Span, incoming: &TraceHeaders) {
    if !enabled() || incoming.is_empty() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    for (k, v) in incoming.pairs() {
        carrier.insert(k.to_owned(), v.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The context to put on an outgoing event: the current span's, when it
/// is an exported span; else `incoming`, unchanged.
pub fn outgoing(incoming: &TraceHeaders) -> TraceHeaders {
    if enabled() {
        // The innermost exported span entered (the log spans are not
        // exported, so `Span::current()` may be one that has no context).
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            let state = sc.trace_state().header();
            return TraceHeaders {
                traceparent: Some(format!(
                    "00-{}-{}-{:02x}",
                    sc.trace_id(),
                    sc.span_id(),
                    sc.trace_flags().to_u8()
                )),
                tracestate: Some(state).filter(|s| !s.is_empty()),
            };
        }
    }
    incoming.clone()
}

/// The trace id every log line of a message names: the exported span's
/// (continuing the incoming trace, or a new one), else the incoming one's,
/// else empty.
pub fn trace_id(span: &tracing::Span, incoming: &TraceHeaders) -> String {
    if enabled() {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return sc.trace_id().to_string();
        }
    }
    incoming
        .traceparent
        .as_deref()
        .and_then(|t| t.split('-').nth(1))
        .unwrap_or("")
        .to_owned()
}

static RATIO: AtomicU64 = AtomicU64::new(1.0f64.to_bits());

tokio::task_local! {
    /// Whether the message being handled in this task has its trace
    /// recorded (decided once, by [`sample`]).
    static RECORDING: bool;
}

/// Whether step spans are created here: spans are exported and the trace
/// of the message at hand is recorded.
pub fn recording() -> bool {
    enabled() && RECORDING.try_with(|r| *r).unwrap_or(true)
}

/// Runs `f` with the trace recorded or not (see [`recording`]). A plain
/// function, not an `async fn`: an `async fn` would keep `f` twice in its
/// state (the argument and the scope holding it), doubling every intent's
/// and every check's future (BENCHMARKS.md).
pub fn scoped<F: std::future::Future>(
    record: bool,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    RECORDING.scope(record, f)
}

/// Decides once per intent, before any span exists, whether its trace is
/// recorded: a `traceparent`'s sampled flag decides where there is one,
/// else `[otel] sample_ratio`. None: recorded, the incoming context as it
/// is. Some(context): not recorded (no span is created, which is what
/// makes an unrecorded intent cost nothing), and the context to carry on
/// instead: the incoming one, or for an intent that brought none a new
/// unsampled one, so that its events, notifies and checks share one trace
/// id and follow the same decision.
pub fn sample(incoming: &TraceHeaders) -> Option<TraceHeaders> {
    use rand::RngExt;
    if let Some(tp) = &incoming.traceparent {
        let sampled = tp
            .get(53..55)
            .and_then(|f| u8::from_str_radix(f, 16).ok())
            .is_some_and(|f| f & 1 == 1);
        return if sampled {
            None
        } else {
            Some(incoming.clone())
        };
    }
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    let mut rng = rand::rng();
    if rng.random_bool(ratio.clamp(0.0, 1.0)) {
        return None;
    }
    let trace: u128 = rng.random::<u128>().max(1);
    let span: u64 = rng.random::<u64>().max(1);
    Some(TraceHeaders {
        traceparent: Some(format!("00-{trace:032x}-{span:016x}-00")),
        tracestate: None,
    })
}

/// Whether a message that belongs to a stored payment (a notify, a check)
/// is recorded: as the intent's trace was (its stored context's sampled
/// flag), or for a payment stored without one, at `sample_ratio`.
pub fn records(stored: &TraceHeaders) -> bool {
    enabled() && sample(stored).is_none()
}

/// The span of a message that belongs to a stored payment (a notify, a
/// check), joining the trace of the intent that placed the order: made by
/// `make` only if that trace is recorded ([`records`]), its parent set
/// before it is first entered (entering starts it). With the decision, for
/// [`scoped`].
pub fn joining(
    stored: &TraceHeaders,
    make: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, bool) {
    let record = records(stored);
    let span = if record {
        make()
    } else {
        tracing::Span::none()
    };
    continue_trace(&span, stored);
    (span, record)
}

/// The producer span of one event on `h5pay.results` (result and payment
/// events alike): its context is the event's `traceparent`.
pub fn publish_span(event_id: &str) -> tracing::Span {
    crate::messaging_span!("publish", "producer", "h5pay.results", event_id)
}

/// The step spans, which carry `otel.kind`: the spans a trace is made of.
pub fn is_step_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.fields().field("otel.kind").is_some()
}

/// What the exporting layer sees: this crate's step spans, and of its log
/// lines only warnings and errors (as span events). Log spans are not
/// exported: every span and event costs CPU per intent.
pub fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("h5pay_worker")
        && if meta.is_span() {
            is_step_span(meta)
        } else {
            *meta.level() <= tracing::Level::WARN
        }
}

/// A span for one step, created only when spans are exported and the
/// trace at hand is recorded.
#[macro_export]
macro_rules! step_span {
    ($name:expr $(, $($field:tt)*)?) => {
        if $crate::telemetry::trace::recording() {
            tracing::info_span!($name $(, $($field)*)?)
        } else {
            tracing::Span::none()
        }
    };
}

/// The step span of a message sent or received, named as OpenTelemetry's
/// messaging conventions say: `"publish"` by a `"producer"`, `"process"`
/// by a `"consumer"`.
#[macro_export]
macro_rules! messaging_span {
    ($op:literal, $kind:literal, $destination:literal, $message_id:expr) => {
        $crate::step_span!(
            $op,
            otel.name = concat!($op, " ", $destination),
            otel.kind = $kind,
            messaging.system = "rabbitmq",
            messaging.operation.type = $op,
            messaging.destination.name = $destination,
            messaging.message.id = $message_id,
        )
    };
}

/// The step span of one gateway call: `POST /api/openpay/v3/<endpoint>`.
#[macro_export]
macro_rules! gateway_span {
    ($endpoint:literal) => {
        $crate::step_span!(
            $endpoint,
            otel.name = concat!("POST /api/openpay/v3/", $endpoint),
            otel.kind = "client",
            http.request.method = "POST",
        )
    };
}

#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct OtelError(String);

/// The tracer provider exporting to `[otel] endpoint` (None when unset).
/// Keep it alive; [`opentelemetry_sdk::trace::SdkTracerProvider::shutdown`]
/// flushes what is left at the end.
pub fn provider(
    s: &OtelSettings,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, OtelError> {
    if s.endpoint.is_empty() {
        return Ok(None);
    }
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let endpoint = format!("{}/v1/traces", s.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .with_http_client(reqwest::Client::new())
        .build()
        .map_err(|e| OtelError(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(s.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The async-runtime batch processor: the exporter's async HTTP client
    // needs the tokio runtime, which the SDK's default (a thread of its own
    // blocking on each export) does not provide.
    let batch =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    // Intents are sampled before their spans exist ([`sample`], at
    // `sample_ratio`); the SDK follows that decision through the parent
    // (a trace is kept whole or not at all) and keeps what starts here.
    use opentelemetry_sdk::trace::Sampler;
    RATIO.store(s.sample_ratio.to_bits(), Ordering::Relaxed);
    let sampler = Sampler::ParentBased(Box::new(Sampler::AlwaysOn));
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(batch)
        .with_resource(resource)
        .build();
    set_enabled(true);
    Ok(Some(provider))
}

/// Flushes the spans still batched and stops the exporter (at most 5 s).
/// The SDK blocks the calling thread until its export task answers, so it
/// runs on a blocking thread: the runtime's workers stay free for that task.
pub async fn shutdown(provider: opentelemetry_sdk::trace::SdkTracerProvider) {
    let flush = tokio::task::spawn_blocking(move || {
        provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
    });
    match tokio::time::timeout(std::time::Duration::from_secs(6), flush).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "spans not flushed at shutdown"),
        Ok(Err(_)) | Err(_) => tracing::warn!("spans not flushed at shutdown: timed out"),
    }
}

/// The tracing layer over `provider`'s tracer.
pub fn layer<S>(
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("h5pay-worker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_trace_contexts_are_kept() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceHeaders::parse(Some(ok.into()), Some("vendor=x".into()));
        assert_eq!(t.traceparent.as_deref(), Some(ok));
        assert_eq!(t.tracestate.as_deref(), Some("vendor=x"));
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            let t = TraceHeaders::parse(Some(bad.into()), Some("vendor=x".into()));
            assert_eq!(t, TraceHeaders::default(), "{bad}");
        }
    }

    #[test]
    fn the_publishers_sampled_flag_decides_and_else_the_ratio_with_a_new_unsampled_context() {
        let sampled = TraceHeaders::parse(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            None,
        );
        assert_eq!(sample(&sampled), None);
        let unsampled = TraceHeaders::parse(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into()),
            Some("congo=t61rcWkgMzE".into()),
        );
        assert_eq!(sample(&unsampled), Some(unsampled.clone()));
        // The only test that sets the ratio.
        RATIO.store(0.0f64.to_bits(), Ordering::Relaxed);
        let a = sample(&TraceHeaders::default()).expect("not recorded at 0.0");
        let b = sample(&TraceHeaders::default()).expect("not recorded at 0.0");
        let tp = a.traceparent.clone().unwrap_or_default();
        assert!(is_traceparent(&tp) && tp.ends_with("-00"), "{tp}");
        assert_ne!(a, b, "a new trace each time");
        RATIO.store(1.0f64.to_bits(), Ordering::Relaxed);
        assert_eq!(sample(&TraceHeaders::default()), None);
    }

    #[test]
    fn without_exported_spans_the_incoming_context_goes_on_unchanged() {
        let incoming = TraceHeaders::parse(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            None,
        );
        assert_eq!(outgoing(&incoming), incoming);
    }
}
