//! The notify receiver holds only what it needs (deploy/): its own
//! RabbitMQ user (write to the result exchange, nothing else) and its own
//! Redis ACL user (its key prefix, the commands it runs). The permissions
//! are read from the shipped files — deploy/rabbitmq/local-users.json and
//! deploy/redis/users.acl — never repeated here. The real `notify` binary
//! runs with exactly those on the test's own vhost and the local Redis,
//! applies paid and mismatched notifies end to end, and the same
//! credentials are refused a declare, a read and a key outside the prefix.

use std::process::Stdio;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

use crate::support::{EnvOptions, REDIS_URL, TestEnv, WAIT, base_toml, intent};

const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");
/// The receiver's user in the shipped files.
const SHIPPED_USER: &str = "h5pay-notify";

fn read(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// (configure, write, read) of the receiver's user on `/` in the RabbitMQ
/// definitions the compose stack imports.
fn shipped_broker_permissions() -> (String, String, String) {
    let defs: Value = serde_json::from_str(&read("deploy/rabbitmq/local-users.json"))
        .expect("local-users.json is JSON");
    let users = defs["users"].as_array().cloned().unwrap_or_default();
    assert!(
        users.iter().any(|u| u["name"] == SHIPPED_USER),
        "no user {SHIPPED_USER} in local-users.json"
    );
    let p = defs["permissions"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["user"] == SHIPPED_USER && p["vhost"] == "/")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no permissions for {SHIPPED_USER}"));
    let get = |k: &str| {
        p[k].as_str()
            .unwrap_or_else(|| panic!("{SHIPPED_USER}: {k}"))
            .to_owned()
    };
    (get("configure"), get("write"), get("read"))
}

/// The receiver's rules from deploy/redis/users.acl, made the test's: its
/// password instead of the shipped one, its key prefix instead of the
/// default one (the only key pattern there may be). Everything else as
/// shipped.
fn shipped_acl_rules(prefix: &str, password: &str) -> Vec<String> {
    let acl = read("deploy/redis/users.acl");
    let line = acl
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["user", SHIPPED_USER]))
        .unwrap_or_else(|| panic!("no `user {SHIPPED_USER}` in users.acl"));
    let default_keys = format!(
        "~{}:*",
        h5pay_worker::config::RedisSettings::default().key_prefix
    );
    let rules: Vec<&str> = line.split_whitespace().skip(2).collect();
    let keys: Vec<&&str> = rules
        .iter()
        .filter(|r| r.starts_with('~') || r.starts_with("%") || **r == "allkeys")
        .collect();
    assert_eq!(
        keys,
        [&default_keys.as_str()],
        "one key pattern: the prefix"
    );
    rules
        .into_iter()
        .map(|r| {
            if r.starts_with('>') || r.starts_with('#') {
                format!(">{password}")
            } else if r == default_keys {
                format!("~{prefix}:*")
            } else {
                r.to_owned()
            }
        })
        .collect()
}

/// A Redis ACL user, deleted on drop.
struct AclUser(String);

impl Drop for AclUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-u", REDIS_URL, "ACL", "DELUSER", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `ACL LOG` entries (denials) of one user.
async fn denials_of(user: &str) -> Vec<String> {
    let mut r = redis::Client::open(REDIS_URL)
        .expect("a client")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let log: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(&mut r)
        .await
        .expect("ACL LOG");
    log.into_iter()
        .filter(|entry| {
            entry
                .get("username")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .is_some_and(|u| u == user)
        })
        .map(|entry| format!("{entry:?}"))
        .collect()
}

fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if amqp.kind() == &lapin::protocol::AMQPErrorKind::Soft(
                lapin::protocol::AMQPSoftError::ACCESSREFUSED
            )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_runs_on_exactly_its_shipped_permissions_and_is_refused_anything_more() {
    // The test's own vhost with the default names, so the shipped broker
    // permissions apply as written.
    let defaults = h5pay_worker::config::AmqpSettings::default();
    let env = TestEnv::start(EnvOptions {
        own_vhost: true,
        overrides: vec![
            (
                "H5PAY__AMQP__INTENT_EXCHANGE",
                defaults.intent_exchange.clone(),
            ),
            ("H5PAY__AMQP__INTENT_QUEUE", defaults.intent_queue.clone()),
            (
                "H5PAY__AMQP__DEAD_LETTER_EXCHANGE",
                defaults.dead_letter_exchange.clone(),
            ),
            (
                "H5PAY__AMQP__DEAD_LETTER_QUEUE",
                defaults.dead_letter_queue.clone(),
            ),
            (
                "H5PAY__AMQP__RESULT_EXCHANGE",
                defaults.result_exchange.clone(),
            ),
        ],
        ..EnvOptions::default()
    })
    .await;
    let a = env.config.settings.amqp.clone();
    assert_eq!(a.result_exchange, defaults.result_exchange);
    let vhost = env.vhost.as_ref().expect("a vhost of its own");

    let (configure, write, read_perm) = shipped_broker_permissions();
    let broker_user = vhost.user(
        &format!("h5pay-notify-test-{}", env.id),
        &configure,
        &write,
        &read_perm,
    );
    let prefix = env.config.settings.redis.key_prefix.clone();
    let redis_user = AclUser(format!("h5pay-notify-test-{}", env.id));
    let password = format!("pw-{}", env.id);
    let rules = shipped_acl_rules(&prefix, &password);
    let mut admin = env.redis().await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&redis_user.0)
        .arg("reset")
        .arg(&rules)
        .query_async(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER {rules:?}: {e}"));
    let redis_url = format!("redis://{}:{password}@127.0.0.1:6379/0", redis_user.0);

    // The receiver: the real binary, with only those credentials.
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("c.toml");
    let notify_port = crate::net::free_port().expect("a port");
    let admin_port = crate::net::free_port().expect("a port");
    let toml = base_toml(&env.id, &env.gateway_url())
        .replace(&format!("h5pay-test-{}.", env.id), "h5pay.")
        + &format!("\n[notify]\nlisten = \"127.0.0.1:{notify_port}\"\n");
    std::fs::write(&config, toml).expect("config written");
    let mut receiver = tokio::process::Command::new(BIN)
        .args(["notify", "--config", &config.display().to_string()])
        .env("H5PAY__AMQP__URL", &broker_user.url)
        .env("H5PAY__REDIS__URL", &redis_url)
        .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the receiver started");
    if !crate::cli::wait_ready(admin_port).await {
        let _ = receiver.start_kill();
        let err = crate::cli::stderr_of(&mut receiver).await;
        panic!("the receiver never got ready with its own permissions: {err}");
    }

    // A worker (its own, full credentials) sends the receiver's URL; the
    // sandbox pays one order and mispays another (4023: the notify names
    // another amount: an anomaly and an immediate query).
    let mut payments = env.payments().await;
    let mut results = env.results().await;
    let mut worker_config = env.config.clone();
    worker_config.settings.notify.public_url =
        format!("http://127.0.0.1:{notify_port}/h5pay/notify");
    let worker = env.worker_with(worker_config);
    worker.ready().await;
    env.publish_json(&intent("LP-PAID", "M1", 100)).await;
    env.publish_json(&intent("LP-ODD", "M1", 4023)).await;
    for r in results.take(2, WAIT).await {
        assert_eq!(r.event["status"], "ready", "{}", r.event);
    }
    env.pay("M1", "LP-PAID").await;
    let mut seen = std::collections::BTreeMap::new();
    for p in payments.take(2, WAIT).await {
        let trace = p.event["pay_trace_no"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.insert(trace, p.event);
    }
    assert_eq!(seen["LP-PAID"]["state"], "paid", "{:?}", seen);
    assert_eq!(seen["LP-ODD"]["state"], "anomaly", "{:?}", seen);
    assert_eq!(seen["LP-ODD"]["anomaly"]["kind"], "mismatch", "{:?}", seen);
    assert_eq!(env.payment_state("LP-PAID").await.as_deref(), Some("paid"));
    // Answered SUCCESS only after the event was confirmed.
    let notified = |trace: &str| env.sandbox_order(trace).is_some_and(|o| o.notified);
    for _ in 0..100 {
        if notified("LP-PAID") && notified("LP-ODD") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(notified("LP-PAID") && notified("LP-ODD"));
    // The mismatch brought the payment's check forward (ZADD on its shard):
    // the worker's reconciler queries the gateway at once, not in 600 s.
    let queried = || env.sandbox_order("LP-ODD").is_some_and(|o| o.queries > 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !queried() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(queried(), "the check was not brought forward");
    // Nothing it ran was refused: the shipped commands are all it needs.
    assert_eq!(denials_of(&redis_user.0).await, Vec::<String>::new());
    assert!(
        crate::cli::terminate(&mut receiver).await == Some(0),
        "the receiver stops cleanly"
    );
    drop(worker);

    // The same broker credentials: a declare is refused (no configure), so
    // is reading anything; publishing to the result exchange is confirmed,
    // an unroutable event included (it goes to the alternate exchange).
    let conn = Connection::connect(&broker_user.url, ConnectionProperties::default())
        .await
        .expect("the receiver's user connects");
    let ch = conn.create_channel().await.expect("a channel");
    let e = ch
        .exchange_declare(
            format!("h5pay.sneaky-{}", env.id).as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("exchange.declare refused");
    assert!(is_access_refused(&e), "{e}");
    let ch = conn.create_channel().await.expect("a channel");
    let e = ch
        .queue_declare(
            format!("h5pay.sneaky-{}", env.id).as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("queue.declare refused");
    assert!(is_access_refused(&e), "{e}");
    for queue in [&a.intent_queue, &a.dead_letter_queue] {
        let ch = conn.create_channel().await.expect("a channel");
        let e = ch
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("basic.get on {queue} allowed"));
        assert!(is_access_refused(&e), "{queue}: {e}");
    }
    let ch = conn.create_channel().await.expect("a channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = crate::support::publish_confirmed(
        &ch,
        &a.result_exchange,
        "h5pay.payment.nobody-binds-this",
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        b"{}",
        BasicProperties::default(),
    )
    .await;
    assert!(matches!(confirm, Confirmation::Ack(None)), "{confirm:?}");
    let e = ch
        .basic_publish(
            a.intent_exchange.as_str().into(),
            "h5pay.intent.M1".into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await;
    let refused = match e {
        Err(e) => is_access_refused(&e),
        Ok(confirm) => confirm.await.err().is_some_and(|e| is_access_refused(&e)),
    };
    assert!(refused, "publishing an intent was allowed");
    let _ = conn.close(200, "done".into()).await;

    // The same Redis credentials: its prefix with its commands only.
    let mut r = redis::Client::open(redis_url.as_str())
        .expect("a client")
        .get_multiplexed_async_connection()
        .await
        .expect("the receiver's user connects");
    let mine = format!("{prefix}:60000001:M1:LP-PAID");
    let ps: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&mine)
        .arg("ps")
        .query_async(&mut r)
        .await
        .expect("HMGET in its prefix");
    assert_eq!(ps, [Some("paid".to_owned())]);
    // What redis-rs does on NOSCRIPT.
    let sha: Result<String, _> = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut r)
        .await;
    assert!(sha.is_ok(), "{sha:?}");
    let outside = format!("h5pay-test-outside:{}", env.id);
    let refusals: [(&str, redis::Cmd); 4] = [
        ("a key outside its prefix", {
            let mut c = redis::cmd("HMGET");
            c.arg(&outside).arg("ps");
            c
        }),
        ("a write outside its prefix", {
            let mut c = redis::cmd("HSET");
            c.arg(&outside).arg("ps").arg("paid");
            c
        }),
        ("a command it never runs", {
            let mut c = redis::cmd("DEL");
            c.arg(&mine);
            c
        }),
        ("listing keys", {
            let mut c = redis::cmd("KEYS");
            c.arg("*");
            c
        }),
    ];
    for (what, cmd) in refusals {
        let e = cmd
            .query_async::<redis::Value>(&mut r)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: allowed"));
        assert!(
            e.to_string().to_ascii_uppercase().contains("NOPERM"),
            "{what}: {e}"
        );
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg(&mine)
        .query_async(&mut admin)
        .await
        .expect("EXISTS");
    assert!(exists, "nothing was deleted");
    drop(broker_user);
    drop(redis_user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_declares_nothing_stays_down_until_the_result_exchange_exists() {
    use h5pay_worker::amqp::link::{Link, Topology};
    let env = TestEnv::new().await;
    let a = env.config.settings.amqp.clone();
    env.delete_exchange(&a.result_exchange).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let link = Link::start_with(a.clone(), "passive-test", Topology::Passive, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!link.is_connected(), "up without a result exchange");
    // The passive check created nothing.
    let gone =
        h5pay_worker::amqp::link::result_exchange_exists(&env.conn, &a.result_exchange).await;
    assert!(gone.is_err(), "the result exchange was declared");
    // The worker (here: its declare) creates it: the link comes up.
    h5pay_worker::amqp::declare(&env.conn, &a)
        .await
        .expect("topology declared");
    let mut up = false;
    for _ in 0..100 {
        if link.is_connected() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    assert!(up, "the link never came up once the exchange existed");
}
