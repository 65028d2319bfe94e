//! What one attempt produced ([`Exchange`]), and the verdicts every
//! endpoint reaches alike on it: no connection, a lost answer, a transient
//! or unexpected HTTP status. Pure functions: no I/O, no clock.

use std::time::Duration;

use crate::gateway::object::Object;
use crate::outcome::GatewayAnswer;
use crate::text::gateway_text;

/// What one attempt produced on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange<'a> {
    /// No connection was made: the request never left this process.
    ConnectFailed(String),
    /// The request may have been sent (a timeout or a broken connection
    /// after connecting), so it may have reached the gateway.
    SendFailed { timed_out: bool, detail: String },
    /// An HTTP answer.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        body: &'a [u8],
    },
}

/// The class of an HTTP status, before the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: read the body.
    Success,
    /// 408, 429, 5xx: try again. `reached` says whether the gateway may have
    /// acted on the request (5xx: yes; 408/429: it says it did not).
    Transient { reached: bool },
    /// Other 4xx: the gateway refused; never retried.
    Refused,
    /// 1xx/3xx: not an answer of this API (redirects are not followed: a
    /// signed POST must not wander). Treated as a bad response.
    Unexpected,
}

/// "Is this retriable?" for an HTTP status. Kept apart from the backoff
/// policy and from body parsing so its table can be tested on its own.
pub fn status_class(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        408 | 429 => StatusClass::Transient { reached: false },
        500..=599 => StatusClass::Transient { reached: true },
        400..=499 => StatusClass::Refused,
        _ => StatusClass::Unexpected,
    }
}

/// Why a transient failure happened; decides the final kind when retries
/// run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientKind {
    /// Connect errors, timeouts, 408/429/5xx: `gateway_unavailable`.
    Unavailable,
    /// Not the documented answer: `bad_response`.
    BadResponse,
}

/// The verdict on one attempt: decided (`F`, the endpoint's own result),
/// or a transient failure that may be retried with the identical request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<F> {
    Final {
        value: F,
        answer: Option<GatewayAnswer>,
    },
    Transient(TransientFailure),
}

/// An attempt that may be tried again with the identical request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransientFailure {
    pub kind: TransientKind,
    /// The attempt may have reached the gateway.
    pub reached: bool,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub answer: Option<GatewayAnswer>,
}

pub fn transient<F>(
    kind: TransientKind,
    reached: bool,
    message: String,
    retry_after: Option<Duration>,
    answer: Option<GatewayAnswer>,
) -> Verdict<F> {
    Verdict::Transient(TransientFailure {
        kind,
        reached,
        message,
        retry_after,
        answer,
    })
}

/// The summary of an answer an event carries: its codes and message, cut
/// to the length an event may carry.
pub fn answer_of(status: u16, raw: Option<&Object<'_>>) -> GatewayAnswer {
    let text = |k: &str| raw?.text(k).map(|t| gateway_text(&t));
    GatewayAnswer {
        return_code: text("return_code"),
        result_code: text("result_code"),
        return_msg: text("return_msg"),
        http_status: status,
    }
}

/// What every endpoint's classifier does first: the verdict on what they
/// all treat alike (no connection, a lost answer, a transient or unexpected
/// HTTP status), or the answer's status and body, a 2xx or a 4xx, for the
/// endpoint to decide on.
// The error is the verdict itself, handed straight back by every caller;
// a box would only add an allocation to each refused answer.
#[allow(clippy::result_large_err)]
pub fn opened<'a, F>(exchange: &Exchange<'a>) -> Result<(u16, &'a [u8]), Verdict<F>> {
    match (transport_verdict(exchange), exchange) {
        (Some(v), _) => Err(v),
        (None, Exchange::Answered { status, body, .. }) => Ok((*status, body)),
        // transport_verdict decides on everything that is not an answer.
        (None, _) => Err(transient(
            TransientKind::BadResponse,
            true,
            "no answer to classify".to_owned(),
            None,
            None,
        )),
    }
}

/// The body as a JSON object, if it is one (its strings borrowed).
pub fn json_object(body: &[u8]) -> Option<Object<'_>> {
    Object::parse(body).ok()
}

/// The verdict on what every endpoint treats alike: no connection, a lost
/// answer, a transient or unexpected HTTP status. `None`: the answer is a
/// 2xx or a 4xx, which the endpoint decides on.
fn transport_verdict<F>(exchange: &Exchange<'_>) -> Option<Verdict<F>> {
    let (status, retry_after, body) = match exchange {
        Exchange::ConnectFailed(detail) => {
            return Some(transient(
                TransientKind::Unavailable,
                false,
                format!("cannot connect to the gateway: {detail}"),
                None,
                None,
            ));
        }
        Exchange::SendFailed { timed_out, detail } => {
            let what = if *timed_out {
                "the gateway did not answer in time"
            } else {
                "the connection to the gateway broke"
            };
            return Some(transient(
                TransientKind::Unavailable,
                true,
                format!("{what}: {detail}"),
                None,
                None,
            ));
        }
        Exchange::Answered {
            status,
            retry_after,
            body,
        } => (*status, *retry_after, *body),
    };
    match status_class(status) {
        StatusClass::Transient { reached } => {
            let answer = answer_of(status, json_object(body).as_ref());
            Some(transient(
                TransientKind::Unavailable,
                reached,
                format!("gateway answered HTTP {status}{}", message_suffix(&answer)),
                retry_after,
                Some(answer),
            ))
        }
        StatusClass::Unexpected => Some(transient(
            TransientKind::BadResponse,
            true,
            format!("gateway answered HTTP {status}, which this API never does"),
            None,
            Some(answer_of(status, None)),
        )),
        StatusClass::Success | StatusClass::Refused => None,
    }
}

/// `: <return_msg>` when the answer carried one.
pub fn message_suffix(answer: &GatewayAnswer) -> String {
    answer
        .return_msg
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_table() {
        let table = [
            (200, StatusClass::Success),
            (204, StatusClass::Success),
            (301, StatusClass::Unexpected),
            (400, StatusClass::Refused),
            (401, StatusClass::Refused),
            (404, StatusClass::Refused),
            (408, StatusClass::Transient { reached: false }),
            (409, StatusClass::Refused),
            (422, StatusClass::Refused),
            (429, StatusClass::Transient { reached: false }),
            (500, StatusClass::Transient { reached: true }),
            (501, StatusClass::Transient { reached: true }),
            (502, StatusClass::Transient { reached: true }),
            (503, StatusClass::Transient { reached: true }),
            (504, StatusClass::Transient { reached: true }),
            (100, StatusClass::Unexpected),
        ];
        for (status, want) in table {
            assert_eq!(status_class(status), want, "HTTP {status}");
        }
    }
}
