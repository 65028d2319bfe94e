//! Validation: every rule of the settings that needs no I/O, each error
//! naming its key in dotted form. Reading the institutions' keys (files,
//! environment variables) is a separate step: [`super::keys::resolve`].

use std::net::SocketAddr;

use super::{ConfigError, MIN_LEASE_MS, Settings, parse_offset};
use crate::domain::is_identifier;

impl Settings {
    /// Checks every rule that needs no I/O; [`Settings::resolve_keys`]
    /// then reads the keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Section by section, in the order the errors have always been found.
        self.check_amqp()?;
        self.check_redis()?;
        self.check_gateway()?;
        self.check_worker()?;
        self.check_reconcile()?;
        self.check_otel()?;
        self.check_notify()?;
        self.check_log()?;
        self.check_institutions()
    }

    /// The broker: URLs, names, limits.
    fn check_amqp(&self) -> Result<(), ConfigError> {
        let a = &self.amqp;
        check_amqp_url(a.url.expose(), "amqp.url")?;
        for (i, url) in a.urls.iter().enumerate() {
            check_amqp_url(url.expose(), &format!("amqp.urls[{i}]"))?;
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
        Ok(())
    }

    /// The Redis settings: URLs, cluster, lease and retention.
    fn check_redis(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        check_url(r.url.expose(), "redis.url", &["redis", "rediss"])?;
        for (i, url) in r.urls.iter().enumerate() {
            check_url(
                url.expose(),
                &format!("redis.urls[{i}]"),
                &["redis", "rediss"],
            )?;
        }
        if !r.urls.is_empty() && !r.cluster {
            return Err(err(
                "redis.urls",
                "more seed nodes of a Redis Cluster: set redis.cluster = true, or leave it empty",
            ));
        }
        if r.cluster && (r.key_prefix.contains('{') || r.key_prefix.contains('}')) {
            return Err(err(
                "redis.key_prefix",
                "must not contain { or } in cluster mode: a hash tag would put every key on one node",
            ));
        }
        if r.wait_replicas > 16 {
            return Err(err("redis.wait_replicas", "must be 0-16"));
        }
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
        Ok(())
    }

    /// The gateway's endpoints and timeouts, its retries and its breaker.
    fn check_gateway(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
        check_url(&g.url, "gateway.url", &["http", "https"])?;
        for (key, url) in [
            ("gateway.query_url", &g.query_url),
            ("gateway.close_url", &g.close_url),
        ] {
            // Empty: `url` with its last path segment replaced.
            if !url.is_empty() {
                check_url(url, key, &["http", "https"])?;
            }
        }
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
        Ok(())
    }

    /// The worker's defaults and the admin endpoint.
    fn check_worker(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The reconciler's schedule, and the retention it needs.
    fn check_reconcile(&self) -> Result<(), ConfigError> {
        let rc = &self.reconcile;
        let r = &self.redis;
        let points = &rc.check_after_secs;
        if points.is_empty() || points[0] == 0 || points.windows(2).any(|w| w[0] >= w[1]) {
            return Err(err(
                "reconcile.check_after_secs",
                "must be one or more seconds, each later than the one before, the first at least 1",
            ));
        }
        if rc.order_ttl_secs == 0 {
            return Err(err("reconcile.order_ttl_secs", "must be at least 1"));
        }
        // Times far beyond any payment's life are typos, and would overflow
        // the reconciler's clock arithmetic.
        for (key, secs) in [
            (
                "reconcile.check_after_secs",
                points.last().copied().unwrap_or(0),
            ),
            ("reconcile.order_ttl_secs", rc.order_ttl_secs),
            ("reconcile.close_grace_secs", rc.close_grace_secs),
            ("reconcile.max_age_secs", rc.max_age_secs),
        ] {
            if secs > MAX_RECONCILE_SECS {
                return Err(err(
                    key,
                    format!("must be at most {MAX_RECONCILE_SECS} seconds (ten years)"),
                ));
            }
        }
        if rc.max_age_secs <= points[0] {
            return Err(err(
                "reconcile.max_age_secs",
                "must be later than the first of reconcile.check_after_secs",
            ));
        }
        if !(1..=65_535).contains(&rc.concurrency) {
            return Err(err("reconcile.concurrency", "must be 1-65535"));
        }
        if !(1..=1024).contains(&rc.schedule_shards) {
            return Err(err("reconcile.schedule_shards", "must be 1-1024"));
        }
        if rc.enabled && r.retention_secs <= rc.max_age_secs {
            return Err(err(
                "redis.retention_secs",
                format!(
                    "must be more than reconcile.max_age_secs ({}): a followed payment's state \
                     must outlive its checks",
                    rc.max_age_secs
                ),
            ));
        }
        Ok(())
    }

    /// Tracing export.
    fn check_otel(&self) -> Result<(), ConfigError> {
        let o = &self.otel;
        if !o.endpoint.is_empty() {
            check_url(&o.endpoint, "otel.endpoint", &["http", "https"])?;
        }
        if o.service_name.is_empty() || o.service_name.len() > 128 {
            return Err(err("otel.service_name", "must be 1-128 characters"));
        }
        if !(0.0..=1.0).contains(&o.sample_ratio) {
            return Err(err("otel.sample_ratio", "must be between 0.0 and 1.0"));
        }
        Ok(())
    }

    /// The notify receiver.
    fn check_notify(&self) -> Result<(), ConfigError> {
        let n = &self.notify;
        if n.listen.parse::<SocketAddr>().is_err() {
            return Err(err(
                "notify.listen",
                "must be an address like 127.0.0.1:8091",
            ));
        }
        if !is_literal_path(&n.path) {
            return Err(err(
                "notify.path",
                "must be a literal path of at most 256 characters: / then letters, digits, \
                 - _ . ~ and / only (no route syntax such as {x} or *)",
            ));
        }
        if !n.public_url.is_empty()
            && let Err(why) = crate::domain::check_notify_url(&n.public_url)
        {
            return Err(err("notify.public_url", format!("{why} (or empty)")));
        }
        if !(512..=1024 * 1024).contains(&n.body_limit_bytes) {
            return Err(err("notify.body_limit_bytes", "must be 512 to 1048576"));
        }
        Ok(())
    }

    /// The log filter.
    fn check_log(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(err(
                "log.level",
                "must be a level (info, debug, ...) or a tracing filter",
            ));
        }
        Ok(())
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
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(key, message)
}

/// `amqp.url`, or one of `amqp.urls`.
fn check_amqp_url(raw: &str, key: &str) -> Result<(), ConfigError> {
    check_url(raw, key, &["amqp", "amqps"])?;
    if raw.parse::<lapin::uri::AMQPUri>().is_err() {
        // The parser's message may quote the URL, password included.
        return Err(err(
            key,
            "not a valid AMQP URI (amqp://user:pass@host:port/vhost)",
        ));
    }
    Ok(())
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

/// The longest time a reconciler setting may name: ten years.
pub const MAX_RECONCILE_SECS: u64 = 10 * 365 * 24 * 3600;

/// A path the HTTP router takes as itself: `/`, then unreserved characters
/// and `/` (route syntax such as `{x}` or `*` would make the router panic
/// or match more than one path).
fn is_literal_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 256
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literal_paths_are_notify_paths() {
        for ok in ["/h5pay/notify", "/", "/a-b_c.d~e/f"] {
            assert!(is_literal_path(ok), "{ok}");
        }
        for bad in [
            "",
            "h5pay",
            "/{x}",
            "/a/*rest",
            "/a/:id",
            "/a b",
            "/a?b",
            "/%7Bx%7D",
            &format!("/{}", "a".repeat(256)),
        ] {
            assert!(!is_literal_path(bad), "{bad}");
        }
    }
}
