//! `h5pay-worker dlq list|replay`: what is in the dead-letter queue and
//! why, and moving messages back to the intent exchange after a fix.
//!
//! Both read with `basic.get` and keep every message unacknowledged until
//! the end, so a listing never shows a message twice and a crash leaves
//! the DLQ as it was. `replay` acks a DLQ message only after its copy on
//! the intent exchange was confirmed by the broker.

use std::io::Write;

use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use serde_json::{Value, json};

use crate::amqp;
use crate::cli::publish::intent_channel;
use crate::config::AmqpSettings;
use crate::intent;
use crate::text::print_line;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Topology(#[from] amqp::TopologyError),
    #[error("the broker did not confirm the replay of message {0}")]
    NotConfirmed(usize),
    #[error("name what to delete: --message-id, --pay-trace-no or --unreadable")]
    NothingSelected,
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// One dead-lettered message, described.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    /// `x-death[0].reason`: `rejected`, `delivery_limit`, `expired`, `maxlen`.
    pub reason: Option<String>,
    pub queue: Option<String>,
    pub count: Option<i64>,
    pub routing_key: Option<String>,
    /// Why the body cannot be an intent, if it cannot.
    pub unreadable: Option<String>,
    pub pay_trace_no: Option<String>,
    pub bytes: usize,
    /// The earliest time known of the message, in seconds since the epoch:
    /// its AMQP `timestamp`, else the first `x-death` time.
    pub since: Option<u64>,
}

impl DeadLetter {
    pub fn to_json(&self) -> Value {
        json!({
            "message_id": self.message_id, "reason": self.reason, "queue": self.queue,
            "count": self.count, "routing_key": self.routing_key, "unreadable": self.unreadable,
            "pay_trace_no": self.pay_trace_no, "bytes": self.bytes, "since": self.since,
        })
    }

    /// What an operator should read into the reason.
    pub fn explanation(&self) -> String {
        if let Some(u) = &self.unreadable {
            return format!(
                "not an intent ({u}): fix the publisher; replaying it would dead-letter it again"
            );
        }
        match self.reason.as_deref() {
            Some("delivery_limit") => "delivered amqp.delivery_limit times without being settled: see the worker's logs for this message_id".into(),
            Some("rejected") => "rejected by a worker".into(),
            Some("expired") => "its TTL ran out in the queue".into(),
            Some("maxlen") => "the queue was full".into(),
            Some(other) => other.to_owned(),
            None => "no x-death header".into(),
        }
    }
}

fn header_str(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn header_int(v: Option<&AMQPValue>) -> Option<i64> {
    match v? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Reads the x-death header and the body of a dead-lettered message.
pub fn describe(properties: &BasicProperties, body: &[u8]) -> DeadLetter {
    let first_death = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first().cloned(),
            _ => None,
        });
    let table: Option<FieldTable> = match first_death {
        Some(AMQPValue::FieldTable(t)) => Some(t),
        _ => None,
    };
    let get = |k: &str| table.as_ref().and_then(|t| t.inner().get(k).cloned());
    let routing_key = match get("routing-keys") {
        Some(AMQPValue::FieldArray(a)) => header_str(a.as_slice().first()),
        _ => None,
    };
    let (unreadable, pay_trace_no) = match intent::read(body) {
        Err(why) => (Some(why.to_string()), None),
        Ok(obj) => (
            None,
            obj.fields
                .get("pay_trace_no")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
    };
    let deaths = match properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let death_times = deaths.iter().filter_map(|d| match d {
        AMQPValue::FieldTable(t) => match t.inner().get("time") {
            Some(AMQPValue::Timestamp(ts)) => Some(*ts),
            _ => None,
        },
        _ => None,
    });
    let since = properties
        .timestamp()
        .iter()
        .copied()
        .chain(death_times)
        .min();
    DeadLetter {
        since,
        message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        reason: header_str(get("reason").as_ref()),
        queue: header_str(get("queue").as_ref()),
        count: header_int(get("count").as_ref()),
        routing_key,
        unreadable,
        pay_trace_no,
        bytes: body.len(),
    }
}

async fn fetch(
    ch: &Channel,
    queue: &str,
    limit: usize,
) -> Result<Vec<BasicGetMessage>, lapin::Error> {
    let mut got = Vec::new();
    while got.len() < limit {
        match ch
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(m) => got.push(m),
            None => break,
        }
    }
    Ok(got)
}

async fn give_back(messages: &[BasicGetMessage]) {
    for m in messages {
        let _ = m
            .delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await;
    }
}

/// A connection of the DLQ tool to any node of the cluster.
async fn connect(a: &AmqpSettings) -> Result<lapin::Connection, DlqError> {
    amqp::connect_any(a, &amqp::connection_name("dlq"))
        .await
        .map_err(|e| DlqError::Connect {
            url: e.url.redacted(),
            source: e.source,
        })
}

/// Lists up to `limit` messages; `json`: one JSON object per line.
pub async fn list(
    a: &AmqpSettings,
    limit: usize,
    as_json: bool,
    out: &mut (dyn Write + Send),
) -> Result<usize, DlqError> {
    let conn = connect(a).await?;
    let ch = conn.create_channel().await?;
    let messages = fetch(&ch, &a.dead_letter_queue, limit).await?;
    let mut written = Ok(());
    if !as_json {
        written = print_line(
            out,
            &format!(
                "{} message(s) shown from {}",
                messages.len(),
                a.dead_letter_queue
            ),
        );
    }
    for (i, m) in messages.iter().enumerate() {
        if written.is_err() {
            break;
        }
        let d = describe(&m.delivery.properties, &m.delivery.data);
        // Every field here came with the message (its properties, its
        // body, the broker's x-death): JSON escapes what JSON requires,
        // text goes out terminal-safe.
        written = if as_json {
            writeln!(out, "{}", d.to_json())
        } else {
            print_line(
                out,
                &format!(
                    "#{i} message_id={} pay_trace_no={} reason={} count={} bytes={}\n    {}",
                    d.message_id.as_deref().unwrap_or("-"),
                    d.pay_trace_no.as_deref().unwrap_or("-"),
                    d.reason.as_deref().unwrap_or("-"),
                    d.count.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    d.bytes,
                    d.explanation()
                ),
            )
        };
    }
    give_back(&messages).await;
    amqp::close(&conn, &[&ch], "dlq list done").await;
    written?;
    Ok(messages.len())
}

/// Which dead letters a command acts on: those matching every criterion
/// given (none given: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Select {
    pub message_id: Option<String>,
    pub pay_trace_no: Option<String>,
    /// Only bodies that cannot be an intent.
    pub unreadable: bool,
}

impl Select {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.message_id
            .as_ref()
            .is_none_or(|m| d.message_id.as_ref() == Some(m))
            && self
                .pay_trace_no
                .as_ref()
                .is_none_or(|p| d.pay_trace_no.as_ref() == Some(p))
            && (!self.unreadable || d.unreadable.is_some())
    }

    pub fn is_everything(&self) -> bool {
        *self == Select::default()
    }
}

/// How `dlq replay` runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub limit: usize,
    pub dry_run: bool,
    /// `redis.retention_secs`: a message older than this may have outlived
    /// its stored outcome.
    pub retention: std::time::Duration,
    /// Replay messages older than the retention too.
    pub force: bool,
    /// Only these messages (the others stay, untouched).
    pub select: Select,
}

/// Why a readable message is not replayed.
fn hold_back(d: &DeadLetter, o: &ReplayOptions, now: u64) -> Option<String> {
    let age = d.since.map(|t| now.saturating_sub(t));
    match age {
        Some(age) if age > o.retention.as_secs() && !o.force => Some(format!(
            "{age} s old, older than redis.retention_secs ({} s): its stored outcome may be gone, \
             so a replay could call the gateway again with a new pay_time (a second order); \
             check the identity first, then replay with --force",
            o.retention.as_secs()
        )),
        _ => None,
    }
}

/// Moves up to `limit` readable messages back to the intent exchange.
/// Unreadable bodies stay in the DLQ (they would only come back), and so do
/// messages older than `redis.retention_secs` unless `force`.
pub async fn replay(
    a: &AmqpSettings,
    o: ReplayOptions,
    out: &mut (dyn Write + Send),
) -> Result<usize, DlqError> {
    let (limit, dry_run) = (o.limit, o.dry_run);
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let conn = connect(a).await?;
    amqp::declare(&conn, a).await?;
    let ch = conn.create_channel().await?;
    let publish_ch = intent_channel(&conn).await?;
    let messages = fetch(&ch, &a.dead_letter_queue, limit).await?;
    let mut replayed = 0usize;
    let mut kept = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let d = describe(&m.delivery.properties, &m.delivery.data);
        if !o.select.matches(&d) {
            kept.push(m);
            continue;
        }
        if d.unreadable.is_none()
            && let Some(why) = hold_back(&d, &o, now)
        {
            print_line(
                out,
                &format!(
                    "#{i} kept message_id={} pay_trace_no={}: {why}",
                    d.message_id.as_deref().unwrap_or("-"),
                    d.pay_trace_no.as_deref().unwrap_or("-"),
                ),
            )?;
            kept.push(m);
            continue;
        }
        if d.unreadable.is_some() || dry_run {
            print_line(
                out,
                &format!(
                    "#{i} {} message_id={} pay_trace_no={}: {}",
                    if dry_run && d.unreadable.is_none() {
                        "would replay"
                    } else {
                        "kept"
                    },
                    d.message_id.as_deref().unwrap_or("-"),
                    d.pay_trace_no.as_deref().unwrap_or("-"),
                    d.explanation()
                ),
            )?;
            if dry_run && d.unreadable.is_none() {
                replayed += 1;
            }
            kept.push(m);
            continue;
        }
        let confirm = republish(&publish_ch, &a.intent_exchange, &m, &d).await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            kept.push(m);
            give_back(&kept).await;
            return Err(DlqError::NotConfirmed(i));
        }
        m.delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        print_line(
            out,
            &format!(
                "#{i} replayed message_id={} pay_trace_no={}",
                d.message_id.as_deref().unwrap_or("-"),
                d.pay_trace_no.as_deref().unwrap_or("-")
            ),
        )?;
    }
    give_back(&kept).await;
    print_line(
        out,
        &format!(
            "{replayed} message(s) {} to {}",
            if dry_run {
                "would be replayed"
            } else {
                "replayed"
            },
            a.intent_exchange
        ),
    )?;
    amqp::close(&conn, &[&ch, &publish_ch], "dlq replay done").await;
    Ok(replayed)
}

/// Publishes a dead letter to the intent exchange again, under its old
/// routing key; the broker's confirm.
async fn republish(
    ch: &Channel,
    exchange: &str,
    m: &BasicGetMessage,
    d: &DeadLetter,
) -> Result<Confirmation, lapin::Error> {
    // The original properties (message_id, correlation_id, reply_to,
    // timestamp) go with it; the x-death history stays in the DLQ's past.
    let mut props = m.delivery.properties.clone();
    if let Some(headers) = props.headers().clone() {
        let mut h = headers.inner().clone();
        h.remove("x-death");
        h.remove("x-first-death-exchange");
        h.remove("x-first-death-queue");
        h.remove("x-first-death-reason");
        h.remove("x-delivery-count");
        props = props.with_headers(FieldTable::from(h));
    }
    let key = d
        .routing_key
        .clone()
        .unwrap_or_else(|| "h5pay.intent.replay".into());
    ch.basic_publish(
        ShortString::from(exchange),
        ShortString::try_new(key).unwrap_or_else(|_| "h5pay.intent.replay".into()),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        &m.delivery.data,
        props,
    )
    .await?
    .await
}

/// Removes the selected dead letters (`dry_run`: only says which), e.g.
/// the unreadable ones, leaving every other message where it was. A
/// selection is required: this never empties the DLQ by accident.
pub async fn delete(
    a: &AmqpSettings,
    select: &Select,
    limit: usize,
    dry_run: bool,
    out: &mut (dyn Write + Send),
) -> Result<usize, DlqError> {
    if select.is_everything() {
        return Err(DlqError::NothingSelected);
    }
    let conn = connect(a).await?;
    let ch = conn.create_channel().await?;
    let messages = fetch(&ch, &a.dead_letter_queue, limit).await?;
    let mut kept = Vec::new();
    let mut deleted = 0usize;
    for (i, m) in messages.into_iter().enumerate() {
        let d = describe(&m.delivery.properties, &m.delivery.data);
        if !select.matches(&d) || dry_run {
            if select.matches(&d) {
                deleted += 1;
                print_line(out, &format!("#{i} would delete {}", summary(&d)))?;
            }
            kept.push(m);
            continue;
        }
        m.delivery.acker.ack(BasicAckOptions::default()).await?;
        deleted += 1;
        print_line(out, &format!("#{i} deleted {}", summary(&d)))?;
    }
    give_back(&kept).await;
    print_line(
        out,
        &format!(
            "{deleted} message(s) {} from {}",
            if dry_run {
                "would be deleted"
            } else {
                "deleted"
            },
            a.dead_letter_queue
        ),
    )?;
    amqp::close(&conn, &[&ch], "dlq delete done").await;
    Ok(deleted)
}

fn summary(d: &DeadLetter) -> String {
    format!(
        "message_id={} pay_trace_no={}: {}",
        d.message_id.as_deref().unwrap_or("-"),
        d.pay_trace_no.as_deref().unwrap_or("-"),
        d.explanation()
    )
}
