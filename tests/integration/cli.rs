//! The binary itself: `sign`, config errors, `run` on a bad topology,
//! `publish --wait`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{SANDBOX_KEY, TestEnv, base_toml};

const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("process started");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    let out = child.wait_with_output().expect("process output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    crate::net::free_port().expect("a free port")
}

/// `h5pay-worker run --config <config>` with its admin endpoints on `admin`.
pub(crate) fn spawn_run(
    config: &std::path::Path,
    admin: u16,
    extra_env: &[(&str, &str)],
    stderr: Stdio,
) -> tokio::process::Child {
    spawn_command("run", config, admin, extra_env, stderr)
}

/// `command` (`run`, `notify`) at info level, its stderr piped (the test
/// reads the log), ready.
async fn start_logged(
    command: &str,
    config: &std::path::Path,
    admin: u16,
) -> tokio::process::Child {
    let child = spawn_command(
        command,
        config,
        admin,
        &[("H5PAY__LOG__LEVEL", "info")],
        Stdio::piped(),
    );
    assert!(wait_ready(admin).await, "{command} not ready");
    child
}

/// `h5pay-worker <command> --config <config>` with its admin endpoints on
/// `admin`: `run` and `notify` start alike.
pub(crate) fn spawn_command(
    command: &str,
    config: &std::path::Path,
    admin: u16,
    extra_env: &[(&str, &str)],
    stderr: Stdio,
) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args([command, "--config", &config.display().to_string()])
        .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("process started")
}

/// Waits (up to 10 s) for `/readyz` to answer 200.
pub(crate) async fn wait_ready(admin: u16) -> bool {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// `h5pay_build_info` as every /metrics shows it (contract §9).
const BUILD_INFO: &str = concat!(
    "h5pay_build_info{version=\"",
    env!("CARGO_PKG_VERSION"),
    "\"} 1\n"
);

#[test]
fn version_prints_the_name_the_crate_version_and_the_commit() {
    // The checkout's own commit, as the build script read it (build.rs).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = head.unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(env!("H5PAY_COMMIT"), commit, "the build's commit is HEAD's");
    for flag in ["--version", "-V"] {
        let (code, stdout, stderr) = run_with_stdin(&[flag], b"");
        assert_eq!(code, 0, "{flag}: {stderr}");
        assert_eq!(
            stdout,
            format!(
                "h5pay-worker {} (commit {commit})\n",
                env!("CARGO_PKG_VERSION")
            ),
            "{flag}"
        );
    }
}

#[test]
fn sign_prints_the_vector_signs_and_verify_checks_them() {
    let doc: Value =
        serde_json::from_str(include_str!("../data/sign-vectors.json")).unwrap_or_default();
    for case in doc["cases"].as_array().cloned().unwrap_or_default() {
        let params = serde_json::to_vec(&case["params"]).unwrap_or_default();
        let key = case["key"].as_str().unwrap_or_default();
        let (code, out, err) = run_with_stdin(&["sign", "--key", key], &params);
        assert_eq!(
            (code, out.trim()),
            (0, case["sign"].as_str().unwrap_or_default()),
            "{}: {err}",
            case["name"]
        );

        let mut with_sign = case["params"].clone();
        with_sign["sign"] = case["sign_skip_empty"].clone();
        let body = serde_json::to_vec(&with_sign).unwrap_or_default();
        let (code, out, _) = run_with_stdin(&["sign", "--key", key, "--verify"], &body);
        assert_eq!((code, out.trim()), (0, "valid"), "{}", case["name"]);
        let (code, _, _) = run_with_stdin(&["sign", "--key", "other-key", "--verify"], &body);
        assert_eq!(code, 1, "{}: a wrong key must not verify", case["name"]);
    }
}

#[test]
fn sign_rejects_what_is_not_a_json_object_clearly() {
    for (input, needle) in [
        (&b"{not json"[..], "not JSON"),
        (b"[1]", "not a JSON object"),
        (b"", "not JSON"),
    ] {
        let (code, out, err) = run_with_stdin(&["sign", "--key", SANDBOX_KEY], input);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = run_with_stdin(&["sign"], b"{}");
    assert_eq!(code, 2);
    assert!(err.contains("--key"), "{err}");
    let (code, _, _) = run_with_stdin(
        &["sign", "--key", SANDBOX_KEY, "--verify"],
        b"{\"a\":\"1\"}",
    );
    assert_eq!(code, 1, "no sign field is invalid");
}

#[test]
fn a_bad_config_exits_non_zero_with_one_line_naming_the_key_and_no_secret() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cases = [
        (
            "[amqp]\nurl = \"http://nope\"\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "amqp.url",
        ),
        ("[[institutions]]\ninst_no = \"1\"\n", "institutions[0].key"),
        (
            "[amqp]\nprefetch = -1\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "amqp.prefetch",
        ),
        (
            "[wat]\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "wat",
        ),
        (
            "[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1",
            "config",
        ),
        (
            "[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n\
             [[institutions]]\ninst_no = \"2\"\nkey = \"TOPSECRET1\"\n",
            "worker.default_inst_no",
        ),
        (
            "[redis]\nlease_ms = 1000\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "redis.lease_ms",
        ),
        (
            "[redis]\nretention_secs = 60\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "redis.retention_secs",
        ),
        (
            "[amqp]\nurls = [\"amqp://u:TOPSECRET1@mq-0:5672/%2f\", \"http://u:TOPSECRET1@mq-1/\"]\n\
             [[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "amqp.urls[1]",
        ),
        (
            "[redis]\nurls = [\"redis://u:TOPSECRET1@r-1:6379\"]\n\
             [[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "redis.urls",
        ),
        (
            "[redis]\nwait_replicas = 17\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "redis.wait_replicas",
        ),
        (
            "[reconcile]\nconcurrency = 0\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "reconcile.concurrency",
        ),
        (
            "[reconcile]\nschedule_shards = 0\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "reconcile.schedule_shards",
        ),
        // Route syntax would make the router panic at start-up.
        (
            "[notify]\npath = \"/{x}\"\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "notify.path",
        ),
        (
            "[notify]\npath = \"/a/*rest\"\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "notify.path",
        ),
        // Huge times overflowed the reconciler's clock arithmetic.
        (
            "[reconcile]\nmax_age_secs = 9223372036854775807\n[redis]\nretention_secs = 9223372036854775807\n\
             [[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "max_age_secs",
        ),
        (
            "[reconcile]\nclose_grace_secs = 9223372036854775807\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "reconcile.close_grace_secs",
        ),
        (
            "[reconcile]\ncheck_after_secs = [60, -5]\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "reconcile.check_after_secs",
        ),
        (
            "[reconcile]\norder_ttl_secs = -1\n[[institutions]]\ninst_no = \"1\"\nkey = \"TOPSECRET1\"\n",
            "reconcile.order_ttl_secs",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).expect("file written");
        let p = path.display().to_string();
        let (code, out, err) = run_with_stdin(&["run", "--config", &p], b"");
        assert_ne!(code, 0, "{text}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}{out}");
        assert!(err.contains(key), "{key} not named: {err}");
        assert!(
            !err.contains("TOPSECRET1") && !out.contains("TOPSECRET1"),
            "secret leaked: {err}"
        );
    }
    // Environment overrides are checked the same way.
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "[[institutions]]\ninst_no = \"1\"\nkey = \"k\"\n")
        .expect("file written");
    let out = Command::new(BIN)
        .args(["run", "--config", &path.display().to_string()])
        .env("H5PAY__AMQP__PREFETCH", "lots")
        .output()
        .expect("process output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("amqp.prefetch") && err.contains("H5PAY__AMQP__PREFETCH"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_non_zero_naming_an_object_declared_with_other_arguments() {
    let env = TestEnv::new().await;
    let queue = format!("h5pay-test-{}.classic", env.id);
    let ch = env.conn.create_channel().await.expect("a channel");
    ch.queue_declare(
        queue.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .expect("queue declared");
    let (_dir, path) = env.config_file("");
    let out = tokio::process::Command::new(BIN)
        .args(["run", "--config", &path.display().to_string()])
        .env("H5PAY__AMQP__INTENT_QUEUE", &queue)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), out)
        .await
        .unwrap_or_else(|_| panic!("run did not exit"))
        .expect("run exited");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("queue '{queue}'")), "{err}");
    let _ = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_prints_the_result_events() {
    let env = TestEnv::new().await;
    let _worker = env.worker();
    let (_dir, path) = env.config_file("");
    let out = tokio::process::Command::new(BIN)
        .args([
            "publish",
            "--config",
            &path.display().to_string(),
            "--mch-no",
            "CLI1",
            "--pay-type",
            "alipay",
            "--amount",
            "4002",
            "--count",
            "3",
            "--pay-trace-no",
            "CLI-W",
            "--wait",
            "--timeout-secs",
            "20",
        ])
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out)
        .await
        .unwrap_or_else(|_| panic!("publish did not exit"))
        .expect("publish exited");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.len(), 3, "{stdout}");
    assert!(
        events
            .iter()
            .all(|e| e["status"] == "in_process" && e["mch_no"] == "CLI1")
    );
    assert!(
        stderr.contains("published 3/3"),
        "progress for --count > 1: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_institution_keys_without_a_restart() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let key_file = dir.path().join("60000001.key");
    std::fs::write(&key_file, "an-old-revoked-key\n").expect("file written");
    let toml = base_toml(&env.id, &env.gateway_url()).replacen(
        &format!("key = \"{SANDBOX_KEY}\""),
        &format!("key_file = {:?}", key_file.display().to_string()),
        1,
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).expect("file written");
    let admin = free_port();
    let mut child = start_logged("run", &path, admin).await;
    env.publish_json(&crate::support::intent("ROT-1", "M1", 100))
        .await;
    let old = results.take(1, crate::support::WAIT).await.remove(0);
    // The gateway refuses the old sign and signs its refusal with the
    // current key, which the old key cannot verify.
    assert_eq!(
        old.kind(),
        Some("bad_signature"),
        "the old key is refused: {}",
        old.event
    );

    std::fs::write(&key_file, format!("{SANDBOX_KEY}\n")).expect("file written");
    let pid = child.id().unwrap_or_default().to_string();
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    env.publish_json(&crate::support::intent("ROT-2", "M1", 100))
        .await;
    let new = results.take(1, crate::support::WAIT).await.remove(0);
    assert_eq!(
        new.event["status"], "ready",
        "the rotated key is used: {}",
        new.event
    );

    assert_eq!(terminate(&mut child).await, Some(0));
    let stderr = stderr_of(&mut child).await;
    assert!(stderr.contains("institution keys reloaded"), "{stderr}");
    assert!(
        !stderr.contains(SANDBOX_KEY) && !stderr.contains("an-old-revoked-key"),
        "a key reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_worker_exposes_every_contract_metric_before_any_traffic() {
    let env = TestEnv::new().await;
    let (_dir, path) = env.config_file("");
    let admin = free_port();
    let mut child = spawn_run(&path, admin, &[], Stdio::null());
    assert!(wait_ready(admin).await, "worker not ready");
    let body = crate::net::metrics(admin).await;
    for name in [
        "h5pay_intents_total{outcome=\"ready\"} 0",
        "h5pay_intents_total{outcome=\"outcome_unknown\"} 0",
        "h5pay_results_published_total{status=\"failed\"} 0",
        "h5pay_gateway_requests_total{outcome=\"timeout\"} 0",
        "h5pay_gateway_request_duration_seconds",
        "h5pay_dedup_total{kind=\"replay\"} 0",
        "h5pay_inflight_intents 0",
        "h5pay_dead_lettered_total{reason=\"not_json\"} 0",
        "h5pay_breaker_state 0",
        "h5pay_ready",
        "h5pay_payment_events_total{state=\"unresolved\"} 0",
        "h5pay_reconcile_checks_total{result=\"paid\"} 0",
        "h5pay_reconcile_checks_total{result=\"no_answer\"} 0",
        "h5pay_reconcile_lag_seconds",
        "h5pay_reconcile_overdue 0",
        "h5pay_insecure_gateway 0",
        "h5pay_dlq_reachable",
        BUILD_INFO,
    ] {
        assert!(
            body.contains(name),
            "{name} missing from a fresh /metrics:\n{body}"
        );
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notify_process_applies_a_paid_notify_serves_only_its_path_and_stops_on_sigterm() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("n.toml");
    let (port, admin) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}/h5pay/notify");
    std::fs::write(
        &path,
        format!(
            "{}\n[notify]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\n",
            base_toml(&env.id, &env.gateway_url())
        ),
    )
    .expect("config written");
    let mut child = start_logged("notify", &path, admin).await;
    let metrics = || async { crate::net::metrics(admin).await };
    let fresh = metrics().await;
    for line in [
        "h5pay_notifies_total{outcome=\"applied\"} 0",
        "h5pay_notifies_total{outcome=\"unavailable\"} 0",
        "h5pay_payment_events_total{state=\"paid\"} 0",
        "h5pay_payment_events_total{state=\"anomaly\"} 0",
        "h5pay_notify_duration_seconds",
        BUILD_INFO,
    ] {
        assert!(
            fresh.contains(line),
            "{line} missing from a fresh /metrics:\n{fresh}"
        );
    }

    // An order placed by a worker that names this receiver, paid on the
    // sandbox, whose notify reaches the process.
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let mut config = env.config.clone();
    config.settings.notify.public_url = url.clone();
    let worker = env.worker_with(config);
    worker.ready().await;
    env.publish_json(&crate::support::intent("PROC-1", "M1", 100))
        .await;
    let ready = results.take(1, crate::support::WAIT).await.remove(0);
    assert_eq!(ready.event["status"], "ready", "{}", ready.event);
    env.pay("M1", "PROC-1").await;
    let paid = payments.take(1, crate::support::WAIT).await.remove(0);
    assert_eq!(paid.event["state"], "paid", "{}", paid.event);
    assert_eq!(paid.event["trade_no"], ready.event["trade_no"]);
    // The notify is counted when it is answered, a moment after its event
    // was confirmed (which the test has already seen).
    let mut after = metrics().await;
    for _ in 0..50 {
        if series(&after, "h5pay_notifies_total", &["outcome=\"applied\""]) == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = metrics().await;
    }
    assert_eq!(
        series(&after, "h5pay_notifies_total", &["outcome=\"applied\""]),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        series(&after, "h5pay_payment_events_total", &["state=\"paid\""]),
        Some(1.0),
        "{after}"
    );

    // The public port carries the notify path and nothing else.
    let http = reqwest::Client::new();
    for other in ["/metrics", "/readyz", "/", "/h5pay/notify/x"] {
        let r = http
            .post(format!("http://127.0.0.1:{port}{other}"))
            .body("{}")
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), 404, "{other}");
    }

    assert_eq!(terminate(&mut child).await, Some(0));
    let stderr = stderr_of(&mut child).await;
    assert!(stderr.contains("notify receiver stopped"), "{stderr}");
    assert!(stderr.contains("PROC-1"), "the notify is logged: {stderr}");
    // Neither the key nor the notify's sign nor the link reach the log.
    assert!(!stderr.contains(SANDBOX_KEY), "a key reached the log");
    let code_url = ready.event["code_url"].as_str().unwrap_or("?");
    assert!(!stderr.contains(code_url), "a code_url reached the log");
    drop(worker);
}

/// The value of a series in Prometheus text, if it is there.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series.starts_with(name) && labels.iter().all(|x| series.contains(x)))
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_reply_no_retry_can_fix_sends_the_intent_to_the_dlq_with_a_log_line_and_a_metric() {
    // The queue is declared with the limit the worker is given below.
    let env = TestEnv::with(&[("H5PAY__AMQP__DELIVERY_LIMIT", "3")]).await;
    let a = env.config.settings.amqp.clone();
    // The identity's key holds a string: every claim script fails WRONGTYPE.
    let key = format!(
        "{}:60000001:M1:WRONG-1",
        env.config.settings.redis.key_prefix
    );
    let mut r = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a hash")
        .query_async(&mut r)
        .await
        .expect("SET");
    let (_dir, path) = env.config_file("");
    let admin = free_port();
    let child = spawn_run(
        &path,
        admin,
        &[("H5PAY__AMQP__DELIVERY_LIMIT", "3")],
        Stdio::piped(),
    );
    assert!(wait_ready(admin).await, "worker not ready");
    env.publish_json(&crate::support::intent("WRONG-1", "M1", 100))
        .await;
    let dead = env
        .get_within(&a.dead_letter_queue)
        .await
        .expect("the intent reached the DLQ");
    let d = h5pay_worker::cli::dlq::describe(&dead.delivery.properties, &dead.delivery.data);
    assert_eq!(d.reason.as_deref(), Some("delivery_limit"), "{d:?}");
    assert_eq!(
        env.calls("M1", "WRONG-1"),
        0,
        "no gateway call without a claim"
    );
    let metrics = crate::net::metrics(admin).await;
    let errors = series(
        &metrics,
        "h5pay_redis_errors_total",
        &["op=\"claim\"", "error=\"wrong_type\""],
    );
    assert!(errors.is_some_and(|n| n >= 3.0), "{metrics}");
    let handed_back = series(
        &metrics,
        "h5pay_handed_back_total",
        &["reason=\"redis_unusable\""],
    );
    assert!(handed_back.is_some_and(|n| n >= 3.0), "{metrics}");
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let out = child.wait_with_output().await.expect("the worker exits");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("no retry can fix") && log.contains("wrong_type"),
        "{log}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut r)
        .await
        .expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_on_a_taken_admin_port_still_processes_intents() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let (_dir, path) = env.config_file("");
    let admin = free_port();
    let mut first = spawn_run(&path, admin, &[], Stdio::null());
    assert!(wait_ready(admin).await, "first worker not ready");
    let mut second = spawn_run(&path, admin, &[], Stdio::null());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        second.try_wait().ok().flatten().is_none(),
        "the second worker must keep running"
    );
    // Stop the first: the second alone must take the intents.
    if let Some(pid) = first.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = first.wait().await;
    for i in 0..10 {
        env.publish_json(&crate::support::intent(&format!("TWO-{i}"), "M1", 100))
            .await;
    }
    let got = results.take(10, crate::support::WAIT).await;
    assert!(got.iter().all(|r| r.event["status"] == "ready"));
    let _ = second.start_kill();
    let _ = second.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_attempt_leaves_one_audit_line_naming_the_payment_and_its_trace() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let (_dir, path) = env.config_file("");
    let admin = free_port();
    let mut child = start_logged("run", &path, admin).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace_id}-b7ad6b7169203331-01").into()),
    );
    // Two 503s, then ready: three attempts.
    let body = serde_json::to_vec(&crate::support::intent("AUD-5001", "M1", 5001)).expect("json");
    env.publish_with(
        &body,
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await;
    let r = results.take(1, crate::support::WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    let pid = child.id().unwrap_or_default().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await;
    let stderr = stderr_of(&mut child).await;
    let audit: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "gateway attempt")
        .collect();
    assert_eq!(audit.len(), 3, "one line per attempt:\n{stderr}");
    for (i, line) in audit.iter().enumerate() {
        assert_eq!(line["target"], "h5pay_worker::audit");
        assert_eq!(line["endpoint"], "h5pay");
        assert_eq!(line["attempt"], i as u64 + 1, "{line}");
        assert_eq!(line["span"]["pay_trace_no"], "AUD-5001", "{line}");
        assert_eq!(line["span"]["trace_id"], trace_id, "{line}");
        assert!(line["duration_ms"].is_u64(), "{line}");
    }
    assert_eq!(audit[0]["http_status"], 503);
    assert_eq!(audit[0]["outcome"], "http_5xx");
    assert_eq!(
        (
            audit[2]["http_status"].as_u64(),
            audit[2]["return_code"].as_str(),
            audit[2]["result_code"].as_str()
        ),
        (Some(200), Some("SUCCESS"), Some("PAY_SUCCESS"))
    );
    // Never a key, a sign or a payment link.
    let code_url = r.event["code_url"].as_str().unwrap_or("?");
    for line in &audit {
        let text = line.to_string();
        assert!(
            !text.contains(SANDBOX_KEY) && !text.contains(code_url) && !text.contains("sign\""),
            "{text}"
        );
    }
}

/// OPERATIONS.md §11: `warn,h5pay_worker::audit=info` keeps the audit
/// lines when the rest of `info` is lowered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_audit_level_keeps_the_audit_lines_and_drops_the_other_info_lines() {
    let env = TestEnv::new().await;
    let mut results = env.results().await;
    let (_dir, path) = env.config_file("");
    let admin = free_port();
    // RUST_LOG wins over `log.level`: set here, whatever the caller's is.
    let mut child = spawn_command(
        "run",
        &path,
        admin,
        &[("RUST_LOG", "warn,h5pay_worker::audit=info")],
        Stdio::piped(),
    );
    assert!(wait_ready(admin).await, "run not ready");
    env.publish_json(&crate::support::intent("AUDLV-1", "M1", 100))
        .await;
    let r = results.take(1, crate::support::WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    terminate(&mut child).await;
    let stderr = stderr_of(&mut child).await;
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "gateway attempt")
        .collect();
    assert_eq!(audit.len(), 1, "one attempt, one audit line:\n{stderr}");
    assert_eq!(audit[0]["span"]["pay_trace_no"], "AUDLV-1", "{stderr}");
    let other_info: Vec<&Value> = lines
        .iter()
        .filter(|l| l["level"] == "INFO" && l["target"] != "h5pay_worker::audit")
        .collect();
    assert!(other_info.is_empty(), "{other_info:?}");
}

/// Reads what is left of a child's stderr after it exited.
pub(crate) async fn stderr_of(child: &mut tokio::process::Child) -> String {
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    stderr
}

/// SIGTERM, and the exit code once it stopped (within 20 s).
pub(crate) async fn terminate(child: &mut tokio::process::Child) -> Option<i32> {
    let pid = child.id().unwrap_or_default().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit after SIGTERM"))
        .expect("the process exited")
        .code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_gateway_off_this_host_starts_with_a_warning_and_the_insecure_gauge_at_one() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let remote = "http://gateway.invalid/api/openpay/v3/h5pay";
    let loopback = env.gateway_url();
    // (gateway.url, more settings, the gauge, the key a warning names)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64, Option<&'a str>);
    let cases: [Case<'_>; 4] = [
        (remote, vec![], 1.0, Some("gateway.url")),
        (&loopback, vec![], 0.0, None),
        (
            &loopback,
            vec![(
                "H5PAY__GATEWAY__QUERY_URL",
                "http://gateway.invalid/api/openpay/v3/queryorder",
            )],
            1.0,
            Some("gateway.query_url"),
        ),
        (
            &loopback,
            vec![(
                "H5PAY__GATEWAY__CLOSE_URL",
                "http://localhost:1/api/openpay/v3/closeorder",
            )],
            0.0,
            None,
        ),
    ];
    for (i, (url, extra, gauge, warned)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, base_toml(&env.id, url)).expect("config written");
        let admin = free_port();
        let mut child = spawn_run(&path, admin, &extra, Stdio::piped());
        assert!(wait_ready(admin).await, "{url}: worker not ready");
        let metrics = crate::net::metrics(admin).await;
        assert_eq!(
            series(&metrics, "h5pay_insecure_gateway", &[]),
            Some(gauge),
            "{url} {extra:?}:\n{metrics}"
        );
        assert_eq!(terminate(&mut child).await, Some(0));
        let log = stderr_of(&mut child).await;
        match warned {
            Some(key) => assert!(
                log.contains(&format!(
                    "{key} is plain http to a host that is not loopback"
                )),
                "{key}: no warning in\n{log}"
            ),
            None => assert!(!log.contains("plain http"), "{url} {extra:?}: {log}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_response_sign_off_is_warned_about_at_start_up() {
    let env = TestEnv::new().await;
    let (_dir, path) = env.config_file("");
    for (verify, warned) in [("false", true), ("true", false)] {
        let admin = free_port();
        let mut child = spawn_run(
            &path,
            admin,
            &[("H5PAY__GATEWAY__VERIFY_RESPONSE_SIGN", verify)],
            Stdio::piped(),
        );
        assert!(wait_ready(admin).await, "worker not ready");
        assert_eq!(terminate(&mut child).await, Some(0));
        let log = stderr_of(&mut child).await;
        let warning = log
            .lines()
            .find(|l| l.contains("gateway.verify_response_sign = false") && l.contains("\"WARN\""));
        assert_eq!(warning.is_some(), warned, "verify {verify}:\n{log}");
        if let Some(w) = warning {
            assert!(w.contains("always verified"), "{w}");
        }
    }
}

/// A notify for a payment nobody placed, signed with `key`: verified, it
/// is an `unknown_payment` anomaly answered 200; otherwise 400.
fn unknown_payment_notify(trace: &str, key: &str) -> Vec<u8> {
    let mut m = serde_json::json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS",
        "inst_no": "60000001", "mch_no": "M1", "pay_trace_no": trace,
        "pay_time": "20261126101500", "total_amount": "100", "trade_no": "T-ROT"})
    .as_object()
    .cloned()
    .unwrap_or_default();
    let sign = h5pay_worker::gateway::sign::sign(&m, &secrecy::SecretString::from(key.to_owned()));
    m.insert("sign".into(), Value::String(sign));
    serde_json::to_vec(&m).expect("serialises")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notify_process_reloads_institution_keys_on_sighup() {
    const OLD: &str = "an-old-notify-key-0001";
    const NEW: &str = "a-new-notify-key-0002";
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let key_file = dir.path().join("60000001.key");
    std::fs::write(&key_file, format!("{OLD}\n")).expect("file written");
    let (port, admin) = (free_port(), free_port());
    let toml = base_toml(&env.id, &env.gateway_url()).replacen(
        &format!("key = \"{SANDBOX_KEY}\""),
        &format!("key_file = {:?}", key_file.display().to_string()),
        1,
    );
    let path = dir.path().join("n.toml");
    std::fs::write(
        &path,
        format!("{toml}\n[notify]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .expect("config written");
    let mut child = start_logged("notify", &path, admin).await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://127.0.0.1:{port}/h5pay/notify"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("answered");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(post(unknown_payment_notify("ROT-N1", OLD)).await.0, 200);
    assert_eq!(post(unknown_payment_notify("ROT-N2", NEW)).await.0, 400);

    std::fs::write(&key_file, format!("{NEW}\n")).expect("file written");
    let pid = child.id().unwrap_or_default().to_string();
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    let mut rotated = (0, String::new());
    for i in 0..50 {
        rotated = post(unknown_payment_notify(&format!("ROT-N3-{i}"), NEW)).await;
        if rotated.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rotated.0, 200, "the new key verifies: {}", rotated.1);
    let (status, reply) = post(unknown_payment_notify("ROT-N4", OLD)).await;
    assert_eq!(status, 400, "the old key is refused: {reply}");
    assert!(reply.contains("FAIL"), "{reply}");

    assert_eq!(terminate(&mut child).await, Some(0));
    let log = stderr_of(&mut child).await;
    assert!(log.contains("institution keys reloaded"), "{log}");
    assert!(
        !log.contains(OLD) && !log.contains(NEW),
        "a key reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_that_cannot_be_declared_is_reported_and_never_blocks_intents() {
    // Contract §14: a classic DLQ whose node is down cannot be declared. Here
    // the broker refuses it another way (no configure permission on that
    // one name): the worker still consumes and processes intents, says so
    // in a log line and h5pay_dlq_reachable 0, and /readyz stays 200.
    let env = TestEnv::start(crate::support::EnvOptions {
        own_vhost: true,
        ..Default::default()
    })
    .await;
    let vhost = env.vhost.as_ref().expect("a vhost");
    let a = &env.config.settings.amqp;
    let others = [
        &a.intent_exchange,
        &a.intent_queue,
        &a.dead_letter_exchange,
        &a.result_exchange,
        &a.unrouted_exchange(),
    ]
    .iter()
    .map(|n| regex_escape(n))
    .collect::<Vec<_>>()
    .join("|");
    let user = vhost.user(
        &format!("h5pay-nodlq-{}", env.id),
        &format!("^({others})$"),
        ".*",
        ".*",
    );
    let mut results = env.results().await;
    let (_dir, path) = env.config_file("");
    let admin = free_port();
    let mut child = spawn_run(
        &path,
        admin,
        &[("H5PAY__AMQP__URL", user.url.as_str())],
        Stdio::piped(),
    );
    assert!(wait_ready(admin).await, "not ready without its DLQ");
    env.publish_json(&crate::support::intent("NODLQ-1", "M1", 100))
        .await;
    let r = results.take(1, crate::support::WAIT).await.remove(0);
    assert_eq!(r.event["status"], "ready", "{}", r.event);
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("a body");
    assert_eq!(
        series(&metrics, "h5pay_dlq_reachable", &[]),
        Some(0.0),
        "{metrics}"
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let pid = child.id().unwrap_or_default().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await;
    let stderr = stderr_of(&mut child).await;
    assert!(
        stderr.contains("dead-letter queue cannot be reached"),
        "{stderr}"
    );
}

/// A name as an exact-match regular expression (RabbitMQ permissions).
fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_the_events_published_while_it_runs_narrowed_to_a_merchant() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let env = TestEnv::new().await;
    let _worker = env.worker();
    let (_dir, path) = env.config_file("");
    let mut child = tokio::process::Command::new(BIN)
        .args(["events", "--config", &path.display().to_string()])
        .args(["--mch-no", "EVM1", "--count", "2", "--wait-secs", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("events started");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The header comes once its queue is bound.
    let header = next_line(&mut lines).await;
    assert!(header.contains("pay_trace_no"), "{header}");
    // Another merchant's events are not shown; this one's are, as rows.
    env.publish_json(&crate::support::intent("EV-0", "EVM2", 100))
        .await;
    env.publish_json(&crate::support::intent("EV-1", "EVM1", 4001))
        .await;
    env.publish_json(&crate::support::intent("EV-2", "EVM1", 100))
        .await;
    // The two events come in either order (each row starts with its time).
    let rows = [next_line(&mut lines).await, next_line(&mut lines).await];
    for (trace, status) in [("EV-1", "failed"), ("EV-2", "ready")] {
        assert!(
            rows.iter().any(|r| r.contains(trace) && r.contains(status)),
            "{trace} {status}: {rows:?}"
        );
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("it stops after --count")
        .expect("an exit status");
    assert!(status.success());
}

async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(crate::support::WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("stdout readable")
        .expect("a line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_lists_the_unresolved_the_anomalies_and_the_late_paid_with_their_evidence() {
    let env = TestEnv::with(&[
        ("H5PAY__RECONCILE__CHECK_AFTER_SECS", "1,2"),
        ("H5PAY__RECONCILE__ORDER_TTL_SECS", "600"),
        ("H5PAY__RECONCILE__MAX_AGE_SECS", "4"),
    ])
    .await;
    let receiver = env.receiver(crate::support::Via::default()).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker_with(env.config_notifying(&receiver));
    // Never paid: unresolved at 4 s, then paid by hand: late. A
    // contradiction at its first query: an anomaly. Another never paid.
    for (trace, amount) in [("PA-LATE", 100), ("PA-ODD", 4027), ("PA-OPEN", 101)] {
        env.publish_json(&crate::support::intent(trace, "M1", amount))
            .await;
    }
    results.take(3, crate::support::WAIT).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    let want =
        |seen: &[(String, String)], t: &str, s: &str| seen.iter().any(|(a, b)| a == t && b == s);
    while !(want(&seen, "PA-LATE", "unresolved") && want(&seen, "PA-ODD", "anomaly")) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let p = payments.next(left).await.expect("payment events in time");
        seen.push((
            p.event["pay_trace_no"].as_str().unwrap_or("").to_owned(),
            p.event["state"].as_str().unwrap_or("").to_owned(),
        ));
    }
    env.pay("M1", "PA-LATE").await;
    while !want(&seen, "PA-LATE", "paid") {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let p = payments.next(left).await.expect("the late paid event");
        seen.push((
            p.event["pay_trace_no"].as_str().unwrap_or("").to_owned(),
            p.event["state"].as_str().unwrap_or("").to_owned(),
        ));
    }
    let (_dir, path) = env.config_file("");
    let p = path.display().to_string();
    let list = |state: &str, extra: &[&str]| {
        let mut args = vec!["payments", "--config", &p, "--state", state];
        args.extend_from_slice(extra);
        let (code, out, err) = run_with_stdin(&args, b"");
        assert_eq!(code, 0, "{err}");
        out
    };
    // PA-OPEN may be unresolved too by now: PA-LATE is not (it was paid).
    let unresolved = list("unresolved", &["--csv"]);
    assert!(
        unresolved.starts_with("noted_at,state,inst_no"),
        "{unresolved}"
    );
    assert!(!unresolved.contains("PA-LATE"), "paid since: {unresolved}");
    let late = list("late", &["--csv", "--since", "1h"]);
    let row = late
        .lines()
        .find(|l| l.contains("PA-LATE"))
        .unwrap_or_else(|| panic!("{late}"));
    assert!(row.contains(",paid,") && row.contains(",100,"), "{row}");
    assert!(row.contains("was unresolved"), "{row}");
    let anomalies = list("anomaly", &[]);
    let row = anomalies
        .lines()
        .find(|l| l.contains("PA-ODD"))
        .unwrap_or_else(|| panic!("{anomalies}"));
    assert!(row.contains("contradiction"), "{row}");
    // --since takes an RFC 3339 time too; a bad one is refused.
    let none = list("late", &["--csv", "--since", "2000-01-01T00:00:00Z"]);
    assert!(none.contains("PA-LATE"));
    let (code, _, err) = run_with_stdin(
        &[
            "payments", "--config", &p, "--state", "late", "--since", "soon",
        ],
        b"",
    );
    assert_ne!(code, 0);
    assert!(err.contains("--since"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_sound_deployment_and_names_each_fix_of_a_broken_one() {
    let env = TestEnv::new().await;
    // A Redis as OPERATIONS.md asks for it: AOF on, noeviction.
    let redis_port = free_port();
    let redis_dir = tempfile::tempdir().expect("a temp dir");
    let mut redis = std::process::Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--appendonly",
            "yes",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(redis_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("c.toml");
    let toml = base_toml(&env.id, &env.gateway_url()).replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        &format!("url = \"redis://127.0.0.1:{redis_port}/0\""),
    );
    std::fs::write(&path, toml).expect("file written");
    let p = path.display().to_string();
    let mut out = String::new();
    for _ in 0..50 {
        let (code, o, _) = run_with_stdin(&["check", "--config", &p], b"");
        out = o;
        if code == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(out.ends_with("ready to run\n"), "{out}");
    for l in [
        "✓ rabbitmq topology",
        "✓ redis persistence: AOF on",
        "✓ redis eviction",
        "✓ clock",
        "✓ gateway: reachable",
    ] {
        assert!(out.contains(l), "{l} missing:\n{out}");
    }
    let _ = redis.kill();
    let _ = redis.wait();

    // Broken: no broker on that port, Redis without AOF, no gateway there.
    let broken = base_toml(&env.id, "http://127.0.0.1:9/api/openpay/v3/h5pay").replace(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "url = \"amqp://guest:guest@127.0.0.1:9/%2f\"",
    );
    std::fs::write(&path, broken).expect("file written");
    let (code, out, _) = run_with_stdin(&["check", "--config", &p], b"");
    assert_eq!(code, 1, "{out}");
    for l in [
        "✗ rabbitmq: cannot connect",
        "✗ gateway: no answer",
        "— fix: ",
    ] {
        assert!(out.contains(l), "{l} missing:\n{out}");
    }
    assert!(out.ends_with("not ready: fix each ✗ above\n"), "{out}");
}
