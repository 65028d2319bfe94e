//! `redis.wait_replicas` (contract §14) over a Redis primary and replica of
//! the test's own (two `redis-server` processes on free ports): each state
//! write waits for the replica; without it, nothing is published or
//! acknowledged, and the intent completes once the replica is back. And a
//! Redis of the test's own that forgets the scripts (as a restart does).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{TestEnv, WAIT, intent};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(port: u16, replica_of: Option<u16>) -> Server {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    if let Some(p) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
    }
    Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (make services installs it): {e}")),
    )
}

/// The primary's count of replicas that are online.
fn replicas_online(port: u16) -> usize {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "replication"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_write_no_replica_confirmed_is_never_published_or_acknowledged() {
    let primary_port = crate::net::free_port().expect("a free port");
    let replica_port = crate::net::free_port().expect("a free port");
    let _primary = server(primary_port, None);
    let replica = server(replica_port, Some(primary_port));
    until("the replica online", || replicas_online(primary_port) == 1).await;

    let url = format!("redis://127.0.0.1:{primary_port}/0");
    let env = TestEnv::with(&[
        ("H5PAY__REDIS__URL", url.as_str()),
        ("H5PAY__REDIS__WAIT_REPLICAS", "1"),
    ])
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    env.publish_json(&intent("W-1", "M1", 100)).await;
    let r = results
        .next(WAIT)
        .await
        .expect("a result while the replica confirms");
    assert_eq!(r.event["status"], "ready", "{}", r.event);

    // The replica is gone: the claim reaches no replica, so the intent waits
    // (no gateway call, no result, no ack).
    drop(replica);
    until("the replica gone", || replicas_online(primary_port) == 0).await;
    env.publish_json(&intent("W-2", "M1", 100)).await;
    assert!(
        results.next(Duration::from_secs(4)).await.is_none(),
        "a result was published on writes no replica has"
    );
    assert_eq!(
        env.calls("M1", "W-2"),
        0,
        "the gateway was called on an unreplicated claim"
    );

    // Back: the same delivery completes.
    let _replica = server(replica_port, Some(primary_port));
    until("the replica back", || replicas_online(primary_port) == 1).await;
    let r = results
        .next(WAIT)
        .await
        .expect("the waiting intent completes");
    assert_eq!(r.event["pay_trace_no"], "W-2", "{}", r.event);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    assert_eq!(env.calls("M1", "W-2"), 1);
    assert!(worker.stop().await.is_ok());
}

/// A `WAIT` that no replica can answer holds its connection for its whole
/// timeout (Redis answers one client's commands in order), and with a
/// replica gone every state write waits so. Lease renewals and the
/// readiness PING must not queue behind them: a renewal that times out
/// again and again lets a live call's lease lapse (found by the cluster
/// scenarios: after a failover with `wait_replicas = 1`, renewals on the
/// promoted master timed out until its replica was back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_for_a_replica_never_holds_up_lease_renewals_or_the_ping() {
    use h5pay_worker::claim::{ClaimReply, ClaimRequest, ClaimStore, StoreError};
    use h5pay_worker::config::{RedisSettings, SecretUrl};
    use h5pay_worker::intent::Identity;

    let port = crate::net::free_port().expect("a free port");
    let _primary = server(port, None);
    until("the primary up", || {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    })
    .await;
    let settings = RedisSettings {
        url: SecretUrl::new(format!("redis://127.0.0.1:{port}/0")),
        key_prefix: format!("h5pay-test:{}", h5pay_worker::claim::new_token()),
        lease_ms: 5_000,
        wait_replicas: 1,
        ..RedisSettings::default()
    };
    let store = ClaimStore::open(&settings).expect("connected");
    let id = |t: &str| Identity {
        inst_no: "60000001".into(),
        mch_no: "M1".into(),
        pay_trace_no: t.into(),
    };
    let claim = |store: ClaimStore, trace: String, token: String| async move {
        store
            .claim(
                &id(&trace),
                &ClaimRequest {
                    token: &token,
                    fingerprint: "fp",
                    pay_time: "20261206120000",
                    pay_time_explicit: false,
                    too_old: false,
                    sent: "{}",
                    reached: false,
                },
            )
            .await
    };
    // The claim is written; no replica confirms it (an error, as §14 says),
    // but it is held: its owner renews it while it waits.
    let held = claim(store.clone(), "HELD".into(), "owner".into()).await;
    assert!(
        matches!(held, Err(StoreError::Replicas { got: 0, .. })),
        "{held:?}"
    );
    // Other writes, each followed by a WAIT that lasts its whole timeout.
    let waiting: Vec<_> = (0..4)
        .map(|i| tokio::spawn(claim(store.clone(), format!("W-{i}"), format!("t{i}"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = std::time::Instant::now();
    let renewed = store.renew(&id("HELD"), "owner").await;
    let renew_took = asked.elapsed();
    let asked = std::time::Instant::now();
    let pinged = store.ping().await;
    let ping_took = asked.elapsed();
    assert!(
        matches!(renewed, Ok(true)),
        "the renewal failed behind the WAITs: {renewed:?} after {renew_took:?}"
    );
    assert!(
        renew_took < Duration::from_millis(300),
        "the renewal waited {renew_took:?} behind the WAITs"
    );
    assert!(pinged.is_ok(), "{pinged:?}");
    assert!(ping_took < Duration::from_millis(300), "{ping_took:?}");
    for w in waiting {
        let r = w.await.expect("joined");
        assert!(
            !matches!(r, Ok(ClaimReply::Claimed { .. })),
            "a claim no replica has counted as made: {r:?}"
        );
    }
}

/// The store and the first check share one pipelined round trip, whose
/// script goes by hash: a Redis that no longer knows the script (restarted,
/// failed over) gets it loaded and the pair sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_forgot_the_scripts_still_gets_each_outcome_with_its_first_check() {
    let port = crate::net::free_port().expect("a free port");
    let _redis = server(port, None);
    let url = format!("redis://127.0.0.1:{port}/0");
    until("the Redis up", || {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    })
    .await;
    let env = TestEnv::with(&[("H5PAY__REDIS__URL", url.as_str())]).await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    let checks = env.checks_store();
    for trace in ["F-1", "F-2"] {
        env.publish_json(&intent(trace, "M1", 100)).await;
        let r = results.next_for(trace, WAIT).await;
        assert_eq!(r.event["status"], "ready", "{}", r.event);
        let id = h5pay_worker::intent::Identity {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_trace_no: trace.into(),
        };
        assert!(
            checks.next(&id).await.expect("ZSCORE").is_some(),
            "{trace}: no first check"
        );
        let flushed = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "SCRIPT", "FLUSH"])
            .output()
            .expect("redis-cli");
        assert!(
            flushed.stdout.starts_with(b"OK"),
            "SCRIPT FLUSH: {flushed:?}"
        );
    }
    assert!(worker.stop().await.is_ok());
}
