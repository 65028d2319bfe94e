//! The outbound result event (contract §4) and its routing. Building an
//! event is pure: the clock is passed in.

use crate::domain::digest_id;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::gateway::wire::PayType;
use crate::intent::{Intent, InvalidIntent, Metadata};
use crate::outcome::{CallResult, Decision, Failure, FailureKind, GatewayAnswer, Jsapi, Status};

pub const SCHEMA: &str = "h5pay.result.v1";

/// One result event. Every field is always present (`null` when empty), so
/// consumers can rely on the shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEvent {
    pub schema: String,
    pub event_id: String,
    pub status: Status,
    pub inst_no: Option<String>,
    pub mch_no: Option<String>,
    pub pay_trace_no: Option<String>,
    pub pay_type: Option<PayType>,
    pub total_amount: Option<u64>,
    pub pay_time: Option<String>,
    pub trade_no: Option<String>,
    pub code_url: Option<String>,
    pub jsapi: Option<Jsapi>,
    pub ali_trade_no: Option<String>,
    pub gateway: Option<GatewayAnswer>,
    pub error: Option<Failure>,
    pub attempts: u32,
    pub duplicate: bool,
    pub metadata: Option<Metadata>,
    pub occurred_at: String,
}

pub(crate) fn timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl ResultEvent {
    /// The event of a gateway-decided outcome. Its id depends only on the
    /// identity and the outcome, so a replay (or a second worker reaching
    /// the same outcome) carries the same id.
    pub fn decided(intent: &Intent, pay_time: &str, call: &CallResult, now: DateTime<Utc>) -> Self {
        let id = &intent.identity;
        let status = call.decision.status();
        let kind = match &call.decision {
            Decision::Failed(f) => f.kind.as_str(),
            _ => "",
        };
        let event_id = digest_id(&[
            SCHEMA.as_bytes(),
            b"decided",
            id.inst_no.as_bytes(),
            id.mch_no.as_bytes(),
            id.pay_trace_no.as_bytes(),
            status.as_str().as_bytes(),
            kind.as_bytes(),
        ]);
        let (code_url, jsapi, ali_trade_no, error) = match &call.decision {
            Decision::Ready(p) => (
                p.code_url.clone(),
                p.jsapi.clone(),
                p.ali_trade_no.clone(),
                None,
            ),
            Decision::InProcess => (None, None, None, None),
            Decision::Failed(f) => (None, None, None, Some(f.clone())),
        };
        ResultEvent {
            schema: SCHEMA.to_owned(),
            event_id,
            status,
            inst_no: Some(id.inst_no.clone()),
            mch_no: Some(id.mch_no.clone()),
            pay_trace_no: Some(id.pay_trace_no.clone()),
            pay_type: Some(intent.pay_type),
            total_amount: Some(intent.total_amount),
            pay_time: Some(pay_time.to_owned()),
            trade_no: call.trade_no.clone(),
            code_url,
            jsapi,
            ali_trade_no,
            gateway: call.answer.clone(),
            error,
            attempts: call.attempts,
            duplicate: false,
            metadata: intent.metadata.clone(),
            occurred_at: timestamp(now),
        }
    }

    /// A failure decided without the gateway (`conflict`, `expired`): its
    /// id derives from the body bytes received.
    pub fn refused(intent: &Intent, failure: Failure, body: &[u8], now: DateTime<Utc>) -> Self {
        let id = &intent.identity;
        ResultEvent {
            schema: SCHEMA.to_owned(),
            event_id: digest_id(&[SCHEMA.as_bytes(), failure.kind.as_str().as_bytes(), body]),
            status: Status::Failed,
            inst_no: Some(id.inst_no.clone()),
            mch_no: Some(id.mch_no.clone()),
            pay_trace_no: Some(id.pay_trace_no.clone()),
            pay_type: Some(intent.pay_type),
            total_amount: Some(intent.total_amount),
            pay_time: intent.pay_time.clone(),
            trade_no: None,
            code_url: None,
            jsapi: None,
            ali_trade_no: None,
            gateway: None,
            error: Some(failure),
            attempts: 0,
            duplicate: false,
            metadata: intent.metadata.clone(),
            occurred_at: timestamp(now),
        }
    }

    /// The event of an intent that breaks rules of §3: whatever fields were
    /// valid, and a message naming every bad one.
    pub fn invalid(invalid: &InvalidIntent, body: &[u8], now: DateTime<Utc>) -> Self {
        let kind = FailureKind::InvalidIntent;
        ResultEvent {
            schema: SCHEMA.to_owned(),
            event_id: digest_id(&[SCHEMA.as_bytes(), kind.as_str().as_bytes(), body]),
            status: Status::Failed,
            inst_no: invalid.inst_no.clone(),
            mch_no: invalid.mch_no.clone(),
            pay_trace_no: invalid.pay_trace_no.clone(),
            pay_type: invalid.pay_type,
            total_amount: invalid.total_amount,
            pay_time: invalid.pay_time.clone(),
            trade_no: None,
            code_url: None,
            jsapi: None,
            ali_trade_no: None,
            gateway: None,
            error: Some(Failure::new(kind, invalid.message())),
            attempts: 0,
            duplicate: false,
            metadata: invalid.metadata.clone(),
            occurred_at: timestamp(now),
        }
    }

    /// `h5pay.result.<status>.<mch_no>`, `_` for a missing mch_no.
    pub fn routing_key(&self) -> String {
        // Built by hand: `format!` costs several times as much, once per
        // intent. The event's type is the key's first part.
        let (kind, mch_no) = (
            self.status.event_type(),
            self.mch_no.as_deref().unwrap_or("_"),
        );
        let mut key = String::with_capacity(kind.len() + 1 + mch_no.len());
        key.push_str(kind);
        key.push('.');
        key.push_str(mch_no);
        key
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Sized for a typical event up front: grown from serde_json's 128
        // bytes it was copied three times on the way.
        let mut out = Vec::with_capacity(1024);
        // Plain data with string keys: serialisation cannot fail.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// The `x-error-kind` header value, for failed events.
    pub fn error_kind(&self) -> Option<&'static str> {
        self.error.as_ref().map(|e| e.kind.as_str())
    }

    /// When the outcome was decided: for a followed payment, when its order
    /// was placed. Every time of the reconciler counts from it, never from a
    /// publisher's `pay_time` (contract §12).
    pub fn placed_at(&self) -> Option<DateTime<Utc>> {
        placed_at(&self.occurred_at)
    }
}

fn placed_at(occurred_at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(occurred_at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The fields of a stored result event that a notify, a check or a listing
/// decides with, read without the rest: the whole event (code_url, the
/// gateway's answer, metadata) was 8 % of the receiver's instructions per
/// notify. [`ResultEvent`] reads all of it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutcomeHead {
    pub status: Status,
    pub error: Option<FailureHead>,
    pub total_amount: Option<u64>,
    pub trade_no: Option<String>,
    pub occurred_at: String,
}

/// The kind of a stored failure, without its message.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct FailureHead {
    pub kind: FailureKind,
}

impl OutcomeHead {
    /// See [`ResultEvent::placed_at`].
    pub fn placed_at(&self) -> Option<DateTime<Utc>> {
        placed_at(&self.occurred_at)
    }
}

/// A stored event made ready for a replay: unchanged but for `duplicate`.
pub fn replay(stored: &str, duplicate: bool) -> Result<ResultEvent, serde_json::Error> {
    let mut ev: ResultEvent = serde_json::from_str(stored)?;
    ev.duplicate = duplicate;
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::Identity;
    use crate::outcome::Payable;
    use serde_json::{Value, json};

    fn intent() -> Intent {
        Intent {
            identity: Identity {
                inst_no: "60000001".into(),
                mch_no: "Y52212190001".into(),
                pay_trace_no: "998877665544332018".into(),
            },
            pay_type: PayType::Wechat,
            total_amount: 1,
            pay_time: None,
            open_id: None,
            notify_url: None,
            metadata: Metadata::from_value(&json!({"order_id": "A-1001"})),
        }
    }

    fn ready() -> CallResult {
        CallResult {
            decision: Decision::Ready(Payable {
                code_url: Some("https://pay.example/x".into()),
                ..Payable::default()
            }),
            attempts: 1,
            answer: Some(GatewayAnswer {
                return_code: Some("SUCCESS".into()),
                result_code: Some("PAY_SUCCESS".into()),
                return_msg: Some("ok".into()),
                http_status: 200,
            }),
            trade_no: Some("T1".into()),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T03:04:05.678Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_ready_event_has_the_contract_shape() {
        let ev = ResultEvent::decided(&intent(), "20230306235318", &ready(), now());
        let v: Value = serde_json::from_slice(&ev.to_json()).unwrap_or_default();
        assert_eq!(v["schema"], "h5pay.result.v1");
        assert_eq!(v["status"], "ready");
        assert_eq!(v["pay_type"], "400");
        assert_eq!(v["total_amount"], 1);
        assert_eq!(v["code_url"], "https://pay.example/x");
        assert_eq!(v["jsapi"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["gateway"]["result_code"], "PAY_SUCCESS");
        assert_eq!(v["metadata"], json!({"order_id": "A-1001"}));
        assert_eq!(v["occurred_at"], "2026-11-26T03:04:05.678Z");
        assert_eq!(v["duplicate"], false);
        let id = v["event_id"].as_str().unwrap_or_default();
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(ev.routing_key(), "h5pay.result.ready.Y52212190001");
        let keys: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 19, "{keys:?}");
    }

    #[test]
    fn event_ids_are_deterministic_per_identity_and_outcome() {
        let a = ResultEvent::decided(&intent(), "p", &ready(), now());
        let later = now() + chrono::Duration::seconds(60);
        let b = ResultEvent::decided(
            &intent(),
            "p",
            &CallResult {
                attempts: 3,
                ..ready()
            },
            later,
        );
        assert_eq!(a.event_id, b.event_id);
        let mut other = intent();
        other.identity.mch_no = "OTHER".into();
        assert_ne!(
            a.event_id,
            ResultEvent::decided(&other, "p", &ready(), now()).event_id
        );
        let failed = CallResult {
            decision: Decision::Failed(Failure::new(FailureKind::PaymentFailed, "x")),
            ..ready()
        };
        assert_ne!(
            a.event_id,
            ResultEvent::decided(&intent(), "p", &failed, now()).event_id
        );
    }

    #[test]
    fn refused_and_invalid_events_take_their_id_from_the_body() {
        let f = || Failure::new(FailureKind::Conflict, "c");
        let a = ResultEvent::refused(&intent(), f(), b"{\"a\":1}", now());
        let b = ResultEvent::refused(&intent(), f(), b"{\"a\":2}", now());
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(
            a.event_id,
            ResultEvent::refused(&intent(), f(), b"{\"a\":1}", now()).event_id
        );
        assert_eq!((a.attempts, a.gateway.clone()), (0, None));
        let expired = ResultEvent::refused(
            &intent(),
            Failure::new(FailureKind::Expired, "e"),
            b"{\"a\":1}",
            now(),
        );
        assert_ne!(a.event_id, expired.event_id);
    }

    #[test]
    fn an_invalid_intent_without_mch_no_routes_with_underscore() {
        let inv = InvalidIntent {
            errors: vec![],
            inst_no: None,
            mch_no: None,
            pay_trace_no: Some("T".into()),
            pay_type: None,
            total_amount: None,
            pay_time: None,
            metadata: None,
        };
        let ev = ResultEvent::invalid(&inv, b"{}", now());
        assert_eq!(ev.routing_key(), "h5pay.result.failed._");
        assert_eq!(ev.error_kind(), Some("invalid_intent"));
        assert_eq!(ev.metadata, None);
    }

    #[test]
    fn the_head_reads_what_the_whole_event_says() {
        let failed = |kind| CallResult {
            decision: Decision::Failed(Failure::new(kind, "m")),
            trade_no: None,
            ..ready()
        };
        let in_process = CallResult {
            decision: Decision::InProcess,
            ..ready()
        };
        let mut events = vec![
            ResultEvent::decided(&intent(), "p", &ready(), now()),
            ResultEvent::decided(&intent(), "p", &in_process, now()),
            ResultEvent::refused(
                &intent(),
                Failure::new(FailureKind::Expired, "e"),
                b"{}",
                now(),
            ),
        ];
        events.extend(
            FailureKind::ALL
                .iter()
                .map(|k| ResultEvent::decided(&intent(), "p", &failed(*k), now())),
        );
        for ev in events {
            let json = String::from_utf8(ev.to_json()).unwrap_or_default();
            let head: OutcomeHead = serde_json::from_str(&json).expect("a head");
            assert_eq!(head.status, ev.status, "{json}");
            assert_eq!(
                head.error.map(|e| e.kind),
                ev.error.as_ref().map(|e| e.kind)
            );
            assert_eq!(head.total_amount, ev.total_amount);
            assert_eq!(head.trade_no, ev.trade_no, "{json}");
            assert_eq!(head.occurred_at, ev.occurred_at);
            assert_eq!(head.placed_at(), ev.placed_at());
            assert!(head.placed_at().is_some());
        }
    }

    #[test]
    fn a_replay_changes_only_duplicate() {
        let ev = ResultEvent::decided(&intent(), "p", &ready(), now());
        let stored = String::from_utf8(ev.to_json()).unwrap_or_default();
        let r = replay(&stored, true).expect("dlq replay");
        assert!(r.duplicate);
        assert_eq!(
            ResultEvent {
                duplicate: false,
                ..r
            },
            ev
        );
    }
}
