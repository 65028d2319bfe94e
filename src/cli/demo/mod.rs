//! `h5pay-worker demo`: the sandbox gateway, a worker and the notify
//! receiver in one process, against the local RabbitMQ and Redis, fed a
//! handful of intents that cover every outcome; some orders are then paid on
//! the sandbox (by hand, or by themselves), and the gateway's notifies turn
//! into payment events. Prints one row per intent with its result and its
//! payment event, and exits non-zero if any row is not what the contract
//! says it should be.
//!
//! It uses names of its own (`h5pay-demo-<run>.*` on the broker,
//! `h5pay-demo:<run>` in Redis) and removes them afterwards, so it never
//! touches a real worker's queues or claims.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};

use crate::amqp;
use std::sync::Arc;

use crate::amqp::link::Link;
use crate::claim::ClaimStore;
use crate::cli::publish::{event_listener, intent_channel, publish_intent, result_listener};
use crate::config::Config;
use crate::keys::KeyRing;
use crate::notify::Receiver;
use crate::payment::PaymentStore;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::telemetry::metrics::Server;
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the sandbox: {0}")]
    Sandbox(std::io::Error),
    #[error("cannot connect to RabbitMQ at {url}: {source} (is it running? `make services`)")]
    Amqp { url: String, source: lapin::Error },
    #[error("AMQP: {0}")]
    Channel(#[from] lapin::Error),
    #[error("worker: {0}")]
    Worker(#[from] crate::worker::WorkerError),
    #[error(transparent)]
    Topology(#[from] amqp::TopologyError),
    #[error("Redis at {url} does not answer: {source} (is it running? `make services`)")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// One demo intent and what the contract says must come of it.
struct Case {
    label: &'static str,
    trace: String,
    body: Vec<u8>,
    /// `status` or `failed/<kind>`; None for a body that must be dead-lettered.
    expect: Option<&'static str>,
    check: fn(&Value) -> bool,
    /// The demo pays this order on the sandbox, as a payer would.
    pay_by_hand: bool,
    /// The payment events expected, in order (`paid`, `anomaly/mismatch >
    /// paid`); later events may follow. None: none at all.
    payment: Option<&'static str>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            label: "",
            trace: String::new(),
            body: Vec::new(),
            expect: None,
            check: |_| true,
            pay_by_hand: false,
            payment: None,
        }
    }
}

fn body(trace: &str, pay_type: &str, amount: Value, extra: Value) -> Vec<u8> {
    let mut v = json!({"pay_trace_no": trace, "mch_no": "DEMO0001", "pay_type": pay_type, "total_amount": amount,
                       "metadata": {"order_id": format!("demo-{trace}")}});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn outcome_of(ev: &Value) -> String {
    match ev["status"].as_str() {
        Some("failed") => format!("failed/{}", ev["error"]["kind"].as_str().unwrap_or("?")),
        Some(s) => s.to_owned(),
        None => "?".into(),
    }
}

fn detail_of(ev: &Value) -> String {
    if let Some(u) = ev["code_url"].as_str() {
        return format!(
            "code_url on {}",
            crate::pipeline::url_host(u).unwrap_or("?")
        );
    }
    if ev["jsapi"].is_object() {
        return format!(
            "jsapi package={}",
            ev["jsapi"]["package"].as_str().unwrap_or("?")
        );
    }
    if let Some(m) = ev["error"]["message"].as_str() {
        let short: String = m.chars().take(70).collect();
        return if m.chars().count() > 70 {
            format!("{short}...")
        } else {
            short
        };
    }
    String::new()
}

pub async fn run(mut config: Config, out: &mut (dyn Write + Send)) -> Result<bool, DemoError> {
    let run_id = crate::claim::new_token()[..8].to_owned();
    let s = &mut config.settings;
    let prefix = format!("h5pay-demo-{run_id}");
    s.amqp = s.amqp.isolated(&prefix);
    s.redis.key_prefix = format!("h5pay-demo:{run_id}");
    // The floor the settings allow: the demo's keys are removed at the end.
    s.redis.retention_secs = s.min_retention_secs();
    // Quick retries so the demo's retry scenarios finish in seconds.
    s.retry.initial_ms = 50;
    s.retry.max_interval_ms = 200;
    s.retry.max_attempts = 3;
    s.retry.max_elapsed_ms = 10_000;
    s.gateway.request_timeout_ms = 1000;
    // A payment lifecycle in seconds: checks after 2 s, unpaid orders
    // closed after 6 s, given up after 40 s.
    s.reconcile.enabled = true;
    s.reconcile.check_after_secs = vec![2, 4];
    s.reconcile.order_ttl_secs = 5;
    s.reconcile.close_unpaid = true;
    s.reconcile.close_grace_secs = 1;
    s.reconcile.max_age_secs = 40;

    // Fail early, with a hint, if the services are not there.
    let redis_check = async {
        let client = redis::Client::open(s.redis.url.expose())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    if let Err(source) = redis_check.await {
        return Err(DemoError::Redis {
            url: s.redis.url.redacted(),
            source,
        });
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::Sandbox)?;
    let addr = listener.local_addr().map_err(DemoError::Sandbox)?;
    let sandbox = Sandbox::new(
        config.institutions.clone(),
        SandboxOptions {
            hang: Duration::from_secs(20),
            public_url: crate::sandbox::local_url(addr),
            ..SandboxOptions::default()
        },
    );
    let sandbox_task = tokio::spawn(crate::sandbox::serve(
        listener,
        sandbox,
        std::future::pending(),
    ));
    config.settings.gateway.url = format!("http://{addr}{}", crate::sandbox::PAY_PATH);
    let amqp_settings = config.settings.amqp.clone();
    let redis_settings = config.settings.redis.clone();

    // The notify receiver, where the sandbox sends its notifies: every
    // intent without a notify_url is sent with this one.
    let stop = tokio_util::sync::CancellationToken::new();
    let notify_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::Sandbox)?;
    let notify_addr = notify_listener.local_addr().map_err(DemoError::Sandbox)?;
    config.settings.notify.public_url =
        format!("http://{notify_addr}{}", config.settings.notify.path);
    let claims = ClaimStore::new(
        crate::claim::connect(&redis_settings).map_err(|source| DemoError::Redis {
            url: redis_settings.url.redacted(),
            source,
        })?,
        &redis_settings,
    );
    let link = Link::start(amqp_settings.clone(), "demo-notify", stop.clone());
    let receiver = Arc::new(Receiver {
        payments: PaymentStore::new(claims.clone()),
        sink: link,
        keys: Arc::new(KeyRing::new(config.institutions.clone())),
        settings: config.settings.notify.clone(),
        checks: Some(crate::reconcile::ChecksStore::new(
            claims,
            config.settings.reconcile.schedule_shards as usize,
        )),
    });
    let notify_task = tokio::spawn(crate::http_server::serve(
        notify_listener,
        crate::notify::app(receiver),
        Server::Notify,
        stop.clone().cancelled_owned(),
    ));

    let conn = amqp::connect(&amqp_settings.url, &amqp::connection_name("demo"))
        .await
        .map_err(|source| DemoError::Amqp {
            url: amqp_settings.url.redacted(),
            source,
        })?;
    amqp::declare(&conn, &amqp_settings).await?;
    let mut results = result_listener(&conn, &amqp_settings.result_exchange).await?;
    let mut payments =
        event_listener(&conn, &amqp_settings.result_exchange, &["h5pay.payment.#"]).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::new(config)?;
    let worker_task = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));

    writeln!(
        out,
        "h5pay-worker demo: sandbox gateway on http://{addr}, worker consuming {prefix}.intents, \
         notify receiver on http://{notify_addr}\n"
    )?;
    let t = |n: &str| format!("{run_id}-{n}");
    let first_wave = vec![
        Case {
            label: "ready with a code_url",
            trace: t("ready"),
            body: body(&t("ready"), "wechat", json!(100), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            pay_by_hand: true,
            payment: Some("paid"),
        },
        Case {
            label: "ready with JSAPI, never paid: closed",
            trace: t("jsapi"),
            body: body(
                &t("jsapi"),
                "400",
                json!(101),
                json!({"open_id": "oDemoUser"}),
            ),
            expect: Some("ready"),
            check: |e| {
                e["jsapi"]["timeStamp"]
                    .as_str()
                    .is_some_and(|t| t.len() == 10)
            },
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "ready (Alipay)",
            trace: t("alipay"),
            body: body(&t("alipay"), "alipay", json!("102"), json!({})),
            expect: Some("ready"),
            check: |e| e["pay_type"] == "300",
            pay_by_hand: true,
            payment: Some("paid"),
        },
        Case {
            label: "paid by itself a second later (4020)",
            trace: t("selfpaid"),
            body: body(&t("selfpaid"), "wechat", json!(4020), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("paid"),
            ..Case::default()
        },
        Case {
            label: "notify with another amount (4023)",
            trace: t("mismatch"),
            body: body(&t("mismatch"), "wechat", json!(4023), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            // The anomaly brings a query forward, which finds it paid.
            payment: Some("anomaly/mismatch > paid"),
            ..Case::default()
        },
        Case {
            label: "in_process (4002), never paid: closed",
            trace: t("inproc"),
            body: body(&t("inproc"), "wechat", json!(4002), json!({})),
            expect: Some("in_process"),
            check: |_| true,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "paid, its notify lost (4021): a query finds it",
            trace: t("nonotify"),
            body: body(&t("nonotify"), "wechat", json!(4021), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("paid"),
            ..Case::default()
        },
        Case {
            label: "the payment fails (4024): a query says so",
            trace: t("latefail"),
            body: body(&t("latefail"), "wechat", json!(4024), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("failed"),
            ..Case::default()
        },
        Case {
            label: "closeorder fails once (4025), then closed",
            trace: t("closeonce"),
            body: body(&t("closeonce"), "alipay", json!(4025), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "answer lost (4026): found by a query, closed",
            trace: t("lost"),
            body: body(&t("lost"), "wechat", json!(4026), json!({})),
            expect: Some("failed/outcome_unknown"),
            check: |e| e["attempts"] == 2,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "a query contradicts itself (4027)",
            trace: t("contra"),
            body: body(&t("contra"), "wechat", json!(4027), json!({})),
            expect: Some("ready"),
            check: |e| e["code_url"].is_string(),
            payment: Some("anomaly/contradiction"),
            ..Case::default()
        },
        Case {
            label: "payment_failed (4001)",
            trace: t("payfail"),
            body: body(&t("payfail"), "wechat", json!(4001), json!({})),
            expect: Some("failed/payment_failed"),
            check: |_| true,
            ..Case::default()
        },
        Case {
            label: "gateway_rejected (4003)",
            trace: t("rejected"),
            body: body(&t("rejected"), "wechat", json!(4003), json!({})),
            expect: Some("failed/gateway_rejected"),
            check: |_| true,
            ..Case::default()
        },
        Case {
            label: "bad_signature (4010)",
            trace: t("badsign"),
            body: body(&t("badsign"), "wechat", json!(4010), json!({})),
            expect: Some("failed/bad_signature"),
            check: |e| e["code_url"].is_null(),
            ..Case::default()
        },
        Case {
            label: "two 503s, retried (5001)",
            trace: t("retry503"),
            body: body(&t("retry503"), "unionpay", json!(5001), json!({})),
            expect: Some("ready"),
            check: |e| e["attempts"] == 3,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "timeout, retried (5003)",
            trace: t("hang"),
            body: body(&t("hang"), "wechat", json!(5003), json!({})),
            expect: Some("ready"),
            check: |e| e["attempts"] == 2,
            payment: Some("closed"),
            ..Case::default()
        },
        Case {
            label: "always 500: gateway_unavailable (5002)",
            trace: t("down"),
            body: body(&t("down"), "wechat", json!(5002), json!({})),
            expect: Some("failed/gateway_unavailable"),
            check: |e| e["attempts"] == 3,
            ..Case::default()
        },
        Case {
            label: "invalid intent (\"1.00\")",
            trace: t("invalid"),
            body: body(&t("invalid"), "wechat", json!("1.00"), json!({})),
            expect: Some("failed/invalid_intent"),
            check: |e| e["attempts"] == 0,
            ..Case::default()
        },
        Case {
            label: "not JSON: dead-lettered",
            trace: t("garbage"),
            body: b"this is not an intent".to_vec(),
            expect: None,
            check: |_| true,
            ..Case::default()
        },
    ];
    let second_wave = vec![
        Case {
            label: "duplicate of the first (replayed)",
            trace: t("ready"),
            body: body(&t("ready"), "400", json!("100"), json!({})),
            expect: Some("ready"),
            check: |e| e["duplicate"] == true,
            ..Case::default()
        },
        Case {
            label: "same identity, other amount: conflict",
            trace: t("ready"),
            body: body(&t("ready"), "wechat", json!(999), json!({})),
            expect: Some("failed/conflict"),
            check: |e| e["attempts"] == 0,
            ..Case::default()
        },
    ];

    // What the payment side must show: paid by hand, paid by itself, an
    // anomaly; the rest have no payment event (open, or not followed).
    let to_pay: Vec<String> = first_wave
        .iter()
        .filter(|c| c.pay_by_hand)
        .map(|c| c.trace.clone())
        .collect();
    let expected_payments: HashMap<String, &'static str> = first_wave
        .iter()
        .filter_map(|c| c.payment.map(|p| (c.trace.clone(), p)))
        .collect();
    let ch = intent_channel(&conn).await?;
    let mut rows: Vec<Row> = Vec::new();
    let mut ok = true;
    let mut first_event_ids: HashMap<String, String> = HashMap::new();
    for wave in [first_wave, second_wave] {
        let mut expected: HashMap<String, Vec<&Case>> = HashMap::new();
        for c in &wave {
            let confirm = publish_intent(
                &ch,
                &amqp_settings.intent_exchange,
                "h5pay.intent.demo",
                &c.trace,
                &c.body,
            )
            .await?;
            if !matches!(confirm.await?, lapin::Confirmation::Ack(None)) {
                ok = false;
            }
            if c.expect.is_some() {
                expected.entry(c.trace.clone()).or_default().push(c);
            }
            if wave.len() == 2 {
                // The second wave's two intents share an identity: one at a
                // time, so the rows read in order.
                let ev = next_event(&mut results, &c.trace).await;
                let row = row_for(c, ev.as_ref(), &first_event_ids);
                ok &= row.good;
                rows.push(row);
            }
        }
        if wave.len() == 2 {
            continue;
        }
        let mut got: HashMap<String, Value> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.len() < expected.len() {
            match tokio::time::timeout_at(deadline, results.next()).await {
                Ok(Some(Ok(d))) => {
                    let _ = d.acker.ack(Default::default()).await;
                    if let Ok(ev) = serde_json::from_slice::<Value>(&d.data) {
                        let trace = ev["pay_trace_no"].as_str().unwrap_or("").to_owned();
                        if expected.contains_key(&trace) {
                            got.entry(trace).or_insert(ev);
                        }
                    }
                }
                _ => break,
            }
        }
        for c in &wave {
            if c.expect.is_none() {
                let dlq = dead_lettered(&conn, &amqp_settings.dead_letter_queue).await;
                let good = dlq == Some(c.body.clone());
                ok &= good;
                rows.push(Row {
                    label: c.label.to_owned(),
                    trace: c.trace.clone(),
                    result: "dead-lettered".into(),
                    extra: String::new(),
                    detail: "in the DLQ".into(),
                    good,
                });
                continue;
            }
            let ev = got.get(&c.trace);
            if let Some(ev) = ev {
                first_event_ids.insert(
                    c.trace.clone(),
                    ev["event_id"].as_str().unwrap_or("").to_owned(),
                );
            }
            let row = row_for(c, ev, &first_event_ids);
            ok &= row.good;
            rows.push(row);
        }
        // The payer pays some orders at once (before the reconciler closes
        // what stays unpaid); the sandbox notifies; the receiver turns the
        // notifies into payment events.
        let http = reqwest::Client::new();
        for trace in &to_pay {
            let paid = http
                .post(format!("http://{addr}/sandbox/pay"))
                .header("content-type", "application/json")
                .body(json!({"mch_no": "DEMO0001", "pay_trace_no": trace}).to_string())
                .send()
                .await;
            ok &= paid.is_ok_and(|r| r.status().is_success());
        }
    }
    let seen = payment_events(&mut payments, &expected_payments).await;

    writeln!(
        out,
        "{:<46} {:<28} {:>8} {:<9} {:<26} detail",
        "intent", "result", "attempts", "duplicate", "payment events"
    )?;
    writeln!(out, "{}", "-".repeat(150))?;
    for row in &rows {
        // Only the first row of an identity shows its payment.
        let first_of_identity = rows.iter().position(|r| r.trace == row.trace)
            == rows.iter().position(|r| std::ptr::eq(r, row));
        let got = seen.get(&row.trace).cloned().unwrap_or_default();
        let want = expected_payments.get(&row.trace).copied();
        let (payment, payment_good) = if first_of_identity {
            shown(want, &got)
        } else {
            (String::new(), true)
        };
        ok &= payment_good;
        // The detail quotes the events (gateway text among it).
        crate::text::print_line(
            out,
            &format!(
                "{:<46} {:<28} {:<18} {:<26} {}{}",
                row.label,
                row.result,
                row.extra,
                payment,
                row.detail,
                if row.good && payment_good {
                    ""
                } else {
                    "   <-- NOT AS EXPECTED"
                }
            ),
        )?;
    }
    let stats = sandbox_calls(&addr).await;
    writeln!(
        out,
        "\ngateway calls made (from GET /sandbox/stats): {stats}"
    )?;
    writeln!(
        out,
        "{}",
        if ok {
            "every intent ended as the contract says."
        } else {
            "SOME INTENTS DID NOT END AS EXPECTED."
        }
    )?;

    let _ = stop_tx.send(());
    let _ = worker_task.await;
    stop.cancel();
    let _ = notify_task.await;
    amqp::topology::remove(&conn, &amqp_settings).await;
    let _ =
        crate::claim::remove_keys(redis_settings.url.expose(), &redis_settings.key_prefix).await;
    drop(results);
    amqp::close(&conn, &[&ch], "demo done").await;
    sandbox_task.abort();
    Ok(ok)
}

async fn next_event(results: &mut lapin::Consumer, trace: &str) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, results.next()).await {
        let _ = d.acker.ack(Default::default()).await;
        if let Ok(ev) = serde_json::from_slice::<Value>(&d.data)
            && ev["pay_trace_no"] == trace
        {
            return Some(ev);
        }
    }
    None
}

/// One line of the demo's table.
struct Row {
    label: String,
    trace: String,
    result: String,
    extra: String,
    detail: String,
    good: bool,
}

/// The expected payment events (`a > b`), one by one.
fn steps(want: &str) -> Vec<&str> {
    want.split('>').map(str::trim).collect()
}

/// The payment column, and whether it is what the contract says: the
/// expected events first (more may follow, shown as `…`), or none at all.
fn shown(want: Option<&str>, got: &[String]) -> (String, bool) {
    match want {
        None => (
            if got.is_empty() {
                "-".into()
            } else {
                got.join(" > ")
            },
            got.is_empty(),
        ),
        Some(w) => {
            let want = steps(w);
            let good = got.len() >= want.len() && got.iter().zip(&want).all(|(g, w)| g == w);
            let mut text = got
                .iter()
                .take(want.len())
                .cloned()
                .collect::<Vec<_>>()
                .join(" > ");
            if got.len() > want.len() {
                text.push_str(" …");
            }
            (
                if text.is_empty() {
                    "(none)".into()
                } else {
                    text
                },
                good,
            )
        }
    }
}

/// Every trace's payment events in order (up to 40 s, until each expected
/// trace has had as many as expected), as `state` or `anomaly/<kind>`.
async fn payment_events(
    payments: &mut lapin::Consumer,
    expected: &HashMap<String, &'static str>,
) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let done = |seen: &HashMap<String, Vec<String>>| {
        expected
            .iter()
            .all(|(t, w)| seen.get(t).map_or(0, Vec::len) >= steps(w).len())
    };
    while !done(&seen) {
        let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, payments.next()).await else {
            break;
        };
        let _ = d.acker.ack(Default::default()).await;
        let Ok(ev) = serde_json::from_slice::<Value>(&d.data) else {
            continue;
        };
        // An event published again (at least once) is shown once.
        if !ids.insert(ev["event_id"].as_str().unwrap_or("").to_owned()) {
            continue;
        }
        let trace = ev["pay_trace_no"].as_str().unwrap_or("").to_owned();
        let state = match ev["anomaly"]["kind"].as_str() {
            Some(kind) => format!("anomaly/{kind}"),
            None => ev["state"].as_str().unwrap_or("?").to_owned(),
        };
        seen.entry(trace).or_default().push(state);
    }
    seen
}

fn row_for(c: &Case, ev: Option<&Value>, first_ids: &HashMap<String, String>) -> Row {
    let Some(ev) = ev else {
        return Row {
            label: c.label.to_owned(),
            trace: c.trace.clone(),
            result: "NO RESULT EVENT".into(),
            extra: String::new(),
            detail: String::new(),
            good: false,
        };
    };
    let outcome = outcome_of(ev);
    let mut good = Some(outcome.as_str()) == c.expect && (c.check)(ev);
    if ev["duplicate"] == true {
        // A replay carries the original event's id.
        good &= first_ids.get(&c.trace).map(String::as_str) == ev["event_id"].as_str();
    }
    let extra = format!(
        "{:>8} {:<9}",
        ev["attempts"].to_string(),
        ev["duplicate"].to_string()
    );
    Row {
        label: c.label.to_owned(),
        trace: c.trace.clone(),
        result: outcome,
        extra,
        detail: detail_of(ev),
        good,
    }
}

/// The first message in the DLQ, if any.
async fn dead_lettered(conn: &lapin::Connection, dlq: &str) -> Option<Vec<u8>> {
    let ch = conn.create_channel().await.ok()?;
    for _ in 0..50 {
        if let Ok(Some(m)) = ch
            .basic_get(dlq.into(), BasicGetOptions { no_ack: true })
            .await
        {
            return Some(m.delivery.data.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn sandbox_calls(addr: &std::net::SocketAddr) -> String {
    let url = format!("http://{addr}/sandbox/stats");
    let stats = match reqwest::get(&url).await {
        Ok(r) => r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
        Err(_) => None,
    };
    match stats {
        Some(v) => format!(
            "{} in all, for {} identities",
            v["total_calls"], v["identity_count"]
        ),
        None => "unavailable".into(),
    }
}
