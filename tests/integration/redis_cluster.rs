//! The worker on a Redis Cluster of its own (three `redis-server` processes
//! on free ports, started and stopped by the test): every claim script
//! touches one key, so claims of different identities land on different
//! nodes and the guarantees hold as on one Redis.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{EnvOptions, TestEnv, WAIT, intent};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    crate::net::free_port().expect("a free port")
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli (make services installs it): {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts a three-node cluster; the nodes stop when the returned guards drop.
fn start_cluster(dir: &std::path::Path) -> (Vec<u16>, Vec<Node>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Node> = ports
        .iter()
        .map(|p| {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &p.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{p}.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server (make services installs it): {e}"));
            Node(child)
        })
        .collect();
    for p in &ports {
        for _ in 0..100 {
            if cli(*p, &["ping"]).trim() == "PONG" {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("a status");
    assert!(status.success(), "redis-cli --cluster create failed");
    for _ in 0..200 {
        if ports
            .iter()
            .all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            return (ports, nodes);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the cluster did not become ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_claims_spread_over_nodes_and_duplicates_still_replay() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ports, _nodes) = start_cluster(dir.path());
    let env = TestEnv::start(EnvOptions {
        overrides: vec![
            (
                "H5PAY__REDIS__URL",
                format!("redis://127.0.0.1:{}", ports[0]),
            ),
            ("H5PAY__REDIS__CLUSTER", "true".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    let n = 30;
    for i in 0..n {
        env.publish_json(&intent(&format!("CL-{i}"), "M1", 100))
            .await;
    }
    let first = results.take(n, WAIT).await;
    assert!(
        first
            .iter()
            .all(|r| r.event["status"] == "ready" && r.event["duplicate"] == false)
    );
    for i in 0..5 {
        env.publish_json(&intent(&format!("CL-{i}"), "M1", 100))
            .await;
    }
    let again = results.take(5, WAIT).await;
    assert!(
        again.iter().all(|r| r.event["duplicate"] == true),
        "replays from the cluster"
    );
    // Each payment's first check is scheduled with its outcome, its key on
    // a node of its own (not in the store's round trip, as on one Redis).
    let checks = env.checks_store();
    for i in 0..n {
        assert_eq!(env.calls("M1", &format!("CL-{i}")), 1);
        let id = h5pay_worker::intent::Identity {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_trace_no: format!("CL-{i}"),
        };
        assert!(
            checks.next(&id).await.expect("ZSCORE").is_some(),
            "CL-{i}: no first check"
        );
    }
    // The identities' hashes live on more than one node.
    let prefix = &env.config.settings.redis.key_prefix;
    let holding = ports
        .iter()
        .filter(|p| {
            !cli(**p, &["--scan", "--pattern", &format!("{prefix}:*")])
                .trim()
                .is_empty()
        })
        .count();
    assert!(holding >= 2, "claims on {holding} node(s) only");
    assert!(worker.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_urls_are_more_seed_nodes_so_a_dead_url_does_not_stop_the_worker() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ports, _nodes) = start_cluster(dir.path());
    // redis.url names a node that is gone; the seeds of redis.urls (from
    // the environment, as a list) still find the cluster.
    let gone = free_port();
    let env = TestEnv::start(EnvOptions {
        overrides: vec![
            ("H5PAY__REDIS__URL", format!("redis://127.0.0.1:{gone}")),
            (
                "H5PAY__REDIS__URLS",
                format!(
                    "redis://127.0.0.1:{}, redis://127.0.0.1:{}",
                    ports[1], ports[2]
                ),
            ),
            ("H5PAY__REDIS__CLUSTER", "true".into()),
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(env.config.settings.redis.urls.len(), 2);
    let mut results = env.results().await;
    let worker = env.worker();
    worker.ready().await;
    for i in 0..10 {
        env.publish_json(&intent(&format!("SEED-{i}"), "M1", 100))
            .await;
    }
    let got = results.take(10, WAIT).await;
    assert!(
        got.iter().all(|r| r.event["status"] == "ready"),
        "{:?}",
        got.iter().map(|r| r.event.to_string()).collect::<Vec<_>>()
    );
    for i in 0..10 {
        assert_eq!(env.calls("M1", &format!("SEED-{i}")), 1);
    }
    assert!(worker.stop().await.is_ok());
}
