//! Showing the outcome: one row per intent with its result and its payment
//! events, each judged against the contract, and the gateway's call count.

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value;

use super::cases::Case;
use super::events::shown;

/// Prints the table; false if a payment column is not as expected (each
/// row says for its own result).
pub(super) fn print(
    out: &mut (dyn Write + Send),
    rows: &[Row],
    seen: &HashMap<String, Vec<String>>,
    expected_payments: &HashMap<String, &'static str>,
) -> std::io::Result<bool> {
    let mut ok = true;
    writeln!(
        out,
        "{:<46} {:<28} {:>8} {:<9} {:<26} detail",
        "intent", "result", "attempts", "duplicate", "payment events"
    )?;
    writeln!(out, "{}", "-".repeat(150))?;
    for row in rows {
        // Only the first row of an identity shows its payment.
        let first_of_identity = rows.iter().position(|r| r.trace == row.trace)
            == rows.iter().position(|r| std::ptr::eq(r, row));
        let got = seen.get(&row.trace).cloned().unwrap_or_default();
        let want = expected_payments.get(&row.trace).copied();
        let (payment, payment_good) = if first_of_identity {
            shown(want, &got)
        } else {
            (String::new(), true)
        };
        ok &= payment_good;
        // The detail quotes the events (gateway text among it).
        crate::text::print_line(
            out,
            &format!(
                "{:<46} {:<28} {:<18} {:<26} {}{}",
                row.label,
                row.result,
                row.extra,
                payment,
                row.detail,
                if row.good && payment_good {
                    ""
                } else {
                    "   <-- NOT AS EXPECTED"
                }
            ),
        )?;
    }
    Ok(ok)
}

/// One line of the demo's table.
pub(super) struct Row {
    pub label: String,
    pub trace: String,
    pub result: String,
    pub extra: String,
    pub detail: String,
    pub good: bool,
}

pub(super) fn row_for(c: &Case, ev: Option<&Value>, first_ids: &HashMap<String, String>) -> Row {
    let Some(ev) = ev else {
        return Row {
            label: c.label.to_owned(),
            trace: c.trace.clone(),
            result: "NO RESULT EVENT".into(),
            extra: String::new(),
            detail: String::new(),
            good: false,
        };
    };
    let outcome = outcome_of(ev);
    let mut good = Some(outcome.as_str()) == c.expect && (c.check)(ev);
    if ev["duplicate"] == true {
        // A replay carries the original event's id.
        good &= first_ids.get(&c.trace).map(String::as_str) == ev["event_id"].as_str();
    }
    let extra = format!(
        "{:>8} {:<9}",
        ev["attempts"].to_string(),
        ev["duplicate"].to_string()
    );
    Row {
        label: c.label.to_owned(),
        trace: c.trace.clone(),
        result: outcome,
        extra,
        detail: detail_of(ev),
        good,
    }
}

fn outcome_of(ev: &Value) -> String {
    match ev["status"].as_str() {
        Some("failed") => format!("failed/{}", ev["error"]["kind"].as_str().unwrap_or("?")),
        Some(s) => s.to_owned(),
        None => "?".into(),
    }
}

fn detail_of(ev: &Value) -> String {
    if let Some(u) = ev["code_url"].as_str() {
        return format!(
            "code_url on {}",
            crate::pipeline::url_host(u).unwrap_or("?")
        );
    }
    if ev["jsapi"].is_object() {
        return format!(
            "jsapi package={}",
            ev["jsapi"]["package"].as_str().unwrap_or("?")
        );
    }
    if let Some(m) = ev["error"]["message"].as_str() {
        let short: String = m.chars().take(70).collect();
        return if m.chars().count() > 70 {
            format!("{short}...")
        } else {
            short
        };
    }
    String::new()
}

pub(super) async fn sandbox_calls(addr: &std::net::SocketAddr) -> String {
    let url = format!("http://{addr}/sandbox/stats");
    let stats = match reqwest::get(&url).await {
        Ok(r) => r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
        Err(_) => None,
    };
    match stats {
        Some(v) => format!(
            "{} in all, for {} identities",
            v["total_calls"], v["identity_count"]
        ),
        None => "unavailable".into(),
    }
}
