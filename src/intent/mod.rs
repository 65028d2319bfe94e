//! Intake (contract §3): message bytes → a validated [`Intent`], an
//! [`InvalidIntent`] naming every bad field, or [`Unreadable`] for what
//! cannot be an intent at all.
//!
//! [`read`] turns bytes into a JSON object (or says why it is none);
//! [`validate`] applies every rule, one parser per field. This module holds
//! what both produce: the intent, its identity, its metadata.

mod read;
mod validate;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::domain::digest_id;
use crate::gateway::wire::{H5PayRequest, PayType};

pub use crate::domain::{check_notify_url, is_identifier};
pub use read::{ReadObject, Unreadable, read};
pub use validate::{Rules, validate};

/// Largest body accepted as an intent.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `metadata`, serialised.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// The identity of an intent: deduplication keys on all three.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub inst_no: String,
    pub mch_no: String,
    pub pay_trace_no: String,
}

/// A valid intent, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub identity: Identity,
    pub pay_type: PayType,
    /// In fen, 1..=gateway.max_amount.
    pub total_amount: u64,
    /// An explicit `pay_time`; when absent the worker fixes one at claim time.
    pub pay_time: Option<String>,
    pub open_id: Option<String>,
    pub notify_url: Option<String>,
    /// Echoed in the result, never sent to the gateway.
    pub metadata: Option<Metadata>,
}

impl Intent {
    /// A digest of the parameters that must match for a repeat of this
    /// identity to be a duplicate rather than a conflict (contract §4):
    /// compared after normalisation, so `wechat` = `400` and `"100"` = `100`.
    pub fn fingerprint(&self) -> String {
        digest_id(&[
            self.pay_type.code().as_bytes(),
            self.total_amount.to_string().as_bytes(),
            self.open_id.as_deref().unwrap_or("").as_bytes(),
            self.notify_url.as_deref().unwrap_or("").as_bytes(),
        ])
    }

    /// The gateway request, with the `pay_time` and `notify_url` fixed for
    /// this identity (the intent's own, or `notify.public_url`, stored with
    /// the claim).
    pub fn request(&self, pay_time: &str, notify_url: Option<&str>) -> H5PayRequest {
        H5PayRequest {
            inst_no: self.identity.inst_no.clone(),
            mch_no: self.identity.mch_no.clone(),
            pay_type: self.pay_type,
            pay_trace_no: self.identity.pay_trace_no.clone(),
            pay_time: pay_time.to_owned(),
            total_amount: self.total_amount,
            open_id: self.open_id.clone(),
            notify_url: notify_url.map(str::to_owned),
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `metadata` as received (insignificant whitespace removed): numbers of any
/// size or precision, key order and escapes are echoed exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Box<RawValue>);

impl Metadata {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Metadata from a JSON value (tools and tests).
    pub fn from_value(v: &Value) -> Option<Metadata> {
        serde_json::value::to_raw_value(v).ok().map(Metadata)
    }

    /// The received text without whitespace between tokens.
    fn from_received(raw: &RawValue) -> Option<Metadata> {
        RawValue::from_string(read::minify(raw.get()))
            .ok()
            .map(Metadata)
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// An intent that breaks rules of §3. Keeps whatever fields were valid so
/// the result event can still carry them.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidIntent {
    pub errors: Vec<FieldError>,
    pub inst_no: Option<String>,
    pub mch_no: Option<String>,
    pub pay_trace_no: Option<String>,
    pub pay_type: Option<PayType>,
    pub total_amount: Option<u64>,
    pub pay_time: Option<String>,
    pub metadata: Option<Metadata>,
}

impl InvalidIntent {
    /// `field: problem; field: problem`, every bad field named.
    pub fn message(&self) -> String {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        format!("invalid intent: {}", parts.join("; "))
    }
}

/// Reads `yyyyMMddHHmmss` as a real calendar time (no leap seconds).
pub fn parse_pay_time(s: &str) -> Option<chrono::NaiveDateTime> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(n(0..4)? as i32, n(4..6)?, n(6..8)?)?;
    let (h, mi, se) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if se > 59 {
        return None;
    }
    date.and_hms_opt(h, mi, se)
}

/// `now` written as `yyyyMMddHHmmss` in `offset`: the pay_time the worker
/// fixes for an intent without one.
pub fn format_pay_time(now: DateTime<Utc>, offset: FixedOffset) -> String {
    use crate::text::put_digits;
    use chrono::{Datelike, Timelike};
    // Digits written by hand: `format` reads its pattern again on every
    // call, and `write!` with widths goes through `core::fmt` (about 1,400
    // instructions per intent).
    let t = now.with_timezone(&offset);
    let mut b = *b"00000000000000";
    // A year past 9999 cannot come from the clock; it is clamped rather
    // than let widen the field.
    put_digits(&mut b[0..4], t.year().clamp(0, 9999) as u32);
    put_digits(&mut b[4..6], t.month());
    put_digits(&mut b[6..8], t.day());
    put_digits(&mut b[8..10], t.hour());
    put_digits(&mut b[10..12], t.minute());
    put_digits(&mut b[12..14], t.second());
    // Only ASCII digits were written into an ASCII template.
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

/// When the intent was made: the AMQP `timestamp` (seconds), else its
/// `pay_time` read in `offset`.
pub fn intent_time(
    amqp_timestamp: Option<u64>,
    pay_time: Option<&str>,
    offset: FixedOffset,
) -> Option<DateTime<Utc>> {
    if let Some(ts) = amqp_timestamp {
        return DateTime::from_timestamp(i64::try_from(ts).ok()?, 0);
    }
    let naive = parse_pay_time(pay_time?)?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether an intent made at `made` is older than `max_age_secs` (0: never).
pub fn is_expired(made: Option<DateTime<Utc>>, now: DateTime<Utc>, max_age_secs: u64) -> bool {
    match made {
        Some(t) if max_age_secs > 0 => {
            (now - t).num_seconds() > i64::try_from(max_age_secs).unwrap_or(i64::MAX)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_time_and_expiry() {
        let cst = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!());
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert_eq!(format_pay_time(now, cst), "20231115061320");
        let made = intent_time(None, Some("20231115060320"), cst);
        assert_eq!(made, DateTime::from_timestamp(1_699_999_400, 0));
        assert!(is_expired(made, now, 300));
        assert!(!is_expired(made, now, 600));
        assert!(!is_expired(made, now, 0), "0 means no expiry");
        let by_amqp = intent_time(Some(1_699_999_990), Some("20231115060320"), cst);
        assert!(!is_expired(by_amqp, now, 300), "the AMQP timestamp wins");
        assert!(!is_expired(intent_time(None, None, cst), now, 1));
    }

    #[test]
    fn pay_time_by_hand_is_chronos_format_in_every_offset() {
        for (secs, offset_h) in [
            (0, 0),
            (946_684_799, 8),
            (1_700_000_000, -5),
            (1_709_251_199, 14),
            (4_102_444_799, -12),
        ] {
            let offset = FixedOffset::east_opt(offset_h * 3600).unwrap_or_else(|| unreachable!());
            let at = DateTime::from_timestamp(secs, 0).unwrap_or_default();
            let want = at.with_timezone(&offset).format("%Y%m%d%H%M%S").to_string();
            assert_eq!(format_pay_time(at, offset), want, "{secs} at {offset_h}h");
        }
    }
}
