//! `POST /api/openpay/v3/h5pay`: placing the order. The request is signed
//! once per identity and sent identically on every attempt; the answer is
//! classified here ([`classify`]: signature, echoes, outcome); a refusal
//! after an attempt that may have reached the gateway is `outcome_unknown`
//! ([`classify::refusal_after_reaching`]).

pub mod classify;
mod success;

use secrecy::SecretString;

use super::signed_call::{Abandon, Abandoned, Decided, Ended, SignedClient, TransientKind};
use super::wire::H5PayRequest;
use crate::outcome::{CallResult, Decision, Failure, FailureKind};
use classify::{Expect, classify, refusal_after_reaching};

/// What the gateway decided on an h5pay request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H5PayDecided {
    pub decision: Decision,
    /// A return_code FAIL or an HTTP 4xx: after an attempt that may have
    /// reached the gateway, no longer a clean rejection.
    pub refusal: bool,
    pub trade_no: Option<String>,
}

impl Decided for H5PayDecided {
    fn outcome_label(&self) -> &'static str {
        match &self.decision {
            Decision::Ready(_) => "ready",
            Decision::InProcess => "in_process",
            Decision::Failed(f) => f.kind.as_str(),
        }
    }
}

/// Calls h5pay for one identity until a decision. `earlier` says an attempt
/// before this call (another worker's, whose claim was taken over) may have
/// reached the gateway: a refusal is then `outcome_unknown`.
pub async fn place(
    client: &SignedClient,
    url: &reqwest::Url,
    req: &H5PayRequest,
    key: &SecretString,
    verify_response_sign: bool,
    abandon: Abandon<'_>,
    earlier: Option<&str>,
) -> Result<CallResult, Abandoned> {
    let body = bytes::Bytes::from(req.signed_body(key));
    let expect = Expect {
        verify_key: verify_response_sign.then_some(key),
        http_links: url.scheme() == "http",
    };
    let called = client
        .call(url, body, |x| classify(x, req, expect), abandon, earlier)
        .await?;
    let decision = match called.ended {
        Ended::Decided(d) => {
            return Ok(CallResult {
                decision: refusal_after_reaching(d.decision, d.refusal, called.reached.as_deref()),
                attempts: called.attempts,
                answer: called.answer,
                trade_no: d.trade_no,
            });
        }
        Ended::GaveUp { kind, message, why } => {
            let kind = match kind {
                TransientKind::Unavailable => FailureKind::GatewayUnavailable,
                TransientKind::BadResponse => FailureKind::BadResponse,
            };
            Decision::Failed(Failure::new(
                kind,
                format!(
                    "{message} (gave up after {} attempts: {why})",
                    called.attempts
                ),
            ))
        }
    };
    Ok(CallResult {
        decision,
        attempts: called.attempts,
        answer: called.answer,
        trade_no: None,
    })
}
