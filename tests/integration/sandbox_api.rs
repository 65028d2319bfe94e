//! The sandbox gateway over real HTTP: validation, sign checks, signed
//! answers, idempotency per identity, scenarios, stats.

use h5pay_worker::gateway::sign;
use h5pay_worker::gateway::wire::JSAPI_FIELDS;
use h5pay_worker::sandbox::{PAY_PATH, Sandbox, SandboxOptions};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::support::{SANDBOX_KEY, SECOND_KEY};

async fn start(options: SandboxOptions) -> (String, std::sync::Arc<Sandbox>) {
    let institutions = h5pay_worker::keys::Institutions::from_pairs([
        ("60000001".to_owned(), SecretString::from(SANDBOX_KEY)),
        ("60000002".to_owned(), SecretString::from(SECOND_KEY)),
    ])
    .expect("two institutions");
    let (addr, sandbox) = crate::support::SandboxServer::start(institutions, options)
        .await
        .detach();
    (format!("http://{addr}"), sandbox)
}

fn request(trace: &str, amount: &str) -> Map<String, Value> {
    let v = json!({"inst_no": "60000001", "mch_no": "M1", "pay_type": "400", "pay_trace_no": trace,
                   "pay_time": "20261126101500", "total_amount": amount});
    v.as_object().cloned().unwrap_or_default()
}

fn signed(mut m: Map<String, Value>, key: &str) -> Value {
    m.remove("sign");
    let s = sign::sign(&m, &SecretString::from(key.to_owned()));
    m.insert("sign".into(), Value::String(s));
    Value::Object(m)
}

async fn post(base: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{PAY_PATH}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn verifies(answer: &Value, key: &str) -> bool {
    answer
        .as_object()
        .is_some_and(|m| sign::verify(m, &SecretString::from(key.to_owned())).is_ok())
}

#[tokio::test]
async fn a_signed_request_gets_a_signed_code_url_and_the_same_answer_again() {
    let (base, sandbox) = start(SandboxOptions::default()).await;
    let body = signed(request("S-1", "100"), SANDBOX_KEY);
    let (status, first) = post(&base, &body).await;
    assert_eq!(status, 200);
    assert_eq!(first["return_code"], "SUCCESS");
    assert_eq!(first["result_code"], "PAY_SUCCESS");
    assert!(
        verifies(&first, SANDBOX_KEY),
        "answer must be signed: {first}"
    );
    for echoed in [
        "mch_no",
        "pay_trace_no",
        "total_amount",
        "pay_time",
        "pay_type",
    ] {
        assert_eq!(first[echoed], body[echoed], "{echoed} must be echoed");
    }
    let code_url = first["code_url"].as_str().unwrap_or_default().to_owned();
    assert!(code_url.starts_with("http://"), "{first}");
    let (_, second) = post(&base, &body).await;
    assert_eq!(second["trade_no"], first["trade_no"]);
    assert_eq!(second["code_url"], first["code_url"]);
    assert_eq!(sandbox.calls("60000001", "M1", "S-1"), 2);
    // The code_url leads to a page of the sandbox.
    let page = reqwest::get(&code_url).await.expect("GET answered");
    assert_eq!(page.status().as_u16(), 200);
}

#[tokio::test]
async fn different_parameters_for_a_known_identity_are_refused_as_a_duplicate() {
    let (base, sandbox) = start(SandboxOptions::default()).await;
    let (_, first) = post(&base, &signed(request("S-2", "100"), SANDBOX_KEY)).await;
    assert_eq!(first["return_code"], "SUCCESS");
    let (_, other) = post(&base, &signed(request("S-2", "101"), SANDBOX_KEY)).await;
    assert_eq!(other["return_code"], "FAIL");
    assert!(
        other["return_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("duplicate pay_trace_no"),
        "{other}"
    );
    let stats = sandbox.stats(&Default::default());
    let id = stats
        .identities
        .iter()
        .find(|i| i.pay_trace_no == "S-2")
        .map(|i| (i.calls, i.distinct_requests));
    assert_eq!(id, Some((2, 2)));
    // Another merchant may use the same pay_trace_no.
    let mut m = request("S-2", "101");
    m.insert("mch_no".into(), json!("M2"));
    let (_, elsewhere) = post(&base, &signed(m, SANDBOX_KEY)).await;
    assert_eq!(elsewhere["return_code"], "SUCCESS");
}

#[tokio::test]
async fn bad_signs_fields_and_content_types_are_refused_with_a_reason() {
    let (base, _) = start(SandboxOptions::default()).await;
    let client = reqwest::Client::new();
    let cases: Vec<(Value, &str)> = vec![
        (signed(request("S-3", "100"), "wrong-key"), "sign"),
        (json!({"inst_no": "60000001"}), "required"),
        (signed(request("S-3", "1.00"), SANDBOX_KEY), "total_amount"),
        (signed(request("S 3", "100"), SANDBOX_KEY), "pay_trace_no"),
        (
            signed(
                {
                    let mut m = request("S-3", "100");
                    m.insert("pay_time".into(), json!("20260230000000"));
                    m
                },
                SANDBOX_KEY,
            ),
            "pay_time",
        ),
        (
            signed(
                {
                    let mut m = request("S-3", "100");
                    m.insert("inst_no".into(), json!("99"));
                    m
                },
                SANDBOX_KEY,
            ),
            "inst_no",
        ),
        (
            signed(
                {
                    let mut m = request("S-3", "100");
                    m.insert("total_amount".into(), json!(100));
                    m
                },
                SANDBOX_KEY,
            ),
            "must be a string",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer) = post(&base, &body).await;
        assert_eq!(
            (status, answer["return_code"].as_str()),
            (200, Some("FAIL")),
            "{body}"
        );
        assert!(
            answer["return_msg"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{needle}: {answer}"
        );
    }
    let r = client
        .post(format!("{base}{PAY_PATH}"))
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&signed(request("S-3", "100"), SANDBOX_KEY)).unwrap_or_default())
        .send()
        .await
        .expect("request sent");
    let answer: Value =
        serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
    assert!(
        answer["return_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("Content-Type"),
        "{answer}"
    );
}

#[tokio::test]
async fn scenario_amounts_answer_as_documented() {
    let (base, _) = start(SandboxOptions::default()).await;
    let (_, a) = post(&base, &signed(request("S-4001", "4001"), SANDBOX_KEY)).await;
    assert_eq!(
        (a["return_code"].as_str(), a["result_code"].as_str()),
        (Some("SUCCESS"), Some("PAY_FAIL"))
    );
    let (_, a) = post(&base, &signed(request("S-4002", "4002"), SANDBOX_KEY)).await;
    assert_eq!(a["result_code"], "PAY_IN_PROCESS");
    let (_, a) = post(&base, &signed(request("S-4003", "4003"), SANDBOX_KEY)).await;
    assert_eq!(a["return_code"], "FAIL");
    let (_, a) = post(&base, &signed(request("S-4010", "4010"), SANDBOX_KEY)).await;
    assert_eq!(a["return_code"], "SUCCESS");
    assert!(!verifies(&a, SANDBOX_KEY), "4010 must carry a wrong sign");
    let body = signed(request("S-5001", "5001"), SANDBOX_KEY);
    let statuses = [
        post(&base, &body).await.0,
        post(&base, &body).await.0,
        post(&base, &body).await.0,
    ];
    assert_eq!(statuses, [503, 503, 200]);
    let body = signed(request("S-5002", "5002"), SANDBOX_KEY);
    assert_eq!(
        [post(&base, &body).await.0, post(&base, &body).await.0],
        [500, 500]
    );
}

#[tokio::test]
async fn scenario_5003_hangs_the_first_call_only() {
    let (base, _) = start(SandboxOptions {
        hang: std::time::Duration::from_secs(30),
        ..SandboxOptions::default()
    })
    .await;
    let body = signed(request("S-5003", "5003"), SANDBOX_KEY);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .expect("a client");
    let first = client
        .post(format!("{base}{PAY_PATH}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .send()
        .await;
    assert!(
        first.is_err_and(|e| e.is_timeout()),
        "the first call must hang"
    );
    let (status, second) = post(&base, &body).await;
    assert_eq!(
        (status, second["result_code"].as_str()),
        (200, Some("PAY_SUCCESS"))
    );
}

#[tokio::test]
async fn wechat_with_open_id_gets_jsapi_parameters_and_stats_count_calls() {
    let (base, _) = start(SandboxOptions::default()).await;
    let mut m = request("S-JS", "100");
    m.insert("open_id".into(), json!("o-user"));
    let (_, a) = post(&base, &signed(m, SANDBOX_KEY)).await;
    assert!(a["code_url"].is_null(), "{a}");
    for k in JSAPI_FIELDS {
        assert!(a[k].is_string(), "{k} missing: {a}");
    }
    assert!(verifies(&a, SANDBOX_KEY));
    let stats: Value = reqwest::get(format!("{base}/sandbox/stats?pay_trace_no=S-JS"))
        .await
        .expect("GET answered")
        .json_value()
        .await;
    assert_eq!(stats["calls"]["60000001/M1/S-JS"], 1, "{stats}");
    assert_eq!(stats["identity_count"], 1);
}

#[tokio::test]
async fn error_rate_one_answers_503_to_everything() {
    let (base, _) = start(SandboxOptions {
        error_rate: 1.0,
        ..SandboxOptions::default()
    })
    .await;
    assert_eq!(
        post(&base, &signed(request("S-E", "100"), SANDBOX_KEY))
            .await
            .0,
        503
    );
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap_or_default()).unwrap_or_default()
    }
}

#[tokio::test]
async fn unsigned_or_badly_signed_calls_are_refused_before_anything_is_recorded() {
    let (base, sandbox) = start(SandboxOptions::default()).await;
    for i in 0..500 {
        let mut body = request(&format!("FORGED-{i}"), "100");
        body.insert("sign".into(), json!("0".repeat(32)));
        let (status, answer) = post(&base, &Value::Object(body)).await;
        assert_eq!((status, &answer["return_code"]), (200, &json!("FAIL")));
    }
    let (_, unsigned) = post(&base, &Value::Object(request("FORGED-X", "100"))).await;
    assert_eq!(unsigned["return_code"], "FAIL", "{unsigned}");
    let stats = sandbox.stats(&Default::default());
    assert_eq!(stats.total_calls, 501);
    assert_eq!(stats.identity_count, 0, "no memory for forged calls");
}

#[tokio::test]
async fn code_urls_point_at_the_configured_public_url_whatever_the_host_header_says() {
    let institutions = h5pay_worker::keys::Institutions::from_pairs([(
        "60000001".to_owned(),
        SecretString::from(SANDBOX_KEY),
    )])
    .expect("one institution");
    let sandbox = Sandbox::new(
        institutions,
        SandboxOptions {
            public_url: "https://sandbox.example.test/".into(),
            ..SandboxOptions::default()
        },
    );
    let (listener, addr) = h5pay_worker::http_server::loopback().await.expect("a port");
    let base = format!("http://{addr}");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(h5pay_worker::sandbox::serve(listener, sandbox, async {
        let _ = stopped.await;
    }));
    let body = signed(request("HOST-1", "100"), SANDBOX_KEY);
    let bytes = reqwest::Client::new()
        .post(format!("{base}{PAY_PATH}"))
        .header("content-type", "application/json")
        .header("host", "evil.example")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .send()
        .await
        .expect("answered")
        .bytes()
        .await
        .expect("a body");
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    let code_url = answer["code_url"].as_str().unwrap_or_default();
    assert!(
        code_url.starts_with("https://sandbox.example.test/sandbox/pay/"),
        "{answer}"
    );
}

async fn post_to(base: &str, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .send()
        .await
        .expect("request sent");
    serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null)
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn queryorder_and_closeorder_check_signs_find_orders_and_close_once_per_close_trace_no() {
    use h5pay_worker::sandbox::{CLOSE_PATH, QUERY_PATH};
    let (base, _) = start(SandboxOptions::default()).await;
    let placed = post(&base, &signed(request("LC-1", "100"), SANDBOX_KEY))
        .await
        .1;
    let trade_no = placed["trade_no"].as_str().unwrap_or_default().to_owned();

    // Unsigned, unknown, and a pay_time that is not the order's: refused.
    let q = |extra: Value| {
        let mut m = params(json!({"inst_no": "60000001", "mch_no": "M1", "query_trace_no": "q1"}));
        m.extend(params(extra));
        m
    };
    let mut forged = signed(q(json!({"trade_no": trade_no})), SANDBOX_KEY);
    forged["query_trace_no"] = json!("q2");
    assert_eq!(
        post_to(&base, QUERY_PATH, &forged).await["return_code"],
        "FAIL"
    );
    for extra in [
        json!({"trade_no": "nope"}),
        json!({"pay_trace_no": "LC-1", "pay_time": "20261126101501"}),
    ] {
        let a = post_to(&base, QUERY_PATH, &signed(q(extra.clone()), SANDBOX_KEY)).await;
        assert_eq!(a["return_code"], "FAIL", "{extra}: {a}");
        assert!(
            verifies(&a, SANDBOX_KEY),
            "refusals are signed once the institution is known"
        );
    }
    // By trade_no, and by pay_trace_no + pay_time: the same order, signed, echoing.
    for extra in [
        json!({"trade_no": trade_no}),
        json!({"pay_trace_no": "LC-1", "pay_time": "20261126101500"}),
    ] {
        let a = post_to(&base, QUERY_PATH, &signed(q(extra), SANDBOX_KEY)).await;
        assert!(verifies(&a, SANDBOX_KEY), "{a}");
        assert_eq!(
            (a["result_code"].as_str(), a["trade_no"].as_str()),
            (Some("PAY_IN_PROCESS"), Some(trade_no.as_str()))
        );
        assert_eq!(
            (a["query_trace_no"].as_str(), a["total_amount"].as_str()),
            (Some("q1"), Some("100"))
        );
    }

    // Close: idempotent per close_trace_no; the same one with another time is refused.
    let close = |trace: &str, time: &str| {
        params(
            json!({"inst_no": "60000001", "mch_no": "M1", "close_trace_no": trace,
                      "close_time": time, "trade_no": trade_no}),
        )
    };
    let first = post_to(
        &base,
        CLOSE_PATH,
        &signed(close("c1", "20261126110000"), SANDBOX_KEY),
    )
    .await;
    assert!(verifies(&first, SANDBOX_KEY));
    assert_eq!(
        (
            first["result_code"].as_str(),
            first["close_trace_no"].as_str()
        ),
        (Some("PAY_SUCCESS"), Some("c1"))
    );
    let again = post_to(
        &base,
        CLOSE_PATH,
        &signed(close("c1", "20261126110000"), SANDBOX_KEY),
    )
    .await;
    assert_eq!(again["result_code"], "PAY_SUCCESS");
    let other = post_to(
        &base,
        CLOSE_PATH,
        &signed(close("c1", "20261126110001"), SANDBOX_KEY),
    )
    .await;
    assert_eq!(other["return_code"], "FAIL", "{other}");
    // Closed: the query says PAY_FAIL, and paying is refused.
    let a = post_to(
        &base,
        QUERY_PATH,
        &signed(q(json!({"trade_no": trade_no})), SANDBOX_KEY),
    )
    .await;
    assert_eq!(a["result_code"], "PAY_FAIL");
    let pay = reqwest::Client::new()
        .post(format!("{base}/sandbox/pay"))
        .header("content-type", "application/json")
        .body(json!({"mch_no": "M1", "pay_trace_no": "LC-1"}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(pay.status(), 409);
}

#[tokio::test]
async fn the_trade_state_shape_answers_without_result_code() {
    use h5pay_worker::sandbox::{QUERY_PATH, QueryShape};
    let (base, _) = start(SandboxOptions {
        query_shape: QueryShape::TradeState,
        ..SandboxOptions::default()
    })
    .await;
    let placed = post(&base, &signed(request("TS-1", "100"), SANDBOX_KEY))
        .await
        .1;
    let q = params(
        json!({"inst_no": "60000001", "mch_no": "M1", "query_trace_no": "q1",
                          "trade_no": placed["trade_no"]}),
    );
    let a = post_to(&base, QUERY_PATH, &signed(q, SANDBOX_KEY)).await;
    assert!(verifies(&a, SANDBOX_KEY));
    assert_eq!(a["trade_state"], "NOTPAY");
    assert!(a.get("result_code").is_none(), "{a}");
}

// Contract §8: the sandbox is a test tool.

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

/// The hidden `token` field of a payment page's Pay form.
fn page_token(page: &str) -> Option<String> {
    let at = page.find("name=token value=\"")? + "name=token value=\"".len();
    let len = page[at..].find('"')?;
    Some(page[at..at + len].to_owned())
}

#[tokio::test]
async fn the_pay_button_pays_only_with_the_random_token_of_its_own_order() {
    let (base, sandbox) = start(SandboxOptions::default()).await;
    let mut urls = Vec::new();
    for trace in ["TOKEN-1", "TOKEN-2"] {
        let (_, placed) = post(&base, &signed(request(trace, "100"), SANDBOX_KEY)).await;
        let code_url = placed["code_url"].as_str().unwrap_or_default().to_owned();
        assert!(code_url.contains("/sandbox/pay/"), "{placed}");
        urls.push(code_url);
    }
    let http = no_redirects();
    let mut tokens = Vec::new();
    for url in &urls {
        let page = http
            .get(url)
            .send()
            .await
            .expect("the page answers")
            .text()
            .await
            .unwrap_or_default();
        let token = page_token(&page).unwrap_or_else(|| panic!("no token in the form: {page}"));
        assert_eq!(token.len(), 32, "128 random bits, hex: {token}");
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1], "one token per order");
    let paid = |trace: &str| {
        sandbox
            .stats(&Default::default())
            .identities
            .iter()
            .any(|i| i.pay_trace_no == trace && i.paid)
    };
    let form = |body: String| {
        http.post(&urls[0])
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    // What a page elsewhere can post: nothing, a guess, another order's
    // token (its own order's page is all it could have read).
    for body in [
        String::new(),
        "token=".to_owned(),
        format!("token={}", "0".repeat(32)),
        format!("token={}", tokens[1]),
        format!("tokens={}", tokens[0]),
    ] {
        let r = form(body.clone()).send().await.expect("answered");
        assert_eq!(r.status(), 403, "{body:?}");
        assert!(!paid("TOKEN-1"), "{body:?} paid the order");
    }
    // The page's own form pays it, and the page shows it paid.
    let r = form(format!("token={}", tokens[0]))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 303);
    assert!(paid("TOKEN-1"));
    assert!(!paid("TOKEN-2"));
    let page = http
        .get(&urls[0])
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .unwrap_or_default();
    assert!(page.contains("<dd id=status>paid at "), "{page}");
    // An unknown order is still 404, token or not.
    let r = http
        .post(format!("{base}/sandbox/pay/no-such-order"))
        .body(format!("token={}", tokens[1]))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 404);
    // The JSON test hook on loopback stays as documented (no token).
    let r = http
        .post(format!("{base}/sandbox/pay"))
        .header("content-type", "application/json")
        .body(json!({"mch_no": "M1", "pay_trace_no": "TOKEN-2"}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    assert!(paid("TOKEN-2"));
}

#[tokio::test]
async fn a_notify_answered_with_a_redirect_is_a_failure_and_the_redirect_is_never_followed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use crate::support::serve;
    // Where a redirect would lead: it answers the SUCCESS reply to anything,
    // so a sandbox that followed would even call the notify delivered.
    let elsewhere_hits = Arc::new(AtomicU64::new(0));
    let hits = elsewhere_hits.clone();
    let elsewhere = serve(axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"return_code": "SUCCESS", "return_msg": "成功"}))
        }
    }))
    .await;
    for status in [301u16, 302, 303, 307, 308] {
        let notify_hits = Arc::new(AtomicU64::new(0));
        let hits = notify_hits.clone();
        let notify = serve(axum::Router::new().fallback(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::FOUND),
                    [(
                        axum::http::header::LOCATION,
                        format!("http://{elsewhere}/stolen"),
                    )],
                )
            }
        }))
        .await;
        let (base, sandbox) = start(SandboxOptions {
            notify_schedule: vec![Duration::ZERO, Duration::from_millis(200)],
            ..SandboxOptions::default()
        })
        .await;
        let trace = format!("REDIRECT-{status}");
        let mut order = request(&trace, "100");
        order.insert(
            "notify_url".into(),
            json!(format!("http://{notify}/h5pay/notify")),
        );
        let (_, placed) = post(&base, &signed(order, SANDBOX_KEY)).await;
        assert_eq!(placed["result_code"], "PAY_SUCCESS", "{placed}");
        let pay = post_to(
            &base,
            "/sandbox/pay",
            &json!({"mch_no": "M1", "pay_trace_no": trace}),
        )
        .await;
        assert_eq!(pay["paid"], true, "{pay}");
        let sent = || {
            sandbox
                .stats(&Default::default())
                .identities
                .into_iter()
                .find(|i| i.pay_trace_no == trace)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sent().is_none_or(|o| o.notifies_sent < 2) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let order = sent().expect("the order");
        assert_eq!(
            order.notifies_sent, 2,
            "{status}: sent on the whole schedule"
        );
        assert!(
            !order.notified,
            "{status}: a redirect is not the SUCCESS reply"
        );
        assert_eq!(notify_hits.load(Ordering::SeqCst), 2, "{status}");
        assert_eq!(
            elsewhere_hits.load(Ordering::SeqCst),
            0,
            "{status}: the redirect was followed"
        );
    }
}

#[test]
fn the_sandbox_refuses_institution_keys_from_key_env_or_key_file_with_one_line() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");
    const SECRET: &str = "a-production-key-never-read-0001";
    let dir = tempfile::tempdir().expect("a temp dir");
    let key_file = dir.path().join("prod.key");
    std::fs::write(&key_file, format!("{SECRET}\n")).expect("key file written");
    let cases = [
        (
            format!(
                "[[institutions]]\ninst_no = \"60000001\"\nkey = \"{SANDBOX_KEY}\"\n\
                 [[institutions]]\ninst_no = \"60000002\"\nkey_env = \"H5PAY_TEST_PROD_KEY\"\n\
                 [worker]\ndefault_inst_no = \"60000001\"\n"
            ),
            "institutions[1].key_env",
            "H5PAY_TEST_PROD_KEY",
        ),
        (
            format!("[[institutions]]\ninst_no = \"60000001\"\nkey_file = {key_file:?}\n"),
            "institutions[0].key_file",
            "prod.key",
        ),
    ];
    for (i, (toml, key, names)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&config, toml).expect("config written");
        let port = crate::net::free_port().expect("a free port");
        let mut child = Command::new(BIN)
            .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(&config)
            .env("H5PAY_TEST_PROD_KEY", SECRET)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sandbox started");
        let started = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().expect("its output");
        let err = String::from_utf8_lossy(&out.stderr);
        let status = status.unwrap_or_else(|| panic!("{key}: the sandbox started: {err}"));
        assert_eq!(status.code(), Some(2), "{key}: {err}");
        assert_eq!(err.lines().count(), 1, "{key}: one line: {err}");
        assert!(err.contains(key), "{key} not named: {err}");
        assert!(err.contains(names), "{names} not named: {err}");
        assert!(
            !err.contains(SECRET),
            "{key}: the key was read and shown: {err}"
        );
        assert!(out.stdout.is_empty(), "{key}");
    }
}
