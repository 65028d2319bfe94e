//! Publishing results when the broker refuses them (contract §5.12): a
//! decided outcome is published again with backoff, never requeued in a
//! tight loop; and `reply_to` copies cannot disturb other intents.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::support::{EnvOptions, TestEnv, WAIT, intent};
use crate::vhost::rabbitmqctl_output;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_refused_by_a_full_consumer_queue_wait_for_room_instead_of_reaching_the_dlq() {
    let env = TestEnv::with(&[("H5PAY__AMQP__PUBLISH_RETRY_MS", "10000")]).await;
    let a = env.config.settings.amqp.clone();
    // A consumer's queue that refuses publishes once it holds three.
    let capped = format!("h5pay-test-{}.capped", env.id);
    let ch = env.conn.create_channel().await.expect("a channel");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(3));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        capped.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("the capped queue");
    ch.queue_bind(
        capped.as_str().into(),
        a.result_exchange.as_str().into(),
        "h5pay.result.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bound to the results");
    let filler = env.publisher().await;
    for _ in 0..3 {
        let confirm = crate::support::publish_confirmed(
            &filler,
            "",
            &capped,
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await;
        assert!(confirm.is_ack());
    }

    let worker = env.worker();
    worker.ready().await;
    for i in 0..3 {
        env.publish_json(&intent(&format!("FULL-{i}"), "M1", 100))
            .await;
    }
    // The outcomes are decided (one gateway call each), their events are
    // refused; for 30 s nothing may reach the DLQ.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        assert_eq!(
            env.queue_depth(&a.dead_letter_queue).await,
            0,
            "an intent reached the DLQ while its result was refused"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for i in 0..3 {
        assert_eq!(env.calls("M1", &format!("FULL-{i}")), 1);
    }
    // The consumer drains its queue: every intent ends with its event.
    ch.queue_purge(capped.as_str().into(), QueuePurgeOptions::default())
        .await
        .expect("purged");
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 3 && Instant::now() < deadline {
        match env.get(&capped).await {
            Some(m) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&m.delivery.data).expect("an event");
                got.push(v["pay_trace_no"].as_str().unwrap_or_default().to_owned());
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    got.sort();
    assert_eq!(got, vec!["FULL-0", "FULL-1", "FULL-2"]);
    assert!(worker.stop().await.is_ok());
    assert_eq!(env.queue_depth(&a.dead_letter_queue).await, 0);
    assert_eq!(env.queue_depth(&a.intent_queue).await, 0);
    let _ = ch
        .queue_delete(capped.as_str().into(), Default::default())
        .await;
}

/// The peer ports of a user's connections on a vhost.
fn connections_of(vhost: &str, user: &str) -> Vec<String> {
    rabbitmqctl_output(&["list_connections", "-p", vhost, "-q", "user", "peer_port"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(user)).then(|| cols.next().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_the_broker_refuses_never_resets_the_session_of_other_intents() {
    let env = TestEnv::start(EnvOptions {
        own_vhost: true,
        ..EnvOptions::default()
    })
    .await;
    let vhost = env.vhost.as_ref().expect("the test's vhost");
    // May publish to the worker's exchanges, not to the default exchange
    // that reply_to copies go through: the broker refuses those with
    // ACCESS_REFUSED, which closes the channel they are sent on.
    let user = vhost.user(
        &format!("h5pay-test-{}", env.id),
        ".*",
        "^h5pay-test-.*",
        ".*",
    );
    let mut config = env.config.clone();
    config.settings.amqp.url = h5pay_worker::config::SecretUrl::new(user.url.clone());
    let mut results = env.results().await;
    let worker = env.worker_with(config);
    worker.ready().await;
    // The consumer's session and the reconciler's own connection.
    let mut before = connections_of(&vhost.0, &user.name);
    for _ in 0..50 {
        if before.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        before = connections_of(&vhost.0, &user.name);
    }
    before.sort();
    assert_eq!(before.len(), 2, "{before:?}");

    let replying = serde_json::to_vec(&intent("REPLY-1", "M1", 100)).expect("json");
    env.publish_with(
        &replying,
        BasicProperties::default().with_reply_to(ShortString::from("a-reply-queue")),
    )
    .await;
    for i in 0..20 {
        env.publish_json(&intent(&format!("OTHER-{i}"), "M1", 100))
            .await;
    }
    let events = results.take(21, WAIT).await;
    for r in &events {
        assert_eq!(r.event["status"], "ready", "{}", r.event);
        assert_eq!(r.event["duplicate"], false, "{}", r.event);
    }
    assert_eq!(env.calls("M1", "REPLY-1"), 1);
    // A second reply after the refusal opens its channel again, alone.
    env.publish_with(
        &serde_json::to_vec(&intent("REPLY-2", "M1", 100)).expect("json"),
        BasicProperties::default().with_reply_to(ShortString::from("a-reply-queue")),
    )
    .await;
    assert_eq!(
        results.take(1, WAIT).await[0].event["pay_trace_no"],
        "REPLY-2"
    );
    results.none_for(Duration::from_millis(500)).await;
    let mut after = connections_of(&vhost.0, &user.name);
    after.sort();
    assert_eq!(after, before, "the worker's session was rebuilt");
    assert!(worker.stop().await.is_ok());
}
