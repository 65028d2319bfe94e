//! A payer in a real browser: headless Chromium (Debian's, through
//! chromedriver's WebDriver protocol) opens the `code_url` of a real
//! `ready` event, presses Pay on the sandbox's payment page, and the
//! payment event says `paid`. `make test` installs the browser
//! (scripts/ensure-browser.sh); without one this test says it skipped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestEnv, Via, WAIT, intent};

fn which(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        path.split(':')
            .map(|d| std::path::Path::new(d).join(n))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("chromedriver answers");
        let bytes = r.bytes().await.expect("a body");
        serde_json::from_slice(&bytes).expect("WebDriver JSON")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_opens_the_code_url_in_a_browser_presses_pay_and_the_payment_event_says_paid() {
    let (Some(driver_bin), Some(browser)) = (
        which(&["chromedriver"]),
        which(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        crate::support::skipped(
            "the browser test (a payer presses Pay): no chromedriver/chromium \
             (scripts/ensure-browser.sh installs Debian's chromium and chromium-driver)",
        );
        return;
    };
    let env = TestEnv::new().await;
    let receiver = env.receiver(Via::default()).await;
    let mut results = env.results().await;
    let mut payments = env.payments().await;
    let _worker = env.worker_with(env.config_notifying(&receiver));
    env.publish_json(&intent("BROWSER-1", "M1", 1234)).await;
    let ready = results.take(1, WAIT).await.remove(0);
    let code_url = ready.event["code_url"]
        .as_str()
        .expect("a code_url")
        .to_owned();

    let port = crate::net::free_port().expect("a free port");
    let child = Command::new(&driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver started");
    let driver = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = driver
            .http
            .get(format!("{}/status", driver.base))
            .send()
            .await
            && r.status().is_success()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "chromedriver did not start");
    let profile = tempfile::tempdir().expect("a profile dir");
    let session = driver
        .call(
            reqwest::Method::POST,
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": browser,
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync",
                             format!("--user-data-dir={}", profile.path().display())]
                }
            }}})),
        )
        .await;
    let sid = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_owned();
    let s = |p: &str| format!("/session/{sid}{p}");
    driver
        .call(
            reqwest::Method::POST,
            &s("/url"),
            Some(json!({"url": code_url})),
        )
        .await;
    let text_of = |css: &'static str| {
        let driver = &driver;
        async move {
            let el = driver
                .call(
                    reqwest::Method::POST,
                    &s("/element"),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            let id = el["value"]
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (
                id.clone(),
                driver
                    .call(
                        reqwest::Method::GET,
                        &s(&format!("/element/{id}/text")),
                        None,
                    )
                    .await["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let (_, amount) = text_of("#amount").await;
    assert_eq!(amount, "1234", "the page shows the order");
    let (_, status) = text_of("#status").await;
    assert_eq!(status, "unpaid");
    let (button, label) = text_of("#pay").await;
    assert!(label.starts_with("Pay"), "{label}");
    driver
        .call(
            reqwest::Method::POST,
            &s(&format!("/element/{button}/click")),
            Some(json!({})),
        )
        .await;
    let mut shown = String::new();
    for _ in 0..50 {
        shown = text_of("#status").await.1;
        if shown.starts_with("paid") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown.starts_with("paid"), "the page says {shown:?}");
    let p = payments.take(1, WAIT).await.remove(0);
    assert_eq!(p.event["state"], "paid", "{}", p.event);
    assert_eq!(p.event["pay_trace_no"], "BROWSER-1");
    assert_eq!(p.event["trade_no"], ready.event["trade_no"]);
    driver.call(reqwest::Method::DELETE, &s(""), None).await;
}
