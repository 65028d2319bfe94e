//! The words of payment events (contract §10): the state an event names and
//! the kinds of anomaly. Ground floor: the gateway, telemetry and the
//! payment code all speak them.

use serde::{Deserialize, Serialize};

/// `state` of a payment event: a state a payment moved to, or `anomaly`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    Paid,
    Failed,
    Closed,
    Unresolved,
    Anomaly,
}

impl EventState {
    pub const ALL: [EventState; 5] = [
        EventState::Paid,
        EventState::Failed,
        EventState::Closed,
        EventState::Unresolved,
        EventState::Anomaly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Paid => "paid",
            EventState::Failed => "failed",
            EventState::Closed => "closed",
            EventState::Unresolved => "unresolved",
            EventState::Anomaly => "anomaly",
        }
    }
}

/// `anomaly.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A verified answer whose echoes differ from what the worker sent.
    Mismatch,
    /// About a payment the worker does not know.
    UnknownPayment,
    /// Two answers (or two fields of one answer) disagree.
    Contradiction,
    /// An answer the worker cannot place.
    Unexpected,
    /// A signed message of another kind replayed as a notify or a query
    /// answer (contract §10 rule 4).
    ForeignMessage,
}

impl AnomalyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Mismatch => "mismatch",
            AnomalyKind::UnknownPayment => "unknown_payment",
            AnomalyKind::Contradiction => "contradiction",
            AnomalyKind::Unexpected => "unexpected",
            AnomalyKind::ForeignMessage => "foreign_message",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub message: String,
}
