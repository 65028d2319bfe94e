//! The worker end to end against real RabbitMQ, Redis and the sandbox over
//! HTTP: outcomes, the event's shape and properties, intake rules.

use std::collections::HashSet;
use std::time::Duration;

use lapin::BasicProperties;
use serde_json::{Value, json};

use crate::support::{TestEnv, WAIT, intent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_intents_become_ready_with_one_gateway_call_each() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    let n = 300;
    let ch = env.publisher().await;
    let mut confirms = Vec::new();
    for i in 0..n {
        let body =
            serde_json::to_vec(&intent(&format!("HAPPY-{i}"), "M1", 100 + i)).unwrap_or_default();
        let props = BasicProperties::default()
            .with_message_id(format!("msg-{i}").into())
            .with_delivery_mode(2);
        let c = ch
            .basic_publish(
                env.config.settings.amqp.intent_exchange.as_str().into(),
                "h5pay.intent.M1".into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .expect("published");
        confirms.push(c);
    }
    for c in confirms {
        assert!(c.await.expect("confirmed").is_ack());
    }
    let got = results.take(n as usize, Duration::from_secs(60)).await;
    let mut traces = HashSet::new();
    let mut ids = HashSet::new();
    for r in &got {
        let e = &r.event;
        assert_eq!(e["status"], "ready", "{e}");
        assert!(
            e["code_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http")),
            "{e}"
        );
        assert_eq!(
            (e["attempts"].as_u64(), e["duplicate"].as_bool()),
            (Some(1), Some(false))
        );
        assert_eq!(e["schema"], "h5pay.result.v1");
        assert_eq!(e["pay_type"], "400");
        assert!(e["trade_no"].is_string() && e["pay_time"].as_str().is_some_and(|p| p.len() == 14));
        assert_eq!(r.routing_key, "h5pay.result.ready.M1");
        assert_eq!(r.header("x-status").as_deref(), Some("ready"));
        assert_eq!(
            r.props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*r.props.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            r.props.message_id().as_ref().map(|s| s.as_str()),
            e["event_id"].as_str()
        );
        let trace = e["pay_trace_no"].as_str().unwrap_or_default();
        let i = trace.trim_start_matches("HAPPY-");
        assert_eq!(
            r.props.correlation_id().as_ref().map(|s| s.to_string()),
            Some(format!("msg-{i}")),
            "correlation_id falls back to message_id"
        );
        traces.insert(trace.to_owned());
        ids.insert(e["event_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!((traces.len(), ids.len()), (n as usize, n as usize));
    for t in &traces {
        assert_eq!(env.calls("M1", t), 1, "{t}");
    }
    assert_eq!(env.total_calls(), n);
    results.none_for(Duration::from_millis(300)).await;
    assert!(worker.stop().await.is_ok());
    assert_eq!(
        env.queue_depth(&env.config.settings.amqp.intent_queue)
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_outcome_gets_its_status_kind_and_routing_key() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let cases = [
        (4001, "failed", Some("payment_failed"), 1),
        (4002, "in_process", None, 1),
        (4003, "failed", Some("gateway_rejected"), 1),
        (4010, "failed", Some("bad_signature"), 1),
        (5001, "ready", None, 3),
        (5002, "failed", Some("gateway_unavailable"), 4),
    ];
    for (amount, ..) in cases {
        env.publish_json(&intent(&format!("K-{amount}"), "M2", amount))
            .await;
    }
    let got = results.take(cases.len(), WAIT).await;
    for (amount, status, kind, attempts) in cases {
        let trace = format!("K-{amount}");
        let r = got
            .iter()
            .find(|r| r.event["pay_trace_no"] == trace)
            .unwrap_or_else(|| panic!("no event for {trace}"));
        assert_eq!(r.event["status"], status, "{}", r.event);
        assert_eq!(r.kind(), kind, "{}", r.event);
        assert_eq!(r.event["attempts"], attempts, "{}", r.event);
        assert_eq!(r.routing_key, format!("h5pay.result.{status}.M2"));
        assert_eq!(r.header("x-status").as_deref(), Some(status));
        assert_eq!(env.calls("M2", &trace), u64::from(attempts as u32));
        if status == "failed" {
            assert!(
                r.event["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(r.event["code_url"].is_null() && r.event["jsapi"].is_null());
        }
        if amount == 4003 {
            assert_eq!(r.event["gateway"]["return_code"], "FAIL");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_is_retried_with_the_same_request() {
    let env = TestEnv::start(crate::support::EnvOptions::gateway_hangs(vec![(
        "H5PAY__GATEWAY__REQUEST_TIMEOUT_MS",
        "300".into(),
    )]))
    .await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&intent("HANG-1", "M1", 5003)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(
        (r.event["status"].as_str(), r.event["attempts"].as_u64()),
        (Some("ready"), Some(2))
    );
    let stats = env.sandbox.stats(&Default::default());
    assert_eq!(
        stats.identities[0].distinct_requests, 1,
        "both attempts sent the same parameters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsapi_and_alipay_answers_and_metadata_come_back_in_the_event() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&json!({"pay_trace_no": "JS-1", "mch_no": "M1", "pay_type": "400", "total_amount": "88",
        "open_id": "o-123", "notify_url": "https://shop.example/notify?x=1", "metadata": {"order_id": "A-1", "n": [1, 2]}}))
        .await;
    env.publish_json(
        &json!({"pay_trace_no": "ALI-1", "mch_no": "M1", "pay_type": "ALIPAY", "total_amount": 77}),
    )
    .await;
    let got = results.take(2, WAIT).await;
    let js = got
        .iter()
        .find(|r| r.event["pay_trace_no"] == "JS-1")
        .map(|r| r.event.clone())
        .unwrap_or_default();
    assert_eq!(js["status"], "ready");
    assert!(js["code_url"].is_null());
    let j = &js["jsapi"];
    for k in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        assert!(j[k].is_string(), "{k}: {js}");
    }
    assert_eq!(
        j["timeStamp"].as_str().map(str::len),
        Some(10),
        "milliseconds become seconds"
    );
    assert_eq!(js["metadata"], json!({"order_id": "A-1", "n": [1, 2]}));
    assert_eq!(js["total_amount"], 88);
    let ali = got
        .iter()
        .find(|r| r.event["pay_trace_no"] == "ALI-1")
        .map(|r| r.event.clone())
        .unwrap_or_default();
    assert_eq!(
        (ali["pay_type"].as_str(), ali["status"].as_str()),
        (Some("300"), Some("ready"))
    );
    assert!(ali["metadata"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_intents_name_every_bad_field_and_never_reach_the_gateway() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    // Each case: a valid intent (merchant M1, WeChat, 1 fen) with its
    // pay_trace_no and the changes (null removes a field), and the fields
    // its error must name. An event whose mch_no is bad routes to `_`.
    let table = json!([
        [null, {}, ["pay_trace_no"]],
        ["I-2", {"mch_no": null}, ["mch_no"]],
        ["I-3", {"mch_no": "M 1"}, ["mch_no"]],
        ["I-4", {"pay_type": "cash", "total_amount": "1.00"}, ["pay_type", "total_amount"]],
        ["I-5", {"total_amount": 0}, ["total_amount"]],
        ["I-6", {"total_amount": -1}, ["total_amount"]],
        ["I-7", {"total_amount": 1e3}, ["total_amount"]],
        ["I-8", {"total_amount": " 1"}, ["total_amount"]],
        ["I-9", {"total_amount": 100000001}, ["total_amount"]],
        ["I-10", {"inst_no": "99"}, ["inst_no"]],
        ["I-11", {"pay_time": "20230230120000"}, ["pay_time"]],
        ["I-12", {"open_id": "x".repeat(129)}, ["open_id"]],
        ["I-13", {"notify_url": "ftp://x/y"}, ["notify_url"]],
        ["I-14", {"metadata": "x"}, ["metadata"]],
        ["I-15", {"metadata": {"x": "y".repeat(5000)}}, ["metadata"]],
        ["x".repeat(65), {}, ["pay_trace_no"]],
        [null, {"mch_no": null, "pay_type": null, "total_amount": null},
            ["pay_trace_no", "mch_no", "pay_type", "total_amount"]],
    ]);
    let cases: Vec<(Value, Vec<&str>, &str)> = table
        .as_array()
        .into_iter()
        .flatten()
        .map(|case| {
            let mut body = json!({"mch_no": "M1", "pay_type": "wechat", "total_amount": 1});
            if !case[0].is_null() {
                body["pay_trace_no"] = case[0].clone();
            }
            for (k, v) in case[1].as_object().into_iter().flatten() {
                match v {
                    Value::Null => body.as_object_mut().map(|m| m.remove(k)),
                    v => body.as_object_mut().map(|m| m.insert(k.clone(), v.clone())),
                };
            }
            let fields: Vec<&str> = case[2]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let routing = if fields.contains(&"mch_no") {
                "_"
            } else {
                "M1"
            };
            (body, fields, routing)
        })
        .collect();
    assert_eq!(cases.len(), 17);
    for (body, ..) in &cases {
        env.publish_json(body).await;
    }
    let got = results.take(cases.len(), WAIT).await;
    for (i, (body, fields, routing_mch)) in cases.iter().enumerate() {
        // Events do not arrive in order; match on the body's event id.
        let r = got
            .iter()
            .find(|r| {
                let msg = r.event["error"]["message"].as_str().unwrap_or("");
                let trace = if fields.contains(&"pay_trace_no") {
                    Value::Null
                } else {
                    body["pay_trace_no"].clone()
                };
                r.event["pay_trace_no"] == trace
                    && fields.iter().all(|f| msg.contains(f))
                    && r.routing_key == format!("h5pay.result.failed.{routing_mch}")
            })
            .unwrap_or_else(|| {
                panic!(
                    "case {i}: no matching event for {body}: {:?}",
                    got.iter().map(|r| &r.event).collect::<Vec<_>>()
                )
            });
        assert_eq!(r.kind(), Some("invalid_intent"));
        assert_eq!(
            (r.event["attempts"].as_u64(), r.event["gateway"].is_null()),
            (Some(0), true)
        );
    }
    assert_eq!(
        env.total_calls(),
        0,
        "no invalid intent may reach the gateway"
    );
}

/// Acks are coalesced into `multiple` acks only over contiguous finished
/// deliveries. Here some deliveries stay in progress (a first call that
/// hangs until the request timeout) while later ones finish and rejects sit
/// between them: the broker must still count exactly those in progress as
/// unacknowledged (an ack covering one of them would lose it in a crash),
/// and at the end every delivery is settled once. A classic intent queue,
/// because `rabbitmqctl list_queues` reports no unacknowledged count for a
/// quorum queue (the settling is the same for both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_finishing_out_of_order_are_each_settled_once() {
    let env = TestEnv::start(crate::support::EnvOptions::gateway_hangs(vec![
        // Long enough that the slow ones are surely still in progress
        // when the fast ones are done, even on a loaded machine.
        ("H5PAY__GATEWAY__REQUEST_TIMEOUT_MS", "8000".into()),
        ("H5PAY__RETRY__MAX_ELAPSED_MS", "30000".into()),
        ("H5PAY__AMQP__QUEUE_TYPE", "classic".into()),
    ]))
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    let (n, mut junk, mut slow) = (240u64, 0u32, 0u64);
    for i in 0..n {
        if i % 20 == 7 {
            env.publish(b"not an intent").await;
            junk += 1;
        }
        // 5003: the first call hangs past the 8 s timeout, the retry succeeds.
        let amount = if i % 8 == 3 { 5003 } else { 100 + i };
        slow += u64::from(amount == 5003);
        env.publish_json(&intent(&format!("ORDER-{i}"), "M1", amount))
            .await;
    }
    let mut got = results
        .take((n - slow) as usize, Duration::from_secs(30))
        .await;
    // The fast ones' acks follow their events closely.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let a = &env.config.settings.amqp;
    assert_eq!(
        unacknowledged(&a.intent_queue),
        Some(slow),
        "only the deliveries in progress are unacknowledged"
    );
    got.extend(results.take(slow as usize, Duration::from_secs(30)).await);
    let traces: HashSet<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r.event["status"], "ready", "{}", r.event);
            assert_eq!(r.event["duplicate"], false, "{}", r.event);
            r.event["pay_trace_no"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(traces.len(), n as usize);
    assert_eq!(env.total_calls(), n + slow);
    results.none_for(Duration::from_millis(500)).await;
    assert!(worker.stop().await.is_ok());
    assert_eq!(env.queue_depth(&a.intent_queue).await, 0);
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, junk);
}

/// The broker's count of unacknowledged deliveries of a queue on vhost `/`
/// (AMQP's passive declare reports only ready messages).
fn unacknowledged(queue: &str) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-p", "/", "-q", "--no-table-headers"])
        .args(["name", "messages_unacknowledged"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some(queue)).then(|| f.next()?.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_an_intent_is_dead_lettered_with_no_event() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let mut too_big = b"{\"pad\":\"".to_vec();
    too_big.resize(64 * 1024 + 10, b'x');
    too_big.extend_from_slice(b"\"}");
    let bodies: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"[1,2,3]".to_vec(),
        b"\"a string\"".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        too_big,
    ];
    for b in &bodies {
        env.publish(b).await;
    }
    // One valid intent after them: the worker is not wedged.
    env.publish_json(&intent("AFTER-JUNK", "M1", 100)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["pay_trace_no"], "AFTER-JUNK");
    let dlq = env.config.settings.amqp.dead_letter_queue.clone();
    let mut depth = 0;
    for _ in 0..50 {
        depth = env.queue_depth(&dlq).await;
        if depth as usize == bodies.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(depth as usize, bodies.len());
    let mut seen = Vec::new();
    while let Some(m) = env.get(&dlq).await {
        let d = h5pay_worker::cli::dlq::describe(&m.delivery.properties, &m.delivery.data);
        assert_eq!(d.reason.as_deref(), Some("rejected"));
        assert!(d.unreadable.is_some());
        seen.push(m.delivery.data.clone());
    }
    for b in &bodies {
        assert!(seen.contains(b), "a body is missing from the DLQ");
    }
    results.none_for(Duration::from_millis(300)).await;
    assert_eq!(env.total_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_id_and_reply_to_follow_the_intent() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    // A reply queue of the test's own.
    let ch = env.conn.create_channel().await.expect("a channel");
    let reply = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("queue declared");
    let body = |t: &str| serde_json::to_vec(&intent(t, "M1", 100)).unwrap_or_default();
    env.publish_with(
        &body("COR-1"),
        BasicProperties::default()
            .with_correlation_id("corr-1".into())
            .with_message_id("mid-1".into())
            .with_reply_to(reply.name().clone()),
    )
    .await;
    env.publish_with(&body("COR-2"), BasicProperties::default())
        .await;
    // A reply queue that does not exist must not hold the intent back.
    env.publish_with(
        &body("COR-3"),
        BasicProperties::default().with_reply_to("no-such-queue-h5pay".into()),
    )
    .await;
    let got = results.take(3, WAIT).await;
    let corr = |t: &str| {
        got.iter()
            .find(|r| r.event["pay_trace_no"] == t)
            .and_then(|r| r.props.correlation_id().as_ref().map(|c| c.to_string()))
    };
    assert_eq!(corr("COR-1").as_deref(), Some("corr-1"));
    assert_eq!(
        corr("COR-2").as_deref(),
        Some("COR-2"),
        "falls back to pay_trace_no"
    );
    assert!(corr("COR-3").is_some());
    let mut replied = None;
    for _ in 0..50 {
        if let Ok(Some(m)) = ch
            .basic_get(
                reply.name().clone(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
        {
            replied = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replied = replied.unwrap_or_else(|| panic!("nothing arrived on reply_to"));
    let ev: Value = serde_json::from_slice(&replied.delivery.data).unwrap_or_default();
    assert_eq!(ev["pay_trace_no"], "COR-1");
    assert_eq!(
        replied
            .delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("corr-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_intents_expire_without_a_gateway_call_and_are_not_stored() {
    let env = TestEnv::with(&[("H5PAY__WORKER__MAX_INTENT_AGE_SECS", "60")]).await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let old = json!({"pay_trace_no": "OLD-1", "mch_no": "M1", "pay_type": "wechat", "total_amount": 1, "pay_time": "20200101120000"});
    env.publish_json(&old).await;
    let hour_ago = (chrono::Utc::now().timestamp() - 3600) as u64;
    let body = serde_json::to_vec(&intent("OLD-2", "M1", 1)).unwrap_or_default();
    env.publish_with(&body, BasicProperties::default().with_timestamp(hour_ago))
        .await;
    let got = results.take(2, WAIT).await;
    for r in &got {
        assert_eq!(r.kind(), Some("expired"), "{}", r.event);
        assert_eq!(r.event["attempts"], 0);
    }
    assert_eq!(env.total_calls(), 0);
    // Not stored: the same identity, fresh, is processed normally.
    env.publish_json(&intent("OLD-2", "M1", 1)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_pay_time_is_sent_and_a_default_merchant_applies() {
    let env = TestEnv::with(&[("H5PAY__WORKER__DEFAULT_MCH_NO", "DEFAULTM")]).await;
    let mut results = env.results().await;
    let _worker = env.worker();
    env.publish_json(&json!({"pay_trace_no": "PT-1", "pay_type": "600", "total_amount": "5", "pay_time": "20261126101500", "mch_no": ""}))
        .await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["pay_time"], "20261126101500");
    assert_eq!(r.event["mch_no"], "DEFAULTM");
    assert_eq!(r.routing_key, "h5pay.result.ready.DEFAULTM");
    assert_eq!(env.sandbox.calls("60000001", "DEFAULTM", "PT-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_published_to_the_default_exchange_with_the_queue_name_is_processed() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let ch = env.publisher().await;
    let body = serde_json::to_vec(&intent("DEFX-1", "M1", 100)).unwrap_or_default();
    let confirm = ch
        .basic_publish(
            "".into(),
            env.config.settings.amqp.intent_queue.as_str().into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert_eq!(confirm, lapin::Confirmation::Ack(None));
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(
        (r.event["pay_trace_no"].as_str(), r.event["status"].as_str()),
        (Some("DEFX-1"), Some("ready"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_objects_a_standard_parser_cannot_hold_get_an_invalid_intent_event_not_the_dlq() {
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    let mut results = env.results().await;
    let _worker = env.worker();
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let head = r#""mch_no":"M1","pay_type":"wechat","total_amount":100"#;
    let cases = [
        (
            format!(r#"{{"pay_trace_no":"REP-1",{head},"metadata":{{"x":1e400}}}}"#),
            "metadata",
            Some("REP-1"),
        ),
        (
            format!(r#"{{"pay_trace_no":"REP-2",{head},"extra":{deep}}}"#),
            "extra",
            Some("REP-2"),
        ),
        (
            format!(r#"{{"pay_trace_no":"REP-3\ud800",{head}}}"#),
            "pay_trace_no",
            None,
        ),
        (
            format!(r#"{{"pay_trace_no":"REP-4",{head},"notify_url":" https://shop.example/n"}}"#),
            "notify_url",
            Some("REP-4"),
        ),
        (
            format!(r#"{{"pay_trace_no":"REP-5",{head},"notify_url":"HTTPS://shop.example/n"}}"#),
            "notify_url",
            Some("REP-5"),
        ),
    ];
    for (body, _, _) in &cases {
        env.publish(body.as_bytes()).await;
    }
    let mut got = results.take(cases.len(), WAIT).await;
    for (body, field, trace) in &cases {
        let i = got
            .iter()
            .position(|r| {
                r.event["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("{field}:")))
                    && r.event["pay_trace_no"].as_str() == *trace
            })
            .unwrap_or_else(|| panic!("no event naming {field} for {body}"));
        let r = got.remove(i);
        assert_eq!(r.kind(), Some("invalid_intent"), "{}", r.event);
        assert_eq!(r.routing_key, "h5pay.result.failed.M1", "{}", r.event);
        assert_eq!(r.event["total_amount"], 100, "read as far as it can be");
    }
    assert_eq!(env.total_calls(), 0);
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_echoed_exactly_as_received() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let _worker = env.worker();
    let metadata = r#"{"n":123456789012345678901234567890,"f":0.1000000000000000055511151231257827,"z":1,"a":"\u00e9 \"q\""}"#;
    let body = format!(
        "{{\"pay_trace_no\":\"MD-1\",\"mch_no\":\"M1\",\"pay_type\":\"wechat\",\"total_amount\":100,\n  \"metadata\": {} }}",
        metadata.replace(',', ", ")
    );
    env.publish(body.as_bytes()).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains(&format!("\"metadata\":{metadata}")),
        "metadata changed: {text}"
    );
    // And a replay carries the same bytes.
    env.publish(body.as_bytes()).await;
    let again = results.take(1, WAIT).await.remove(0);
    assert!(String::from_utf8_lossy(&again.body).contains(&format!("\"metadata\":{metadata}")));
}
