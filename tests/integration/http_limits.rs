//! The bounds every HTTP server of the product keeps (contract §9), over
//! the real binary: request heads of at most 16 KiB (431 beyond), a body
//! that must come within 10 s (408, the connection closed and its slot
//! freed), and the notify receiver's memory at its connection cap, every
//! connection holding the largest head and body it accepts, under the pod
//! limit of deploy/ while `/readyz` on its admin port still answers.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use h5pay_worker::http_server::{BODY_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{SANDBOX_KEY, TestEnv, base_toml};

const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");
const NOTIFY_PATH: &str = "/h5pay/notify";

fn free_port() -> u16 {
    crate::net::free_port().expect("a free port")
}

/// `h5pay-worker notify` on its own ports, logging to a file.
struct ReceiverProcess {
    child: tokio::process::Child,
    port: u16,
    admin: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReceiverProcess {
    async fn start(env: &TestEnv) -> ReceiverProcess {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("n.toml");
        let (port, admin) = (free_port(), free_port());
        std::fs::write(
            &path,
            format!(
                "{}\n[notify]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}{NOTIFY_PATH}\"\n",
                base_toml(&env.id, &env.gateway_url())
            ),
        )
        .expect("config written");
        let log = dir.path().join("notify.log");
        let child = tokio::process::Command::new(BIN)
            .args(["notify", "--config", &path.display().to_string()])
            .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env("H5PAY__LOG__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("process started");
        let r = ReceiverProcess {
            child,
            port,
            admin,
            log,
            _dir: dir,
        };
        assert!(
            crate::cli::wait_ready(admin).await,
            "receiver not ready: {}",
            r.log()
        );
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the receiver runs")
    }
}

/// `h5pay-worker sandbox` on a port of its own.
struct SandboxProcess {
    _child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl SandboxProcess {
    async fn start() -> SandboxProcess {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("sandbox.toml");
        std::fs::write(
            &config,
            format!(
                "[[institutions]]\ninst_no = \"60000001\"\nkey = \"{SANDBOX_KEY}\"\n[log]\nlevel = \"warn\"\n"
            ),
        )
        .expect("config written");
        let port = free_port();
        let child = tokio::process::Command::new(BIN)
            .args([
                "sandbox",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("process started");
        let quick = quick_client();
        for _ in 0..100 {
            if let Ok(r) = quick
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
                && r.status().is_success()
            {
                return SandboxProcess {
                    _child: child,
                    port,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sandbox never answered /healthz");
    }
}

fn quick_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("a client")
}

/// A request head of exactly `size` bytes (request line, headers and the
/// empty line), padded with one `x-pad` header.
fn head(method: &str, path: &str, content_length: Option<usize>, size: usize) -> Vec<u8> {
    let mut fixed = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    if let Some(n) = content_length {
        fixed.push_str(&format!("content-length: {n}\r\n"));
    }
    let frame = "x-pad: \r\n\r\n".len();
    assert!(
        size >= fixed.len() + frame,
        "a head of {size} bytes is too short"
    );
    let pad = "a".repeat(size - fixed.len() - frame);
    let h = format!("{fixed}x-pad: {pad}\r\n\r\n").into_bytes();
    assert_eq!(h.len(), size);
    h
}

/// Everything the server sends until it closes the connection (or
/// `within` passes: then what came so far, and false).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// The status line's code of a raw HTTP answer.
fn status_of(answer: &str) -> Option<u16> {
    answer.split(' ').nth(1)?.parse().ok()
}

/// Sends `request` on a new connection and returns the answer's status.
async fn status_for(port: u16, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connected");
    // The server may answer and close before it has read all of a head
    // that is too large: a write that fails then is expected.
    let _ = s.write_all(request).await;
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    status_of(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_16_kib_is_answered_431_by_the_receiver_its_admin_port_and_the_sandbox()
{
    let env = TestEnv::new().await;
    let receiver = ReceiverProcess::start(&env).await;
    let sandbox = SandboxProcess::start().await;
    for (server, port, method, path) in [
        ("notify", receiver.port, "POST", NOTIFY_PATH),
        ("admin", receiver.admin, "GET", "/healthz"),
        ("sandbox", sandbox.port, "GET", "/healthz"),
    ] {
        let length = (method == "POST").then_some(0);
        // The largest head accepted is answered as usual...
        let at_limit = status_for(port, &head(method, path, length, MAX_HEAD_BYTES)).await;
        assert!(
            at_limit.is_some_and(|s| s != 431 && s < 500),
            "{server}: a head of {MAX_HEAD_BYTES} bytes got {at_limit:?}"
        );
        // ...one byte more, or 17 KiB, is not.
        for size in [MAX_HEAD_BYTES + 1, 17 * 1024] {
            let over = status_for(port, &head(method, path, length, size)).await;
            assert_eq!(over, Some(431), "{server}: a head of {size} bytes");
        }
    }
    assert_eq!(MAX_HEAD_BYTES, 16 * 1024, "contract §9");
}

/// Sends a head announcing 100 bytes of body and only 10 of them.
async fn stalled_body(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connected");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(b"{\"a\":\"0123");
    s.write_all(&request).await.expect("head and 10 bytes sent");
    s
}

/// Whether the server already closed `s` or is still holding it open
/// with nothing to say (a non-blocking look).
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_comes_is_answered_408_within_ten_seconds_and_its_slot_is_freed() {
    assert_eq!(BODY_READ_TIMEOUT, Duration::from_secs(10), "contract §9");
    let env = TestEnv::new().await;
    let receiver = ReceiverProcess::start(&env).await;
    let sandbox = SandboxProcess::start().await;

    // Every slot of the receiver held by a body that stalls.
    let sent = Instant::now();
    let mut held = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        held.push(stalled_body(receiver.port, NOTIFY_PATH).await);
    }
    let on_sandbox = stalled_body(sandbox.port, h5pay_worker::sandbox::QUERY_PATH).await;
    // The slots are taken: one more connection is closed at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(("127.0.0.1", receiver.port))
        .await
        .expect("connected");
    let (answer, closed) = read_to_close(&mut extra, Duration::from_secs(2)).await;
    assert!(closed && answer.is_empty(), "over the cap: {answer:?}");

    // Each is answered 408 and closed, about 10 s after its head.
    let answers = join_all(held.into_iter().chain(std::iter::once(on_sandbox)).map(
        |mut s| async move {
            let (answer, closed) = read_to_close(&mut s, Duration::from_secs(15)).await;
            (answer, closed, sent.elapsed())
        },
    ))
    .await;
    for (i, (answer, closed, at)) in answers.iter().enumerate() {
        let server = if i < MAX_CONNECTIONS {
            "notify"
        } else {
            "sandbox"
        };
        assert_eq!(status_of(answer), Some(408), "{server}: connection {i}");
        if server == "notify" {
            // The receiver's own FAIL reply, in the gateway's terms.
            assert!(answer.contains(r#""return_code":"FAIL""#), "{answer}");
        }
        assert!(*closed, "{server}: connection {i} left open after its 408");
        // Never before the 10 s; after them, as soon as the server gets to
        // 1,025 timers on two loaded cores (a test suite runs beside it).
        assert!(
            *at >= BODY_READ_TIMEOUT && *at <= Duration::from_secs(16),
            "{server}: connection {i} answered after {at:?}"
        );
    }

    // The slots are free again: a notify is read and answered. (A slot is
    // given back a moment after its connection closed.)
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("a client");
    let mut status = None;
    for _ in 0..20 {
        match client
            .post(format!("http://127.0.0.1:{}{NOTIFY_PATH}", receiver.port))
            .body("not json")
            .send()
            .await
        {
            Ok(r) => {
                status = Some(r.status().as_u16());
                break;
            }
            Err(e) => eprintln!("not answered yet: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(400), "{}", receiver.log());
    drop(sandbox);
    drop(env);
}

/// The receiver's memory limit in deploy/kustomize/base, in bytes.
fn receiver_memory_limit() -> u64 {
    use yaml_rust2::YamlLoader;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kustomize/base/notify-deployment.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let limit = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .and_then(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"].as_str()
        })
        .unwrap_or_else(|| panic!("{path}: no memory limit"))
        .to_owned();
    let (number, unit) = limit.split_at(
        limit
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(limit.len()),
    );
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{path}: memory {limit}"));
    n * match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "" => 1,
        other => panic!("{path}: memory unit {other}"),
    }
}

/// A field of /proc/<pid>/status in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
        * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_connection_cap_with_the_largest_heads_and_bodies_the_receiver_stays_under_its_pod_limit()
 {
    let limit = receiver_memory_limit();
    let body_limit = h5pay_worker::config::NotifySettings::default().body_limit_bytes;
    let env = TestEnv::new().await;
    let receiver = ReceiverProcess::start(&env).await;
    let pid = receiver.pid();
    let idle = proc_status_bytes(pid, "VmRSS");
    // The largest head the receiver accepts (a byte more gets 431, see
    // above) announcing the largest body, all of which but its last byte
    // is sent: the handler buffers it and waits.
    let over = status_for(
        receiver.port,
        &head("POST", NOTIFY_PATH, Some(0), MAX_HEAD_BYTES + 1),
    )
    .await;
    assert_eq!(
        over,
        Some(431),
        "the largest head accepted is {MAX_HEAD_BYTES} bytes"
    );
    let mut request = head("POST", NOTIFY_PATH, Some(body_limit), MAX_HEAD_BYTES);
    request.extend(std::iter::repeat_n(b' ', body_limit - 1));

    // Opened 64 at a time: every body must still be held when measured,
    // within BODY_READ_TIMEOUT of the first head.
    let started = Instant::now();
    let mut held = Vec::with_capacity(MAX_CONNECTIONS);
    for batch in 0..MAX_CONNECTIONS / 64 {
        held.extend(
            join_all((0..64).map(|i| {
                let request = &request;
                async move {
                    let i = batch * 64 + i;
                    let mut s = TcpStream::connect(("127.0.0.1", receiver.port))
                        .await
                        .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                    s.write_all(request)
                        .await
                        .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                    s
                }
            }))
            .await,
        );
    }
    let opened = started.elapsed();
    // Let the receiver read what was sent, watching its resident set.
    let mut rss = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = rss.max(proc_status_bytes(pid, "VmRSS"));
    }
    let asked = Instant::now();
    let ready = quick_client()
        .get(format!("http://127.0.0.1:{}/readyz", receiver.admin))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let answered_in = asked.elapsed();
    let peak = proc_status_bytes(pid, "VmHWM");
    let open = held.iter().filter(|s| still_open(s)).count();
    let measured_at = started.elapsed();
    eprintln!(
        "receiver at {MAX_CONNECTIONS} connections, each a {MAX_HEAD_BYTES}-byte head and {} body bytes: \
         VmRSS {:.1} MiB (idle {:.1} MiB), VmHWM {:.1} MiB, pod limit {:.0} MiB; \
         opened in {opened:?}, /readyz in {answered_in:?}",
        body_limit - 1,
        mib(rss),
        mib(idle),
        mib(peak),
        mib(limit)
    );
    assert!(
        measured_at < BODY_READ_TIMEOUT,
        "measured after {measured_at:?}: the bodies may have been cut off already"
    );
    assert_eq!(open, MAX_CONNECTIONS, "the receiver let connections go");
    assert_eq!(
        ready.ok(),
        Some(200),
        "/readyz at the cap: {}",
        receiver.log()
    );
    assert!(answered_in < Duration::from_secs(1), "{answered_in:?}");
    assert!(
        rss < limit && peak < limit,
        "VmRSS {:.1} MiB, VmHWM {:.1} MiB: over the pod limit of {:.0} MiB",
        mib(rss),
        mib(peak),
        mib(limit)
    );
    drop(held);
}
