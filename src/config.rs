//! Settings (contract §6): a TOML file, then `H5PAY__SECTION__KEY`
//! environment overrides, then validation. Every problem is reported as one
//! line naming the key in dotted form, and never with a secret's value.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::intent::is_identifier;

/// The built-in local defaults, used when no file is named and
/// `config/default.toml` is not in the working directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
pub const DEFAULT_PATH: &str = "config/default.toml";
const ENV_PREFIX: &str = "H5PAY__";

/// A bad configuration: the key in dotted form and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A URL that may carry a password: `Debug`/`Display` hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }

    /// The full URL, password included. Only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "<unparseable url>".to_owned(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    pub url: SecretUrl,
    pub intent_exchange: String,
    pub intent_queue: String,
    pub queue_type: QueueType,
    /// Deliveries before a quorum queue dead-letters an intent.
    pub delivery_limit: u32,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub result_exchange: String,
    /// Intents in progress at once (unacknowledged deliveries).
    pub prefetch: u16,
    /// How long a result event the broker refuses (nack, return, confirm
    /// timeout) is published again, with backoff, before the intent is
    /// handed back: a full consumer queue must not burn the delivery limit.
    pub publish_retry_ms: u64,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: SecretUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            intent_exchange: "h5pay.intents".into(),
            intent_queue: "h5pay.intents".into(),
            queue_type: QueueType::Quorum,
            delivery_limit: 5,
            dead_letter_exchange: "h5pay.dlx".into(),
            dead_letter_queue: "h5pay.intents.dlq".into(),
            result_exchange: "h5pay.results".into(),
            prefetch: 256,
            publish_retry_ms: 60_000,
        }
    }
}

impl AmqpSettings {
    /// The alternate exchange (and its queue) of the result exchange.
    pub fn unrouted_exchange(&self) -> String {
        format!("{}.unrouted", self.result_exchange)
    }

    pub fn publish_retry(&self) -> Duration {
        Duration::from_millis(self.publish_retry_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    pub url: SecretUrl,
    pub key_prefix: String,
    /// Claim lease; renewed at a third of it while the gateway call runs.
    pub lease_ms: u64,
    /// How long a decided outcome is kept for replays.
    pub retention_secs: u64,
    /// `url` is a seed node of a Redis Cluster (the other nodes are
    /// discovered).
    pub cluster: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: SecretUrl::new("redis://127.0.0.1:6379/0"),
            key_prefix: "h5pay:intent".into(),
            lease_ms: 30_000,
            retention_secs: 604_800,
            cluster: false,
        }
    }
}

/// The shortest claim lease: renewals run every third of it, and each may
/// take up to the response timeout below, so two renewals in a row can fail
/// before another worker may take over a live call.
pub const MIN_LEASE_MS: u64 = 5_000;

impl RedisSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// How long one Redis command may take before it counts as failed: 2 s,
    /// or a fifth of the lease if that is shorter, so a slow renewal is
    /// over (and retried) well before the lease could lapse.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(2).min(self.lease() / 5)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    pub url: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub verify_response_sign: bool,
    /// Largest accepted `total_amount`, in fen.
    pub max_amount: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            url: "http://127.0.0.1:8090/api/openpay/v3/h5pay".into(),
            connect_timeout_ms: 3000,
            request_timeout_ms: 10_000,
            verify_response_sign: true,
            max_amount: 100_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    pub initial_ms: u64,
    pub multiplier: f64,
    pub max_interval_ms: u64,
    pub max_attempts: u32,
    pub max_elapsed_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_ms: 200,
            multiplier: 2.0,
            max_interval_ms: 5000,
            max_attempts: 6,
            max_elapsed_ms: 60_000,
        }
    }
}

/// The gateway circuit breaker (see `breaker.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    pub enabled: bool,
    /// Consecutive transient failures, across all intents, that open it.
    pub failure_threshold: u32,
    /// How long it stays open before one real attempt probes the gateway.
    pub open_ms: u64,
    /// The open period doubles after each failed probe, up to this.
    pub max_open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            failure_threshold: 20,
            open_ms: 2000,
            max_open_ms: 30_000,
        }
    }
}

/// One institution as written in the file. Exactly one key source.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionSettings {
    #[serde(default)]
    pub inst_no: String,
    /// Inline key: for the sandbox only.
    #[serde(default, skip_serializing)]
    pub key: Option<SecretString>,
    /// Name of an environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Path of a file holding the key (trailing whitespace ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl fmt::Debug for InstitutionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstitutionSettings")
            .field("inst_no", &self.inst_no)
            .field("key", &self.key.as_ref().map(|_| "[REDACTED]"))
            .field("key_env", &self.key_env)
            .field("key_file", &self.key_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// Publish the stored event again (with `duplicate: true` once confirmed).
    Republish,
    /// Acknowledge a replay of an already-confirmed outcome silently.
    Drop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// The institution of intents without `inst_no`; required when more
    /// than one is configured, so that reordering or reloading
    /// institutions never changes an intent's identity.
    pub default_inst_no: String,
    pub default_mch_no: String,
    pub timezone_offset: String,
    pub duplicates: DuplicatePolicy,
    pub max_intent_age_secs: u64,
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            default_inst_no: String::new(),
            default_mch_no: String::new(),
            timezone_offset: "+08:00".into(),
            duplicates: DuplicatePolicy::Republish,
            max_intent_age_secs: 0,
            shutdown_grace_secs: 30,
        }
    }
}

impl WorkerSettings {
    /// The parsed offset; validated at load time, UTC+8 if called before.
    pub fn offset(&self) -> FixedOffset {
        parse_offset(&self.timezone_offset).unwrap_or_else(china_standard_time)
    }
}

fn china_standard_time() -> FixedOffset {
    const UTC8: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
        Some(o) => o,
        None => panic!("UTC+8 is a valid offset"),
    };
    UTC8
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub listen: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Everything the process is configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub gateway: GatewaySettings,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    pub institutions: Vec<InstitutionSettings>,
    pub worker: WorkerSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
}

/// Institution keys, resolved from their sources. The first configured
/// institution is the default for intents without `inst_no`.
#[derive(Clone)]
pub struct Institutions {
    keys: HashMap<String, SecretString>,
    default: String,
}

impl fmt::Debug for Institutions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.keys.keys().collect();
        names.sort();
        f.debug_struct("Institutions")
            .field("inst_nos", &names)
            .field("default", &self.default)
            .finish()
    }
}

impl Institutions {
    pub fn key(&self, inst_no: &str) -> Option<&SecretString> {
        self.keys.get(inst_no)
    }

    pub fn contains(&self, inst_no: &str) -> bool {
        self.keys.contains_key(inst_no)
    }

    pub fn default_inst_no(&self) -> &str {
        &self.default
    }

    /// The configured inst_nos, sorted (for logs: never the keys).
    pub fn inst_nos(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Builds a set directly, the first pair being the default (tests, tools).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, SecretString)>) -> Option<Self> {
        let mut default = None;
        let mut keys = HashMap::new();
        for (inst, key) in pairs {
            default.get_or_insert_with(|| inst.clone());
            keys.insert(inst, key);
        }
        default.map(|default| Institutions { keys, default })
    }

    /// The same set with another default, which must be one of them.
    pub fn with_default(mut self, inst_no: &str) -> Option<Self> {
        self.contains(inst_no).then(|| {
            self.default = inst_no.to_owned();
            self
        })
    }

    /// How many institutions are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The institution keys in use, replaceable while running: SIGHUP reloads
/// them (key rotation) without a restart. Readers take a snapshot per
/// intent, so an intent signs and verifies with one key throughout.
#[derive(Debug)]
pub struct KeyRing(std::sync::RwLock<std::sync::Arc<Institutions>>);

impl KeyRing {
    pub fn new(institutions: Institutions) -> Self {
        KeyRing(std::sync::RwLock::new(std::sync::Arc::new(institutions)))
    }

    pub fn current(&self) -> std::sync::Arc<Institutions> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, institutions: Institutions) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(institutions);
    }
}

/// Where the settings came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    BuiltIn,
}

/// Settings with their keys resolved: what the process runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub institutions: Institutions,
    pub source: Source,
}

impl Config {
    /// Loads from `path` (or `config/default.toml`, or the built-in
    /// defaults when that file is absent) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (text, source) = match path {
            Some(p) => (read_file(p)?, Source::File(p.to_owned())),
            None if Path::new(DEFAULT_PATH).exists() => (
                read_file(Path::new(DEFAULT_PATH))?,
                Source::File(DEFAULT_PATH.into()),
            ),
            None => (DEFAULT_TOML.to_owned(), Source::BuiltIn),
        };
        Self::from_parts(&text, std::env::vars(), source)
    }

    /// Loads from TOML text and an explicit environment.
    pub fn from_parts(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        source: Source,
    ) -> Result<Config, ConfigError> {
        let settings = parse(toml_text, env)?;
        settings.validate()?;
        let env_lookup = |name: &str| std::env::var(name).ok();
        let institutions = settings.resolve_keys(&env_lookup)?;
        Ok(Config {
            settings,
            institutions,
            source,
        })
    }
}

fn read_file(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", p.display())))
}

/// TOML text plus environment overrides, deserialised (not yet validated).
pub fn parse(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut table: toml::Table = toml::from_str(toml_text).map_err(|e| {
        // Only the position and the parser's message: the offending line
        // could hold a key, so it is never quoted.
        let line = e
            .span()
            .map(|s| {
                toml_text[..s.start.min(toml_text.len())]
                    .lines()
                    .count()
                    .max(1)
            })
            .unwrap_or(0);
        ConfigError::new(
            "config",
            format!("invalid TOML at line {line}: {}", e.message().trim()),
        )
    })?;
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        apply_env(&mut table, &name, value)?;
    }
    serde_path_to_error::deserialize::<_, Settings>(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        describe_serde_error(&path, inner.message())
    })
}

/// Turns serde's message into a dotted-key one, never echoing a key's value.
fn describe_serde_error(path: &str, message: &str) -> ConfigError {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        let field = &rest[..end];
        let expected = rest[end + 1..].trim_start_matches(", ").trim();
        // serde_path_to_error's path already ends with the unknown field.
        let path = path
            .strip_suffix(field)
            .unwrap_or(path)
            .trim_end_matches('.');
        return if path.is_empty() {
            ConfigError::new(field, format!("unknown section ({expected})"))
        } else {
            ConfigError::new(
                format!("{path}.{field}"),
                format!("unknown key ({expected})"),
            )
        };
    }
    if path.ends_with(".key") || path == "key" {
        return ConfigError::new(path, "must be a string");
    }
    // Messages like "invalid type: integer `5`, expected a string" quote the
    // value, which is fine for everything but keys (handled above).
    ConfigError::new(if path.is_empty() { "config" } else { path }, message)
}

/// Applies one `H5PAY__SECTION__KEY=value` (or
/// `H5PAY__INSTITUTIONS__<i>__KEY=value`) to the table, typed like the
/// default of that key.
fn apply_env(table: &mut toml::Table, name: &str, value: String) -> Result<(), ConfigError> {
    let parts: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(|p| p.to_ascii_lowercase())
        .collect();
    let unknown = |dotted: String| ConfigError::new(dotted, format!("unknown key (from {name})"));
    match parts.as_slice() {
        [section, index, key] if section == "institutions" => {
            let dotted = format!("institutions[{index}].{key}");
            if !["inst_no", "key", "key_env", "key_file"].contains(&key.as_str()) {
                return Err(unknown(dotted));
            }
            let i: usize = index.parse().map_err(|_| {
                ConfigError::new(&dotted, format!("{name}: {index:?} is not an index"))
            })?;
            let list = table
                .entry("institutions")
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            let toml::Value::Array(list) = list else {
                return Err(ConfigError::new(
                    "institutions",
                    "must be an array of tables",
                ));
            };
            if i > list.len() {
                return Err(ConfigError::new(
                    dotted,
                    format!("{name}: institutions are numbered from 0 without gaps"),
                ));
            }
            if i == list.len() {
                list.push(toml::Value::Table(toml::Table::new()));
            }
            match &mut list[i] {
                toml::Value::Table(t) => {
                    // A key source from the environment replaces the file's
                    // (an institution has exactly one).
                    if ["key", "key_env", "key_file"].contains(&key.as_str()) {
                        for other in ["key", "key_env", "key_file"] {
                            t.remove(other);
                        }
                    }
                    t.insert(key.clone(), toml::Value::String(value));
                    Ok(())
                }
                _ => Err(ConfigError::new(
                    format!("institutions[{i}]"),
                    "must be a table",
                )),
            }
        }
        [section, key] => {
            let dotted = format!("{section}.{key}");
            let defaults = toml::Value::try_from(Settings::default())
                .map_err(|e| ConfigError::new("config", format!("internal: {e}")))?;
            let Some(default) = defaults
                .get(section.as_str())
                .and_then(|s| s.get(key.as_str()))
            else {
                return Err(unknown(dotted));
            };
            let typed = match default {
                toml::Value::String(_) => toml::Value::String(value),
                toml::Value::Integer(_) => {
                    toml::Value::Integer(value.trim().parse().map_err(|_| {
                        ConfigError::new(
                            &dotted,
                            format!("{name} must be an integer, got {value:?}"),
                        )
                    })?)
                }
                toml::Value::Float(_) => {
                    toml::Value::Float(value.trim().parse().map_err(|_| {
                        ConfigError::new(&dotted, format!("{name} must be a number, got {value:?}"))
                    })?)
                }
                toml::Value::Boolean(_) => toml::Value::Boolean(match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ConfigError::new(
                            &dotted,
                            format!("{name} must be true or false, got {value:?}"),
                        ));
                    }
                }),
                _ => return Err(unknown(dotted)),
            };
            let section_table = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section_table {
                toml::Value::Table(t) => {
                    t.insert(key.clone(), typed);
                    Ok(())
                }
                _ => Err(ConfigError::new(section.clone(), "must be a table")),
            }
        }
        _ => Err(ConfigError::new(
            name,
            "not a setting: use H5PAY__SECTION__KEY or H5PAY__INSTITUTIONS__<i>__KEY",
        )),
    }
}

/// Whether `H5PAY__...` names a real setting (deployment files are checked
/// with this).
pub fn env_key_exists(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    match parts.as_slice() {
        [section, index, key] if section == "institutions" => {
            index.parse::<usize>().is_ok()
                && ["inst_no", "key", "key_env", "key_file"].contains(&key.as_str())
        }
        [section, key] => toml::Value::try_from(Settings::default())
            .ok()
            .and_then(|d| {
                d.get(section.as_str())
                    .and_then(|s| s.get(key.as_str()))
                    .cloned()
            })
            .is_some(),
        _ => false,
    }
}

/// Parses `+08:00` / `-05:30` / `Z`.
pub fn parse_offset(s: &str) -> Option<FixedOffset> {
    if s == "Z" || s == "z" {
        return FixedOffset::east_opt(0);
    }
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (h, m) = (num(1..3)?, num(4..6)?);
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

impl Settings {
    /// The shortest `redis.retention_secs` these settings allow. A stored
    /// outcome must outlive every redelivery of its intent, or a redelivery
    /// would call the gateway again with a new pay_time: a second order.
    /// One delivery can take at most the gateway budget, a lease (a
    /// takeover's wait) and the publish retries; the intent can be
    /// delivered `delivery_limit` times. Twice that, and never less than an
    /// hour (a requeued intent may wait behind a backlog).
    pub fn min_retention_secs(&self) -> u64 {
        let per_delivery_ms = self
            .retry
            .max_elapsed_ms
            .saturating_add(self.redis.lease_ms)
            .saturating_add(self.amqp.publish_retry_ms)
            .saturating_add(self.worker.shutdown_grace_secs.saturating_mul(1000));
        let path_secs = per_delivery_ms
            .saturating_mul(u64::from(self.amqp.delivery_limit))
            .saturating_mul(2)
            / 1000;
        path_secs.max(3600)
    }

    /// Checks every rule that needs no I/O; [`Settings::resolve_keys`]
    /// then reads the keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.amqp;
        check_url(&a.url.0, "amqp.url", &["amqp", "amqps"])?;
        if a.url.0.parse::<lapin::uri::AMQPUri>().is_err() {
            // The parser's message may quote the URL, password included.
            return Err(err(
                "amqp.url",
                "not a valid AMQP URI (amqp://user:pass@host:port/vhost)",
            ));
        }
        for (key, name) in [
            ("amqp.intent_exchange", &a.intent_exchange),
            ("amqp.intent_queue", &a.intent_queue),
            ("amqp.dead_letter_exchange", &a.dead_letter_exchange),
            ("amqp.dead_letter_queue", &a.dead_letter_queue),
            ("amqp.result_exchange", &a.result_exchange),
        ] {
            // Room for the ".unrouted" suffix within AMQP's 255-byte names.
            if name.is_empty() || name.len() > 240 || name.starts_with("amq.") {
                return Err(err(key, "must be 1-240 bytes and not start with \"amq.\""));
            }
        }
        if a.delivery_limit == 0 {
            return Err(err("amqp.delivery_limit", "must be at least 1"));
        }
        if a.prefetch == 0 {
            return Err(err("amqp.prefetch", "must be 1-65535"));
        }
        if a.publish_retry_ms == 0 {
            return Err(err("amqp.publish_retry_ms", "must be at least 1"));
        }
        let r = &self.redis;
        check_url(&r.url.0, "redis.url", &["redis", "rediss"])?;
        if r.key_prefix.is_empty() || r.key_prefix.contains(char::is_whitespace) {
            return Err(err(
                "redis.key_prefix",
                "must be non-empty, without whitespace",
            ));
        }
        if r.lease_ms < MIN_LEASE_MS {
            return Err(err(
                "redis.lease_ms",
                format!(
                    "must be at least {MIN_LEASE_MS} (renewed every third of it; a slow renewal \
                     must not let another worker take over a live call)"
                ),
            ));
        }
        let floor = self.min_retention_secs();
        if r.retention_secs < floor {
            return Err(err(
                "redis.retention_secs",
                format!(
                    "must be at least {floor}: a stored outcome must outlive every redelivery of \
                     its intent (an hour, or twice amqp.delivery_limit times the longest a \
                     delivery can take if that is longer)"
                ),
            ));
        }
        let g = &self.gateway;
        check_url(&g.url, "gateway.url", &["http", "https"])?;
        if g.connect_timeout_ms == 0 {
            return Err(err("gateway.connect_timeout_ms", "must be at least 1"));
        }
        if g.request_timeout_ms == 0 {
            return Err(err("gateway.request_timeout_ms", "must be at least 1"));
        }
        if g.max_amount == 0 {
            return Err(err("gateway.max_amount", "must be at least 1"));
        }
        let rt = &self.retry;
        if rt.initial_ms == 0 {
            return Err(err("retry.initial_ms", "must be at least 1"));
        }
        if !rt.multiplier.is_finite() || rt.multiplier < 1.0 {
            return Err(err("retry.multiplier", "must be a number >= 1.0"));
        }
        if rt.max_interval_ms == 0 {
            return Err(err("retry.max_interval_ms", "must be at least 1"));
        }
        if rt.max_attempts == 0 {
            return Err(err("retry.max_attempts", "must be at least 1"));
        }
        if rt.max_elapsed_ms == 0 {
            return Err(err("retry.max_elapsed_ms", "must be at least 1"));
        }
        let b = &self.breaker;
        if b.failure_threshold == 0 {
            return Err(err("breaker.failure_threshold", "must be at least 1"));
        }
        if b.open_ms == 0 || b.max_open_ms < b.open_ms {
            return Err(err(
                "breaker.open_ms",
                "must be at least 1 and at most breaker.max_open_ms",
            ));
        }
        let w = &self.worker;
        if !w.default_mch_no.is_empty() && !is_identifier(&w.default_mch_no, 32) {
            return Err(err(
                "worker.default_mch_no",
                "must be empty or 1-32 chars of [0-9A-Za-z_-]",
            ));
        }
        if parse_offset(&w.timezone_offset).is_none() {
            return Err(err("worker.timezone_offset", "must look like +08:00"));
        }
        if self.admin.listen.parse::<SocketAddr>().is_err() {
            return Err(err(
                "admin.listen",
                "must be an address like 127.0.0.1:9464",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(err(
                "log.level",
                "must be a level (info, debug, ...) or a tracing filter",
            ));
        }
        self.check_institutions()
    }

    /// The institutions' names and key sources, and the default: the rules
    /// that need no I/O.
    fn check_institutions(&self) -> Result<(), ConfigError> {
        if self.institutions.is_empty() {
            return Err(err(
                "institutions",
                "at least one [[institutions]] entry is required",
            ));
        }
        for (i, inst) in self.institutions.iter().enumerate() {
            let at = |k: &str| format!("institutions[{i}].{k}");
            if !is_identifier(&inst.inst_no, 32) {
                return Err(err(at("inst_no"), "must be 1-32 chars of [0-9A-Za-z_-]"));
            }
            if self.institutions[..i]
                .iter()
                .any(|other| other.inst_no == inst.inst_no)
            {
                return Err(err(
                    at("inst_no"),
                    format!("{} is configured twice", inst.inst_no),
                ));
            }
            let sources = [
                inst.key.is_some(),
                inst.key_env.is_some(),
                inst.key_file.is_some(),
            ];
            match sources.iter().filter(|s| **s).count() {
                0 => return Err(err(at("key"), "missing: set key, key_env or key_file")),
                1 => {}
                _ => return Err(err(at("key"), "set only one of key, key_env and key_file")),
            }
        }
        match self.worker.default_inst_no.as_str() {
            "" if self.institutions.len() > 1 => Err(err(
                "worker.default_inst_no",
                "required when more than one institution is configured (an intent \
                 without inst_no must not change identity when institutions are reordered)",
            )),
            "" => Ok(()),
            named if self.institutions.iter().any(|i| i.inst_no == named) => Ok(()),
            named => Err(err(
                "worker.default_inst_no",
                format!("{named:?} is not a configured institution"),
            )),
        }
    }

    /// Reads every institution's key from its source (the file, an
    /// environment variable through `env`, or a key file): the I/O step,
    /// after [`Settings::validate`].
    pub fn resolve_keys(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Institutions, ConfigError> {
        let mut pairs = Vec::new();
        for (i, inst) in self.institutions.iter().enumerate() {
            let at = |k: &str| format!("institutions[{i}].{k}");
            let (which, secret) = if let Some(k) = &inst.key {
                ("key", k.expose_secret().to_owned())
            } else if let Some(var) = &inst.key_env {
                let value = env(var).ok_or_else(|| {
                    err(
                        at("key_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?;
                ("key_env", value)
            } else if let Some(path) = &inst.key_file {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    err(
                        at("key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                ("key_file", text.trim_end().to_owned())
            } else {
                return Err(err(at("key"), "missing: set key, key_env or key_file"));
            };
            if secret.trim().is_empty() {
                return Err(err(at(which), "the key is empty"));
            }
            pairs.push((inst.inst_no.clone(), SecretString::from(secret)));
        }
        let default = match self.worker.default_inst_no.as_str() {
            "" => pairs.first().map(|(n, _)| n.clone()).unwrap_or_default(),
            named => named.to_owned(),
        };
        Institutions::from_pairs(pairs)
            .and_then(|set| set.with_default(&default))
            .ok_or_else(|| err("worker.default_inst_no", "not a configured institution"))
    }
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(key, message)
}

fn check_url(raw: &str, key: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let u = url::Url::parse(raw).map_err(|e| ConfigError::new(key, format!("not a URL: {e}")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(ConfigError::new(
            key,
            format!(
                "scheme must be {}, not {:?}",
                schemes.join(" or "),
                u.scheme()
            ),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key, "needs a host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = load(DEFAULT_TOML, &[]).unwrap_or_else(|e| panic!("{e}"));
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
        let c =
            load(&format!("[amqp]\nprefetch = 10\n{MIN}"), &[]).unwrap_or_else(|e| panic!("{e}"));
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
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.settings.amqp.prefetch, 512);
        assert!(!c.settings.gateway.verify_response_sign);
        assert_eq!(c.settings.retry.multiplier, 1.5);
        assert_eq!(c.settings.worker.default_mch_no, "12345");
    }

    #[test]
    fn bad_config_names_the_key_in_dotted_form() {
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                format!("[amqp]\nurl = \"http://x\"\n{MIN}"),
                vec![],
                "amqp.url",
            ),
            (
                format!("[amqp]\nurl = \"not a url\"\n{MIN}"),
                vec![],
                "amqp.url",
            ),
            (
                format!("[amqp]\nprefetch = 0\n{MIN}"),
                vec![],
                "amqp.prefetch",
            ),
            (
                format!("[amqp]\nprefetch = 70000\n{MIN}"),
                vec![],
                "amqp.prefetch",
            ),
            (
                format!("[amqp]\nqueue_type = \"stream\"\n{MIN}"),
                vec![],
                "amqp.queue_type",
            ),
            (format!("[amqp]\nbogus = 1\n{MIN}"), vec![], "amqp.bogus"),
            (format!("[nope]\nx = 1\n{MIN}"), vec![], "nope"),
            (
                format!("[redis]\nurl = \"mysql://x\"\n{MIN}"),
                vec![],
                "redis.url",
            ),
            (
                format!("[redis]\nlease_ms = \"long\"\n{MIN}"),
                vec![],
                "redis.lease_ms",
            ),
            (
                format!("[gateway]\nurl = \"ftp://x/y\"\n{MIN}"),
                vec![],
                "gateway.url",
            ),
            (
                format!("[retry]\nmultiplier = 0.5\n{MIN}"),
                vec![],
                "retry.multiplier",
            ),
            (
                format!("[retry]\nmax_attempts = 0\n{MIN}"),
                vec![],
                "retry.max_attempts",
            ),
            (
                format!("[worker]\ntimezone_offset = \"CST\"\n{MIN}"),
                vec![],
                "worker.timezone_offset",
            ),
            (
                format!("[worker]\nduplicates = \"ignore\"\n{MIN}"),
                vec![],
                "worker.duplicates",
            ),
            (
                format!("[admin]\nlisten = \"nowhere\"\n{MIN}"),
                vec![],
                "admin.listen",
            ),
            (
                format!("[log]\nformat = \"xml\"\n{MIN}"),
                vec![],
                "log.format",
            ),
            ("".to_owned(), vec![], "institutions"),
            (
                "[[institutions]]\ninst_no = \"60000001\"\n".to_owned(),
                vec![],
                "institutions[0].key",
            ),
            (
                "[[institutions]]\ninst_no = \"6 1\"\nkey = \"k\"\n".to_owned(),
                vec![],
                "institutions[0].inst_no",
            ),
            (
                format!("{MIN}key_env = \"X\"\n"),
                vec![],
                "institutions[0].key",
            ),
            (
                format!("{MIN}[[institutions]]\ninst_no = \"60000001\"\nkey = \"k2\"\n"),
                vec![],
                "institutions[1].inst_no",
            ),
            (
                "[[institutions]]\ninst_no = \"1\"\nkey_file = \"/nonexistent/key\"\n".to_owned(),
                vec![],
                "institutions[0].key_file",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__AMQP__PREFECH", "1")],
                "amqp.prefech",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__AMQP__PREFETCH", "many")],
                "amqp.prefetch",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__INSTITUTIONS__5__KEY", "x")],
                "institutions[5].key",
            ),
            ("[amqp\nurl=1".to_owned(), vec![], "config"),
            (
                format!("{MIN}[[institutions]]\ninst_no = \"60000002\"\nkey = \"k2\"\n"),
                vec![],
                "worker.default_inst_no",
            ),
            (
                format!("[worker]\ndefault_inst_no = \"99\"\n{MIN}"),
                vec![],
                "worker.default_inst_no",
            ),
            (
                format!("[redis]\nlease_ms = 4999\n{MIN}"),
                vec![],
                "redis.lease_ms",
            ),
            (
                format!("[redis]\nretention_secs = 3599\n{MIN}"),
                vec![],
                "redis.retention_secs",
            ),
            (
                format!("[redis]\nretention_secs = 7200\n[retry]\nmax_elapsed_ms = 3600000\n{MIN}"),
                vec![],
                "redis.retention_secs",
            ),
            (
                format!("[amqp]\npublish_retry_ms = 0\n{MIN}"),
                vec![],
                "amqp.publish_retry_ms",
            ),
        ];
        for (text, env, key) in cases {
            let e = error_of(&text, &env);
            assert_eq!(e.key, key, "{text:?} {env:?} -> {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_a_key() {
        let secret = "k-secret-1";
        let texts = [
            "[[institutions]]\ninst_no = \"60000001\"\nkey = 12345\n".to_owned(),
            format!("[[institutions]]\ninst_no = \"60000001\"\nkey = \"{secret}\n"),
            format!("[[institutions]]\ninst_no = \"6 0\"\nkey = \"{secret}\"\n"),
            format!(
                "[[institutions]]\ninst_no = \"60000001\"\nkey = \"{secret}\"\nkey_env = \"A\"\n"
            ),
        ];
        for t in &texts {
            let e = error_of(t, &[]);
            assert!(
                !e.to_string().contains(secret) && !e.to_string().contains("12345"),
                "{e}"
            );
        }
        let c = load(MIN, &[]).unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{c:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(!debug.contains("guest:guest"), "password in {debug}");
    }

    #[test]
    fn an_environment_key_source_replaces_the_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("k");
        std::fs::write(&path, "from-file\n").unwrap_or_else(|e| panic!("{e}"));
        let c = load(
            DEFAULT_TOML,
            &[(
                "H5PAY__INSTITUTIONS__0__KEY_FILE",
                &path.display().to_string(),
            )],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let key = c
            .institutions
            .key("60000001")
            .map(|k| k.expose_secret().to_owned());
        assert_eq!(key.as_deref(), Some("from-file"));
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("key");
        std::fs::write(&path, "file-key\n").unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "[[institutions]]\ninst_no = \"9\"\nkey_file = {:?}\n",
            path.display().to_string()
        );
        let c = load(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
        let key = c
            .institutions
            .key("9")
            .map(|k| k.expose_secret().to_owned());
        assert_eq!(key.as_deref(), Some("file-key"));
    }

    #[test]
    fn the_default_institution_is_named_once_there_are_two_and_never_by_order() {
        let two = |first: &str, second: &str| {
            format!(
                "[worker]\ndefault_inst_no = \"60000002\"\n\
                 [[institutions]]\ninst_no = \"{first}\"\nkey = \"k1\"\n\
                 [[institutions]]\ninst_no = \"{second}\"\nkey = \"k2\"\n"
            )
        };
        for text in [two("60000001", "60000002"), two("60000002", "60000001")] {
            let c = load(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.institutions.default_inst_no(), "60000002");
        }
        let one = load(MIN, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.institutions.default_inst_no(), "60000001");
    }

    #[test]
    fn the_redis_response_timeout_leaves_room_for_two_failed_renewals() {
        let c = load(&format!("[redis]\nlease_ms = 5000\n{MIN}"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
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
}
