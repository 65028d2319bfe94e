//! Operating the worker: graceful stop, readiness, metrics, the DLQ tool.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::Value;

use crate::support::{EnvOptions, TestEnv, WAIT, claim_request, intent, x_death};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_intents_in_progress_and_hands_back_the_rest() {
    let env = TestEnv::start(EnvOptions::gateway_latency(
        Duration::from_millis(700),
        vec![("H5PAY__AMQP__PREFETCH", "5".into())],
    ))
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    for i in 0..20 {
        env.publish_json(&intent(&format!("STOP-{i}"), "M1", 100))
            .await;
    }
    // Wait until the first five are at the gateway.
    for _ in 0..200 {
        if env.total_calls() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        env.total_calls(),
        5,
        "prefetch bounds the intents in progress"
    );
    let health = worker.health.clone();
    let stopping = tokio::spawn(worker.stop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!health.readiness().0, "/readyz turns 503 at once");
    assert!(
        stopping.await.expect("the stop task ran").is_ok(),
        "a graceful stop exits cleanly"
    );
    let finished = results.take(5, WAIT).await;
    assert!(finished.iter().all(|r| r.event["status"] == "ready"));
    assert_eq!(env.total_calls(), 5, "nothing new started after the stop");
    assert_eq!(
        env.queue_depth(&env.config.settings.amqp.intent_queue)
            .await,
        15,
        "the rest is back in the queue"
    );

    // A new worker takes the rest; nothing is called twice.
    let _again = env.worker();
    let rest = results.take(15, Duration::from_secs(30)).await;
    assert!(rest.iter().all(|r| r.event["duplicate"] == false));
    for i in 0..20 {
        assert_eq!(env.calls("M1", &format!("STOP-{i}")), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_no_gateway_call_is_made_and_the_intent_waits() {
    // A port where nothing listens stands for an unreachable Redis.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let port = dead.local_addr().map(|a| a.port()).unwrap_or_default();
    drop(dead);
    let env = TestEnv::new().await;
    let mut broken = env.config.clone();
    broken.settings.redis.url =
        h5pay_worker::config::SecretUrl::new(format!("redis://127.0.0.1:{port}/0"));
    let mut results = env.results().await;
    let worker = env.worker_with(broken);
    env.publish_json(&intent("NOREDIS-1", "M1", 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ready, detail) = worker.health.readiness();
    assert!(!ready, "{detail}");
    assert_eq!(detail["redis"]["reachable"], false);
    assert_eq!(detail["amqp"]["consuming"], true);
    assert_eq!(env.total_calls(), 0, "no claim, no call");
    results.none_for(Duration::from_millis(200)).await;
    assert!(worker.stop().await.is_ok());
    assert_eq!(
        env.queue_depth(&env.config.settings.amqp.intent_queue)
            .await,
        1,
        "not acked, not failed"
    );
    // With Redis back the intent is processed.
    let _w = env.worker();
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_over_http_and_metrics_have_the_contract_names() {
    let _ = h5pay_worker::telemetry::recorder();
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let worker = env.worker();
    let (addr, serve) = h5pay_worker::admin::bind("127.0.0.1:0", worker.health.clone())
        .await
        .expect("bound");
    let server = tokio::spawn(serve);
    worker.ready().await;
    env.publish_json(&intent("MET-1", "M1", 100)).await;
    env.publish(b"junk").await;
    results.take(1, WAIT).await;
    let get = |path: &'static str| async move {
        let r = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("GET answered");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(get("/healthz").await.0, 200);
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(detail["breaker"], "closed");
    // Give the dead-lettering a moment to be counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "h5pay_intents_total{outcome=\"ready\"}",
        "h5pay_results_published_total{status=\"ready\"}",
        "h5pay_gateway_requests_total{outcome=\"ready\"}",
        "h5pay_gateway_request_duration_seconds_bucket",
        "h5pay_inflight_intents",
        "h5pay_dead_lettered_total",
        "h5pay_publish_confirm_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // Registered at zero from the start; the intent counted on them (other
    // tests in this process may count too).
    for series in [
        "h5pay_intents_total{outcome=\"ready\"}",
        "h5pay_results_published_total{status=\"ready\"}",
        "h5pay_gateway_requests_total{outcome=\"ready\"}",
        "h5pay_intent_duration_seconds_count",
        "h5pay_publish_confirm_seconds_count",
    ] {
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(counted >= 1.0, "{series} is {counted}:\n{metrics}");
    }
    assert!(worker.stop().await.is_ok());
    server.abort();
}

fn replay_options(dry_run: bool) -> h5pay_worker::cli::dlq::ReplayOptions {
    h5pay_worker::cli::dlq::ReplayOptions {
        limit: 10,
        dry_run,
        retention: Duration::from_secs(3600),
        force: false,
        select: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_tool_lists_why_and_replays_readable_messages() {
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    // A readable intent that exceeded its delivery limit, as RabbitMQ would
    // dead-letter it, and an unreadable body.
    let ch = env.publisher().await;
    let headers = x_death("delivery_limit", 1, Some(a.intent_queue.as_str()), None);
    let body = serde_json::to_vec(&intent("DLQ-1", "M1", 100)).unwrap_or_default();
    for (b, props) in [
        (
            body.clone(),
            BasicProperties::default()
                .with_headers(headers)
                .with_message_id("dlq-msg-1".into()),
        ),
        (b"garbage".to_vec(), BasicProperties::default()),
    ] {
        let c = ch
            .basic_publish(
                a.dead_letter_exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &b,
                props,
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        assert!(c.is_ack());
    }
    let mut out = Vec::new();
    let n = h5pay_worker::cli::dlq::list(&a, 10, false, &mut out)
        .await
        .expect("dlq list");
    let text = String::from_utf8_lossy(&out).to_string();
    assert_eq!(n, 2, "{text}");
    assert!(
        text.contains("reason=delivery_limit") && text.contains("DLQ-1"),
        "{text}"
    );
    assert!(text.contains("not an intent"), "{text}");
    assert_eq!(
        env.queue_depth(&a.dead_letter_queue).await,
        2,
        "listing leaves the DLQ as it was"
    );

    let mut out = Vec::new();
    let would = h5pay_worker::cli::dlq::replay(&a, replay_options(true), &mut out)
        .await
        .expect("dry run");
    assert_eq!(would, 1);
    assert_eq!(
        env.queue_depth(&a.dead_letter_queue).await,
        2,
        "a dry run moves nothing"
    );

    let mut results = env.results().await;
    let _worker = env.worker();
    let mut out = Vec::new();
    let moved = h5pay_worker::cli::dlq::replay(&a, replay_options(false), &mut out)
        .await
        .expect("replay");
    assert_eq!(moved, 1, "{}", String::from_utf8_lossy(&out));
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["pay_trace_no"], "DLQ-1");
    assert_eq!(
        r.props.correlation_id().as_ref().map(|c| c.as_str()),
        Some("dlq-msg-1"),
        "the original message_id travels along"
    );
    assert_eq!(
        env.queue_depth(&a.dead_letter_queue).await,
        1,
        "the unreadable one stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_routed_anywhere_sends_the_intent_to_the_dlq_after_the_delivery_limit()
 {
    // Each delivery publishes for a moment before it hands the intent back.
    let env = TestEnv::with(&[
        ("H5PAY__AMQP__DELIVERY_LIMIT", "2"),
        ("H5PAY__AMQP__PUBLISH_RETRY_MS", "300"),
    ])
    .await;
    let a = env.config.settings.amqp.clone();
    let worker = env.worker();
    worker.ready().await;
    // No binding on the result exchange and its alternate exchange gone:
    // every result comes back unroutable (mandatory), so the intent is
    // handed back each time, replaying its stored outcome.
    env.delete_exchange(&a.unrouted_exchange()).await;
    env.publish_json(&intent("POISON-1", "M1", 100)).await;
    let dead = env
        .get_within(&a.dead_letter_queue)
        .await
        .unwrap_or_else(|| panic!("the intent did not reach the DLQ"));
    let d = h5pay_worker::cli::dlq::describe(&dead.delivery.properties, &dead.delivery.data);
    assert_eq!(d.reason.as_deref(), Some("delivery_limit"), "{d:?}");
    assert_eq!(d.pay_trace_no.as_deref(), Some("POISON-1"));
    assert_eq!(
        env.calls("M1", "POISON-1"),
        1,
        "redeliveries replay; the gateway was called once"
    );
    assert!(worker.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_errors_are_told_apart_by_whether_retrying_can_help() {
    use h5pay_worker::claim::StoreError;
    use h5pay_worker::telemetry::metrics::RedisCause;
    let env = TestEnv::new().await;
    let claims = env.claim_store();
    let identity = h5pay_worker::intent::Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: "ERR-1".into(),
    };
    let mut r = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(claims.key(&identity))
        .arg("a string")
        .query_async(&mut r)
        .await
        .expect("SET");
    let wrong = claims
        .claim(&identity, &claim_request("t", "fp", "20261126000000"))
        .await
        .expect_err("a claim on a string fails");
    assert_eq!(
        (wrong.cause(), wrong.is_unusable()),
        (RedisCause::WrongType, true),
        "{wrong}"
    );

    let script: Result<i64, redis::RedisError> = redis::Script::new("return nil + 1")
        .invoke_async(&mut r)
        .await;
    let script = StoreError::from(script.expect_err("the script fails"));
    assert_eq!(
        (script.cause(), script.is_unusable()),
        (RedisCause::Script, true),
        "{script}"
    );

    // Nothing listens there: a connection error, which retrying may fix.
    let down = h5pay_worker::config::RedisSettings {
        url: h5pay_worker::config::SecretUrl::new("redis://127.0.0.1:1/0"),
        ..env.config.settings.redis.clone()
    };
    let store = h5pay_worker::claim::ClaimStore::new(
        h5pay_worker::claim::connect(&down).expect("a lazy client"),
        &down,
    );
    let refused = store
        .renew(&identity, "t")
        .await
        .expect_err("no Redis there");
    assert!(!refused.is_unusable(), "{refused} ({:?})", refused.cause());
    let _: () = redis::cmd("DEL")
        .arg(claims.key(&identity))
        .query_async(&mut r)
        .await
        .expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_dlq_uses_up_no_delivery_limit_and_old_messages_are_replayed_only_with_force() {
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    let ch = env.publisher().await;
    let two_hours_ago = (chrono::Utc::now().timestamp() - 7200) as u64;
    let body = serde_json::to_vec(&intent("OLD-1", "M1", 100)).unwrap_or_default();
    let confirm = ch
        .basic_publish(
            a.dead_letter_exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default()
                .with_timestamp(two_hours_ago)
                .with_message_id("old-1".into())
                .with_delivery_mode(2),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack());
    // More reads than RabbitMQ 4.x's default quorum delivery limit (20).
    for _ in 0..25 {
        let mut out = Vec::new();
        let n = h5pay_worker::cli::dlq::list(&a, 10, true, &mut out)
            .await
            .expect("listed");
        assert_eq!(n, 1);
    }
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 1);
    let mut out = Vec::new();
    let would = h5pay_worker::cli::dlq::replay(&a, replay_options(true), &mut out)
        .await
        .expect("dry run");
    let text = String::from_utf8_lossy(&out).to_string();
    assert_eq!(would, 0, "{text}");
    assert!(
        text.contains("retention_secs") && text.contains("--force"),
        "{text}"
    );
    let moved = h5pay_worker::cli::dlq::replay(&a, replay_options(false), &mut out)
        .await
        .expect("replay");
    assert_eq!(moved, 0, "older than the retention: kept without --force");
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 1);
    // Still there, read 25 times, with no delivery count against it.
    let m = env.get(&a.dead_letter_queue).await.expect("the message");
    let counted = m
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    assert_eq!(counted, None, "a classic DLQ counts no deliveries");
    // Put it back and replay it on purpose.
    let confirm = ch
        .basic_publish(
            "".into(),
            a.dead_letter_queue.as_str().into(),
            BasicPublishOptions::default(),
            &m.delivery.data,
            m.delivery.properties.clone(),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack());
    let forced = h5pay_worker::cli::dlq::ReplayOptions {
        force: true,
        ..replay_options(false)
    };
    let moved = h5pay_worker::cli::dlq::replay(&a, forced.clone(), &mut out)
        .await
        .expect("replay");
    assert_eq!(moved, 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 0);
}

/// Opens `n` connections that send nothing.
async fn idle_connections(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a connection"),
        );
    }
    held
}

/// Whether the server closes `stream` within `within` (reads end of stream).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_starve_the_admin_endpoints_or_the_sandbox() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new().await;
    let worker = env.worker();
    worker.ready().await;
    let (admin, serve) = h5pay_worker::admin::bind("127.0.0.1:0", worker.health.clone())
        .await
        .expect("admin bound");
    let admin_task = tokio::spawn(serve);
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("a client");
    for (addr, path) in [(admin, "/readyz"), (env.sandbox_addr, "/healthz")] {
        let _held = idle_connections(addr, 500).await;
        let status = quick
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} with 500 idle connections open: {e}"))
            .status();
        assert_eq!(status, 200, "{addr}{path}");
    }
    // A client that never finishes its headers is cut off.
    let mut slow = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connected");
    slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    assert!(
        closed_within(
            &mut slow,
            h5pay_worker::http_server::HEADER_READ_TIMEOUT + Duration::from_secs(3)
        )
        .await,
        "a half-sent request holds its connection open"
    );
    // Past the cap, a new connection is closed at once.
    let _held = idle_connections(admin, h5pay_worker::http_server::MAX_CONNECTIONS).await;
    let mut extra = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connected");
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    admin_task.abort();
    assert!(worker.stop().await.is_ok());
}

/// Waits (up to 10 s) until `link` says it is connected.
async fn link_connected(link: &h5pay_worker::amqp::link::Link) -> bool {
    for _ in 0..100 {
        if link.is_connected() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_amqp_urls_the_worker_and_the_link_move_to_the_next_node_when_theirs_is_lost() {
    use h5pay_worker::config::SecretUrl;
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let rabbit: std::net::SocketAddr = "127.0.0.1:5672".parse().expect("an address");
    // Two ways to the one local broker, each of which can be cut, and a
    // node where nothing listens.
    let a = crate::proxy::Proxy::start(rabbit).await;
    let b = crate::proxy::Proxy::start(rabbit).await;
    let dead = crate::net::free_port().expect("a free port");
    let node = |port: u16| SecretUrl::new(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    let mut config = env.config.clone();
    config.settings.amqp.urls = vec![node(a.port), node(dead), node(b.port)];
    // Never used while amqp.urls is set.
    config.settings.amqp.url = node(1);
    let amqp = config.settings.amqp.clone();
    let worker = env.worker_with(config);
    worker.ready().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let link = h5pay_worker::amqp::link::Link::start(amqp, "test", stop.clone());
    assert!(link_connected(&link).await, "the link never connected");
    env.publish_json(&intent("NODES-0", "M1", 100)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);

    // Cut a: whoever was on it moves on (past the dead node) to b.
    a.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(link_connected(&link).await, "the link stayed down");
    env.publish_json(&intent("NODES-1", "M1", 100)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);

    // Both are on b now. Bring a back and cut b: the next node after b is
    // a again (round the list); staying on b would never reconnect.
    a.restore().await;
    b.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(link_connected(&link).await, "the link did not move to a");
    env.publish_json(&intent("NODES-2", "M1", 100)).await;
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    assert!(
        worker.health.readiness().0,
        "{}",
        worker.health.readiness().1
    );

    stop.cancel();
    assert!(worker.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_messages_are_replayed_and_deleted_one_by_one_and_the_unreadable_purged() {
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    let ch = env.publisher().await;
    for (body, id) in [
        (
            serde_json::to_vec(&intent("DQ-A", "M1", 100)).unwrap_or_default(),
            "dq-a",
        ),
        (
            serde_json::to_vec(&intent("DQ-B", "M1", 100)).unwrap_or_default(),
            "dq-b",
        ),
        (b"not json at all".to_vec(), "dq-junk"),
    ] {
        let c = ch
            .basic_publish(
                a.dead_letter_exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_message_id(id.into()),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        assert!(c.is_ack());
    }
    let select = |message_id: Option<&str>, pay_trace_no: Option<&str>, unreadable| {
        h5pay_worker::cli::dlq::Select {
            message_id: message_id.map(str::to_owned),
            pay_trace_no: pay_trace_no.map(str::to_owned),
            unreadable,
        }
    };
    let mut out = Vec::new();
    assert!(
        h5pay_worker::cli::dlq::delete(&a, &select(None, None, false), 100, false, &mut out)
            .await
            .is_err(),
        "deleting needs a selection"
    );
    let purge = select(None, None, true);
    let would = h5pay_worker::cli::dlq::delete(&a, &purge, 100, true, &mut out)
        .await
        .expect("dry run");
    assert_eq!(would, 1);
    assert_eq!(
        env.queue_depth(&a.dead_letter_queue).await,
        3,
        "a dry run deletes nothing"
    );
    let gone = h5pay_worker::cli::dlq::delete(&a, &purge, 100, false, &mut out)
        .await
        .expect("purge");
    assert_eq!(gone, 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(
        env.queue_depth(&a.dead_letter_queue).await,
        2,
        "the readable ones stay"
    );

    let mut results = env.results().await;
    let _worker = env.worker();
    let only_a = h5pay_worker::cli::dlq::ReplayOptions {
        select: select(None, Some("DQ-A"), false),
        ..replay_options(false)
    };
    let moved = h5pay_worker::cli::dlq::replay(&a, only_a, &mut out)
        .await
        .expect("replay");
    assert_eq!(moved, 1);
    let r = results.take(1, WAIT).await.remove(0);
    assert_eq!(r.event["pay_trace_no"], "DQ-A", "{}", r.event);
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 1, "DQ-B stays");
    let gone = h5pay_worker::cli::dlq::delete(
        &a,
        &select(Some("dq-b"), None, false),
        100,
        false,
        &mut out,
    )
    .await
    .expect("delete one");
    assert_eq!(gone, 1);
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 0);
}

#[test]
fn x_death_and_the_body_are_described() {
    use h5pay_worker::cli::dlq::describe;
    let headers = x_death(
        "delivery_limit",
        1,
        Some("h5pay.intents"),
        Some("h5pay.intent.M1"),
    );
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_message_id("m-1".into());
    let d = describe(&props, br#"{"pay_trace_no":"T1"}"#);
    assert_eq!(d.reason.as_deref(), Some("delivery_limit"));
    assert_eq!(d.queue.as_deref(), Some("h5pay.intents"));
    assert_eq!(d.count, Some(1));
    assert_eq!(d.routing_key.as_deref(), Some("h5pay.intent.M1"));
    assert_eq!(d.pay_trace_no.as_deref(), Some("T1"));
    assert_eq!(d.unreadable, None);
    assert!(d.explanation().contains("delivery_limit"));

    let junk = describe(&BasicProperties::default(), b"not json");
    assert!(
        junk.unreadable
            .as_deref()
            .is_some_and(|u| u.contains("not JSON"))
    );
    assert!(junk.explanation().starts_with("not an intent"));
}
