//! Distributed tracing (issue 15): the W3C trace context of an intent goes
//! on to its result event and its payment events over the real broker, and
//! with spans exported (here to the SDK's in-memory exporter) the worker's
//! spans form one trace from the publisher's span to the result event.

use std::sync::Arc;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use h5pay_worker::pipeline::Incoming;
use h5pay_worker::telemetry::trace::{self, TraceHeaders};

use crate::support::{SANDBOX_KEY, TestEnv, Via, WAIT, intent};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT}-01")
}

fn with_trace(tp: &str) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
    h.insert(
        "tracestate".into(),
        AMQPValue::LongString("congo=t61rcWkgMzE".into()),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_context_of_an_intent_reaches_its_result_and_payment_events_over_the_broker() {
    // No exporter here: the context is copied on as received.
    let env = TestEnv::new().await;
    let receiver = env.receiver(Via::default()).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker_with(env.config_notifying(&receiver));
    let body = serde_json::to_vec(&intent("TR-1", "M1", 100)).expect("json");
    env.publish_with(&body, with_trace(&traceparent())).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    let tp = r
        .header("traceparent")
        .expect("a traceparent on the result");
    assert_eq!(tp.split('-').nth(1), Some(TRACE_ID), "{tp}");
    assert_eq!(r.header("tracestate").as_deref(), Some("congo=t61rcWkgMzE"));
    // The buyer pays: the payment event continues the same trace.
    env.pay("M1", "TR-1").await;
    let p = payments.take(1, WAIT).await.remove(0);
    let tp = p
        .header("traceparent")
        .expect("a traceparent on the payment event");
    assert_eq!(tp.split('-').nth(1), Some(TRACE_ID), "{tp}");
    // A malformed context is not copied on.
    let body = serde_json::to_vec(&intent("TR-2", "M1", 100)).expect("json");
    env.publish_with(&body, with_trace("00-not-a-trace-01"))
        .await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.header("traceparent"), None);
}

/// tracing caches each callsite's interest process-wide: a callsite first
/// hit by another test's worker (no subscriber: "never") could stay off for
/// this test's scoped subscriber. A global, always-interested registry that
/// records nothing keeps every callsite live.
pub fn keep_callsites_live() {
    use tracing_subscriber::util::SubscriberInitExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::registry().try_init();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_spans_exported_one_trace_runs_from_the_publisher_through_every_step_to_the_result_event()
 {
    keep_callsites_live();
    let env = TestEnv::new().await;
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // The exporting layer filtered as in production (trace::exported).
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(tracing_subscriber::filter::filter_fn(trace::exported)),
    );
    trace::set_enabled(true);

    let pipeline = crate::pipeline_order::pipeline(&env, 5000);
    let publisher = h5pay_worker::amqp::Publisher::open(
        &Arc::new(
            lapin::Connection::connect(crate::support::AMQP_URL, Default::default())
                .await
                .expect("RabbitMQ"),
        ),
        &env.config.settings.amqp.result_exchange,
    )
    .await
    .expect("a publisher");
    let mut results = env.results().await;
    let body = serde_json::to_vec(&intent("TR-OTEL-1", "M1", 100)).expect("json");
    let incoming_trace = TraceHeaders::parse(Some(traceparent()), None);
    let msg = Incoming {
        body: &body,
        message_id: Some("TR-OTEL-1"),
        correlation_id: None,
        reply_to: None,
        timestamp: None,
        redelivered: false,
        trace: &incoming_trace,
    };
    let disposition = pipeline
        .process(msg, &publisher)
        .with_subscriber(subscriber)
        .await;
    assert_eq!(disposition, h5pay_worker::pipeline::Disposition::Ack);
    let r = results.take(1, WAIT).await.remove(0);
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    for want in [
        "process h5pay.intents",
        "claim",
        "POST /api/openpay/v3/h5pay",
        "store",
        "publish h5pay.results",
    ] {
        assert!(names.contains(&want), "{want} not among {names:?}");
    }
    for s in &spans {
        assert_eq!(
            s.span_context.trace_id().to_string(),
            TRACE_ID,
            "{} is not in the publisher's trace",
            s.name
        );
    }
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).expect("a span");
    let process = by_name("process h5pay.intents");
    assert_eq!(
        process.parent_span_id.to_string(),
        PARENT,
        "a child of the publisher's span"
    );
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        by_name("publish h5pay.results").span_kind,
        SpanKind::Producer
    );
    assert_eq!(
        by_name("POST /api/openpay/v3/h5pay").span_kind,
        SpanKind::Client
    );
    // The event's traceparent names the producer span: consumers continue
    // the trace from there.
    let publish = by_name("publish h5pay.results");
    let tp = r.header("traceparent").expect("a traceparent");
    assert_eq!(
        tp,
        format!("00-{TRACE_ID}-{}-01", publish.span_context.span_id()),
        "{names:?}"
    );
    // What is stored with the claim, for the payment's notifies and checks
    // to continue: the worker's consumer span, in the publisher's trace.
    let id = h5pay_worker::intent::Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: "TR-OTEL-1".into(),
    };
    let view = h5pay_worker::payment::PaymentStore::new(env.claim_store())
        .view(&id)
        .await
        .expect("the payment");
    let stored = view
        .sent
        .and_then(|s| s.trace.traceparent)
        .expect("a stored context");
    assert_eq!(
        stored,
        format!("00-{TRACE_ID}-{}-01", process.span_context.span_id()),
        "stored: the consumer span"
    );
    // No span name carries a merchant or a payment.
    for n in &names {
        assert!(!n.contains("M1") && !n.contains("TR-OTEL"), "{n}");
    }
}

/// What the test's collector was sent: (content type, body) per request.
type Exports = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP collector of the test's own.
async fn collector() -> (u16, Exports) {
    let got: Exports = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if let Ok(mut s) = seen.lock() {
                        s.push((ct, body.to_vec()));
                    }
                    // An empty ExportTraceServiceResponse: full success.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            },
        ),
    );
    let port = crate::support::serve(app).await.port();
    (port, got)
}

/// Sends SIGTERM and waits (at most 20 s) for the process to end.
async fn stop(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap_or_default().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await;
}

fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_otel_endpoint_set_the_worker_and_the_receiver_export_each_payments_trace_over_otlp_http()
 {
    let env = TestEnv::new().await;
    let (port, got) = collector().await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let notify_port = crate::net::free_port().expect("a port");
    let (_dir, path) = env.config_file(&format!("\n[notify]\nlisten = \"127.0.0.1:{notify_port}\"\npublic_url = \"http://127.0.0.1:{notify_port}/h5pay/notify\"\n"));
    let endpoint = format!("http://127.0.0.1:{port}");
    // No new trace is kept; a publisher's decision still is.
    let otel = [
        ("H5PAY__OTEL__ENDPOINT", endpoint.as_str()),
        ("H5PAY__OTEL__SAMPLE_RATIO", "0"),
        ("H5PAY__LOG__LEVEL", "info"),
    ];
    let admin = crate::net::free_port().expect("a port");
    let mut worker = crate::cli::spawn_run(&path, admin, &otel, std::process::Stdio::piped());
    let receiver_admin = crate::net::free_port().expect("a port");
    let mut receiver = tokio::process::Command::new(env!("CARGO_BIN_EXE_h5pay-worker"))
        .args(["notify", "--config", &path.display().to_string()])
        .env(
            "H5PAY__ADMIN__LISTEN",
            format!("127.0.0.1:{receiver_admin}"),
        )
        .envs(otel)
        .env("H5PAY__OTEL__SERVICE_NAME", "h5pay-notify")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the receiver started");
    assert!(crate::cli::wait_ready(admin).await, "worker not ready");
    assert!(
        crate::cli::wait_ready(receiver_admin).await,
        "receiver not ready"
    );

    // 1. A publisher that sampled: recorded, the worker's spans in its trace.
    let body = serde_json::to_vec(&intent("TR-OTLP-1", "M1", 100)).expect("json");
    env.publish_with(&body, with_trace(&traceparent())).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    let tp = r.header("traceparent").expect("a traceparent");
    assert_eq!(trace_id_of(&tp), TRACE_ID, "{tp}");
    assert_ne!(
        tp.split('-').nth(2),
        Some(PARENT),
        "the event names the worker's own span"
    );
    // 2. A publisher that did not sample: the trace goes on, unrecorded.
    let unsampled = "5ce929d0e0e4736a4bf92f3577b34da6";
    let body = serde_json::to_vec(&intent("TR-OTLP-2", "M1", 100)).expect("json");
    env.publish_with(&body, with_trace(&format!("00-{unsampled}-{PARENT}-00")))
        .await;
    let r = results.take(1, WAIT).await.remove(0);
    let tp = r.header("traceparent").expect("a traceparent");
    assert_eq!(trace_id_of(&tp), unsampled, "{tp}");
    assert_eq!(tp.split('-').nth(3), Some("00"), "still not sampled: {tp}");
    // 3. No context and sample_ratio 0: not recorded, yet a trace id of its
    // own (unsampled) that its events, notifies and checks share.
    let body = serde_json::to_vec(&intent("TR-OTLP-3", "M1", 100)).expect("json");
    env.publish(&body).await;
    let r = results.take(1, WAIT).await.remove(0);
    let own = r.header("traceparent").expect("a context of its own");
    assert!(own.ends_with("-00"), "{own}");
    let own_id = trace_id_of(&own).to_owned();

    // The buyers pay: each payment event continues its intent's trace, and
    // the receiver records the notify only for the recorded one.
    for (trace, want) in [
        ("TR-OTLP-1", TRACE_ID),
        ("TR-OTLP-2", unsampled),
        ("TR-OTLP-3", own_id.as_str()),
    ] {
        env.pay("M1", trace).await;
        let p = payments.take(1, WAIT).await.remove(0);
        assert_eq!(p.event["state"], "paid", "{}", p.event);
        assert_eq!(p.event["pay_trace_no"], trace);
        let tp = p.header("traceparent").expect("a traceparent");
        assert_eq!(trace_id_of(&tp), want, "{trace}: {tp}");
        assert_eq!(
            tp.ends_with("-01"),
            trace == "TR-OTLP-1",
            "{trace}: sampled as its intent was: {tp}"
        );
    }

    // A graceful stop flushes the batch that is left.
    stop(&mut worker).await;
    stop(&mut receiver).await;
    let sent = got.lock().map(|g| g.clone()).unwrap_or_default();
    assert!(!sent.is_empty(), "nothing reached the collector");
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(
        sent.iter().all(|(ct, _)| ct == "application/x-protobuf"),
        "{:?}",
        sent.iter().map(|(ct, _)| ct).collect::<Vec<_>>()
    );
    let all: Vec<u8> = sent.into_iter().flat_map(|(_, b)| b).collect();
    assert!(
        has(&all, &hex::decode(TRACE_ID).expect("hex")),
        "the intent's trace id was exported"
    );
    for id in [unsampled, own_id.as_str()] {
        assert!(
            !has(&all, &hex::decode(id).expect("hex")),
            "an unsampled trace was exported"
        );
    }
    for text in [
        "process h5pay.intents",
        "claim",
        "POST /api/openpay/v3/h5pay",
        "store",
        "publish h5pay.results",
        "h5pay-worker",
        "POST notify",
        "h5pay-notify",
    ] {
        assert!(has(&all, text.as_bytes()), "{text} not in the export");
    }
    assert!(
        !has(&all, SANDBOX_KEY.as_bytes()),
        "no key in an exported span"
    );
    // Three notifies, one recorded: the others follow their intents' traces,
    // which were not recorded.
    let notifies = all
        .windows(b"POST notify".len())
        .filter(|w| *w == b"POST notify")
        .count();
    assert_eq!(
        notifies, 1,
        "only the recorded payment's notify is exported"
    );
    // With spans exported, a log line still names its payment: the audit
    // lines sit in the intent's span, not in the step span around them.
    let mut stderr = String::new();
    if let Some(mut e) = worker.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    let audit: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "gateway attempt")
        .collect();
    assert_eq!(audit.len(), 3, "one per intent:\n{stderr}");
    for line in &audit {
        assert!(
            line["span"]["pay_trace_no"]
                .as_str()
                .is_some_and(|t| t.starts_with("TR-OTLP-")),
            "{line}"
        );
        assert_eq!(line["span"]["name"], "intent", "{line}");
    }
}
