//! The payment event (contract §10): `h5pay.payment.v1`, one stream of
//! facts per identity, routed `h5pay.payment.<state>.<mch_no>`. Building an
//! event is pure: the clock is passed in.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::state::PaymentState;
use crate::domain::digest_id;
pub use crate::domain::{Anomaly, AnomalyKind, EventState};
use crate::gateway::wire::PayType;
use crate::intent::{Identity, Metadata};
use crate::result_event::timestamp;

pub const SCHEMA: &str = "h5pay.payment.v1";

/// What decided the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    Notify,
    Query,
    /// `closed`, decided by the query that follows a close.
    Close,
}

impl EvidenceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceSource::Notify => "notify",
            EvidenceSource::Query => "query",
            EvidenceSource::Close => "close",
        }
    }
}

/// What the worker sent for an identity, as stored with its claim: what a
/// payment event repeats and what evidence is checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub pay_type: PayType,
    pub total_amount: u64,
    /// The notify_url sent (the intent's own, or `notify.public_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The correlation_id of the intent that placed the order: every
    /// payment event of the identity carries it.
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// The intent's trace context (W3C), continued by its payment events.
    #[serde(
        default,
        skip_serializing_if = "crate::telemetry::trace::TraceHeaders::is_empty"
    )]
    pub trace: crate::telemetry::trace::TraceHeaders,
}

/// One payment event. Every field is always present (`null` when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub schema: String,
    pub event_id: String,
    pub state: EventState,
    pub inst_no: String,
    pub mch_no: String,
    pub pay_trace_no: String,
    pub pay_type: Option<PayType>,
    pub total_amount: Option<u64>,
    pub pay_time: Option<String>,
    pub trade_no: Option<String>,
    pub paid_at: Option<String>,
    pub source: EvidenceSource,
    pub late: bool,
    pub previous: Option<PaymentState>,
    pub anomaly: Option<Anomaly>,
    pub metadata: Option<Metadata>,
    pub occurred_at: String,
}

/// The facts an event is built from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub identity: &'a Identity,
    /// What the worker sent, when it knows.
    pub sent: Option<&'a Sent>,
    pub pay_time: Option<&'a str>,
    pub trade_no: Option<&'a str>,
}

impl PaymentEvent {
    /// The event of a move to `to`. Its id depends only on the identity and
    /// the state: a `paid` learned from a notify and again from a query is
    /// one event.
    pub fn transition(
        facts: &Facts<'_>,
        to: EventState,
        from: PaymentState,
        late: bool,
        source: EvidenceSource,
        paid_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let id = facts.identity;
        let event_id = digest_id(&[
            SCHEMA.as_bytes(),
            b"state",
            id.inst_no.as_bytes(),
            id.mch_no.as_bytes(),
            id.pay_trace_no.as_bytes(),
            to.as_str().as_bytes(),
        ]);
        Self::build(
            facts,
            event_id,
            to,
            source,
            Some(from),
            late,
            None,
            paid_at,
            now,
        )
    }

    /// An anomaly: no state changes. Its id derives from the identity, the
    /// kind and the received message's `sign` (contract §10): one signed
    /// message sent again, in other whitespace or with fields the sign
    /// leaves out, is one anomaly, not one per copy.
    pub fn anomaly(
        facts: &Facts<'_>,
        anomaly: Anomaly,
        current: Option<PaymentState>,
        source: EvidenceSource,
        sign: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let id = facts.identity;
        let event_id = digest_id(&[
            SCHEMA.as_bytes(),
            b"anomaly",
            id.inst_no.as_bytes(),
            id.mch_no.as_bytes(),
            id.pay_trace_no.as_bytes(),
            anomaly.kind.as_str().as_bytes(),
            sign.as_bytes(),
        ]);
        let state = EventState::Anomaly;
        Self::build(
            facts,
            event_id,
            state,
            source,
            current,
            false,
            Some(anomaly),
            None,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        facts: &Facts<'_>,
        event_id: String,
        state: EventState,
        source: EvidenceSource,
        previous: Option<PaymentState>,
        late: bool,
        anomaly: Option<Anomaly>,
        paid_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let id = facts.identity;
        PaymentEvent {
            schema: SCHEMA.to_owned(),
            event_id,
            state,
            inst_no: id.inst_no.clone(),
            mch_no: id.mch_no.clone(),
            pay_trace_no: id.pay_trace_no.clone(),
            pay_type: facts.sent.map(|s| s.pay_type),
            total_amount: facts.sent.map(|s| s.total_amount),
            pay_time: facts.pay_time.map(str::to_owned),
            trade_no: facts.trade_no.map(str::to_owned),
            paid_at: paid_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            source,
            late,
            previous,
            anomaly,
            metadata: facts.sent.and_then(|s| s.metadata.clone()),
            occurred_at: timestamp(now),
        }
    }

    /// `h5pay.payment.<state>.<mch_no>`.
    pub fn routing_key(&self) -> String {
        format!("h5pay.payment.{}.{}", self.state.as_str(), self.mch_no)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The gateway's `end_time`, Beijing time (`yyyy-MM-dd HH:mm:ss[.S]` or
/// `yyyyMMddHHmmss`), in UTC. `None` when absent or unreadable.
pub fn parse_end_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let naive = NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .ok()?;
    let beijing = chrono::FixedOffset::east_opt(8 * 3600)?;
    beijing
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn identity() -> Identity {
        Identity {
            inst_no: "60000001".into(),
            mch_no: "Y52212190001".into(),
            pay_trace_no: "998877665544332018".into(),
        }
    }

    fn sent() -> Sent {
        Sent {
            pay_type: PayType::Wechat,
            total_amount: 1,
            notify_url: None,
            correlation_id: "c-1".into(),
            metadata: Metadata::from_value(&json!({"order_id": "A-1001"})),
            trace: Default::default(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T03:06:12.345Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_paid_event_has_the_contract_shape() {
        let id = identity();
        let s = sent();
        let facts = Facts {
            identity: &id,
            sent: Some(&s),
            pay_time: Some("20230306235318"),
            trade_no: Some("200001102F4623030615082110001"),
        };
        let paid_at = parse_end_time("2026-11-26 11:06:12.0");
        let ev = PaymentEvent::transition(
            &facts,
            EventState::Paid,
            PaymentState::Open,
            false,
            EvidenceSource::Notify,
            paid_at,
            now(),
        );
        let v: Value = serde_json::from_slice(&ev.to_json()).unwrap_or_default();
        assert_eq!(v["schema"], "h5pay.payment.v1");
        assert_eq!(v["state"], "paid");
        assert_eq!(v["paid_at"], "2026-11-26T03:06:12Z");
        assert_eq!(v["source"], "notify");
        assert_eq!(v["previous"], "open");
        assert_eq!(v["late"], false);
        assert_eq!(v["anomaly"], Value::Null);
        assert_eq!(v["pay_type"], "400");
        assert_eq!(v["total_amount"], 1);
        assert_eq!(v["metadata"], json!({"order_id": "A-1001"}));
        assert_eq!(v["occurred_at"], "2026-11-26T03:06:12.345Z");
        assert_eq!(v.as_object().map(|m| m.len()), Some(17));
        assert_eq!(ev.routing_key(), "h5pay.payment.paid.Y52212190001");
        // The id depends on the identity and the state only.
        let again = PaymentEvent::transition(
            &facts,
            EventState::Paid,
            PaymentState::Closed,
            true,
            EvidenceSource::Query,
            None,
            now(),
        );
        assert_eq!(ev.event_id, again.event_id);
        let failed = PaymentEvent::transition(
            &facts,
            EventState::Failed,
            PaymentState::Open,
            false,
            EvidenceSource::Query,
            None,
            now(),
        );
        assert_ne!(ev.event_id, failed.event_id);
    }

    #[test]
    fn end_times_come_in_two_shapes_in_beijing_time() {
        let want = DateTime::parse_from_rfc3339("2023-03-06T15:53:18Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(parse_end_time("20230306235318"), want);
        assert_eq!(parse_end_time("2023-03-06 23:53:18.0"), want);
        assert_eq!(parse_end_time("2023-03-06 23:53:18"), want);
        assert_eq!(parse_end_time("yesterday"), None);
    }
}
