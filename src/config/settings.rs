//! The settings structs and their defaults: what `config/default.toml`
//! shows, one struct per section. Durations are `*_ms` / `*_secs`
//! integers with a method returning `Duration`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::SecretUrl;

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
    /// The nodes of one RabbitMQ cluster (contract §14): when set, used
    /// instead of `url`; see [`crate::amqp::Nodes`].
    pub urls: Vec<SecretUrl>,
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
            urls: Vec::new(),
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

    /// The same settings with every name under `prefix` (`<prefix>.intents`,
    /// `<prefix>.dlx`, ...): a topology of its own for a demo, a test or a
    /// benchmark run, removed afterwards with [`crate::amqp::topology::remove`].
    pub fn isolated(&self, prefix: &str) -> AmqpSettings {
        AmqpSettings {
            intent_exchange: format!("{prefix}.intents"),
            intent_queue: format!("{prefix}.intents"),
            dead_letter_exchange: format!("{prefix}.dlx"),
            dead_letter_queue: format!("{prefix}.intents.dlq"),
            result_exchange: format!("{prefix}.results"),
            ..self.clone()
        }
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
    /// `url` (and `urls`) are seed nodes of a Redis Cluster (the other
    /// nodes are discovered).
    pub cluster: bool,
    /// More seed nodes of the cluster (`cluster = true` only).
    pub urls: Vec<SecretUrl>,
    /// Replicas each state write waits for (contract §14). Only 0 is
    /// accepted until issue 20 brings `WAIT`; see docs/EXTENSIONS.md.
    pub wait_replicas: u32,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: SecretUrl::new("redis://127.0.0.1:6379/0"),
            key_prefix: "h5pay:intent".into(),
            lease_ms: 30_000,
            retention_secs: 604_800,
            cluster: false,
            urls: Vec::new(),
            wait_replicas: 0,
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

    /// The seed nodes of a Redis Cluster: `url`, then `urls`.
    pub fn seeds(&self) -> impl Iterator<Item = &SecretUrl> {
        std::iter::once(&self.url).chain(&self.urls)
    }

    /// How long one Redis command may take before it counts as failed: 2 s,
    /// or a fifth of the lease if that is shorter, so a slow renewal is
    /// over (and retried) well before the lease could lapse.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(2).min(self.lease() / 5)
    }

    /// How long a `WAIT` for `wait_replicas` may block (contract §14: a
    /// fifth of the lease), less a margin, so that its answer arrives before
    /// the response timeout gives up on the call.
    pub fn wait_timeout(&self) -> Duration {
        (self.lease() / 5).min(
            self.response_timeout()
                .saturating_sub(Duration::from_millis(250)),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    pub url: String,
    /// queryorder; empty: `url` with its last path segment replaced by
    /// `queryorder`.
    pub query_url: String,
    /// closeorder; empty: `url` with its last path segment replaced by
    /// `closeorder`.
    pub close_url: String,
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
            query_url: String::new(),
            close_url: String::new(),
            connect_timeout_ms: 3000,
            request_timeout_ms: 10_000,
            verify_response_sign: true,
            max_amount: 100_000_000,
        }
    }
}

impl GatewaySettings {
    /// The endpoint URLs that are set, with their dotted keys (an empty
    /// `query_url` or `close_url` follows `url`).
    pub fn endpoints(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("gateway.url", self.url.as_str()),
            ("gateway.query_url", self.query_url.as_str()),
            ("gateway.close_url", self.close_url.as_str()),
        ]
        .into_iter()
        .filter(|(_, url)| !url.is_empty())
    }

    /// The endpoints (dotted key, URL) reached over plain `http` on a host
    /// that is not loopback (127.0.0.0/8, `::1`, `localhost`): requests,
    /// answers and their signs cross the network unencrypted (contract
    /// §5.7: accepted, warned about, and counted in
    /// `h5pay_insecure_gateway`).
    pub fn insecure_endpoints(&self) -> Vec<(&'static str, &str)> {
        self.endpoints()
            .filter(|(_, url)| is_plain_http_off_host(url))
            .collect()
    }
}

/// `http://` to a host other than loopback. Unparseable URLs are not
/// judged here (validation refuses them).
fn is_plain_http_off_host(raw: &str) -> bool {
    let Ok(u) = url::Url::parse(raw) else {
        return false;
    };
    if u.scheme() != "http" {
        return false;
    }
    match u.host() {
        Some(url::Host::Domain(d)) => !d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        None => false,
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

/// The notify receiver (contract §11): `h5pay-worker notify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// Where `h5pay-worker notify` serves `POST <path>`.
    pub listen: String,
    pub path: String,
    /// When set, the notify_url sent for intents that bring none: where the
    /// gateway reaches this receiver from outside.
    pub public_url: String,
    /// Larger notifies are answered 413.
    pub body_limit_bytes: usize,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            listen: "127.0.0.1:8091".into(),
            path: "/h5pay/notify".into(),
            public_url: String::new(),
            body_limit_bytes: 16 * 1024,
        }
    }
}

/// The reconciler (contract §12): when open payments are queried, closed,
/// given up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    pub enabled: bool,
    /// When an open payment is queried, in seconds after its pay_time;
    /// then every (last - previous).
    pub check_after_secs: Vec<u64>,
    /// How long a placed order stays payable.
    pub order_ttl_secs: u64,
    /// Close orders still unpaid `order_ttl_secs + close_grace_secs` after
    /// their pay_time.
    pub close_unpaid: bool,
    pub close_grace_secs: u64,
    /// Then a payment still open is `unresolved`.
    pub max_age_secs: u64,
    /// Checks one worker process runs at once.
    pub concurrency: u32,
    /// The keys the due checks are spread over (contract §14). Accepted
    /// and validated; the schedule does not use it yet.
    pub schedule_shards: u32,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            enabled: true,
            check_after_secs: vec![60, 300, 900, 1800, 3600],
            order_ttl_secs: 900,
            close_unpaid: true,
            close_grace_secs: 300,
            max_age_secs: 86_400,
            concurrency: 32,
            schedule_shards: 16,
        }
    }
}

/// Distributed tracing (issue 15): off unless `endpoint` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSettings {
    /// An OTLP/HTTP collector, e.g. `http://otel-collector:4318` (spans go
    /// to `<endpoint>/v1/traces`). Empty: no spans are exported; the W3C
    /// trace context of an intent is still copied onto its events.
    pub endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// The share of new traces recorded and exported (0.0 to 1.0). An
    /// intent whose `traceparent` arrives marked sampled (or not) follows
    /// its publisher's decision instead: the trace stays whole.
    pub sample_ratio: f64,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings {
            endpoint: String::new(),
            service_name: "h5pay-worker".into(),
            sample_ratio: 1.0,
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
    pub notify: NotifySettings,
    pub reconcile: ReconcileSettings,
    pub otel: OtelSettings,
    pub log: LogSettings,
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
}
