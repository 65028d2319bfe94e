//! Placing the orders: the intents published wave by wave, and each one's
//! result event (or its dead-lettering) judged into a row of the table.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicGetOptions;
use serde_json::Value;

use super::DemoError;
use super::cases::Case;
use super::services::Services;
use super::table::{Row, row_for};
use crate::cli::publish::publish_intent;

/// The first wave: every intent published at once, then their results
/// collected in any order. Fills `first_event_ids` for the replays to
/// match. The bool is false if anything was not as expected.
pub(super) async fn first_wave(
    services: &mut Services,
    ch: &lapin::Channel,
    wave: &[Case],
    first_event_ids: &mut HashMap<String, String>,
) -> Result<(Vec<Row>, bool), DemoError> {
    let mut ok = true;
    let mut expected: HashMap<String, Vec<&Case>> = HashMap::new();
    for c in wave {
        ok &= publish(ch, &services.amqp.intent_exchange, c).await?;
        if c.expect.is_some() {
            expected.entry(c.trace.clone()).or_default().push(c);
        }
    }
    let got = collect_results(&mut services.results, &expected).await;
    let mut rows = Vec::new();
    for c in wave {
        if c.expect.is_none() {
            let dlq = dead_lettered(&services.conn, &services.amqp.dead_letter_queue).await;
            let good = dlq == Some(c.body.clone());
            ok &= good;
            rows.push(Row {
                label: c.label.to_owned(),
                trace: c.trace.clone(),
                result: "dead-lettered".into(),
                extra: String::new(),
                detail: "in the DLQ".into(),
                good,
            });
            continue;
        }
        let ev = got.get(&c.trace);
        if let Some(ev) = ev {
            first_event_ids.insert(
                c.trace.clone(),
                ev["event_id"].as_str().unwrap_or("").to_owned(),
            );
        }
        let row = row_for(c, ev, first_event_ids);
        ok &= row.good;
        rows.push(row);
    }
    Ok((rows, ok))
}

/// The second wave: its intents share an identity, so one at a time, each
/// waiting for its result, and the rows read in order.
pub(super) async fn second_wave(
    services: &mut Services,
    ch: &lapin::Channel,
    wave: &[Case],
    first_event_ids: &HashMap<String, String>,
) -> Result<(Vec<Row>, bool), DemoError> {
    let mut ok = true;
    let mut rows = Vec::new();
    for c in wave {
        ok &= publish(ch, &services.amqp.intent_exchange, c).await?;
        let ev = next_event(&mut services.results, &c.trace).await;
        let row = row_for(c, ev.as_ref(), first_event_ids);
        ok &= row.good;
        rows.push(row);
    }
    Ok((rows, ok))
}

/// Publishes one intent; whether the broker confirmed it.
async fn publish(ch: &lapin::Channel, exchange: &str, c: &Case) -> Result<bool, DemoError> {
    let confirm = publish_intent(ch, exchange, "h5pay.intent.demo", &c.trace, &c.body).await?;
    Ok(matches!(confirm.await?, lapin::Confirmation::Ack(None)))
}

/// The first result event of each expected trace, for up to 30 s.
async fn collect_results(
    results: &mut lapin::Consumer,
    expected: &HashMap<String, Vec<&Case>>,
) -> HashMap<String, Value> {
    let mut got: HashMap<String, Value> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < expected.len() {
        match tokio::time::timeout_at(deadline, results.next()).await {
            Ok(Some(Ok(d))) => {
                let _ = d.acker.ack(Default::default()).await;
                if let Ok(ev) = serde_json::from_slice::<Value>(&d.data) {
                    let trace = ev["pay_trace_no"].as_str().unwrap_or("").to_owned();
                    if expected.contains_key(&trace) {
                        got.entry(trace).or_insert(ev);
                    }
                }
            }
            _ => break,
        }
    }
    got
}

/// The result event of `trace` (others are acked and skipped), for up to
/// 30 s.
async fn next_event(results: &mut lapin::Consumer, trace: &str) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, results.next()).await {
        let _ = d.acker.ack(Default::default()).await;
        if let Ok(ev) = serde_json::from_slice::<Value>(&d.data)
            && ev["pay_trace_no"] == trace
        {
            return Some(ev);
        }
    }
    None
}

/// The first message in the DLQ, if any.
async fn dead_lettered(conn: &lapin::Connection, dlq: &str) -> Option<Vec<u8>> {
    let ch = conn.create_channel().await.ok()?;
    for _ in 0..50 {
        if let Ok(Some(m)) = ch
            .basic_get(dlq.into(), BasicGetOptions { no_ack: true })
            .await
        {
            return Some(m.delivery.data.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
