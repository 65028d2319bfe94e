//! The HTTP edge to the gateway: one pooled reqwest client, the same signed
//! body for every attempt of an identity, classification and backoff
//! delegated to [`classify`](super::classify) and [`retry`](super::retry).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::classify::{Exchange, Expect, TransientKind, Verdict, classify, settle_refusal};
use super::retry::{Backoff, RetryPolicy};
use super::types::H5PayRequest;
use crate::breaker::Breaker;
use crate::config::{GatewaySettings, RetrySettings};
use crate::outcome::{CallResult, Decision, Failure, FailureKind, GatewayAnswer};

/// Bodies larger than this are not an answer of this API.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("gateway.url: {0}")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// The call was abandoned before a decision (the claim was lost, or the
/// worker is stopping before the first attempt); nothing may be stored or
/// published for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gateway call abandoned after {attempts} attempts, before a decision")]
pub struct Abandoned {
    /// Attempts already made: 0 means the gateway never saw this call.
    pub attempts: u32,
}

pub struct GatewayClient {
    http: reqwest::Client,
    url: reqwest::Url,
    policy: RetryPolicy,
    verify_response_sign: bool,
    breaker: Arc<Breaker>,
}

impl GatewayClient {
    pub fn new(
        gateway: &GatewaySettings,
        retry: &RetrySettings,
        breaker: Arc<Breaker>,
    ) -> Result<Self, ClientError> {
        let url = reqwest::Url::parse(&gateway.url).map_err(|e| ClientError::Url(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(gateway.connect_timeout_ms))
            .timeout(Duration::from_millis(gateway.request_timeout_ms))
            // A signed payment request is never re-sent somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("h5pay-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(GatewayClient {
            http,
            url,
            policy: RetryPolicy::from(retry),
            verify_response_sign: gateway.verify_response_sign,
            breaker,
        })
    }

    /// Calls the gateway for one identity until a decision, retrying
    /// transient failures with the identical body. `cancel` abandons the
    /// call between attempts (a lost claim); `before_first` abandons it only
    /// while no attempt has been made (a stop hands such intents back).
    /// `earlier` says an attempt before this call (another worker's, whose
    /// claim was taken over) may have reached the gateway: a refusal is
    /// then `outcome_unknown`, not a clean rejection.
    pub async fn call(
        &self,
        req: &H5PayRequest,
        key: &SecretString,
        cancel: &CancellationToken,
        before_first: &CancellationToken,
        earlier: Option<&str>,
    ) -> Result<CallResult, Abandoned> {
        let body = bytes::Bytes::from(req.signed_body(key));
        let verify_key = self.verify_response_sign.then_some(key);
        let mut attempts = 0u32;
        // Time this intent has spent on the gateway: its attempts and the
        // waits between them, not a wait at the breaker before the first.
        let mut spent = Duration::ZERO;
        let mut reached: Option<String> = earlier.map(str::to_owned);
        let mut last_answer: Option<GatewayAnswer> = None;

        loop {
            // The breaker holds back first attempts only (contract §5.11):
            // an intent that has made an attempt keeps its own schedule and
            // budget, so it ends on time whatever the breaker says, and one
            // identity the gateway always fails cannot keep others waiting.
            let permit = if attempts == 0 {
                Some(tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Abandoned { attempts }),
                    _ = before_first.cancelled() => return Err(Abandoned { attempts }),
                    p = self.breaker.acquire() => p,
                })
            } else if cancel.is_cancelled() {
                return Err(Abandoned { attempts });
            } else {
                None
            };
            attempts += 1;
            let started = Instant::now();
            // A debug-level span: free at info level, the attempt number on
            // every line when debugging.
            let sent = self
                .send(body.clone())
                .instrument(tracing::debug_span!("attempt", n = attempts))
                .await;
            let took = started.elapsed();
            spent += took;
            let expect = Expect {
                verify_key,
                http_links: self.url.scheme() == "http",
            };
            let verdict = classify(&sent.as_exchange(), req, expect);
            let transient = matches!(verdict, Verdict::Transient { .. });
            // A failed probe counts as this intent's first attempt like any
            // other: it retries on its own schedule from here.
            match permit {
                Some(p) => p.record(transient),
                None => self.breaker.record(transient),
            }
            metrics::counter!("h5pay_gateway_requests_total", "outcome" => label(&sent, &verdict))
                .increment(1);
            metrics::histogram!("h5pay_gateway_request_duration_seconds")
                .record(took.as_secs_f64());

            match verdict {
                Verdict::Final {
                    decision,
                    refusal,
                    answer,
                    trade_no,
                } => {
                    return Ok(CallResult {
                        decision: settle_refusal(decision, refusal, reached.as_deref()),
                        attempts,
                        answer: answer.or(last_answer),
                        trade_no,
                    });
                }
                Verdict::Transient {
                    kind,
                    reached: may_have_reached,
                    message,
                    retry_after,
                    answer,
                } => {
                    if may_have_reached && reached.is_none() {
                        reached = Some(format!("attempt {attempts}: {message}"));
                    }
                    if answer.is_some() {
                        last_answer = answer;
                    }
                    let delay = self
                        .policy
                        .next(attempts, spent, retry_after, &mut rand::rng());
                    match delay {
                        Backoff::Wait(d) => {
                            tracing::debug!(attempt = attempts, delay_ms = d.as_millis() as u64, %message, "gateway attempt failed; retrying");
                            metrics::counter!("h5pay_gateway_retries_total", "reason" => retry_reason(kind, &sent)).increment(1);
                            tokio::select! {
                                biased;
                                _ = cancel.cancelled() => return Err(Abandoned { attempts }),
                                _ = tokio::time::sleep(d) => {}
                            }
                            spent += d;
                        }
                        Backoff::GiveUp(why) => {
                            let kind = match kind {
                                TransientKind::Unavailable => FailureKind::GatewayUnavailable,
                                TransientKind::BadResponse => FailureKind::BadResponse,
                            };
                            return Ok(CallResult {
                                decision: Decision::Failed(Failure::new(
                                    kind,
                                    format!("{message} (gave up after {attempts} attempts: {why})"),
                                )),
                                attempts,
                                answer: last_answer,
                                trade_no: None,
                            });
                        }
                    }
                }
            }
        }
    }

    async fn send(&self, body: bytes::Bytes) -> Sent {
        let result = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => return Sent::from_error(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let mut buf = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Sent::Answered {
                            status,
                            retry_after,
                            // Not JSON we accept: classified as a bad response.
                            body: b"response body over the size limit".to_vec(),
                        };
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Sent::from_error(&e),
            }
        }
        Sent::Answered {
            status,
            retry_after,
            body: buf,
        }
    }
}

/// An attempt's result with its body owned.
enum Sent {
    ConnectFailed(String),
    SendFailed {
        timed_out: bool,
        detail: String,
    },
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
}

impl Sent {
    fn from_error(e: &reqwest::Error) -> Sent {
        // Not reqwest's own text: it quotes the URL, which may carry
        // credentials. The causes (hyper, io) do not.
        let what = if e.is_connect() {
            "connect error"
        } else if e.is_timeout() {
            "timed out"
        } else if e.is_body() || e.is_decode() {
            "error reading the answer"
        } else {
            "request failed"
        };
        let detail = match e.source() {
            Some(cause) => format!("{what}: {}", error_chain(cause)),
            None => what.to_owned(),
        };
        if e.is_connect() {
            Sent::ConnectFailed(detail)
        } else {
            Sent::SendFailed {
                timed_out: e.is_timeout(),
                detail,
            }
        }
    }

    fn as_exchange(&self) -> Exchange<'_> {
        match self {
            Sent::ConnectFailed(d) => Exchange::ConnectFailed(d.clone()),
            Sent::SendFailed { timed_out, detail } => Exchange::SendFailed {
                timed_out: *timed_out,
                detail: detail.clone(),
            },
            Sent::Answered {
                status,
                retry_after,
                body,
            } => Exchange::Answered {
                status: *status,
                retry_after: *retry_after,
                body,
            },
        }
    }
}

/// The error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn label(sent: &Sent, verdict: &Verdict) -> &'static str {
    match (sent, verdict) {
        (Sent::ConnectFailed(_), _) => "connect_error",
        (
            Sent::SendFailed {
                timed_out: true, ..
            },
            _,
        ) => "timeout",
        (Sent::SendFailed { .. }, _) => "io_error",
        (
            Sent::Answered { status, .. },
            Verdict::Transient {
                kind: TransientKind::Unavailable,
                ..
            },
        ) => {
            if *status >= 500 {
                "http_5xx"
            } else {
                "throttled"
            }
        }
        (_, Verdict::Transient { .. }) => "bad_response",
        (_, Verdict::Final { decision, .. }) => match decision {
            Decision::Ready(_) => "ready",
            Decision::InProcess => "in_process",
            Decision::Failed(f) => f.kind.as_str(),
        },
    }
}

fn retry_reason(kind: TransientKind, sent: &Sent) -> &'static str {
    match (kind, sent) {
        (TransientKind::BadResponse, _) => "bad_response",
        (_, Sent::ConnectFailed(_)) => "connect_error",
        (
            _,
            Sent::SendFailed {
                timed_out: true, ..
            },
        ) => "timeout",
        (_, Sent::SendFailed { .. }) => "io_error",
        (_, Sent::Answered { status, .. }) if *status >= 500 => "http_5xx",
        _ => "throttled",
    }
}

/// `Retry-After`: delta-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-26T08:49:30Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
