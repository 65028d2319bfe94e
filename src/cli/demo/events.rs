//! The payment events the notifies and the reconciler's checks turn into,
//! and how they compare with what the contract says.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

/// The expected payment events (`a > b`), one by one.
fn steps(want: &str) -> Vec<&str> {
    want.split('>').map(str::trim).collect()
}

/// The payment column, and whether it is what the contract says: the
/// expected events first (more may follow, shown as `…`), or none at all.
pub(super) fn shown(want: Option<&str>, got: &[String]) -> (String, bool) {
    match want {
        None => (
            if got.is_empty() {
                "-".into()
            } else {
                got.join(" > ")
            },
            got.is_empty(),
        ),
        Some(w) => {
            let want = steps(w);
            let good = got.len() >= want.len() && got.iter().zip(&want).all(|(g, w)| g == w);
            let mut text = got
                .iter()
                .take(want.len())
                .cloned()
                .collect::<Vec<_>>()
                .join(" > ");
            if got.len() > want.len() {
                text.push_str(" …");
            }
            (
                if text.is_empty() {
                    "(none)".into()
                } else {
                    text
                },
                good,
            )
        }
    }
}

/// Every trace's payment events in order (up to 40 s, until each expected
/// trace has had as many as expected), as `state` or `anomaly/<kind>`.
pub(super) async fn payment_events(
    payments: &mut lapin::Consumer,
    expected: &HashMap<String, &'static str>,
) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let done = |seen: &HashMap<String, Vec<String>>| {
        expected
            .iter()
            .all(|(t, w)| seen.get(t).map_or(0, Vec::len) >= steps(w).len())
    };
    while !done(&seen) {
        let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, payments.next()).await else {
            break;
        };
        let _ = d.acker.ack(Default::default()).await;
        let Ok(ev) = serde_json::from_slice::<Value>(&d.data) else {
            continue;
        };
        // An event published again (at least once) is shown once.
        if !ids.insert(ev["event_id"].as_str().unwrap_or("").to_owned()) {
            continue;
        }
        let trace = ev["pay_trace_no"].as_str().unwrap_or("").to_owned();
        let state = match ev["anomaly"]["kind"].as_str() {
            Some(kind) => format!("anomaly/{kind}"),
            None => ev["state"].as_str().unwrap_or("?").to_owned(),
        };
        seen.entry(trace).or_default().push(state);
    }
    seen
}
