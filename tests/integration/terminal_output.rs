//! Contract §7: text that came from outside (a gateway's answer, an
//! intent's fields, a dead-lettered message) is printed by every command
//! with its control characters escaped — in text every one but newline and
//! tab (C0, DEL, C1), in JSON what JSON requires — so nothing read from a
//! queue, Redis or the gateway can drive the operator's terminal. Over the
//! real binary, broker, Redis and an HTTP gateway.

use std::time::Duration;

use lapin::BasicProperties;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::support::{SANDBOX_KEY, TestEnv, WAIT, base_toml, intent, publish_on, x_death};

const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");

/// Red text, then a C1 CSI (U+009B) that would clear the screen, then DEL.
const HOSTILE: &str = "\u{1b}[31mRED\u{1b}[0m \u{9b}2J \u{7f}";

/// The bytes a terminal would obey: ESC, C1 CSI, DEL, BEL, CR.
fn raw_controls(s: &str) -> Vec<char> {
    s.chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect()
}

async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit"))
        .expect("the command ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway that refuses every order, signed, with a hostile `return_msg`.
async fn hostile_gateway() -> String {
    let app = axum::Router::new().fallback(|| async {
        let mut m = Map::new();
        m.insert("return_code".into(), json!("FAIL"));
        m.insert("return_msg".into(), json!(format!("{HOSTILE} refused")));
        m.insert("result_code".into(), Value::Null);
        let s = h5pay_worker::gateway::sign::sign(&m, &SecretString::from(SANDBOX_KEY));
        m.insert("sign".into(), json!(s));
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            Value::Object(m).to_string(),
        )
    });
    let addr = crate::support::serve(app).await;
    format!("http://{addr}{}", h5pay_worker::sandbox::PAY_PATH)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_escapes_an_esc_sequence_from_the_gateway_and_from_stored_intent_fields() {
    let gateway = hostile_gateway().await;
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let mut config = env.config.clone();
    config.settings.gateway.url = gateway.clone();
    let _worker = env.worker_with(config);
    env.publish_json(&intent("TERM-1", "M1", 100)).await;
    let event = results.take(1, WAIT).await.remove(0).event;
    let message = event["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\u{1b}[31mRED"),
        "the gateway's text reached the stored outcome as sent: {event}"
    );
    // The pay_time the claim holds came from the intent; whatever the
    // validator lets through, the printer does not count on it.
    let key = format!(
        "{}:60000001:M1:TERM-1",
        env.config.settings.redis.key_prefix
    );
    let mut r = env.redis().await;
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("pt")
        .arg(format!("2026{HOSTILE}"))
        .query_async(&mut r)
        .await
        .expect("HSET");

    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_toml(&env.id, &gateway)).expect("config written");
    let config = config.display().to_string();
    let args = [
        "inspect",
        "--config",
        &config,
        "--mch-no",
        "M1",
        "--pay-trace-no",
        "TERM-1",
    ];
    let (code, text, err) = run(&args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(raw_controls(&text), Vec::<char>::new(), "raw: {text:?}");
    assert!(
        text.contains("\\u{1b}[31mRED\\u{1b}[0m \\u{9b}2J \\u{7f} refused"),
        "the gateway's message, escaped: {text}"
    );
    assert!(
        text.contains("pay_time       2026\\u{1b}[31mRED"),
        "the intent's pay_time, escaped: {text}"
    );

    let (code, json_out, err) = run(&[&args[..], &["--json"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        !json_out.contains('\u{1b}'),
        "raw ESC in JSON: {json_out:?}"
    );
    assert!(json_out.contains("\\u001b[31mRED"), "{json_out}");
    let v: Value = serde_json::from_str(json_out.trim()).expect("one JSON object");
    assert!(
        v["outcome"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(HOSTILE)),
        "JSON carries the text itself: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_and_replay_escape_esc_sequences_in_dead_lettered_messages() {
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    let _worker = env.worker();
    let ch = env.publisher().await;
    // Dead-lettered by the worker (not an intent): its message_id, set by
    // whoever published it, sets the terminal's title and rings the bell.
    publish_on(
        &ch,
        &a.intent_exchange,
        b"\x1b[31mnot json\x1b[0m",
        BasicProperties::default().with_message_id("m-\u{1b}]0;owned\u{7}".into()),
    )
    .await;
    // An intent dead-lettered after its delivery limit, as the broker leaves
    // it: x-death, and its body's fields.
    let headers = x_death("delivery_limit", 5, None, Some("h5pay.intent.M1"));
    let body = serde_json::to_vec(&json!({"inst_no": "60000001", "mch_no": "M1",
        "pay_type": "wechat", "total_amount": 100, "pay_trace_no": format!("DLQ-{HOSTILE}")}))
    .unwrap_or_default();
    publish_on(
        &ch,
        &a.dead_letter_exchange,
        &body,
        BasicProperties::default()
            .with_message_id("m-intent".into())
            .with_headers(headers),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.queue_depth(&a.dead_letter_queue).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the DLQ never held both"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_toml(&env.id, &env.gateway_url())).expect("config written");
    let config = config.display().to_string();

    let (code, text, err) = run(&["dlq", "list", "--config", &config]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(raw_controls(&text), Vec::<char>::new(), "raw: {text:?}");
    assert!(
        text.contains("message_id=m-\\u{1b}]0;owned\\u{7}"),
        "{text}"
    );
    assert!(
        text.contains("pay_trace_no=DLQ-\\u{1b}[31mRED\\u{1b}[0m \\u{9b}2J \\u{7f}"),
        "{text}"
    );

    let (code, json_out, err) = run(&["dlq", "list", "--config", &config, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        !json_out.contains('\u{1b}'),
        "raw ESC in JSON: {json_out:?}"
    );
    assert!(!json_out.contains('\u{7}'), "raw BEL in JSON: {json_out:?}");
    assert!(json_out.contains("DLQ-\\u001b[31mRED"), "{json_out}");
    let traces: Vec<Value> = json_out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["pay_trace_no"].clone())
        .collect();
    assert!(
        traces.contains(&json!(format!("DLQ-{HOSTILE}"))),
        "{json_out}"
    );

    let (code, text, err) = run(&["dlq", "replay", "--config", &config, "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(raw_controls(&text), Vec::<char>::new(), "raw: {text:?}");
    assert!(text.contains("pay_trace_no=DLQ-\\u{1b}[31mRED"), "{text}");
    assert!(
        text.contains("message_id=m-\\u{1b}]0;owned\\u{7}"),
        "{text}"
    );
    assert_eq!(
        env.queue_depth(&a.dead_letter_queue).await,
        2,
        "listing and a dry run leave the DLQ as it was"
    );
}
