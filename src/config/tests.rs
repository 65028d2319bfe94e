//! Loading: the defaults, a file, the environment, the contract's block.

mod key_sources;
mod rejected;

use super::*;
use std::time::Duration;

const MIN: &str = "[[institutions]]\ninst_no = \"60000001\"\nkey = \"k-secret-1\"\n";

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_parts(
        text,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        Source::BuiltIn,
    )
}

fn error_of(text: &str, env: &[(&str, &str)]) -> ConfigError {
    match load(text, env) {
        Err(e) => e,
        Ok(c) => panic!("accepted: {:?}", c.settings),
    }
}

#[test]
fn the_shipped_default_loads_with_every_contract_default() {
    let c = load(DEFAULT_TOML, &[]).expect("settings load");
    let s = &c.settings;
    assert_eq!(s.amqp.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(s.amqp.queue_type, QueueType::Quorum);
    assert_eq!((s.amqp.delivery_limit, s.amqp.prefetch), (5, 256));
    assert_eq!(s.redis.key_prefix, "h5pay:intent");
    assert_eq!(
        (s.redis.lease_ms, s.redis.retention_secs),
        (30_000, 604_800)
    );
    assert_eq!(s.gateway.url, "http://127.0.0.1:8090/api/openpay/v3/h5pay");
    assert_eq!(s.retry.max_attempts, 6);
    assert_eq!(s.worker.duplicates, DuplicatePolicy::Republish);
    assert_eq!(s.admin.listen, "127.0.0.1:9464");
    assert_eq!(c.institutions.default_inst_no(), "60000001");
    assert!(c.institutions.key("60000001").is_some());
}

#[test]
fn a_file_may_name_only_what_it_changes() {
    let c = load(&format!("[amqp]\nprefetch = 10\n{MIN}"), &[]).expect("settings load");
    assert_eq!(c.settings.amqp.prefetch, 10);
    assert_eq!(c.settings.amqp.intent_queue, "h5pay.intents");
    assert_eq!(c.settings.retry.max_elapsed_ms, 60_000);
}

#[test]
fn environment_overrides_are_typed_like_the_defaults() {
    let c = load(
        MIN,
        &[
            ("H5PAY__AMQP__PREFETCH", "512"),
            ("H5PAY__AMQP__URL", "amqps://u:p@mq.example:5671/prod"),
            ("H5PAY__GATEWAY__VERIFY_RESPONSE_SIGN", "false"),
            ("H5PAY__RETRY__MULTIPLIER", "1.5"),
            ("H5PAY__WORKER__DEFAULT_MCH_NO", "12345"),
            ("H5PAY__INSTITUTIONS__1__INST_NO", "60000002"),
            (
                "H5PAY__INSTITUTIONS__1__KEY_ENV",
                "TEST_KEY_VAR_THAT_IS_SET",
            ),
            ("H5PAY__WORKER__DEFAULT_INST_NO", "60000001"),
            ("UNRELATED", "x"),
        ],
    );
    // key_env resolves from the process environment: not set here.
    let e = c.err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(e.key, "institutions[1].key_env");
    let c = load(
        MIN,
        &[
            ("H5PAY__AMQP__PREFETCH", "512"),
            ("H5PAY__GATEWAY__VERIFY_RESPONSE_SIGN", "false"),
            ("H5PAY__RETRY__MULTIPLIER", "1.5"),
            ("H5PAY__WORKER__DEFAULT_MCH_NO", "12345"),
        ],
    )
    .expect("settings load");
    assert_eq!(c.settings.amqp.prefetch, 512);
    assert!(!c.settings.gateway.verify_response_sign);
    assert_eq!(c.settings.retry.multiplier, 1.5);
    assert_eq!(c.settings.worker.default_mch_no, "12345");
}

/// The TOML block of contract §6, read from docs/CONTRACT.md as it is
/// now: from the first ```` ```toml ```` after `## 6. Configuration` to
/// its closing fence.
fn contract_toml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONTRACT.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let section = text
        .split_once("\n## 6. Configuration")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no section 6 in {path}"));
    let block = section
        .split_once("```toml\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no ```toml block in section 6"));
    let end = block
        .find("\n```")
        .unwrap_or_else(|| panic!("the block of section 6 is not closed"));
    block[..=end].to_owned()
}

/// Every setting but the institutions, as TOML values (Settings has no
/// PartialEq; this also compares URLs in full).
fn without_institutions(s: &Settings) -> toml::Table {
    let mut t = match toml::Value::try_from(s) {
        Ok(toml::Value::Table(t)) => t,
        other => panic!("settings serialise to a table: {other:?}"),
    };
    t.remove("institutions");
    t
}

#[test]
fn the_contracts_configuration_block_loads_verbatim_and_is_every_default() {
    let text = contract_toml();
    assert!(
        text.contains("[reconcile]") && text.contains("schedule_shards"),
        "{text}"
    );
    let c = load(&text, &[]).unwrap_or_else(|e| panic!("the contract's own TOML: {e}"));
    assert_eq!(
        without_institutions(&c.settings),
        without_institutions(&Settings::default()),
        "the contract's values are the defaults"
    );
    assert_eq!(c.institutions.inst_nos(), ["60000001"]);
    // And the shipped default file shows the same defaults.
    let shipped = load(DEFAULT_TOML, &[]).expect("config/default.toml loads");
    assert_eq!(
        without_institutions(&shipped.settings),
        without_institutions(&Settings::default()),
        "config/default.toml shows every default"
    );
    // The keys issue 18 added, named one by one.
    let s = &c.settings;
    assert!(s.amqp.urls.is_empty() && s.redis.urls.is_empty());
    assert_eq!(s.redis.wait_replicas, 0);
    assert_eq!(
        (s.gateway.query_url.as_str(), s.gateway.close_url.as_str()),
        ("", "")
    );
    assert_eq!(
        (s.reconcile.concurrency, s.reconcile.schedule_shards),
        (32, 16)
    );
}

#[test]
fn cluster_lists_load_from_the_file_and_from_the_environment() {
    let c = load(
        &format!(
            "[amqp]\nurls = [\"amqp://u:p@mq-0:5672/%2f\", \"amqps://u:p@mq-1:5671/%2f\"]\n\
             [redis]\ncluster = true\nurls = [\"redis://r-1:6379\"]\n{MIN}"
        ),
        &[],
    )
    .expect("settings load");
    let exposed = |urls: &[SecretUrl]| -> Vec<String> {
        urls.iter().map(|u| u.expose().to_owned()).collect()
    };
    assert_eq!(
        exposed(&c.settings.amqp.urls),
        ["amqp://u:p@mq-0:5672/%2f", "amqps://u:p@mq-1:5671/%2f"]
    );
    let seeds: Vec<&str> = c.settings.redis.seeds().map(SecretUrl::expose).collect();
    assert_eq!(seeds, ["redis://127.0.0.1:6379/0", "redis://r-1:6379"]);
    let c = load(
        MIN,
        &[
            (
                "H5PAY__AMQP__URLS",
                "amqp://u:p@a:5672/%2f,amqp://u:p@b:5672/%2f",
            ),
            ("H5PAY__REDIS__CLUSTER", "true"),
            ("H5PAY__REDIS__URLS", "redis://r-1:6379, redis://r-2:6379"),
            (
                "H5PAY__GATEWAY__QUERY_URL",
                "https://gw.example/v3/queryorder",
            ),
            ("H5PAY__RECONCILE__CONCURRENCY", "4"),
            ("H5PAY__RECONCILE__SCHEDULE_SHARDS", "8"),
        ],
    )
    .expect("settings load");
    let s = &c.settings;
    assert_eq!(
        exposed(&s.amqp.urls),
        ["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5672/%2f"]
    );
    assert_eq!(
        exposed(&s.redis.urls),
        ["redis://r-1:6379", "redis://r-2:6379"]
    );
    assert_eq!(s.gateway.query_url, "https://gw.example/v3/queryorder");
    assert_eq!(
        (s.reconcile.concurrency, s.reconcile.schedule_shards),
        (4, 8)
    );
    // Passwords stay out of Debug.
    assert!(!format!("{s:?}").contains("u:p@"), "{s:?}");
}

#[test]
fn the_redis_response_timeout_leaves_room_for_two_failed_renewals() {
    let c = load(&format!("[redis]\nlease_ms = 5000\n{MIN}"), &[]).expect("settings load");
    let r = &c.settings.redis;
    assert_eq!(r.response_timeout(), Duration::from_secs(1));
    // Renewals every third of the lease: two may fail, each within the
    // timeout, and the third still lands before the lease lapses.
    assert!(2 * (r.lease() / 3) + r.response_timeout() < r.lease());
    assert_eq!(
        RedisSettings::default().response_timeout(),
        Duration::from_secs(2)
    );
}

#[test]
fn offsets_parse() {
    assert_eq!(
        parse_offset("+08:00").map(|o| o.local_minus_utc()),
        Some(8 * 3600)
    );
    assert_eq!(
        parse_offset("-05:30").map(|o| o.local_minus_utc()),
        Some(-(5 * 3600 + 1800))
    );
    assert_eq!(parse_offset("Z").map(|o| o.local_minus_utc()), Some(0));
    for bad in ["8", "+8:00", "+24:00", "+08:60", "08:00", "+0a:00"] {
        assert!(parse_offset(bad).is_none(), "{bad}");
    }
}
