//! The decided outcome of an intent identity: what the result event reports
//! and what Redis stores.

use serde::{Deserialize, Serialize};

/// `status` of a result event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ready,
    InProcess,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::InProcess => "in_process",
            Status::Failed => "failed",
        }
    }

    /// The result event's CloudEvents `type`: `h5pay.result.<status>`.
    pub fn event_type(self) -> &'static str {
        match self {
            Status::Ready => "h5pay.result.ready",
            Status::InProcess => "h5pay.result.in_process",
            Status::Failed => "h5pay.result.failed",
        }
    }
}

/// `error.kind` of a failed result event (contract §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    InvalidIntent,
    Conflict,
    Expired,
    GatewayRejected,
    PaymentFailed,
    BadSignature,
    BadResponse,
    GatewayUnavailable,
    OutcomeUnknown,
}

impl FailureKind {
    /// Every kind, in the contract's order.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::InvalidIntent,
        FailureKind::Conflict,
        FailureKind::Expired,
        FailureKind::GatewayRejected,
        FailureKind::PaymentFailed,
        FailureKind::BadSignature,
        FailureKind::BadResponse,
        FailureKind::GatewayUnavailable,
        FailureKind::OutcomeUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidIntent => "invalid_intent",
            FailureKind::Conflict => "conflict",
            FailureKind::Expired => "expired",
            FailureKind::GatewayRejected => "gateway_rejected",
            FailureKind::PaymentFailed => "payment_failed",
            FailureKind::BadSignature => "bad_signature",
            FailureKind::BadResponse => "bad_response",
            FailureKind::GatewayUnavailable => "gateway_unavailable",
            FailureKind::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// WeChat JSAPI parameters, ready for `WeixinJSBridge.invoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jsapi {
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Seconds (10 digits): a millisecond value from the gateway is truncated.
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// The gateway's `packages`, under the name WeChat's JS API uses.
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// What the payer needs: at least one of the three is present on `ready`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payable {
    pub code_url: Option<String>,
    pub jsapi: Option<Jsapi>,
    pub ali_trade_no: Option<String>,
}

/// The summary of the gateway's last answer carried in the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayAnswer {
    pub return_code: Option<String>,
    pub result_code: Option<String>,
    pub return_msg: Option<String>,
    /// HTTP status of the last answer.
    pub http_status: u16,
}

/// A failure's kind and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The result of calling the gateway for one identity, retries included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    pub decision: Decision,
    /// HTTP attempts made.
    pub attempts: u32,
    /// The last answer received, if any answer was.
    pub answer: Option<GatewayAnswer>,
    pub trade_no: Option<String>,
}

/// The gateway-side decision for an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Ready(Payable),
    InProcess,
    Failed(Failure),
}

impl Decision {
    pub fn status(&self) -> Status {
        match self {
            Decision::Ready(_) => Status::Ready,
            Decision::InProcess => Status::InProcess,
            Decision::Failed(_) => Status::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_type_is_the_status_under_h5pay_result() {
        for status in [Status::Ready, Status::InProcess, Status::Failed] {
            assert_eq!(
                status.event_type(),
                format!("h5pay.result.{}", status.as_str())
            );
        }
    }
}
