//! deploy/ cannot be run here (no Docker engine, no cluster), so what can
//! be checked is checked: every file parses, every H5PAY__ variable names a
//! real setting, the RabbitMQ definitions are exactly what the worker
//! declares, the manifests keep the promises OPERATIONS.md makes, every
//! kustomize overlay renders (`kubectl kustomize`) with what its components
//! promise, and the components' copies of the alerts and the dashboard are
//! their sources'. scripts/check-k8s.sh validates the rendered objects
//! against the Kubernetes and CRD schemas.

use std::path::{Path, PathBuf};

use h5pay_worker::amqp::topology::{Arg, plan};
use h5pay_worker::config::{AmqpSettings, env_key_exists};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const BASE: &str = "deploy/kustomize/base";

fn yaml_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            yaml_below(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("deploy/docker-compose.yml"),
        root().join("deploy/otel/collector.yaml"),
    ];
    let mut k8s = Vec::new();
    yaml_below(&root().join("deploy/kustomize"), &mut k8s);
    k8s.sort();
    assert!(k8s.len() >= 15, "{k8s:?}");
    files.extend(k8s);
    files
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_yaml_and_json_file_parses() {
    for f in yaml_files() {
        let docs = load(&f);
        assert!(
            !docs.is_empty() && docs.iter().all(|d| !d.is_null()),
            "{}: empty",
            f.display()
        );
    }
    let defs: Value = serde_json::from_str(&read("deploy/rabbitmq/definitions.json"))
        .expect("definitions.json is JSON");
    assert!(defs["queues"].is_array());
}

#[test]
fn every_h5pay_variable_in_deploy_names_a_real_setting() {
    let mut names = std::collections::BTreeSet::new();
    let mut texts: Vec<(PathBuf, String)> = yaml_files()
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap_or_default();
            (p, t)
        })
        .collect();
    texts.push((root().join("deploy/Dockerfile"), read("deploy/Dockerfile")));
    texts.push((
        root().join(BASE).join("config.toml"),
        read(&format!("{BASE}/config.toml")),
    ));
    for (path, text) in &texts {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("H5PAY__") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            // `H5PAY__<SECTION>__<KEY>` in comments is the pattern, not a name.
            if !name.ends_with("__") {
                names.insert((name.to_owned(), path.display().to_string()));
            }
            rest = &tail[end..];
        }
    }
    assert!(!names.is_empty(), "deploy/ uses environment overrides");
    for (name, file) in &names {
        assert!(env_key_exists(name), "{file}: {name} is not a setting");
    }
    assert!(!env_key_exists("H5PAY__AMQP__NOPE"));
}

fn json_arg(v: &Value) -> Option<Arg> {
    match v {
        Value::String(s) => Some(Arg::Str(s.clone())),
        Value::Number(n) => n.as_i64().map(Arg::Int),
        _ => None,
    }
}

fn args_of(v: &Value) -> Vec<(String, Arg)> {
    let mut out: Vec<(String, Arg)> = v
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| json_arg(v).map(|a| (k.clone(), a)))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn sorted(args: &[(&'static str, Arg)]) -> Vec<(String, Arg)> {
    let mut out: Vec<(String, Arg)> = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_rabbitmq_definitions_are_exactly_what_the_worker_declares() {
    let defs: Value = serde_json::from_str(&read("deploy/rabbitmq/definitions.json"))
        .expect("definitions.json is JSON");
    let p = plan(&AmqpSettings::default());
    let exchanges = defs["exchanges"].as_array().cloned().unwrap_or_default();
    assert_eq!(exchanges.len(), p.exchanges.len());
    for x in &p.exchanges {
        let d = exchanges
            .iter()
            .find(|d| d["name"] == x.name.as_str())
            .unwrap_or_else(|| panic!("exchange {} missing", x.name));
        assert_eq!(d["type"], x.kind, "{}", x.name);
        assert_eq!(d["durable"], true, "{}", x.name);
        assert_eq!(args_of(&d["arguments"]), sorted(&x.arguments), "{}", x.name);
    }
    let queues = defs["queues"].as_array().cloned().unwrap_or_default();
    assert_eq!(queues.len(), p.queues.len());
    for q in &p.queues {
        let d = queues
            .iter()
            .find(|d| d["name"] == q.name.as_str())
            .unwrap_or_else(|| panic!("queue {} missing", q.name));
        assert_eq!(
            (d["durable"].as_bool(), d["auto_delete"].as_bool()),
            (Some(true), Some(false)),
            "{}",
            q.name
        );
        assert_eq!(args_of(&d["arguments"]), sorted(&q.arguments), "{}", q.name);
    }
    let bindings = defs["bindings"].as_array().cloned().unwrap_or_default();
    assert_eq!(bindings.len(), p.bindings.len());
    for b in &p.bindings {
        assert!(
            bindings.iter().any(|d| d["source"] == b.exchange.as_str()
                && d["destination"] == b.queue.as_str()
                && d["destination_type"] == "queue"
                && d["routing_key"] == b.routing_key),
            "binding {b:?} missing"
        );
    }
}

fn find_deployment() -> Yaml {
    load(&root().join(BASE).join("worker-deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap_or_else(|| panic!("no Deployment"))
}

#[test]
fn the_kubernetes_deployment_probes_health_runs_unprivileged_and_outlasts_the_grace_period() {
    let d = find_deployment();
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());
    let run_as_non_root = pod["securityContext"]["runAsNonRoot"]
        .as_bool()
        .or(c["securityContext"]["runAsNonRoot"].as_bool());
    assert_eq!(run_as_non_root, Some(true));
    // The pod must be given longer than the worker's own grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    assert!(
        grace > 30,
        "terminationGracePeriodSeconds {grace} must exceed worker.shutdown_grace_secs (30)"
    );
    let volumes = format!("{:?}", pod["volumes"]);
    assert!(
        volumes.contains("secret"),
        "the key file comes from a Secret: {volumes}"
    );
    // `h5pay-worker check` runs first, with the worker's config and secrets.
    let check = &pod["initContainers"][0];
    assert_eq!(
        check["args"][0].as_str(),
        Some("check"),
        "no check init container"
    );
    assert_eq!(
        format!("{:?}", check["env"]),
        format!("{:?}", c["env"]),
        "the check sees the worker's settings"
    );
    assert_eq!(
        format!("{:?}", check["volumeMounts"]),
        format!("{:?}", c["volumeMounts"])
    );
    let kinds: Vec<String> = [
        "base/worker-pdb.yaml",
        "base/notify-pdb.yaml",
        "components/keda/scaledobject.yaml",
    ]
    .iter()
    .flat_map(|f| load(&root().join("deploy/kustomize").join(f)))
    .filter_map(|d| d["kind"].as_str().map(str::to_owned))
    .collect();
    for k in ["PodDisruptionBudget", "ScaledObject"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
}

#[test]
fn the_configmap_config_is_valid_and_holds_no_inline_key() {
    let toml_text = read(&format!("{BASE}/config.toml"));
    let settings =
        h5pay_worker::config::parse(&toml_text, Vec::new()).expect("the ConfigMap config parses");
    assert!(
        settings.institutions.iter().all(|i| i.key.is_none()),
        "no inline keys in production"
    );
    let text = read("config/production.example.toml");
    let prod =
        h5pay_worker::config::parse(&text, Vec::new()).expect("the production example parses");
    assert!(prod.institutions.iter().all(|i| i.key.is_none()));
}

#[test]
fn the_image_runs_as_a_non_root_user_with_ca_certificates() {
    let df = read("deploy/Dockerfile");
    assert!(df.contains("ca-certificates"));
    let user = df
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("USER "))
        .unwrap_or_default();
    assert!(
        !user.contains("root") && !user.trim().ends_with(" 0"),
        "USER {user}"
    );
    assert!(df.matches("FROM ").count() >= 2, "multi-stage");
}

#[test]
fn the_broker_config_caps_message_size_above_the_intent_limit() {
    let conf = read("deploy/rabbitmq/rabbitmq.conf");
    let cap: usize = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_message_size"))
        .and_then(|v| v.trim().trim_start_matches('=').trim().parse().ok())
        .expect("max_message_size is set");
    assert!(
        cap > h5pay_worker::intent::MAX_BODY_BYTES && cap <= 128 * 1024,
        "max_message_size = {cap}"
    );
}

#[test]
fn the_notify_receiver_runs_in_its_own_pods_with_probes_and_only_its_path_public() {
    let d = load(&root().join(BASE).join("notify-deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_vec()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(args.first(), Some(&"notify"), "{args:?}");
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("admin")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    let services = load(&root().join(BASE).join("notify-service.yaml"));
    let public = services
        .iter()
        .find(|s| s["metadata"]["name"].as_str() == Some("h5pay-notify"))
        .expect("the public Service");
    let ports: Vec<&str> = public["spec"]["ports"]
        .as_vec()
        .map(|p| p.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        ports,
        vec!["notify"],
        "the public Service carries the notify port only"
    );
    let compose = read("deploy/docker-compose.yml");
    assert!(
        compose.contains("\"notify\", \"--config\""),
        "a compose service runs the receiver"
    );
    assert!(compose.contains("H5PAY__NOTIFY__PUBLIC_URL"));
}

/// `kubectl kustomize <overlay>`, as documents; None (with a note) where
/// kubectl is not installed: it is not in Debian's archive, so no script
/// of ours can install it.
fn render(overlay: &str) -> Option<Vec<Yaml>> {
    let dir = root().join("deploy/kustomize/overlays").join(overlay);
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::support::skipped(&format!(
                "deploy_files: the {overlay} overlay not rendered: kubectl is not installed"
            ));
            return None;
        }
        Err(e) => panic!("kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    Some(YamlLoader::load_from_str(&text).expect("rendered YAML parses"))
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn named<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn yaml_json(y: &Yaml) -> Value {
    crate::schemas::yaml_to_json(y)
}

#[test]
fn the_minimal_overlay_renders_the_base_with_one_hashed_config_for_both_deployments() {
    let Some(docs) = render("minimal") else {
        return;
    };
    for d in &docs {
        if d["kind"].as_str() != Some("Namespace") {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some("h5pay"),
                "{:?}",
                d["metadata"]["name"]
            );
        }
    }
    let cms = of_kind(&docs, "ConfigMap");
    assert_eq!(cms.len(), 1);
    let cm_name = cms[0]["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        cm_name.starts_with("h5pay-worker-config-") && cm_name.len() > "h5pay-worker-config-".len(),
        "the config's name carries its hash: {cm_name}"
    );
    assert_eq!(
        cms[0]["data"]["config.toml"].as_str(),
        Some(read(&format!("{BASE}/config.toml")).as_str())
    );
    for name in ["h5pay-worker", "h5pay-notify"] {
        let d = named(&docs, "Deployment", name);
        let pod = &d["spec"]["template"]["spec"];
        let volumes = format!("{:?}", pod["volumes"]);
        assert!(
            volumes.contains(cm_name),
            "{name} mounts {cm_name}: {volumes}"
        );
        assert!(volumes.contains("h5pay-worker"), "{name}: the Secret");
        assert_eq!(
            pod["containers"][0]["image"].as_str(),
            Some("registry.example.com/h5pay/h5pay-worker:0.1.0")
        );
        assert_eq!(d["spec"]["replicas"].as_i64(), Some(2), "{name}");
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{name}: scraped by annotation without the operator"
        );
        named(&docs, "PodDisruptionBudget", name);
    }
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "the Secret is referenced, never shipped"
    );
    for kind in ["ScaledObject", "ServiceMonitor", "PrometheusRule"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} needs its component"
        );
    }
}

#[test]
fn the_production_overlay_adds_keda_the_prometheus_operator_and_the_dashboard() {
    let Some(docs) = render("production") else {
        return;
    };
    // KEDA owns the worker's replica count; the receiver keeps its own.
    let worker = named(&docs, "Deployment", "h5pay-worker");
    assert!(
        worker["spec"]["replicas"].is_badvalue(),
        "no replicas under KEDA"
    );
    assert_eq!(
        named(&docs, "Deployment", "h5pay-notify")["spec"]["replicas"].as_i64(),
        Some(2)
    );
    let so = named(&docs, "ScaledObject", "h5pay-worker");
    assert_eq!(
        so["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("h5pay-worker")
    );
    assert_eq!(
        so["spec"]["triggers"][0]["metadata"]["queueName"].as_str(),
        Some(AmqpSettings::default().intent_queue.as_str())
    );
    // It also scales on the reconciler's backlog (contract §14).
    let on_overdue = so["spec"]["triggers"]
        .as_vec()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .any(|t| {
            t["type"].as_str() == Some("prometheus")
                && t["metadata"]["query"]
                    .as_str()
                    .is_some_and(|q| q.contains("h5pay_reconcile_overdue"))
        });
    assert!(on_overdue, "no trigger on h5pay_reconcile_overdue");
    named(&docs, "TriggerAuthentication", "h5pay-worker-rabbitmq");
    // Scraped by ServiceMonitors on the admin port, never twice.
    for (monitor, service) in [
        ("h5pay-worker", "h5pay-worker"),
        ("h5pay-notify", "h5pay-notify-admin"),
    ] {
        let sm = named(&docs, "ServiceMonitor", monitor);
        assert_eq!(sm["spec"]["endpoints"][0]["port"].as_str(), Some("admin"));
        let svc = named(&docs, "Service", service);
        let selector = yaml_json(&sm["spec"]["selector"]["matchLabels"]);
        let labels = yaml_json(&svc["metadata"]["labels"]);
        for (k, v) in selector.as_object().cloned().unwrap_or_default() {
            assert_eq!(labels[&k], v, "{monitor} selects {service}");
        }
    }
    for d in of_kind(&docs, "Deployment") {
        assert!(
            d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].is_badvalue(),
            "{:?}: scraped by annotation too",
            d["metadata"]["name"]
        );
    }
    // The rules are exactly deploy/prometheus/alerts.yaml's.
    let rule = named(&docs, "PrometheusRule", "h5pay-worker");
    let alerts = &load(&root().join("deploy/prometheus/alerts.yaml"))[0];
    assert_eq!(
        yaml_json(&rule["spec"]["groups"]),
        yaml_json(&alerts["groups"])
    );
    // The dashboard, labelled for Grafana's sidecar.
    let dash = named(&docs, "ConfigMap", "h5pay-worker-dashboard");
    assert_eq!(
        dash["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let json = dash["data"]["h5pay-worker.json"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(json, read("deploy/grafana/h5pay-worker.json"));
}

#[test]
fn the_components_copies_of_the_alerts_and_the_dashboard_are_their_sources() {
    // scripts/sync-k8s.sh writes them; this fails until it has run.
    let rule =
        &load(&root().join("deploy/kustomize/components/prometheus-operator/prometheusrule.yaml"))
            [0];
    let alerts = &load(&root().join("deploy/prometheus/alerts.yaml"))[0];
    assert_eq!(
        yaml_json(&rule["spec"]["groups"]),
        yaml_json(&alerts["groups"]),
        "run scripts/sync-k8s.sh"
    );
    assert_eq!(
        read("deploy/kustomize/components/grafana-dashboard/h5pay-worker.json"),
        read("deploy/grafana/h5pay-worker.json"),
        "run scripts/sync-k8s.sh"
    );
}

#[test]
fn the_compose_stack_can_add_a_collector_and_otherwise_exports_no_spans() {
    let compose = &load(&root().join("deploy/docker-compose.yml"))[0];
    let services = &compose["services"];
    let collector = &services["otel-collector"];
    assert_eq!(
        collector["profiles"][0].as_str(),
        Some("tracing"),
        "the collector runs only with --profile tracing"
    );
    for s in ["worker", "notify"] {
        let endpoint = services[s]["environment"]["H5PAY__OTEL__ENDPOINT"]
            .as_str()
            .unwrap_or_else(|| panic!("{s}: no H5PAY__OTEL__ENDPOINT"));
        // Compose substitutes an empty value when the variable is unset:
        // no endpoint, no export.
        assert_eq!(endpoint, "${H5PAY_OTEL_ENDPOINT:-}", "{s}");
    }
    let config = &load(&root().join("deploy/otel/collector.yaml"))[0];
    assert_eq!(
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(),
        Some("0.0.0.0:4318")
    );
}

/// The env var `name` of a Deployment's first container: its Secret and key.
fn secret_ref(d: &Yaml, name: &str) -> Option<(String, String)> {
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].as_vec()?;
    let var = env.iter().find(|e| e["name"].as_str() == Some(name))?;
    let r = &var["valueFrom"]["secretKeyRef"];
    Some((
        r["name"].as_str()?.to_owned(),
        r["key"].as_str()?.to_owned(),
    ))
}

fn deployment(file: &str) -> Yaml {
    load(&root().join(BASE).join(file))
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap_or_else(|| panic!("{file}: no Deployment"))
}

/// Standard base64 (RabbitMQ's password hashes).
fn base64_decode(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ABC
            .iter()
            .position(|x| *x == c)
            .unwrap_or_else(|| panic!("{s}: not base64"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// The receiver's line of deploy/redis/users.acl, split in rules.
fn acl_rules_of(user: &str) -> Vec<String> {
    read("deploy/redis/users.acl")
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["user", user]))
        .unwrap_or_else(|| panic!("no `user {user}` in deploy/redis/users.acl"))
        .split_whitespace()
        .skip(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_receiver_runs_on_credentials_of_its_own_everywhere_it_is_shipped() {
    // Kubernetes: each Deployment's URLs from its own Secret; the receiver
    // sees only the key files of the worker's.
    for (file, secret) in [
        ("worker-deployment.yaml", "h5pay-worker"),
        ("notify-deployment.yaml", "h5pay-notify"),
    ] {
        let d = deployment(file);
        for (var, key) in [
            ("H5PAY__AMQP__URL", "amqp-url"),
            ("H5PAY__REDIS__URL", "redis-url"),
        ] {
            assert_eq!(
                secret_ref(&d, var),
                Some((secret.to_owned(), key.to_owned())),
                "{file}: {var}"
            );
        }
    }
    let notify = deployment("notify-deployment.yaml");
    for v in notify["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .cloned()
        .unwrap_or_default()
    {
        if v["secret"].is_badvalue() {
            continue;
        }
        let items = v["secret"]["items"].as_vec().cloned().unwrap_or_default();
        assert!(
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| i["key"].as_str().is_some_and(|k| k.ends_with(".key"))),
            "the receiver mounts key files only: {v:?}"
        );
    }
    let secrets = load(&root().join("deploy/kustomize/secret.example.yaml"));
    let notify_secret = secrets
        .iter()
        .find(|s| s["metadata"]["name"].as_str() == Some("h5pay-notify"))
        .expect("secret.example.yaml shows the receiver's Secret");
    for key in ["amqp-url", "redis-url"] {
        let u = notify_secret["stringData"][key]
            .as_str()
            .unwrap_or_default();
        let u = url::Url::parse(u).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(u.username(), "h5pay-notify", "{key}");
    }

    // Compose: the receiver's URLs name the users the broker and Redis are
    // given, with passwords that match their hashes.
    let compose = &load(&root().join("deploy/docker-compose.yml"))[0];
    let env = &compose["services"]["notify"]["environment"];
    let amqp =
        url::Url::parse(env["H5PAY__AMQP__URL"].as_str().unwrap_or_default()).expect("an AMQP URL");
    let redis = url::Url::parse(env["H5PAY__REDIS__URL"].as_str().unwrap_or_default())
        .expect("a Redis URL");
    assert_eq!(
        (amqp.username(), redis.username()),
        ("h5pay-notify", "h5pay-notify")
    );
    let users: Value = serde_json::from_str(&read("deploy/rabbitmq/local-users.json"))
        .expect("local-users.json is JSON");
    let user = users["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "h5pay-notify"))
        .cloned()
        .expect("the broker user");
    assert_eq!(user["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let hash = base64_decode(user["password_hash"].as_str().unwrap_or_default());
    assert_eq!(hash.len(), 36, "salt and SHA-256");
    let password = amqp.password().unwrap_or_default().as_bytes();
    assert_eq!(
        sha256(&[&hash[..4], password]),
        hash[4..],
        "the AMQP password"
    );
    let rules = acl_rules_of("h5pay-notify");
    assert!(rules.iter().any(|r| r == "on"), "{rules:?}");
    let password = redis.password().unwrap_or_default().as_bytes();
    assert!(
        rules
            .iter()
            .any(|r| *r == format!("#{}", hex::encode(sha256(&[password])))),
        "the Redis password: {rules:?}"
    );
    let redis_service = &compose["services"]["redis"];
    let command: Vec<&str> = redis_service["command"]
        .as_vec()
        .map(|c| c.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    let aclfile = command
        .iter()
        .position(|a| *a == "--aclfile")
        .and_then(|i| command.get(i + 1))
        .expect("Redis loads an ACL file");
    let volumes = format!("{:?}", redis_service["volumes"]);
    assert!(
        volumes.contains(&format!("./redis/users.acl:{aclfile}:ro")),
        "{volumes}"
    );

    // OPERATIONS.md tells an operator to grant exactly these.
    let ops = read("OPERATIONS.md");
    let perms = users["permissions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["user"] == "h5pay-notify"))
        .cloned()
        .expect("the broker user's permissions");
    let line = format!(
        "rabbitmqctl set_permissions -p <vhost> h5pay-notify '{}' '{}' '{}'",
        perms["configure"].as_str().unwrap_or_default(),
        perms["write"].as_str().unwrap_or_default(),
        perms["read"].as_str().unwrap_or_default()
    );
    assert!(ops.contains(&line), "OPERATIONS.md lacks `{line}`");
    let acl = rules
        .iter()
        .filter(|r| !r.starts_with('#') && !r.starts_with('>') && *r != "on")
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let setuser = format!("ACL SETUSER h5pay-notify on >PASSWORD {acl}");
    assert!(ops.contains(&setuser), "OPERATIONS.md lacks `{setuser}`");
}

/// Port numbers and names a NetworkPolicy rule admits.
fn rule_ports(rule: &Yaml) -> Vec<String> {
    rule["ports"]
        .as_vec()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    p["port"]
                        .as_i64()
                        .map(|n| n.to_string())
                        .or_else(|| p["port"].as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The namespaces a rule's peers are selected from (empty: no `from`/`to`).
fn rule_namespaces(rule: &Yaml, peers: &str) -> Vec<String> {
    rule[peers]
        .as_vec()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn each_component_has_a_network_policy_admitting_only_what_it_serves() {
    let Some(docs) = render("minimal") else {
        return;
    };
    let config = h5pay_worker::config::parse(&read(&format!("{BASE}/config.toml")), Vec::new())
        .expect("the ConfigMap config parses");
    let port_of = |u: &str| {
        url::Url::parse(u)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .map(|p| p.to_string())
            .unwrap_or_else(|| panic!("{u}: no port"))
    };
    let amqp = port_of(config.amqp.url.expose());
    let redis = port_of(config.redis.url.expose());
    let gateway = port_of(&config.gateway.url);
    for (name, public) in [("h5pay-notify", true), ("h5pay-worker", false)] {
        let np = named(&docs, "NetworkPolicy", name);
        let spec = &np["spec"];
        assert_eq!(
            spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
            Some(name)
        );
        let types: Vec<&str> = spec["policyTypes"]
            .as_vec()
            .map(|t| t.iter().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        assert_eq!(types, ["Ingress", "Egress"], "{name}");
        let ingress = spec["ingress"].as_vec().cloned().unwrap_or_default();
        let mut expected = vec![(vec!["admin".to_owned()], vec!["monitoring".to_owned()])];
        if public {
            expected.insert(0, (vec!["notify".to_owned()], Vec::new()));
        }
        let got: Vec<(Vec<String>, Vec<String>)> = ingress
            .iter()
            .map(|r| (rule_ports(r), rule_namespaces(r, "from")))
            .collect();
        assert_eq!(got, expected, "{name}: ingress");
        // Named ports the pods really have.
        let d = named(&docs, "Deployment", name);
        let container_ports = format!(
            "{:?}",
            d["spec"]["template"]["spec"]["containers"][0]["ports"]
        );
        for (ports, _) in &got {
            for p in ports {
                assert!(container_ports.contains(&format!("\"{p}\"")), "{name}: {p}");
            }
        }
        let egress = spec["egress"].as_vec().cloned().unwrap_or_default();
        let allowed = |port: &str| {
            egress
                .iter()
                .any(|r| rule_ports(r).iter().any(|p| p == port))
        };
        assert!(allowed("53"), "{name}: DNS");
        assert!(allowed(&amqp), "{name}: RabbitMQ on {amqp}");
        assert!(allowed(&redis), "{name}: Redis on {redis}");
        assert_eq!(
            allowed(&gateway),
            !public,
            "{name}: the gateway on {gateway} (the worker calls it, the receiver never)"
        );
    }
}
