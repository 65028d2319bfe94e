//! `h5pay-worker inspect`: what the worker knows of one payment — the
//! stored outcome, the payment state, `trade_no`, notifies seen — never a
//! key or a full `code_url` (only its host).

use std::io::Write;

use serde_json::{Value, json};

use crate::claim::{self, ClaimStore};
use crate::config::Config;
use crate::intent::Identity;
use crate::payment::{PaymentStore, View};
use crate::pipeline::url_host;
use crate::reconcile::ChecksStore;
use crate::reconcile::store::CheckFacts;
use crate::result_event::ResultEvent;

/// `h5pay-worker inspect`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// The payment's merchant number.
    #[arg(long)]
    pub mch_no: String,
    /// The payment's pay_trace_no.
    #[arg(long)]
    pub pay_trace_no: String,
    /// Default: the configured default institution.
    #[arg(long)]
    pub inst_no: Option<String>,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("redis.url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: {0}")]
    Claim(#[from] crate::claim::StoreError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// What the reconciler knows of a payment.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// The next check, in ms since the epoch.
    pub next_ms: Option<i64>,
    pub facts: CheckFacts,
}

/// What `inspect` shows, as JSON.
pub fn describe(
    id: &Identity,
    stage: Option<&str>,
    confirmed: bool,
    view: &View,
    outcome: Option<&ResultEvent>,
    checks: &Checks,
) -> Value {
    let outcome = outcome.map(|o| {
        json!({
            "status": o.status.as_str(),
            "error_kind": o.error_kind(),
            "error": o.error.as_ref().map(|e| e.message.clone()),
            "attempts": o.attempts,
            "occurred_at": o.occurred_at,
            "event_id": o.event_id,
            "event_confirmed": confirmed,
            "code_url_host": o.code_url.as_deref().and_then(url_host),
        })
    });
    let payment = view.known.state().map(|s| {
        json!({
            "state": s.as_str(),
            "event_unconfirmed": view.unconfirmed.as_ref().map(|(id, _)| id),
        })
    });
    json!({
        "inst_no": id.inst_no, "mch_no": id.mch_no, "pay_trace_no": id.pay_trace_no,
        "claim": stage,
        "pay_time": view.pay_time,
        "outcome": outcome,
        "payment": payment,
        "trade_no": view.trade_no,
        "notifies_seen": view.notifies,
        "next_check": checks.next_ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "last_check": checks.facts.last_check.as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok()),
        "close_trace_no": checks.facts.close_trace_no,
        "closed_at_gateway": checks.facts.closed,
    })
}

/// One labelled line of text output; the value may hold outside text (a
/// gateway's message, an intent's values), so it is printed terminal-safe.
fn line(out: &mut dyn Write, label: &str, value: impl std::fmt::Display) -> std::io::Result<()> {
    crate::text::print_line(out, &format!("{label:<15}{value}"))
}

pub async fn run(
    config: &Config,
    args: &InspectArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), InspectError> {
    let s = &config.settings;
    let claims = ClaimStore::new(claim::connect(&s.redis)?, &s.redis);
    let id = Identity {
        inst_no: args
            .inst_no
            .clone()
            .unwrap_or_else(|| config.institutions.default_inst_no().to_owned()),
        mch_no: args.mch_no.clone(),
        pay_trace_no: args.pay_trace_no.clone(),
    };
    let view = PaymentStore::new(claims.clone()).view(&id).await?;
    let mut conn = claims.conn();
    let (stage, confirmed): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(claims.key(&id))
        .arg("st")
        .arg("cf")
        .query_async(&mut conn)
        .await
        .map_err(crate::claim::StoreError::from)?;
    let stage = stage
        .as_deref()
        .map(|s| if s == "d" { "decided" } else { "claimed" });
    let confirmed = confirmed.as_deref() == Some("1");
    let store = ChecksStore::new(
        claims.clone(),
        config.settings.reconcile.schedule_shards as usize,
    );
    let checks = Checks {
        next_ms: store.next(&id).await?,
        facts: store.facts(&id).await?,
    };
    // The whole stored outcome, read once for both outputs (the view
    // holds only its head).
    let outcome = view.outcome_event();
    let v = describe(&id, stage, confirmed, &view, outcome.as_ref(), &checks);
    if args.json {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    line(
        out,
        "identity",
        format!("{} / {} / {}", id.inst_no, id.mch_no, id.pay_trace_no),
    )?;
    let Some(stage) = stage else {
        line(
            out,
            "known",
            "no: never seen, or older than redis.retention_secs",
        )?;
        return Ok(());
    };
    line(out, "claim", stage)?;
    line(out, "pay_time", view.pay_time.as_deref().unwrap_or("-"))?;
    outcome_lines(out, &view, outcome.as_ref(), confirmed, &v)?;
    lifecycle_lines(out, &view, &checks, &v)?;
    Ok(())
}

/// The outcome stored for the intent, and the payment's state.
fn outcome_lines(
    out: &mut dyn Write,
    view: &View,
    outcome: Option<&ResultEvent>,
    confirmed: bool,
    v: &Value,
) -> std::io::Result<()> {
    let text = |k: &str| v["outcome"][k].as_str().map(str::to_owned);
    match outcome {
        Some(o) => {
            let mut desc = o.status.as_str().to_owned();
            if let Some(kind) = o.error_kind() {
                desc.push('/');
                desc.push_str(kind);
            }
            line(
                out,
                "outcome",
                format!(
                    "{desc}, {} attempt(s), at {}, event {} ({})",
                    o.attempts,
                    o.occurred_at,
                    o.event_id,
                    if confirmed {
                        "confirmed"
                    } else {
                        "not confirmed yet"
                    }
                ),
            )?;
            if let Some(host) = text("code_url_host") {
                line(out, "code_url", format!("on {host}"))?;
            }
            if let Some(e) = text("error") {
                line(out, "error", e)?;
            }
        }
        None => line(
            out,
            "outcome",
            "not stored yet (a call in progress, or a crash before the store)",
        )?,
    }
    match view.known.state() {
        Some(state) => line(
            out,
            "payment",
            match &view.unconfirmed {
                Some((id, _)) => format!("{} (its event {id} not confirmed yet)", state.as_str()),
                None => state.as_str().to_owned(),
            },
        )?,
        None => line(out, "payment", "not followed")?,
    }
    Ok(())
}

/// The payment's lifecycle: trade_no, notifies, the close, the checks.
fn lifecycle_lines(
    out: &mut dyn Write,
    view: &View,
    checks: &Checks,
    v: &Value,
) -> std::io::Result<()> {
    line(out, "trade_no", view.trade_no.as_deref().unwrap_or("-"))?;
    line(out, "notifies seen", view.notifies)?;
    if let Some(t) = checks.facts.close_trace_no.as_deref() {
        let said = if checks.facts.closed {
            "closed"
        } else {
            "not closed yet"
        };
        line(out, "close", format!("close_trace_no {t}: {said}"))?;
    }
    let last = &v["last_check"];
    if last.is_object() {
        line(
            out,
            "last check",
            format!(
                "{} at {}: {}{}",
                last["result"].as_str().unwrap_or("?"),
                last["at"].as_str().unwrap_or("?"),
                last["plan"].as_str().unwrap_or("-"),
                last["detail"]
                    .as_str()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        )?;
    }
    line(out, "next check", v["next_check"].as_str().unwrap_or("-"))?;
    if view.known.state() == Some(crate::payment::PaymentState::Unresolved) {
        line(
            out,
            "why",
            "still open after reconcile.max_age_secs: the gateway never said paid, failed or closed \
             (see the last check); reconcile it by hand (OPERATIONS.md)",
        )?;
    }
    Ok(())
}
