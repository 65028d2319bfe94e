//! Node failures on real clusters (contract §14): a Redis Cluster of three
//! masters with a replica each and a three-node RabbitMQ cluster, started
//! on this machine by `scripts/clusters.sh` beside its own services, the
//! real `h5pay-worker run` and `notify` binaries against them (`amqp.urls`
//! = the three nodes, `redis.cluster = true` with every node as a seed),
//! the sandbox gateway, and a paced load of intents whose amounts make the
//! sandbox play a payment (paid and found by a query, paid with a notify,
//! never paid and closed), so that payments are followed through the
//! faults. Each scenario kills a node with `kill -9` and checks: no intent
//! lost (a result for every identity, nothing in the DLQ), never two
//! different requests for one identity (the sandbox's
//! `distinct_requests`), one outcome per identity, every payment at its
//! final state — and what is particular to it. Figures go to
//! `target/chaos-clusters-report.jsonl` (RELIABILITY.md, "Clusters").
//!
//! `make chaos-clusters` runs it (H5PAY_CHAOS_FULL=1: the full load). The
//! clusters are started once for all scenarios (about 20 s) and healed
//! between them. H5PAY_CLUSTERS_ONLY=leader,election,dlq,redis-wait,redis-failover
//! picks scenarios; H5PAY_CLUSTERS_KEEP=1 keeps the clusters and the logs.

#[path = "../chaos/harness.rs"]
mod chaos;
mod harness;
#[path = "../common/net.rs"]
mod net;
#[path = "../common/proxy.rs"]
mod proxy;
#[path = "../common/vhost.rs"]
mod vhost;
#[path = "../common/worker_toml.rs"]
mod worker_toml;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::json;

use harness::{Clusters, Options, ReadyWatch, World, gauge, ready, record, secs};

const DRAIN: Duration = Duration::from_secs(180);
/// The contract's bound for consumption to resume after a node is lost.
const RESUME_WITHIN: Duration = Duration::from_secs(60);

/// The load: intents a second, for how long; how long a killed Redis node
/// stays down.
#[derive(Debug, Clone, Copy)]
struct Scale {
    rate: usize,
    secs: usize,
    redis_outage: Duration,
}

impl Scale {
    fn intents(&self) -> usize {
        self.rate * self.secs
    }
}

fn scale() -> Scale {
    if std::env::var_os("H5PAY_CHAOS_FULL").is_some() {
        Scale {
            rate: 100,
            secs: 30,
            redis_outage: Duration::from_secs(15),
        }
    } else {
        Scale {
            rate: 50,
            secs: 12,
            redis_outage: Duration::from_secs(8),
        }
    }
}

type Scenario = for<'a> fn(&'a Clusters, Scale) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a Redis Cluster and a RabbitMQ cluster (~20 s) and runs 4 scenarios (~4 min): make chaos-clusters"]
async fn clusters_survive_node_failures() {
    let scenarios: [(&str, Scenario); 5] = [
        ("leader", |c, s| {
            Box::pin(intent_queue_leader_killed_under_load(c, s))
        }),
        ("election", |c, s| {
            Box::pin(a_publisher_refused_during_an_election_publishes_again(c, s))
        }),
        ("dlq", |c, s| {
            Box::pin(dlq_node_killed_then_worker_restarted(c, s))
        }),
        ("redis-wait", |c, s| {
            Box::pin(redis_master_killed_under_load_wait_replicas_1(c, s))
        }),
        ("redis-failover", |c, s| {
            Box::pin(redis_master_killed_under_load_failover_only(c, s))
        }),
    ];
    let only: Option<HashSet<String>> = std::env::var("H5PAY_CLUSTERS_ONLY")
        .ok()
        .map(|v| v.split(',').map(|x| x.trim().to_owned()).collect());
    let s = scale();
    let started = Instant::now();
    let cl = Clusters::start();
    record(&json!({
        "scenario": "clusters started (3 Redis masters + 3 replicas, 3 RabbitMQ nodes)",
        "start_secs": cl.start_secs,
    }));
    let mut failed = Vec::new();
    for (name, run) in scenarios {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let t0 = Instant::now();
        eprintln!("== scenario {name}");
        let outcome = std::panic::AssertUnwindSafe(run(&cl, s))
            .catch_unwind()
            .await;
        if outcome.is_err() {
            failed.push(name);
        }
        eprintln!("== scenario {name}: {:.0} s", t0.elapsed().as_secs_f64());
        // Whatever the scenario left dead comes back for the next one.
        cl.revive();
    }
    eprintln!("all scenarios: {:.0} s", started.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

/// Starts `n` workers, each ready.
async fn workers(w: &World<'_>, n: usize) -> Vec<(harness::Proc, u16)> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(w.ready_worker(i).await);
    }
    out
}

/// (a) The RabbitMQ node that leads the intent queue (quorum) is killed
/// with `kill -9` while intents are published and consumed; at least one
/// worker is connected to it. Consumption resumes within a minute (an
/// intent published after the kill gets its result), every worker is
/// ready again, every intent gets its result, every payment its final
/// state — without the node coming back.
async fn intent_queue_leader_killed_under_load(cl: &Clusters, s: Scale) {
    let scenario = "RabbitMQ: the intent queue's leader node killed (kill -9) under load";
    let w = World::start(cl, rabbit_options("leader")).await;
    let leader = leader_of(&w, "h5pay.intents");
    let mut ws = workers(&w, 3).await;
    // At least one worker on the node that will die: start workers again
    // (each picks a node at random) until one is.
    let mut restarts = 0;
    loop {
        let on = w.cl.worker_nodes(&w.vhost);
        if on.iter().any(|(_, n)| *n == leader) || restarts >= 10 {
            break;
        }
        let (mut old, _) = ws.remove(0);
        old.signal("TERM");
        let _ = old.wait_exit(Duration::from_secs(20));
        ws.push(w.ready_worker(10 + restarts).await);
        restarts += 1;
    }
    let on = w.cl.worker_nodes(&w.vhost);
    let on_leader = on.iter().filter(|(_, n)| *n == leader).count();
    assert!(on_leader > 0, "no worker on the leader's node: {on:?}");
    let links_on_leader =
        w.cl.connections(&w.vhost, "reconcile")
            .iter()
            .filter(|(_, n)| *n == leader)
            .count();

    let publisher = w.publish((leader + 1) % 3, 0, s.intents(), s.rate);
    tokio::time::sleep(Duration::from_secs(s.secs as u64 / 3)).await;
    let received_at_kill = w.received();
    let sent_at_kill = w.sent().len();
    w.cl.kill_rabbit(leader);
    let killed = Instant::now();

    // A new leader among the two others.
    let mut new_leader = None;
    let mut election_secs = None;
    while killed.elapsed() < RESUME_WITHIN {
        if let Some(l) =
            w.cl.queue_nodes(&w.vhost)
                .get("h5pay.intents")
                .and_then(|q| q.0)
                .filter(|l| *l != leader)
        {
            new_leader = Some(l);
            election_secs = Some(secs(killed.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every worker consuming again (those on the dead node reconnected).
    let mut all_ready_secs = None;
    while killed.elapsed() < RESUME_WITHIN {
        let mut all = true;
        for (_, admin) in &ws {
            all &= harness::readyz_ok(*admin).await;
        }
        if all {
            all_ready_secs = Some(secs(killed.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.await.expect("the publisher ran");
    let resumed = loop {
        if let Some(t) = w.first_result_sent_after(killed) {
            break Some(t);
        }
        if killed.elapsed() > RESUME_WITHIN + Duration::from_secs(30) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resumed_secs = resumed.map(|t| secs(t.duration_since(killed)));
    let all_results = w.wait_all(DRAIN).await;
    let drained_secs = secs(killed.elapsed());
    let all_final = w.wait_payments(DRAIN).await;
    let j = w.judge().await;
    // The DLQ is read once the node is back (it lives on another node
    // here, but a full count needs every node).
    let revive_secs = w.cl.revive();
    let dlq = w.dlq_depth().await;
    let reconnects = w.log_lines("consuming intents");
    record(&json!({
        "scenario": scenario,
        "intents": j.identities, "workers": ws.len(), "worker_sessions_on_killed_node": on_leader,
        "reconcile_links_on_killed_node": links_on_leader,
        "kills": 1, "received_at_kill": received_at_kill, "sent_at_kill": sent_at_kill,
        "new_leader_secs": election_secs, "all_workers_ready_secs": all_ready_secs,
        "first_result_of_an_intent_published_after_the_kill_secs": resumed_secs,
        "all_results_secs_after_kill": drained_secs,
        "consuming_log_lines": reconnects, "node_revived_secs": revive_secs,
        "dead_lettered": dlq, "judged": j,
    }));
    assert!(new_leader.is_some(), "no new leader within a minute");
    assert!(
        all_ready_secs.is_some(),
        "a worker did not consume again within a minute\n{}",
        w.logs()
    );
    assert!(
        resumed_secs.is_some_and(|t| t <= RESUME_WITHIN.as_secs_f64()),
        "consumption did not resume within a minute: {resumed_secs:?}\n{}",
        w.logs()
    );
    assert!(all_results, "not every intent got a result\n{}", w.logs());
    assert!(all_final, "payments not final\n{}", w.logs());
    j.assert_clean(scenario, &w.logs());
    assert_eq!(dlq, Some(0), "readable intents reached the DLQ");
    // Only deliveries in flight on the dead node's workers may be called
    // again (after their lease), with the identical request.
    assert!(j.extra_calls <= 64 * on_leader as u64, "{j:?}");
}

/// (b) The node of the classic DLQ is killed, then a worker is restarted:
/// it starts and consumes (the DLQ that cannot be declared is reported:
/// `h5pay_dlq_reachable` 0, a log line, `/readyz` 200), and declares the
/// DLQ again once the node is back.
async fn dlq_node_killed_then_worker_restarted(cl: &Clusters, s: Scale) {
    let scenario = "RabbitMQ: the classic DLQ's node killed (kill -9), then a worker restarted";
    let dlq_node = 1;
    let w = World::start(
        cl,
        Options {
            tag: "dlq",
            sandbox_latency_ms: 20,
            prefetch: 64,
            wait_replicas: 0,
            declare_on: 0,
            dlq_on: Some(dlq_node),
        },
    )
    .await;
    let nodes = w.cl.queue_nodes(&w.vhost);
    assert_eq!(
        nodes.get("h5pay.intents.dlq").and_then(|q| q.1),
        Some(dlq_node),
        "the DLQ lives on node {dlq_node}: {nodes:?}"
    );
    let (mut a, admin_a) = w.ready_worker(0).await;
    assert_eq!(gauge(admin_a, "h5pay_dlq_reachable").await, Some(1.0));
    let half = s.intents() / 2;
    w.publish(0, 0, half, s.rate)
        .await
        .expect("the publisher ran");
    assert!(w.wait_all(DRAIN).await, "{}", w.logs());

    w.cl.kill_rabbit(dlq_node);
    let killed = Instant::now();
    let a_ready = ready(admin_a, RESUME_WITHIN).await;
    a.signal("TERM");
    let a_exit = a.wait_exit(Duration::from_secs(30));
    let restarted = Instant::now();
    let (_b, admin_b) = w.worker(1);
    let b_ready = ready(admin_b, RESUME_WITHIN).await;
    let b_ready_secs = secs(restarted.elapsed());
    let reachable_while_down = gauge(admin_b, "h5pay_dlq_reachable").await;
    let reported = w.log_lines("the dead-letter queue cannot be reached");
    w.publish(0, half, s.intents() - half, s.rate)
        .await
        .expect("the publisher ran");
    let all_results = w.wait_all(DRAIN).await;
    let results_secs = secs(restarted.elapsed());
    let all_final = w.wait_payments(DRAIN).await;
    let j = w.judge().await;

    // The node back; the worker's connections closed by the broker: its
    // reconnect declares the DLQ again.
    let revive_secs = w.cl.revive();
    let reachable_before_reconnect = gauge(admin_b, "h5pay_dlq_reachable").await;
    let _ = w.cl.ctl(&[
        "close_all_connections",
        "--vhost",
        &w.vhost,
        "clusters test: reconnect",
    ]);
    let back = Instant::now();
    let mut reachable_again_secs = None;
    while back.elapsed() < RESUME_WITHIN {
        if gauge(admin_b, "h5pay_dlq_reachable").await == Some(1.0) {
            reachable_again_secs = Some(secs(back.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dlq = w.dlq_depth().await;
    record(&json!({
        "scenario": scenario,
        "intents": j.identities, "kills": 1,
        "first_worker_ready_after_kill": a_ready, "first_worker_exit": a_exit,
        "restarted_worker_ready_secs": b_ready_secs,
        "dlq_reachable_gauge_while_down": reachable_while_down,
        "log_lines_dlq_unreachable": reported,
        "all_results_secs_after_restart": results_secs,
        "node_revived_secs": revive_secs,
        "dlq_reachable_gauge_node_back_before_reconnect": reachable_before_reconnect,
        "dlq_reachable_again_secs_after_reconnect": reachable_again_secs,
        "dead_lettered": dlq, "secs_since_kill": secs(killed.elapsed()), "judged": j,
    }));
    assert!(
        a_ready,
        "the running worker stopped consuming\n{}",
        w.logs()
    );
    assert_eq!(a_exit, Some(0), "a graceful stop exits 0");
    assert!(
        b_ready,
        "the restarted worker is not ready with the DLQ's node down\n{}",
        w.logs()
    );
    assert_eq!(reachable_while_down, Some(0.0), "h5pay_dlq_reachable");
    assert!(reported > 0, "no log line says the DLQ cannot be reached");
    assert!(all_results, "not every intent got a result\n{}", w.logs());
    assert!(all_final, "payments not final\n{}", w.logs());
    j.assert_clean(scenario, &w.logs());
    assert_eq!(j.extra_calls, 0, "{j:?}");
    assert!(
        reachable_again_secs.is_some(),
        "the DLQ was not declared again after the node came back"
    );
    assert_eq!(dlq, Some(0), "readable intents reached the DLQ");
}

/// The longest a worker's `/readyz` may answer other than 200 while one
/// Redis master is down. Readiness needs a PING answered by any master
/// within the last 2 s (pings every 0.5 s, each given 1 s); one poll may
/// also land while the cluster client refreshes its slot map. The
/// deployed probe (every 5 s, unready after 2 failures) would take a pod
/// out only after a run of at least 5 s, so 2 s leaves a margin of more
/// than a probe period.
const UNREADY_AT_MOST: Duration = Duration::from_secs(2);

struct RedisKill {
    wait_replicas: u32,
    /// The killed node is started again this long after the kill (it comes
    /// back as its promoted replica's replica); None: only at the end.
    revive_after: Option<Duration>,
}

/// (c) A Redis master killed with `kill -9` under load: its replica is
/// promoted; only the intents whose keys live there wait.
async fn redis_master_killed(cl: &Clusters, s: Scale, k: RedisKill) {
    let scenario = format!(
        "Redis: a master killed (kill -9) under load, wait_replicas = {}{}",
        k.wait_replicas,
        match k.revive_after {
            Some(d) => format!(", the node back after {} s", d.as_secs()),
            None => ", the replica promoted, the node not back".into(),
        }
    );
    let w = World::start(
        cl,
        Options {
            tag: "redis",
            sandbox_latency_ms: 20,
            prefetch: 64,
            wait_replicas: k.wait_replicas,
            declare_on: 0,
            dlq_on: None,
        },
    )
    .await;
    let (_receiver, receiver_admin) = w.receiver();
    assert!(ready(receiver_admin, RESUME_WITHIN).await, "{}", w.logs());
    let ws = workers(&w, 2).await;
    let mut admins: Vec<u16> = ws.iter().map(|(_, a)| *a).collect();
    admins.push(receiver_admin);

    let publisher = w.publish(0, 0, s.intents(), s.rate);
    tokio::time::sleep(Duration::from_secs(s.secs as u64 / 3)).await;
    let masters = w.cl.redis_masters();
    let (victim, replica) = masters.first().copied().expect("a master");
    let replica = replica.expect("the master has a replica");
    let slots = w.cl.master_slots(victim);
    let on_victim = |trace: &str| {
        let slot = harness::key_slot(&w.key(trace));
        slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    };
    let offsets_before = (w.cl.repl_offset(victim), w.cl.repl_offset(replica));
    // The reconciler's schedule keys (16 shards) that live on the victim.
    let shards_on_victim = (0..16)
        .filter(|n| {
            let slot = harness::key_slot(&format!("{}:checks:{n}", w.prefix));
            slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
        .count();
    let watch = ReadyWatch::start(admins.clone());
    let received_at_kill = w.received();
    w.cl.kill_redis(victim);
    let killed = Instant::now();
    let mut promoted_secs = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if w.cl.role(replica) == "master" {
            promoted_secs = Some(secs(killed.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted_offset = w.cl.repl_offset(replica);
    let mut revived = None;
    if let Some(after) = k.revive_after {
        tokio::time::sleep(after.saturating_sub(killed.elapsed())).await;
        let t = Instant::now();
        let took = w.cl.revive();
        revived = Some((t, took));
    }
    publisher.await.expect("the publisher ran");
    let all_results = w.wait_all(DRAIN).await;
    let drained_secs = secs(killed.elapsed());
    let all_final = w.wait_payments(DRAIN).await;
    let unready = watch.finish().await;
    let j = w.judge().await;
    let missing = w.outcomes_missing().await;

    // The intents whose keys live on the killed master: when they got
    // their results again; the others: how many flowed meanwhile.
    let sent = w.sent();
    let (first_at, on_dead) = {
        let r = w.results.lock().unwrap_or_else(|p| p.into_inner());
        let first_at = r.first_at.clone();
        let on_dead: usize = sent.iter().filter(|x| on_victim(&x.trace)).count();
        (first_at, on_dead)
    };
    let dead_resumed = sent
        .iter()
        .filter(|x| on_victim(&x.trace))
        .filter_map(|x| first_at.get(&x.trace))
        .filter(|t| **t > killed + Duration::from_millis(500))
        .min()
        .map(|t| secs(t.duration_since(killed)));
    let outage_end = revived
        .map(|(t, _)| t)
        .unwrap_or(killed + Duration::from_secs(10));
    let others_during = sent
        .iter()
        .filter(|x| !on_victim(&x.trace))
        .filter_map(|x| first_at.get(&x.trace))
        .filter(|t| **t > killed && **t < outage_end)
        .count();
    let before = w.results_between(killed - Duration::from_secs(3), killed) as f64 / 3.0;
    let during_window = outage_end.duration_since(killed).as_secs_f64();
    let during = w.results_between(killed, outage_end) as f64 / during_window;
    let worst_unready = unready.values().map(|(d, _)| *d).max().unwrap_or_default();
    let revive_back_secs = revived.map(|(t, _)| secs(t.duration_since(killed)));
    if k.revive_after.is_none() {
        w.cl.revive();
    }
    let dlq = w.dlq_depth().await;
    record(&json!({
        "scenario": scenario,
        "intents": j.identities, "intents_on_killed_master": on_dead, "kills": 1,
        "received_at_kill": received_at_kill, "schedule_shards_on_killed_master": shards_on_victim,
        "replica_promoted_secs": promoted_secs,
        "repl_offsets_master_replica_before_kill": [offsets_before.0, offsets_before.1],
        "promoted_replica_offset": promoted_offset,
        "node_back_secs_after_kill": revive_back_secs,
        "revive_took_secs": revived.map(|(_, took)| took),
        "first_result_on_killed_masters_keys_secs_after_kill": dead_resumed,
        "results_per_sec_before_kill": (before * 10.0).round() / 10.0,
        "results_per_sec_during_outage": (during * 10.0).round() / 10.0,
        "other_masters_results_during_outage": others_during,
        "all_results_secs_after_kill": drained_secs,
        "longest_not_ready_ms": worst_unready.as_millis() as u64,
        "not_ready_polls": unready.values().map(|(_, n)| *n).sum::<usize>(),
        "acknowledged_outcomes_missing_from_redis": missing.len(),
        "dead_lettered": dlq, "judged": j,
    }));
    assert!(promoted_secs.is_some(), "the replica was not promoted");
    assert!(all_results, "not every intent got a result\n{}", w.logs());
    assert!(all_final, "payments not final\n{}", w.logs());
    j.assert_clean(&scenario, &w.logs());
    if k.wait_replicas > 0 {
        // §14: every state write reached a replica before anything was
        // published or acknowledged on it.
        assert!(
            missing.is_empty(),
            "acknowledged outcomes missing from Redis: {:?}",
            &missing[..missing.len().min(10)]
        );
    }
    assert_eq!(dlq, Some(0), "readable intents reached the DLQ");
    assert!(
        worst_unready <= UNREADY_AT_MOST,
        "/readyz was not 200 for {worst_unready:?} in a row: {unready:?}"
    );
    assert!(
        others_during > 0,
        "intents on the other masters must flow during the outage"
    );
    if k.wait_replicas > 0 {
        // Claims were replicated before their calls, and renewals go on
        // through the outage: no call is ever made twice.
        assert_eq!(j.extra_calls, 0, "{j:?}");
    } else {
        // §14: with 0, a claim the failover lost may be claimed and called
        // again (the identical request): at most the intents in flight.
        assert!(j.extra_calls <= 64 * 2, "{j:?}");
    }
}

/// (c) with `redis.wait_replicas = 1`: after the promotion the new master
/// has no replica, so writes to its slots wait until the killed node is
/// back as its replica; nothing the worker acknowledged is lost.
async fn redis_master_killed_under_load_wait_replicas_1(cl: &Clusters, s: Scale) {
    redis_master_killed(
        cl,
        s,
        RedisKill {
            wait_replicas: 1,
            revive_after: Some(s.redis_outage),
        },
    )
    .await
}

/// (c) with `redis.wait_replicas = 0`: the promoted replica serves on its
/// own; the waiting intents resume after the failover.
async fn redis_master_killed_under_load_failover_only(cl: &Clusters, s: Scale) {
    redis_master_killed(
        cl,
        s,
        RedisKill {
            wait_replicas: 0,
            revive_after: None,
        },
    )
    .await
}

/// A worker whose node died reconnects at once, and its first result
/// event goes out while the results' quorum queue is still electing a
/// leader. RabbitMQ 3.10 nacks that publish and then every later publish
/// of the same channel, for minutes, while a new channel on the same
/// connection is confirmed (seen in the full leader scenario: two intents
/// bounced between nacks and hand-backs until the drain gave up). The
/// worker's publisher replaces a channel the broker refused, so the next
/// retry is confirmed.
async fn a_publisher_refused_during_an_election_publishes_again(cl: &Clusters, _s: Scale) {
    use h5pay_worker::amqp::Publisher;
    use h5pay_worker::payment::apply::Outgoing;
    use h5pay_worker::payment::event::EventState;
    let scenario =
        "RabbitMQ: a publisher's first publish comes during the results queue's election";
    let w = World::start(cl, rabbit_options("election")).await;
    let leader = leader_of(&w, "clusters.results");
    let node = (leader + 1) % 3;
    w.cl.kill_rabbit(leader);
    let killed = Instant::now();
    // Connected and publishing at once, as a worker that lost its node.
    let conn = std::sync::Arc::new(harness::connect(w.cl, node, &w.vhost).await);
    let publisher = Publisher::open(&conn, "h5pay.results")
        .await
        .expect("a publisher");
    let trace = h5pay_worker::telemetry::trace::TraceHeaders::default();
    let publish = |n: usize| {
        let publisher = publisher.clone();
        let trace = trace.clone();
        async move {
            let id = format!("election-{n}");
            let body = json!({"schema": "h5pay.payment.v1", "event_id": id, "pay_trace_no": id, "state": "paid"})
                .to_string();
            publisher
                .publish_payment(Outgoing {
                    event_id: &id,
                    state: EventState::Paid,
                    routing_key: "h5pay.payment.paid",
                    body: body.as_bytes(),
                    correlation_id: &id,
                    occurred_at: "2026-12-06T00:00:00Z",
                    subject: &id,
                    trace: &trace,
                })
                .await
        }
    };
    let mut refused = 0usize;
    let mut confirmed_after = None;
    let mut n = 0;
    while killed.elapsed() < RESUME_WITHIN {
        n += 1;
        match publish(n).await {
            Ok(()) => {
                confirmed_after = Some(secs(killed.elapsed()));
                break;
            }
            Err(e) => {
                refused += 1;
                eprintln!("publish {n}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And it stays so: the next ones are confirmed too.
    let mut later_refused = 0;
    for m in 0..10 {
        if publish(1000 + m).await.is_err() {
            later_refused += 1;
        }
    }
    record(&json!({
        "scenario": scenario, "kills": 1,
        "refused_during_the_election": refused,
        "confirmed_secs_after_kill": confirmed_after,
        "refused_afterwards": later_refused,
    }));
    let _ = conn.close(200, "done".into()).await;
    assert!(
        confirmed_after.is_some(),
        "the publisher was refused for a minute after the election ({refused} nacks)"
    );
    assert_eq!(later_refused, 0, "publishes refused after the election");
}

/// The RabbitMQ scenarios' world: the topology declared on node 0, the DLQ
/// moved to node 2, so that killing a queue's leader leaves the DLQ up.
fn rabbit_options(tag: &'static str) -> Options {
    Options {
        tag,
        sandbox_latency_ms: 20,
        prefetch: 64,
        wait_replicas: 0,
        declare_on: 0,
        dlq_on: Some(2),
    }
}

/// The node leading `queue` (a quorum queue of the world's vhost).
fn leader_of(w: &World<'_>, queue: &str) -> usize {
    w.cl.queue_nodes(&w.vhost)
        .get(queue)
        .and_then(|q| q.0)
        .unwrap_or_else(|| panic!("{queue} has a leader"))
}
