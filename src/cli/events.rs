//! `h5pay-worker events`: result and payment events as they are published,
//! from a queue of its own (server-named, exclusive: the broker deletes it
//! when the command ends) bound to the result exchange, printed as a table
//! or as JSON lines — what `stripe listen` is for webhooks. Only events
//! published while it runs are seen; nobody else's queue is touched.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::amqp;
use crate::config::AmqpSettings;
use crate::text::terminal_safe;

/// The states of payment events and the statuses of result events.
const PAYMENT_STATES: [&str; 5] = ["paid", "failed", "closed", "unresolved", "anomaly"];
const RESULT_STATUSES: [&str; 3] = ["ready", "in_process", "failed"];

#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Keep printing until interrupted (Ctrl-C); otherwise stop after
    /// --count events or --wait-secs without one.
    #[arg(long)]
    pub follow: bool,
    /// Only events of this state (payment: paid, failed, closed,
    /// unresolved, anomaly) or status (result: ready, in_process, failed);
    /// repeat it for several.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Only events of this merchant.
    #[arg(long)]
    pub mch_no: Option<String>,
    /// One JSON object per line (the event as published) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Without --follow: stop after this many events.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Without --follow: stop after this many seconds without an event.
    #[arg(long, default_value_t = 10)]
    pub wait_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("--state {0:?} is not a state or status (payment: {PAYMENT:?}; result: {RESULT:?})", PAYMENT = PAYMENT_STATES, RESULT = RESULT_STATUSES)]
    UnknownState(String),
    #[error("--mch-no {0:?} is not a merchant number (letters, digits, - and _, at most 64)")]
    BadMchNo(String),
    #[error(transparent)]
    Connect(#[from] amqp::ConnectFailed),
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The routing keys to bind: `h5pay.<kind>.<state>.<mch_no>` with `*` for
/// what is not narrowed.
pub fn bindings(states: &[String], mch_no: Option<&str>) -> Result<Vec<String>, EventsError> {
    let mch = match mch_no {
        Some(m) if crate::intent::is_identifier(m, 64) => m,
        Some(m) => return Err(EventsError::BadMchNo(m.to_owned())),
        None => "*",
    };
    if states.is_empty() {
        return Ok(vec![
            format!("h5pay.result.*.{mch}"),
            format!("h5pay.payment.*.{mch}"),
        ]);
    }
    let mut keys = Vec::new();
    for s in states {
        let mut known = false;
        if RESULT_STATUSES.contains(&s.as_str()) {
            keys.push(format!("h5pay.result.{s}.{mch}"));
            known = true;
        }
        if PAYMENT_STATES.contains(&s.as_str()) {
            keys.push(format!("h5pay.payment.{s}.{mch}"));
            known = true;
        }
        if !known {
            return Err(EventsError::UnknownState(s.clone()));
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// One event as a table row: when, kind, state, merchant, payment, amount,
/// and what matters most about it (the error, the anomaly, the order).
pub fn row(event: &Value) -> String {
    let text = |k: &str| event[k].as_str().unwrap_or("").to_owned();
    let schema = text("schema");
    let (kind, state) = if schema.starts_with("h5pay.payment") {
        ("payment", text("state"))
    } else {
        ("result", text("status"))
    };
    let amount = event["total_amount"]
        .as_u64()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let detail = if let Some(kind) = event["error"]["kind"].as_str() {
        format!(
            "{kind}: {}",
            event["error"]["message"].as_str().unwrap_or("")
        )
    } else if let Some(kind) = event["anomaly"]["kind"].as_str() {
        format!(
            "{kind}: {}",
            event["anomaly"]["message"].as_str().unwrap_or("")
        )
    } else if let Some(t) = event["trade_no"].as_str() {
        let late = if event["late"] == true { " (late)" } else { "" };
        format!("trade_no {t}{late}")
    } else {
        String::new()
    };
    let line = format!(
        "{:<24} {:<7} {:<10} {:<16} {:<24} {:>9}  {}",
        text("occurred_at"),
        kind,
        state,
        text("mch_no"),
        text("pay_trace_no"),
        amount,
        detail
    );
    terminal_safe(&line).into_owned()
}

/// Prints events until stopped; returns how many were printed.
pub async fn run(
    settings: &AmqpSettings,
    args: &EventsArgs,
    out: &mut (dyn Write + Send),
) -> Result<usize, EventsError> {
    let keys = bindings(&args.states, args.mch_no.as_deref())?;
    let conn = amqp::connect_any(settings, &amqp::connection_name("events")).await?;
    let bound: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut consumer =
        crate::cli::publish::event_listener(&conn, &settings.result_exchange, &bound).await?;
    if !args.json {
        writeln!(
            out,
            "{:<24} {:<7} {:<10} {:<16} {:<24} {:>9}  detail",
            "occurred_at", "kind", "state", "mch_no", "pay_trace_no", "amount"
        )?;
        out.flush()?;
    }
    let idle = Duration::from_secs(args.wait_secs);
    let mut printed = 0usize;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if !args.follow && printed >= args.count {
            break;
        }
        let next = tokio::select! {
            _ = &mut interrupted => break,
            d = consumer.next() => d,
            _ = tokio::time::sleep(idle), if !args.follow => break,
        };
        let Some(delivery) = next else {
            break;
        };
        let delivery = delivery?;
        delivery.acker.ack(Default::default()).await?;
        let line = match serde_json::from_slice::<Value>(&delivery.data) {
            // serde_json escapes what JSON requires (C0).
            Ok(v) if args.json => v.to_string(),
            Ok(v) => row(&v),
            Err(_) => terminal_safe(&format!(
                "(not JSON, routing key {}): {}",
                delivery.routing_key,
                String::from_utf8_lossy(&delivery.data)
            ))
            .into_owned(),
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    amqp::close(&conn, &[], "events done").await;
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bindings_narrow_by_state_and_merchant() {
        assert_eq!(
            bindings(&[], None).ok(),
            Some(vec![
                "h5pay.result.*.*".to_owned(),
                "h5pay.payment.*.*".to_owned()
            ])
        );
        assert_eq!(
            bindings(&["failed".into(), "paid".into()], Some("M1")).ok(),
            Some(vec![
                "h5pay.payment.failed.M1".to_owned(),
                "h5pay.payment.paid.M1".to_owned(),
                "h5pay.result.failed.M1".to_owned(),
            ])
        );
        assert!(matches!(
            bindings(&["payed".into()], None),
            Err(EventsError::UnknownState(_))
        ));
        for bad in ["#", "M.1", "*", ""] {
            assert!(
                matches!(bindings(&[], Some(bad)), Err(EventsError::BadMchNo(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rows_say_what_matters_and_carry_no_control_characters() {
        let paid = json!({"schema": "h5pay.payment.v1", "state": "paid", "mch_no": "M1",
            "pay_trace_no": "T1", "total_amount": 100, "trade_no": "TN", "late": true,
            "occurred_at": "2026-12-06T10:00:00.000Z"});
        let r = row(&paid);
        assert!(
            r.contains("payment") && r.contains("paid") && r.contains("trade_no TN (late)"),
            "{r}"
        );
        let failed = json!({"schema": "h5pay.result.v1", "status": "failed", "mch_no": "M1",
            "pay_trace_no": "T2", "error": {"kind": "gateway_rejected", "message": "\u{1b}[31mno"}});
        let r = row(&failed);
        assert!(
            r.contains("result") && r.contains("gateway_rejected"),
            "{r}"
        );
        assert!(!r.contains('\u{1b}'), "{r}");
    }
}
