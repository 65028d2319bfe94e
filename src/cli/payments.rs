//! `h5pay-worker payments --state unresolved|anomaly|late`: the payments
//! that need a person — what a finance team reconciles at the end of a day —
//! from the small index each of those states keeps
//! ([`Attention`](crate::payment::store::Attention)), never a scan of the
//! keyspace: amount, merchant, times and the last evidence, as a table or
//! CSV.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::claim::{self, ClaimStore, StoreError};
use crate::config::Config;
use crate::payment::PaymentStore;
use crate::payment::store::Attention;
use crate::text::terminal_safe;

#[derive(Debug, Clone, clap::Args)]
pub struct PaymentsArgs {
    /// Which payments: given up (`unresolved`), with an anomaly, or paid
    /// late (after failed, closed or unresolved).
    #[arg(long, value_enum)]
    pub state: Attention,
    /// Only those noted since then: RFC 3339 (`2026-12-01T00:00:00Z`) or a
    /// duration back from now (`24h`, `7d`, `90m`). Default: all kept.
    #[arg(long)]
    pub since: Option<String>,
    /// Comma-separated values with a header line, for a spreadsheet.
    #[arg(long)]
    pub csv: bool,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("--since {0:?}: an RFC 3339 time or a duration like 24h, 7d, 90m")]
    Since(String),
    #[error("redis.url: {0}")]
    Connect(#[from] redis::RedisError),
    #[error("redis: {0}")]
    Redis(#[from] StoreError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// `--since` as a time.
pub fn since(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok().filter(|n| *n >= 0)?;
    let d = match unit {
        "m" => chrono::Duration::try_minutes(n)?,
        "h" => chrono::Duration::try_hours(n)?,
        "d" => chrono::Duration::try_days(n)?,
        _ => return None,
    };
    now.checked_sub_signed(d)
}

/// One payment in the listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub noted_at: String,
    pub inst_no: String,
    pub mch_no: String,
    pub pay_trace_no: String,
    /// Its state now (`unknown` for a payment this deployment never placed).
    pub state: String,
    pub total_amount: Option<u64>,
    pub pay_time: Option<String>,
    /// When the order was placed (the outcome's time).
    pub placed_at: Option<String>,
    pub trade_no: Option<String>,
    /// The last evidence: the anomaly, the last check, or the late payment.
    pub evidence: String,
}

const HEADER: [&str; 10] = [
    "noted_at",
    "state",
    "inst_no",
    "mch_no",
    "pay_trace_no",
    "total_amount",
    "pay_time",
    "placed_at",
    "trade_no",
    "evidence",
];

impl Row {
    fn fields(&self) -> [String; 10] {
        [
            self.noted_at.clone(),
            self.state.clone(),
            self.inst_no.clone(),
            self.mch_no.clone(),
            self.pay_trace_no.clone(),
            self.total_amount.map(|a| a.to_string()).unwrap_or_default(),
            self.pay_time.clone().unwrap_or_default(),
            self.placed_at.clone().unwrap_or_default(),
            self.trade_no.clone().unwrap_or_default(),
            self.evidence.clone(),
        ]
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line
/// break; a leading `=`, `+`, `-` or `@` is prefixed with `'` so that a
/// spreadsheet never runs outside text as a formula.
pub fn csv_field(s: &str) -> String {
    let s = terminal_safe(s);
    let guarded = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.into_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// The last evidence of a payment, from what its hash holds.
fn evidence(
    kind: Attention,
    last_anomaly: Option<&str>,
    last_check: Option<&str>,
    last_event: Option<&str>,
) -> String {
    let parse = |s: Option<&str>| s.and_then(|s| serde_json::from_str::<Value>(s).ok());
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
    match kind {
        Attention::Anomaly => parse(last_anomaly)
            .map(|a| {
                format!(
                    "{} ({}): {}",
                    text(&a, "kind"),
                    text(&a, "source"),
                    text(&a, "message")
                )
            })
            .unwrap_or_else(|| "anomaly about a payment this deployment never placed".to_owned()),
        Attention::Late => parse(last_event)
            .map(|e| {
                format!(
                    "paid late, was {} (source {})",
                    text(&e, "previous"),
                    text(&e, "source")
                )
            })
            .unwrap_or_default(),
        Attention::Unresolved => parse(last_check)
            .map(|c| format!("last check {}: {}", text(&c, "at"), text(&c, "detail")))
            .unwrap_or_default(),
    }
}

/// The payments noted in `kind`'s index since `from`, newest first, each
/// read from its hash (one HMGET each). Entries whose payment is no longer
/// in that state (an unresolved payment paid since, a transition taken
/// back) are left out, except anomalies, which stay facts.
pub async fn list(
    claims: &ClaimStore,
    kind: Attention,
    from: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let payments = PaymentStore::new(claims.clone());
    let mut conn = claims.conn();
    let min = from.map_or("-inf".to_owned(), |t| t.timestamp_millis().to_string());
    let noted: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(payments.attention_key(kind))
        .arg("+inf")
        .arg(min)
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut conn)
        .await?;
    let mut rows = Vec::new();
    for (member, score) in noted {
        let Some(id) = crate::reconcile::store::identity(&member) else {
            continue;
        };
        let view = payments.view(&id).await?;
        let f: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(claims.key(&id))
            .arg(&["la", "lc", "pe"])
            .query_async(&mut conn)
            .await?;
        let get = |i: usize| f.get(i).cloned().flatten();
        let state = view.known.state();
        let still = match kind {
            Attention::Anomaly => true,
            Attention::Unresolved => state == Some(crate::payment::PaymentState::Unresolved),
            Attention::Late => state == Some(crate::payment::PaymentState::Paid),
        };
        if !still {
            continue;
        }
        rows.push(Row {
            noted_at: DateTime::from_timestamp_millis(score as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            state: state.map_or("unknown", |s| s.as_str()).to_owned(),
            total_amount: view.total_amount(),
            pay_time: view.pay_time.clone(),
            placed_at: view.outcome.as_ref().map(|o| o.occurred_at.clone()),
            trade_no: view.trade_no.clone(),
            evidence: evidence(
                kind,
                get(0).as_deref(),
                get(1).as_deref(),
                get(2).as_deref(),
            ),
            inst_no: id.inst_no,
            mch_no: id.mch_no,
            pay_trace_no: id.pay_trace_no,
        });
    }
    Ok(rows)
}

pub async fn run(
    config: &Config,
    args: &PaymentsArgs,
    out: &mut (dyn Write + Send),
) -> Result<usize, PaymentsError> {
    let from = match &args.since {
        Some(s) => Some(since(s, Utc::now()).ok_or_else(|| PaymentsError::Since(s.clone()))?),
        None => None,
    };
    let s = &config.settings;
    let claims = ClaimStore::new(claim::connect(&s.redis)?, &s.redis);
    let rows = list(&claims, args.state, from, args.limit).await?;
    if args.csv {
        writeln!(out, "{}", HEADER.join(","))?;
        for r in &rows {
            let line: Vec<String> = r.fields().iter().map(|f| csv_field(f)).collect();
            writeln!(out, "{}", line.join(","))?;
        }
    } else {
        writeln!(
            out,
            "{:<20} {:<10} {:<16} {:<24} {:>9} {:<14} evidence",
            "noted_at", "state", "mch_no", "pay_trace_no", "amount", "pay_time"
        )?;
        for r in &rows {
            let line = format!(
                "{:<20} {:<10} {:<16} {:<24} {:>9} {:<14} {}",
                r.noted_at,
                r.state,
                r.mch_no,
                r.pay_trace_no,
                r.total_amount.map(|a| a.to_string()).unwrap_or_default(),
                r.pay_time.as_deref().unwrap_or("-"),
                r.evidence
            );
            crate::text::print_line(out, &line)?;
        }
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let at = |s: &str| since(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("24h").as_deref(), Some("2026-12-05T12:00:00+00:00"));
        assert_eq!(at("7d").as_deref(), Some("2026-11-29T12:00:00+00:00"));
        assert_eq!(at("90m").as_deref(), Some("2026-12-06T10:30:00+00:00"));
        assert_eq!(
            at("2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-01T00:00:00+00:00")
        );
        for bad in ["", "h", "-1h", "5y", "yesterday", "99999999999999999d"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1"), "'-1");
        assert!(!csv_field("\u{1b}[31m").contains('\u{1b}'));
    }
}
