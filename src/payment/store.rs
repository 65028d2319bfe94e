//! The Redis edge of payment state: the identity's hash (the claim's key,
//! contract §10: "beside the stored outcome"), read in one HMGET, moved by
//! compare-and-set scripts that touch only that key (Redis Cluster stays
//! supported).
//!
//! Fields besides the claim's: `ps` payment state, `tn` trade_no, `pi`/`pe`
//! the latest payment event's id and JSON, `pc` whether the broker
//! confirmed it, `ns` notifies seen, and `rq` what was sent (stored with
//! the claim).

use redis::Script;

use super::event::Sent;
use super::state::{Known, PaymentState};
use crate::claim::{ClaimStore, RedisConn, StoreError};
use crate::intent::Identity;
use crate::outcome::{FailureKind, Status};
use crate::result_event::{OutcomeHead, ResultEvent};

/// What Redis holds of an identity's payment.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub known: Known,
    /// `ps` as stored ('' when none): what a transition expects to find.
    pub raw_state: String,
    pub sent: Option<Sent>,
    pub pay_time: Option<String>,
    /// The gateway's order number, when known (from h5pay, a notify, a query).
    pub trade_no: Option<String>,
    /// What the stored outcome says (its status, failure kind, amount,
    /// trade_no and time).
    pub outcome: Option<OutcomeHead>,
    /// The stored outcome as JSON, for a reader that needs all of it
    /// ([`View::outcome_event`]).
    pub outcome_json: Option<String>,
    /// The latest payment event, if the broker has not confirmed it yet:
    /// its id and JSON, to publish again.
    pub unconfirmed: Option<(String, String)>,
    /// Verified notifies seen.
    pub notifies: u64,
}

impl View {
    /// The amount the worker sent for the identity (or, failing that, the
    /// stored outcome's): what every echo of it is compared with.
    pub fn total_amount(&self) -> Option<u64> {
        self.sent
            .as_ref()
            .map(|s| s.total_amount)
            .or_else(|| self.outcome.as_ref().and_then(|o| o.total_amount))
    }

    /// The whole stored outcome (read on demand: the notify and the check
    /// need only [`View::outcome`]).
    pub fn outcome_event(&self) -> Option<ResultEvent> {
        serde_json::from_str(self.outcome_json.as_deref()?).ok()
    }

    /// The trace context the identity's intent carried, for the payment's
    /// events, notifies and checks to continue (empty when unknown).
    pub fn trace(&self) -> crate::telemetry::trace::TraceHeaders {
        self.sent
            .as_ref()
            .map(|s| s.trace.clone())
            .unwrap_or_default()
    }
}

/// Whether an outcome's payment is followed (contract §10): `ready`,
/// `in_process`, and `outcome_unknown` (an order may exist).
pub fn is_followed(status: Status, failure: Option<FailureKind>) -> bool {
    match status {
        Status::Ready | Status::InProcess => true,
        Status::Failed => failure == Some(FailureKind::OutcomeUnknown),
    }
}

/// The payments that need a person (issue 23): each kept in a small index
/// of its own, `<prefix>:attention:<kind>` (member the identity, score when
/// it was noted, trimmed to `redis.retention_secs`), so listing them never
/// scans the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attention {
    /// Given up at `reconcile.max_age_secs`.
    Unresolved,
    /// An anomaly was raised about it.
    Anomaly,
    /// Paid after it was `failed`, `closed` or `unresolved`: deliver or refund.
    Late,
}

impl Attention {
    pub fn as_str(self) -> &'static str {
        match self {
            Attention::Unresolved => "unresolved",
            Attention::Anomaly => "anomaly",
            Attention::Late => "late",
        }
    }
}

/// The answer of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    Yes,
    /// The state changed meanwhile: look again.
    Raced,
    /// No such identity.
    Gone,
}

/// Made once: `Script::new` hashes its source (SHA-1) and copies it, which
/// per notify was 3 % of the receiver's instructions (BENCHMARKS.md).
struct Scripts {
    transition: Script,
    confirm: Script,
    undo: Script,
    /// The last anomaly (`la`) of an identity that exists.
    note_last: Script,
    /// The view, and one more verified notify (`ns`) of an identity that
    /// exists: the receiver's read and count in one round trip.
    view_counting: Script,
}

/// The hash fields a [`View`] is read from, in [`view_of`]'s order.
const VIEW_FIELDS: [&str; 10] = ["st", "ps", "tn", "rq", "pt", "ev", "pi", "pe", "pc", "ns"];

/// Payment state in Redis. Cheap to clone.
#[derive(Clone)]
pub struct PaymentStore {
    claims: ClaimStore,
    scripts: std::sync::Arc<Scripts>,
}

impl PaymentStore {
    pub fn new(claims: ClaimStore) -> Self {
        PaymentStore {
            claims,
            scripts: std::sync::Arc::new(Scripts {
                transition: Script::new(include_str!("transition.lua")),
                confirm: Script::new(include_str!("confirm.lua")),
                undo: Script::new(include_str!("undo.lua")),
                // Only an existing identity is written: HSET would create
                // the key.
                note_last: Script::new(
                    "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'la', ARGV[1]) end return 0",
                ),
                view_counting: Script::new(include_str!("view_counting.lua")),
            }),
        }
    }

    fn conn(&self) -> RedisConn {
        self.claims.conn()
    }

    pub async fn view(&self, id: &Identity) -> Result<View, StoreError> {
        let mut conn = self.conn();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.claims.key(id))
            .arg(&VIEW_FIELDS)
            .query_async(&mut conn)
            .await?;
        Ok(view_of(fields))
    }

    /// [`view`](Self::view) for a verified notify: counts it (`ns`, for
    /// `inspect`) when the identity exists, in the same round trip. The
    /// view shows the count with this notify.
    pub async fn view_counting_notify(&self, id: &Identity) -> Result<View, StoreError> {
        let mut conn = self.conn();
        let fields: Vec<Option<String>> = self
            .scripts
            .view_counting
            .key(self.claims.key(id))
            .arg(&VIEW_FIELDS)
            .invoke_async(&mut conn)
            .await?;
        Ok(view_of(fields))
    }

    pub async fn transition(
        &self,
        id: &Identity,
        seen: &str,
        to: PaymentState,
        event_id: &str,
        event: &[u8],
        trade_no: Option<&str>,
    ) -> Result<Moved, StoreError> {
        let mut conn = self.conn();
        let key = self.claims.key(id);
        let n: i64 = self
            .scripts
            .transition
            .key(&key)
            .arg(seen)
            .arg(to.as_str())
            .arg(event_id)
            .arg(event)
            .arg(trade_no.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        if n == 1 {
            self.claims.replicated(&key).await?;
        }
        Ok(match n {
            1 => Moved::Yes,
            0 => Moved::Raced,
            _ => Moved::Gone,
        })
    }

    /// Marks the event confirmed; `false` when a newer one replaced it.
    pub async fn confirm(&self, id: &Identity, event_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let n: i64 = self
            .scripts
            .confirm
            .key(self.claims.key(id))
            .arg(event_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Takes back an unconfirmed transition (its event was refused).
    pub async fn undo(
        &self,
        id: &Identity,
        event_id: &str,
        before: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let n: i64 = self
            .scripts
            .undo
            .key(self.claims.key(id))
            .arg(event_id)
            .arg(before)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// The index of payments that need a person for `kind`.
    pub fn attention_key(&self, kind: Attention) -> String {
        format!("{}:attention:{}", self.claims.prefix(), kind.as_str())
    }

    /// Notes the identity in the `kind` index at `at_ms` (again: a later
    /// time), dropping entries older than the retention; for an anomaly,
    /// also its last one on the identity (`la`, JSON) when it exists.
    /// Written before the event, so a payment that needs a person is never
    /// missing from its index (a transition taken back leaves an entry the
    /// listing skips: it reads the state).
    pub async fn note_attention(
        &self,
        kind: Attention,
        id: &Identity,
        at_ms: i64,
        last: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let key = self.attention_key(kind);
        let retention_ms =
            i64::try_from(self.claims.retention_secs().saturating_mul(1000)).unwrap_or(i64::MAX);
        let _: () = redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg(at_ms)
            .arg(format!("{}:{}:{}", id.inst_no, id.mch_no, id.pay_trace_no))
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(at_ms.saturating_sub(retention_ms))
            .ignore()
            .query_async(&mut conn)
            .await?;
        if let Some(last) = last {
            let _: i64 = self
                .scripts
                .note_last
                .key(self.claims.key(id))
                .arg(last)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// Reads the reply of [`PaymentStore::view`] (or `view_counting_notify`):
/// [`VIEW_FIELDS`], in order.
fn view_of(mut f: Vec<Option<String>>) -> View {
    // Each field is taken once, so nothing is copied.
    let mut get = |i: usize| f.get_mut(i).and_then(Option::take);
    let (st, ps) = (get(0), get(1));
    let outcome_json = get(5);
    let outcome = outcome_json
        .as_deref()
        .and_then(|ev| serde_json::from_str::<OutcomeHead>(ev).ok());
    let state = ps.as_deref().and_then(PaymentState::parse);
    let known = match (st.as_deref(), state) {
        (None, _) => Known::Unknown,
        (Some(_), Some(s)) => Known::Followed(s),
        (Some("d"), None) => match &outcome {
            Some(ev) if is_followed(ev.status, ev.error.map(|e| e.kind)) => {
                Known::Followed(PaymentState::Open)
            }
            _ => Known::NotFollowed,
        },
        (Some(_), None) => Known::Pending,
    };
    let unconfirmed = match (get(6), get(7), get(8).as_deref()) {
        (Some(id), Some(ev), Some(pc)) if pc != "1" => Some((id, ev)),
        _ => None,
    };
    View {
        known,
        raw_state: ps.unwrap_or_default(),
        sent: get(3).and_then(|rq| serde_json::from_str(&rq).ok()),
        pay_time: get(4),
        trade_no: get(2).or_else(|| outcome.as_ref().and_then(|e| e.trade_no.clone())),
        outcome,
        outcome_json,
        unconfirmed,
        notifies: get(9).and_then(|n| n.parse().ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(fields: &[(&str, &str)]) -> View {
        view_of(
            VIEW_FIELDS
                .iter()
                .map(|n| {
                    fields
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.to_string())
                })
                .collect(),
        )
    }

    #[test]
    fn what_is_known_follows_the_claim_and_the_outcome() {
        assert_eq!(view(&[]).known, Known::Unknown);
        assert_eq!(view(&[("st", "c")]).known, Known::Pending);
        assert_eq!(
            view(&[("st", "c"), ("ps", "paid")]).known,
            Known::Followed(PaymentState::Paid)
        );
        let refused = r#"{"schema":"h5pay.result.v1","event_id":"e","status":"failed","inst_no":null,"mch_no":null,"pay_trace_no":null,"pay_type":null,"total_amount":null,"pay_time":null,"trade_no":null,"code_url":null,"jsapi":null,"ali_trade_no":null,"gateway":null,"error":{"kind":"gateway_rejected","message":"m"},"attempts":1,"duplicate":false,"metadata":null,"occurred_at":"t"}"#;
        assert_eq!(
            view(&[("st", "d"), ("ev", refused)]).known,
            Known::NotFollowed
        );
        let unknown = refused.replace("gateway_rejected", "outcome_unknown");
        assert_eq!(
            view(&[("st", "d"), ("ev", &unknown)]).known,
            Known::Followed(PaymentState::Open)
        );
        let v = view(&[
            ("st", "d"),
            ("ps", "open"),
            ("pi", "x"),
            ("pe", "{}"),
            ("pc", "0"),
            ("ns", "3"),
        ]);
        assert_eq!(v.unconfirmed, Some(("x".into(), "{}".into())));
        assert_eq!(v.notifies, 3);
        assert_eq!(
            view(&[("st", "d"), ("pi", "x"), ("pe", "{}"), ("pc", "1")]).unconfirmed,
            None
        );
    }
}
