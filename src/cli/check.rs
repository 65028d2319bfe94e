//! `h5pay-worker check`: a doctor for a deployment, before it takes
//! traffic (an init container, a Job, or by hand): the config and its keys,
//! RabbitMQ with the permissions and the topology the worker needs, Redis
//! with the eviction policy and persistence OPERATIONS.md requires (and the
//! cluster's state), the gateway's name and TLS, and the clock. One line a
//! check — ✓ fine, ! worth knowing, ✗ with the fix — and a non-zero exit on
//! any ✗. It changes nothing: the topology is declared only as it already
//! is (the worker does the same at start).

use std::io::Write;
use std::time::Duration;

use crate::amqp;
use crate::claim::{self, ClaimStore, RedisConn};
use crate::config::Config;

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    Ok(String),
    /// Works, but worth knowing.
    Warn(String),
    /// Does not work: what is wrong, and the fix.
    Fail {
        what: String,
        fix: String,
    },
}

impl Mark {
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Mark {
        Mark::Fail {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

/// One line of the report.
pub fn line(name: &str, mark: &Mark) -> String {
    let text = match mark {
        Mark::Ok(s) => format!("✓ {name}: {s}"),
        Mark::Warn(s) => format!("! {name}: {s}"),
        Mark::Fail { what, fix } => format!("✗ {name}: {what} — fix: {fix}"),
    };
    crate::text::terminal_safe(&text).into_owned()
}

/// What Redis says of its eviction policy and persistence (`INFO`
/// sections), as checks. Pure.
pub fn redis_settings(info: &str) -> Vec<(&'static str, Mark)> {
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(str::trim)
    };
    let policy = match field("maxmemory_policy") {
        Some("noeviction") => Mark::Ok("maxmemory-policy noeviction".into()),
        Some(other) => Mark::fail(
            format!(
                "maxmemory-policy {other}: Redis may evict claims and payments under memory pressure"
            ),
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf)",
        ),
        None => Mark::Warn(
            "maxmemory-policy not reported (a managed Redis?): it must be noeviction".into(),
        ),
    };
    let aof = match field("aof_enabled") {
        Some("1") => Mark::Ok("AOF on".into()),
        Some(_) => Mark::fail(
            "AOF is off: a restart forgets claims, outcomes and payments (a second order, a lost paid)",
            "appendonly yes, appendfsync everysec (OPERATIONS.md, Redis)",
        ),
        None => Mark::Warn(
            "persistence not reported (a managed Redis?): it must keep a durable log".into(),
        ),
    };
    vec![("redis eviction", policy), ("redis persistence", aof)]
}

/// The clock against Redis's (the server's clock decides leases).
pub fn clock(skew: Duration) -> Mark {
    if skew <= Duration::from_secs(2) {
        Mark::Ok(format!("{} ms from Redis's clock", skew.as_millis()))
    } else {
        Mark::fail(
            format!(
                "{} s from Redis's clock: reconciler times and logs drift",
                skew.as_secs()
            ),
            "synchronise the clocks (NTP)",
        )
    }
}

async fn rabbitmq(config: &Config) -> Vec<(&'static str, Mark)> {
    let a = &config.settings.amqp;
    let conn = match amqp::connect_any(a, &amqp::connection_name("check")).await {
        Ok(c) => c,
        Err(e) => {
            return vec![(
                "rabbitmq",
                Mark::fail(
                    format!("cannot connect ({e})"),
                    "check amqp.url / amqp.urls, the user's password and that the broker is reachable",
                ),
            )];
        }
    };
    let mut out = vec![("rabbitmq", Mark::Ok("connected".into()))];
    // Declaring what exists, with the same arguments, changes nothing; it
    // needs the configure permission the worker needs at every start.
    out.push((
        "rabbitmq topology",
        match amqp::declare(&conn, a).await {
            Ok(()) => Mark::Ok(format!(
                "{} → {} (DLQ {}) and {} declare as the worker declares them",
                a.intent_exchange, a.intent_queue, a.dead_letter_queue, a.result_exchange
            )),
            Err(e) if e.is_mismatch() => Mark::fail(
                e.to_string(),
                "delete the object or make the amqp.* settings match it",
            ),
            Err(e) => Mark::fail(
                e.to_string(),
                "give the worker's user configure, write and read on its objects (OPERATIONS.md, permissions)",
            ),
        },
    ));
    // The declare's channels are still closing: the connection goes with
    // the process (closing it now only makes the client log their state).
    drop(conn);
    out
}

async fn redis(config: &Config) -> Vec<(&'static str, Mark)> {
    let s = &config.settings.redis;
    let conn = match claim::connect(s) {
        Ok(c) => c,
        Err(e) => return vec![("redis", Mark::fail(e.to_string(), "check redis.url"))],
    };
    let claims = ClaimStore::new(conn.clone(), s);
    if let Err(e) = claims.ping().await {
        return vec![(
            "redis",
            Mark::fail(
                format!("no answer ({e})"),
                "check redis.url / redis.urls, its password and that Redis is reachable",
            ),
        )];
    }
    let mut out = vec![("redis", Mark::Ok("answers".into()))];
    let mut c = conn.clone();
    let info: Result<String, _> = redis::cmd("INFO")
        .arg("memory")
        .arg("persistence")
        .query_async(&mut c)
        .await;
    match info {
        Ok(info) => out.extend(redis_settings(&info)),
        Err(e) => out.push((
            "redis settings",
            Mark::Warn(format!(
                "INFO refused ({e}): check noeviction and AOF by hand"
            )),
        )),
    }
    if let RedisConn::Cluster(_) = conn {
        let state: Result<String, _> = redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await;
        out.push((
            "redis cluster",
            match state {
                Ok(i) if i.contains("cluster_state:ok") => Mark::Ok("cluster_state ok".into()),
                Ok(_) => Mark::fail(
                    "cluster_state is not ok",
                    "redis-cli --cluster check <node>",
                ),
                Err(e) => Mark::fail(
                    format!("CLUSTER INFO failed ({e})"),
                    "check redis.cluster and the seeds",
                ),
            },
        ));
    }
    let before = std::time::SystemTime::now();
    let time: Result<(String, String), _> = redis::cmd("TIME").query_async(&mut c).await;
    if let Ok((secs, micros)) = time
        && let (Ok(s), Ok(us)) = (secs.parse::<u64>(), micros.parse::<u64>())
    {
        let theirs = Duration::from_secs(s) + Duration::from_micros(us);
        let ours = before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let skew = theirs.abs_diff(ours);
        out.push(("clock", clock(skew)));
    }
    out
}

async fn gateway(config: &Config) -> Vec<(&'static str, Mark)> {
    let g = &config.settings.gateway;
    let Ok(url) = reqwest::Url::parse(&g.url) else {
        return vec![(
            "gateway",
            Mark::fail("gateway.url does not parse", "fix gateway.url"),
        )];
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let mut out = Vec::new();
    let resolved = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut a| a.next().is_some());
    match resolved {
        Ok(true) => {
            out.push(("gateway dns", Mark::Ok(format!("{host} resolves"))));
        }
        Ok(false) | Err(_) => {
            out.push((
                "gateway dns",
                Mark::fail(
                    format!("{host} does not resolve"),
                    "check gateway.url and the pod's DNS",
                ),
            ));
            return out;
        }
    }
    // Any HTTP answer shows the connection (and TLS) works; nothing signed
    // is sent.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(g.connect_timeout_ms.max(1000) * 2))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let answered = match client {
        Ok(c) => c.get(url.clone()).send().await.map(|r| r.status().as_u16()),
        Err(e) => Err(e),
    };
    let scheme = url.scheme();
    out.push((
        "gateway",
        match answered {
            Ok(status) if scheme == "https" => Mark::Ok(format!("TLS handshake ok, HTTP {status}")),
            Ok(status) if config.settings.gateway.insecure_endpoints().is_empty() => {
                Mark::Ok(format!("reachable over http on this host, HTTP {status}"))
            }
            Ok(status) => Mark::Warn(format!(
                "reachable, HTTP {status}, but over plain http off this host (h5pay_insecure_gateway 1): prefer https"
            )),
            Err(e) => Mark::fail(
                format!("no answer ({e})"),
                "check gateway.url, the egress network policy and the gateway's certificate",
            ),
        },
    ));
    out
}

/// Runs every check; returns whether all passed (no ✗).
pub async fn run(config: &Config, out: &mut (dyn Write + Send)) -> std::io::Result<bool> {
    let mut marks: Vec<(&'static str, Mark)> = vec![
        ("config", Mark::Ok("valid".into())),
        (
            "institutions",
            Mark::Ok(format!(
                "{} with keys (default {})",
                config.institutions.len(),
                config.institutions.default_inst_no()
            )),
        ),
    ];
    let (r, d, g) = tokio::join!(rabbitmq(config), redis(config), gateway(config));
    marks.extend(r);
    marks.extend(d);
    marks.extend(g);
    let mut all = true;
    for (name, mark) in &marks {
        all &= !matches!(mark, Mark::Fail { .. });
        writeln!(out, "{}", line(name, mark))?;
    }
    writeln!(
        out,
        "{}",
        if all {
            "ready to run"
        } else {
            "not ready: fix each ✗ above"
        }
    )?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_must_not_evict_and_must_keep_a_log() {
        let good = "# Memory\r\nmaxmemory_policy:noeviction\r\n# Persistence\r\naof_enabled:1\r\n";
        assert!(
            redis_settings(good)
                .iter()
                .all(|(_, m)| matches!(m, Mark::Ok(_)))
        );
        let bad = "maxmemory_policy:allkeys-lru\r\naof_enabled:0\r\n";
        assert!(
            redis_settings(bad)
                .iter()
                .all(|(_, m)| matches!(m, Mark::Fail { .. }))
        );
        assert!(
            redis_settings("")
                .iter()
                .all(|(_, m)| matches!(m, Mark::Warn(_)))
        );
    }

    #[test]
    fn lines_say_what_is_wrong_and_how_to_fix_it() {
        assert_eq!(
            line("redis", &Mark::Ok("answers".into())),
            "✓ redis: answers"
        );
        assert_eq!(
            line("clock", &clock(Duration::from_secs(5))),
            "✗ clock: 5 s from Redis's clock: reconciler times and logs drift — fix: synchronise the clocks (NTP)"
        );
        assert!(matches!(clock(Duration::from_millis(300)), Mark::Ok(_)));
        assert!(!line("x", &Mark::Warn("\u{1b}[2J".into())).contains('\u{1b}'));
    }
}
