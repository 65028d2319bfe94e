//! deploy/ cannot be run here (no Docker engine), so what can be checked
//! is checked: every file parses, every H5PAY__ variable names a real
//! setting, the RabbitMQ definitions are exactly what the worker declares,
//! and the manifests keep the promises OPERATIONS.md makes.

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

fn yaml_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("deploy/docker-compose.yml")];
    let dir = root().join("deploy/k8s");
    let mut k8s: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    k8s.sort();
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
    load(&root().join("deploy/k8s/deployment.yaml"))
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
    let kinds: Vec<String> = ["pdb.yaml", "keda-scaledobject.yaml", "configmap.yaml"]
        .iter()
        .flat_map(|f| load(&root().join("deploy/k8s").join(f)))
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect();
    for k in ["PodDisruptionBudget", "ScaledObject", "ConfigMap"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
}

#[test]
fn the_configmap_config_is_valid_and_holds_no_inline_key() {
    let cm = load(&root().join("deploy/k8s/configmap.yaml"))
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap_or_else(|| panic!("no ConfigMap"));
    let data = cm["data"].as_hash().cloned().unwrap_or_default();
    let toml_text = data
        .values()
        .find_map(|v| {
            v.as_str()
                .filter(|t| t.contains("[[institutions]]"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no config in the ConfigMap"));
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
    let d = load(&root().join("deploy/k8s/notify-deployment.yaml"))
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
    let services = load(&root().join("deploy/k8s/notify-service.yaml"));
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
