//! `h5pay-worker publish`: publishes intents (publisher-confirmed) to the
//! intent exchange, and with `--wait` prints their result events as they
//! arrive, one JSON object per line on stdout.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};
use serde_json::{Map, Value, json};

use crate::amqp;
use crate::config::AmqpSettings;

/// Outstanding confirms at most while publishing.
const CONFIRM_WINDOW: usize = 1024;

/// `h5pay-worker publish`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// The institution (default: the configured default institution).
    #[arg(long)]
    pub inst_no: Option<String>,
    /// The merchant number.
    #[arg(long)]
    pub mch_no: String,
    /// 300/400/600 or alipay/wechat/unionpay.
    #[arg(long)]
    pub pay_type: String,
    /// In fen. Sent as a JSON integer when it is one, else verbatim as a
    /// string (so invalid amounts can be tried on purpose).
    #[arg(long)]
    pub amount: String,
    /// How many intents to publish (each its own pay_trace_no).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Wait for the result events and print them, one JSON per line.
    #[arg(long)]
    pub wait: bool,
    /// The pay_trace_no, or with --count > 1 its prefix (`<prefix>-<i>`).
    #[arg(long)]
    pub pay_trace_no: Option<String>,
    /// The payer's open_id (WeChat JSAPI, Alipay).
    #[arg(long)]
    pub open_id: Option<String>,
    /// Where the gateway notifies the payment (default: notify.public_url).
    #[arg(long)]
    pub notify_url: Option<String>,
    /// yyyyMMddHHmmss, the gateway's time zone (default: now, fixed by the worker).
    #[arg(long)]
    pub pay_time: Option<String>,
    /// A JSON object echoed in the result.
    #[arg(long, value_parser = json_value)]
    pub metadata: Option<Value>,
    /// How long --wait waits for all results, in seconds.
    #[arg(long = "timeout-secs", default_value = "60", value_parser = seconds)]
    pub timeout: Duration,
}

fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("not a number of seconds: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum PublishCommandError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error(transparent)]
    Topology(#[from] amqp::TopologyError),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not confirm intent {0}")]
    NotConfirmed(String),
    #[error("waited {waited:?}: {received} of {expected} result events arrived")]
    Timeout {
        waited: Duration,
        received: usize,
        expected: usize,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// The intents' bodies, with their pay_trace_nos.
pub fn build_intents(args: &PublishArgs) -> Vec<(String, Vec<u8>)> {
    let base = args.pay_trace_no.clone().unwrap_or_else(|| {
        format!(
            "cli{}{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            &crate::claim::new_token()[..6]
        )
    });
    (0..args.count)
        .map(|i| {
            let trace = if args.count == 1 {
                base.clone()
            } else {
                format!("{base}-{i}")
            };
            let mut m = Map::new();
            m.insert("pay_trace_no".into(), json!(trace));
            m.insert("mch_no".into(), json!(args.mch_no));
            m.insert("pay_type".into(), json!(args.pay_type));
            let amount = args
                .amount
                .parse::<u64>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(args.amount));
            m.insert("total_amount".into(), amount);
            for (k, v) in [
                ("inst_no", &args.inst_no),
                ("open_id", &args.open_id),
                ("notify_url", &args.notify_url),
                ("pay_time", &args.pay_time),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if let Some(md) = &args.metadata {
                m.insert("metadata".into(), md.clone());
            }
            (
                trace,
                serde_json::to_vec(&Value::Object(m)).unwrap_or_default(),
            )
        })
        .collect()
}

/// A confirm-mode channel for publishing intents.
pub async fn intent_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Publishes one intent (persistent, with message_id and timestamp) and
/// returns the confirm future.
pub async fn publish_intent(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    message_id: &str,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(ShortString::try_new(message_id).unwrap_or_else(|_| "intent".into()))
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
    ch.basic_publish(
        ShortString::from(exchange),
        ShortString::try_new(routing_key).unwrap_or_else(|_| "h5pay.intent".into()),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        body,
        props,
    )
    .await
}

/// An exclusive, server-named queue bound to every result event.
pub async fn result_listener(
    conn: &Connection,
    result_exchange: &str,
) -> Result<Consumer, lapin::Error> {
    event_listener(conn, result_exchange, &["h5pay.result.#"]).await
}

/// A consumer of the events on `result_exchange` matching any of
/// `bindings` (`h5pay.result.#`, `h5pay.payment.#`), on a queue of its own
/// (exclusive: gone with the connection). Deliveries are acked by the caller.
pub async fn event_listener(
    conn: &Connection,
    result_exchange: &str,
    bindings: &[&str],
) -> Result<Consumer, lapin::Error> {
    let ch = conn.create_channel().await?;
    let q = amqp::private_queue(&ch).await?;
    for binding in bindings {
        ch.queue_bind(
            q.name().clone(),
            ShortString::from(result_exchange),
            ShortString::from(*binding),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.basic_consume(
        q.name().clone(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Runs the command; progress goes to `progress` (stderr), events to `out`.
pub async fn run(
    amqp_settings: &AmqpSettings,
    args: &PublishArgs,
    out: &mut (dyn Write + Send),
    progress: &mut (dyn Write + Send),
) -> Result<(), PublishCommandError> {
    let conn = amqp::connect_any(amqp_settings, &amqp::connection_name("publish"))
        .await
        .map_err(|e| PublishCommandError::Connect {
            url: e.url.redacted(),
            source: e.source,
        })?;
    // Declaring is idempotent and makes sure nothing published now is lost
    // for want of a queue.
    amqp::declare(&conn, amqp_settings).await?;
    let intents = build_intents(args);
    let mut listener = if args.wait {
        Some(result_listener(&conn, &amqp_settings.result_exchange).await?)
    } else {
        None
    };
    let ch = intent_channel(&conn).await?;
    let total = intents.len();
    let mut pending = FuturesUnordered::new();
    let mut confirmed = 0usize;
    let show_progress = total > 1;
    let step = (total / 20).max(1);
    for (trace, body) in &intents {
        let confirm = publish_intent(
            &ch,
            &amqp_settings.intent_exchange,
            &format!("h5pay.intent.{}", args.mch_no),
            trace,
            body,
        )
        .await?;
        let trace = trace.clone();
        pending.push(async move { (trace, confirm.await) });
        while pending.len() >= CONFIRM_WINDOW {
            confirmed += count_confirmed(pending.next().await)?;
            if show_progress && confirmed.is_multiple_of(step) {
                writeln!(progress, "published {confirmed}/{total} (confirmed)")?;
            }
        }
    }
    while !pending.is_empty() {
        confirmed += count_confirmed(pending.next().await)?;
        if show_progress && (confirmed.is_multiple_of(step) || confirmed == total) {
            writeln!(progress, "published {confirmed}/{total} (confirmed)")?;
        }
    }
    if total == 1 {
        writeln!(progress, "published intent {} (confirmed)", intents[0].0)?;
    }
    if let Some(listener) = listener.as_mut() {
        let wanted: HashSet<&str> = intents.iter().map(|(t, _)| t.as_str()).collect();
        let received = wait_for_results(listener, &wanted, args.timeout, out).await?;
        if received < wanted.len() {
            return Err(PublishCommandError::Timeout {
                waited: args.timeout,
                received,
                expected: wanted.len(),
            });
        }
    }
    drop(listener);
    amqp::close(&conn, &[&ch], "done").await;
    Ok(())
}

/// 1 for a confirmed intent, an error for a refused one.
fn count_confirmed(
    next: Option<(String, Result<Confirmation, lapin::Error>)>,
) -> Result<usize, PublishCommandError> {
    match next {
        Some((_, Ok(Confirmation::Ack(None)))) | Some((_, Ok(Confirmation::NotRequested))) => Ok(1),
        Some((trace, Ok(_))) => Err(PublishCommandError::NotConfirmed(trace)),
        Some((_, Err(e))) => Err(e.into()),
        None => Ok(0),
    }
}

/// Prints each wanted pay_trace_no's first result event; returns how many
/// arrived before the timeout.
pub async fn wait_for_results(
    listener: &mut Consumer,
    wanted: &HashSet<&str>,
    timeout: Duration,
    out: &mut (dyn Write + Send),
) -> Result<usize, PublishCommandError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: HashSet<String> = HashSet::new();
    while seen.len() < wanted.len() {
        let next = match tokio::time::timeout_at(deadline, listener.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) | Err(_) => break,
        };
        let _ = d_ack(&next).await;
        let Ok(event) = serde_json::from_slice::<Value>(&next.data) else {
            continue;
        };
        let trace = event
            .get("pay_trace_no")
            .and_then(Value::as_str)
            .unwrap_or("");
        if wanted.contains(trace) && seen.insert(trace.to_owned()) {
            writeln!(out, "{}", serde_json::to_string(&event).unwrap_or_default())?;
        }
    }
    Ok(seen.len())
}

async fn d_ack(d: &lapin::message::Delivery) -> Result<bool, lapin::Error> {
    d.acker.ack(BasicAckOptions::default()).await
}
