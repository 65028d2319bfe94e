//! The dashboard and the alerts cannot drift from the code: every PromQL
//! expression in deploy/grafana/h5pay-worker.json and
//! deploy/prometheus/alerts.yaml parses (promql-parser, Grafana's
//! variables substituted first), and every h5pay_* metric it names is in a
//! real /metrics scrape of a running worker and notify receiver. Metrics of
//! RabbitMQ's own exporter (`rabbitmq_*`) are outside this product.

use std::collections::BTreeSet;
use std::process::Stdio;

use promql_parser::parser::{self, Expr};
use serde_json::Value;

use crate::support::TestEnv;

const BIN: &str = env!("CARGO_BIN_EXE_h5pay-worker");

/// Every vector selector of an expression.
fn selectors(e: &Expr, out: &mut Vec<parser::VectorSelector>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(vs) => out.push(vs.clone()),
        Expr::MatrixSelector(ms) => out.push(ms.vs.clone()),
        Expr::Call(c) => {
            for a in &c.args.args {
                selectors(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn metric_of(vs: &parser::VectorSelector) -> Option<String> {
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone())
    })
}

/// The label values a selector asks for (`label="v"`, or `label=~"a|b"`
/// of plain words), which the product must expose: its series are
/// registered at zero, every label value of them.
fn wanted_labels(vs: &parser::VectorSelector) -> Vec<(String, String)> {
    use promql_parser::label::MatchOp;
    let mut out = Vec::new();
    for m in &vs.matchers.matchers {
        if ["__name__", "job", "instance", "le"].contains(&m.name.as_str()) {
            continue;
        }
        let plain =
            |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match &m.op {
            MatchOp::Equal => out.push((m.name.clone(), m.value.clone())),
            MatchOp::Re(_) if m.value.split('|').all(plain) => {
                out.extend(m.value.split('|').map(|v| (m.name.clone(), v.to_owned())));
            }
            _ => {}
        }
    }
    out
}

/// Grafana's variables, as Grafana would substitute them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

fn dashboard_exprs() -> Vec<String> {
    let path = format!(
        "{}/deploy/grafana/h5pay-worker.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard"))
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().cloned().unwrap_or_default() {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push(e.to_owned());
            }
        }
    }
    for v in dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        // label_values(<selector>, label): its selector is PromQL too.
        if let Some((sel, _)) = v["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
            .and_then(|q| q.rsplit_once(','))
        {
            exprs.push(sel.to_owned());
        }
    }
    exprs
}

fn alert_exprs() -> Vec<String> {
    let path = format!(
        "{}/deploy/prometheus/alerts.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(&path).expect("alerts"))
            .expect("alerts.yaml parses");
    let doc = crate::schemas::yaml_to_json(&docs[0]);
    let mut exprs = Vec::new();
    for g in doc["groups"].as_array().cloned().unwrap_or_default() {
        for r in g["rules"].as_array().cloned().unwrap_or_default() {
            exprs.push(
                r["expr"]
                    .as_str()
                    .expect("every rule has an expr")
                    .to_owned(),
            );
        }
    }
    exprs
}

async fn scrape(args: &[&str], config: &std::path::Path, admin: u16) -> String {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("H5PAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("process started");
    let url = format!("http://127.0.0.1:{admin}/metrics");
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            body = r.text().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert!(!body.is_empty(), "no /metrics from {args:?}");
    body
}

fn exposed(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expression_of_the_dashboard_and_the_alerts_parses_and_names_real_metrics() {
    let env = TestEnv::new().await;
    let notify_port = crate::net::free_port().expect("a port");
    let (_dir, path) = env.config_file(&format!(
        "\n[notify]\nlisten = \"127.0.0.1:{notify_port}\"\n"
    ));
    let worker = scrape(&["run"], &path, crate::net::free_port().expect("a port")).await;
    let receiver = scrape(&["notify"], &path, crate::net::free_port().expect("a port")).await;
    let mut names = exposed(&worker);
    names.extend(exposed(&receiver));
    let scraped = format!("{worker}\n{receiver}");
    let mut labels_checked = 0;

    let mut checked = 0;
    for (source, exprs) in [("dashboard", dashboard_exprs()), ("alerts", alert_exprs())] {
        assert!(!exprs.is_empty(), "no expressions in the {source}");
        for raw in exprs {
            let expr = substitute(&raw);
            let parsed = parser::parse(&expr).unwrap_or_else(|e| panic!("{source}: {raw}: {e}"));
            let mut found = Vec::new();
            selectors(&parsed, &mut found);
            assert!(!found.is_empty(), "{source}: {raw} names no metric");
            for vs in &found {
                let m = metric_of(vs).unwrap_or_else(|| panic!("{source}: {raw}: no metric name"));
                if m.starts_with("rabbitmq_") {
                    continue;
                }
                assert!(
                    m.starts_with("h5pay_"),
                    "{source}: {raw}: {m} is not a metric of this product"
                );
                assert!(
                    names.contains(&m),
                    "{source}: {raw}: {m} is not exposed by the worker or the receiver"
                );
                checked += 1;
                for (label, value) in wanted_labels(vs) {
                    let pair = format!("{label}=\"{value}\"");
                    assert!(
                        scraped
                            .lines()
                            .any(|l| l.starts_with(&format!("{m}{{")) && l.contains(&pair)),
                        "{source}: {raw}: no {m} series with {pair}"
                    );
                    labels_checked += 1;
                }
            }
        }
    }
    assert!(checked > 40, "{checked} metric references checked");
    assert!(
        labels_checked >= 10,
        "{labels_checked} label values checked"
    );
}

/// GitHub's anchor of a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_is_labelled_like_a_mixin_links_a_real_runbook_section_and_has_a_unit_test() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ops = std::fs::read_to_string(format!("{root}/OPERATIONS.md")).expect("OPERATIONS.md");
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(slug)
        .collect();
    let tests = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts_test.yaml"))
        .expect("tests");
    let docs = yaml_rust2::YamlLoader::load_from_str(
        &std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yaml")).expect("alerts"),
    )
    .expect("alerts.yaml parses");
    let doc = crate::schemas::yaml_to_json(&docs[0]);
    let mut names = BTreeSet::new();
    for g in doc["groups"].as_array().cloned().unwrap_or_default() {
        for r in g["rules"].as_array().cloned().unwrap_or_default() {
            let name = r["alert"].as_str().expect("an alerting rule").to_owned();
            assert!(names.insert(name.clone()), "{name} twice");
            assert!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{name}: severity"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|t| !t.is_empty()),
                    "{name}: {a}"
                );
            }
            let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
            let anchor = url
                .split_once("/OPERATIONS.md#")
                .map(|(_, a)| a)
                .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not into OPERATIONS.md"));
            assert!(
                anchors.contains(anchor),
                "{name}: OPERATIONS.md has no section #{anchor}"
            );
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no promtool unit test"
            );
        }
    }
    assert!(names.len() >= 15, "{names:?}");
}
