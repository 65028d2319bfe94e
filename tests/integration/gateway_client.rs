//! The HTTP gateway client against the sandbox (every scenario) and against
//! scripted servers (sequences the sandbox does not produce), over real HTTP.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use h5pay_worker::config::{GatewaySettings, RetrySettings};
use h5pay_worker::gateway::breaker::Breaker;
use h5pay_worker::gateway::{Abandon, Gateway, H5PayRequest, sign};
use h5pay_worker::outcome::{Decision, FailureKind};
use h5pay_worker::sandbox::{Sandbox, SandboxOptions};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::SANDBOX_KEY;

fn key() -> SecretString {
    SecretString::from(SANDBOX_KEY)
}

fn client(url: &str, retry: RetrySettings, request_timeout_ms: u64) -> Gateway {
    let gateway = GatewaySettings {
        url: url.to_owned(),
        connect_timeout_ms: 500,
        request_timeout_ms,
        ..GatewaySettings::default()
    };
    Gateway::new(&gateway, &retry, Arc::new(Breaker::disabled())).expect("a gateway client")
}

fn fast_retry(max_attempts: u32) -> RetrySettings {
    RetrySettings {
        initial_ms: 10,
        multiplier: 2.0,
        max_interval_ms: 40,
        max_attempts,
        max_elapsed_ms: 10_000,
    }
}

fn req(trace: &str, amount: u64) -> H5PayRequest {
    H5PayRequest::example(trace, amount)
}

async fn sandbox(hang: Duration) -> (String, Arc<Sandbox>) {
    let institutions =
        h5pay_worker::keys::Institutions::from_pairs([("60000001".to_owned(), key())])
            .unwrap_or_else(|| unreachable!());
    let server = crate::support::SandboxServer::start(
        institutions,
        SandboxOptions {
            hang,
            ..SandboxOptions::default()
        },
    )
    .await;
    let (addr, sb) = server.detach();
    (
        format!("http://{addr}{}", h5pay_worker::sandbox::PAY_PATH),
        sb,
    )
}

/// Never cancelled.
fn keep_going(never: &CancellationToken) -> Abandon<'_> {
    Abandon {
        any_time: never,
        before_first: never,
        unless: None,
    }
}

async fn call(c: &Gateway, r: &H5PayRequest) -> h5pay_worker::outcome::CallResult {
    let never = CancellationToken::new();
    c.h5pay(r, &key(), keep_going(&never), None)
        .await
        .expect("a decision")
}

fn kind(d: &Decision) -> String {
    match d {
        Decision::Ready(_) => "ready".into(),
        Decision::InProcess => "in_process".into(),
        Decision::Failed(f) => f.kind.as_str().into(),
    }
}

#[tokio::test]
async fn every_sandbox_scenario_ends_as_the_contract_says() {
    let (url, sb) = sandbox(Duration::from_secs(30)).await;
    let c = client(&url, fast_retry(4), 400);
    let cases: [(u64, &str, u32); 8] = [
        (100, "ready", 1),
        (4001, "payment_failed", 1),
        (4002, "in_process", 1),
        (4003, "gateway_rejected", 1),
        (4010, "bad_signature", 1),
        (5001, "ready", 3),
        (5002, "gateway_unavailable", 4),
        (5003, "ready", 2),
    ];
    for (amount, want, attempts) in cases {
        let trace = format!("C-{amount}");
        let r = call(&c, &req(&trace, amount)).await;
        assert_eq!(
            (kind(&r.decision), r.attempts),
            (want.to_owned(), attempts),
            "amount {amount}: {r:?}"
        );
        assert_eq!(
            sb.calls("60000001", "M1", &trace),
            u64::from(attempts),
            "amount {amount}"
        );
        if amount == 4010 {
            assert!(
                matches!(&r.decision, Decision::Failed(_)),
                "no code_url may come from a bad sign"
            );
        }
        if amount == 100 {
            assert!(matches!(&r.decision, Decision::Ready(p) if p.code_url.is_some()));
            assert!(r.trade_no.is_some());
        }
    }
}

#[tokio::test]
async fn a_connect_error_is_retried_then_gateway_unavailable() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let addr = listener.local_addr().expect("a local address");
    drop(listener);
    let c = client(
        &format!("http://{addr}/api/openpay/v3/h5pay"),
        fast_retry(3),
        500,
    );
    let r = call(&c, &req("C-conn", 100)).await;
    assert_eq!(
        (kind(&r.decision), r.attempts),
        ("gateway_unavailable".to_owned(), 3)
    );
    assert_eq!(r.answer, None, "no HTTP answer was received");
}

/// One scripted answer: status, extra headers, and a body built from the request.
type Step =
    Box<dyn Fn(&Map<String, Value>) -> (u16, Vec<(&'static str, String)>, Value) + Send + Sync>;

async fn scripted(steps: Vec<Step>) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let steps = Arc::new(Mutex::new(steps.into_iter().collect::<VecDeque<_>>()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let handler = move |_h: HeaderMap, body: Bytes| {
        let steps = steps.clone();
        let seen = seen2.clone();
        async move {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(body.to_vec());
            let req: Map<String, Value> = serde_json::from_slice(&body).unwrap_or_default();
            let step = steps.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some(step) = step else {
                return (StatusCode::IM_A_TEAPOT, "script exhausted").into_response();
            };
            let (status, headers, body) = step(&req);
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                serde_json::to_vec(&body).unwrap_or_default(),
            )
                .into_response();
            for (k, v) in headers {
                if let Ok(v) = v.parse() {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
    };
    let app = axum::Router::new().route("/pay", axum::routing::post(handler));
    let addr = crate::support::serve(app).await;
    (format!("http://{addr}/pay"), seen)
}

fn signed_answer(mut m: Map<String, Value>) -> Value {
    let s = sign::sign(&m, &key());
    m.insert("sign".into(), Value::String(s));
    Value::Object(m)
}

fn success_for(req: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    for k in [
        "mch_no",
        "pay_trace_no",
        "total_amount",
        "pay_time",
        "pay_type",
    ] {
        m.insert(k.into(), req.get(k).cloned().unwrap_or(Value::Null));
    }
    m.insert("return_code".into(), json!("SUCCESS"));
    m.insert("result_code".into(), json!("PAY_SUCCESS"));
    m.insert("return_msg".into(), json!("ok"));
    m.insert("trade_no".into(), json!("T-1"));
    m.insert("code_url".into(), json!("https://pay.example/x"));
    m
}

fn status_only(status: u16) -> Step {
    Box::new(move |_| (status, vec![], json!({})))
}

#[tokio::test]
async fn a_refusal_after_an_attempt_that_may_have_reached_the_gateway_is_outcome_unknown() {
    let (url, seen) = scripted(vec![
        status_only(502),
        Box::new(|_| {
            (
                200,
                vec![],
                json!({"return_code": "FAIL", "return_msg": "duplicate pay_trace_no"}),
            )
        }),
    ])
    .await;
    let r = call(&client(&url, fast_retry(4), 1000), &req("C-ou", 100)).await;
    assert_eq!(kind(&r.decision), "outcome_unknown", "{r:?}");
    assert_eq!(r.attempts, 2);
    let bodies = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0], bodies[1],
        "a retry must send the identical request"
    );
}

#[tokio::test]
async fn a_refusal_after_only_throttling_stays_gateway_rejected_and_pay_fail_stays_payment_failed()
{
    let (url, _) = scripted(vec![
        status_only(429),
        Box::new(|_| {
            (
                200,
                vec![],
                json!({"return_code": "FAIL", "return_msg": "bad mch_no"}),
            )
        }),
    ])
    .await;
    let r = call(&client(&url, fast_retry(4), 1000), &req("C-gr", 100)).await;
    assert_eq!(
        kind(&r.decision),
        "gateway_rejected",
        "429 says it was not processed: {r:?}"
    );

    let (url, _) = scripted(vec![
        status_only(503),
        Box::new(|req| {
            let mut m = success_for(req);
            m.insert("result_code".into(), json!("PAY_FAIL"));
            (200, vec![], signed_answer(m))
        }),
    ])
    .await;
    let r = call(&client(&url, fast_retry(4), 1000), &req("C-pf", 100)).await;
    assert_eq!(kind(&r.decision), "payment_failed");
}

#[tokio::test]
async fn an_http_4xx_is_rejected_without_retry() {
    let (url, seen) = scripted(vec![status_only(400), status_only(200)]).await;
    let r = call(&client(&url, fast_retry(4), 1000), &req("C-400", 100)).await;
    assert_eq!(
        (kind(&r.decision), r.attempts),
        ("gateway_rejected".to_owned(), 1)
    );
    assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).len(), 1);
}

#[tokio::test]
async fn an_answer_that_does_not_echo_the_request_is_a_bad_response_retried_then_final() {
    let (url, _) = scripted(vec![
        Box::new(|req| {
            let mut m = success_for(req);
            m.insert("total_amount".into(), json!("999"));
            (200, vec![], signed_answer(m))
        }),
        Box::new(|req| (200, vec![], signed_answer(success_for(req)))),
    ])
    .await;
    let r = call(&client(&url, fast_retry(4), 1000), &req("C-echo", 100)).await;
    assert_eq!(
        (kind(&r.decision), r.attempts),
        ("ready".to_owned(), 2),
        "retried, then fine"
    );

    let (url, _) = scripted(vec![
        Box::new(|_| (200, vec![], json!("<html>"))),
        Box::new(|_| (200, vec![], json!([1]))),
    ])
    .await;
    let r = call(&client(&url, fast_retry(2), 1000), &req("C-bad", 100)).await;
    assert_eq!(
        (kind(&r.decision), r.attempts),
        ("bad_response".to_owned(), 2)
    );
}

/// The answer's size limit (256 KiB) holds on what arrives: a signed,
/// otherwise good answer one pad over it is a bad response, and one past
/// the buffer's up-front reservation (16 KiB) but under the limit is read
/// whole and verifies.
#[tokio::test]
async fn an_answer_over_the_size_limit_is_a_bad_response_and_one_under_it_is_read_whole() {
    for (pad, want) in [(200 * 1024, "ready"), (300 * 1024, "bad_response")] {
        let (url, _) = scripted(vec![Box::new(move |req| {
            let mut m = success_for(req);
            m.insert("attach".into(), json!("x".repeat(pad)));
            (200, vec![], signed_answer(m))
        })])
        .await;
        let r = call(
            &client(&url, fast_retry(1), 5000),
            &req(&format!("C-size-{pad}"), 100),
        )
        .await;
        assert_eq!(kind(&r.decision), want, "{pad} bytes of padding");
    }
}

#[tokio::test]
async fn retry_after_beyond_the_budget_stops_at_once_with_gateway_unavailable() {
    let (url, seen) = scripted(vec![Box::new(|_| {
        (503, vec![("retry-after", "120".to_owned())], json!({}))
    })])
    .await;
    let retry = RetrySettings {
        max_elapsed_ms: 5000,
        ..fast_retry(6)
    };
    let started = std::time::Instant::now();
    let r = call(&client(&url, retry, 1000), &req("C-ra", 100)).await;
    assert_eq!(
        (kind(&r.decision), r.attempts),
        ("gateway_unavailable".to_owned(), 1)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it must not wait for the Retry-After"
    );
    assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).len(), 1);
    match &r.decision {
        Decision::Failed(f) => {
            assert_eq!(f.kind, FailureKind::GatewayUnavailable);
            assert!(f.message.contains("Retry-After"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_short_retry_after_is_honoured_and_the_retry_succeeds() {
    let (url, _) = scripted(vec![
        Box::new(|_| (429, vec![("retry-after", "1".to_owned())], json!({}))),
        Box::new(|req| (200, vec![], signed_answer(success_for(req)))),
    ])
    .await;
    let retry = RetrySettings {
        max_interval_ms: 10,
        ..fast_retry(3)
    };
    let r = call(&client(&url, retry, 1000), &req("C-ra2", 100)).await;
    assert_eq!((kind(&r.decision), r.attempts), ("ready".to_owned(), 2));
}

#[tokio::test]
async fn a_cancelled_call_is_abandoned_between_attempts() {
    let cancel = CancellationToken::new();
    let cancel_from_server = cancel.clone();
    // The server itself cancels during the first attempt: deterministic.
    let (url, seen) = scripted(vec![
        Box::new(move |_| {
            cancel_from_server.cancel();
            (503, vec![], json!({}))
        }),
        status_only(200),
    ])
    .await;
    let c = client(&url, fast_retry(3), 1000);
    let not_stopping = CancellationToken::new();
    let abandon = Abandon {
        any_time: &cancel,
        before_first: &not_stopping,
        unless: None,
    };
    let r = c.h5pay(&req("C-cancel", 100), &key(), abandon, None).await;
    assert_eq!(r.err().map(|a| a.attempts), Some(1));
    assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).len(), 1);
}

#[tokio::test]
async fn after_a_takeover_a_first_refusal_is_outcome_unknown() {
    let (url, _) = scripted(vec![Box::new(|_| {
        (
            200,
            vec![],
            json!({"return_code": "FAIL", "return_msg": "duplicate pay_trace_no"}),
        )
    })])
    .await;
    let c = client(&url, fast_retry(4), 1000);
    let never = CancellationToken::new();
    let r = c
        .h5pay(
            &req("C-take", 100),
            &key(),
            keep_going(&never),
            Some("an earlier worker's claim lapsed"),
        )
        .await
        .expect("a decision");
    assert_eq!(
        (kind(&r.decision), r.attempts),
        ("outcome_unknown".to_owned(), 1)
    );
}

#[tokio::test]
async fn a_code_url_that_is_not_an_absolute_web_link_is_a_bad_response() {
    for link in [
        "javascript:alert(document.cookie)",
        "data:text/html,pay",
        "/relative/pay",
    ] {
        let answer = move |req: &Map<String, Value>| {
            let mut m = success_for(req);
            m.insert("code_url".into(), json!(link));
            (200, vec![], signed_answer(m))
        };
        let (url, seen) = scripted(vec![Box::new(answer), Box::new(answer)]).await;
        let r = call(&client(&url, fast_retry(2), 1000), &req("C-link", 100)).await;
        assert_eq!(kind(&r.decision), "bad_response", "{link}: {r:?}");
        assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).len(), 2);
    }
}

#[tokio::test]
async fn gateway_text_copied_into_the_outcome_is_cut_to_256_characters() {
    let huge = "错".repeat(80_000); // 240 KB: under the 256 KiB answer limit
    let answer = {
        let huge = huge.clone();
        move |_: &Map<String, Value>| {
            let m = json!({"return_code": "FAIL", "return_msg": huge, "result_code": null});
            (
                200,
                vec![],
                signed_answer(m.as_object().cloned().unwrap_or_default()),
            )
        }
    };
    let (url, _) = scripted(vec![Box::new(answer)]).await;
    let r = call(&client(&url, fast_retry(2), 1000), &req("C-huge", 100)).await;
    assert_eq!(kind(&r.decision), "gateway_rejected", "{:?}", r.answer);
    let msg = r.answer.and_then(|a| a.return_msg).unwrap_or_default();
    assert_eq!(msg.chars().count(), 257, "256 characters and an ellipsis");
    assert!(huge.starts_with(msg.trim_end_matches('…')));
    match r.decision {
        Decision::Failed(f) => assert!(f.message.chars().count() < 400, "{}", f.message.len()),
        other => panic!("{other:?}"),
    }
}
