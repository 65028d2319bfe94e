//! The HTTP edge to the gateway, shared by every endpoint (h5pay, and the
//! lifecycle's queryorder and closeorder): one pooled reqwest client with
//! timeouts and no redirects, a size cap on answers, and the attempt loop —
//! the same signed body on every attempt, the breaker before a first
//! attempt, backoff between attempts ([`RetryPolicy`]), a metric per
//! attempt. What an answer *means* is the endpoint's classifier: a pure
//! function from an [`Exchange`] to a [`Verdict`].

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::breaker::Breaker;
use super::retry::{Backoff, GiveUpReason, RetryPolicy};
use crate::config::{GatewaySettings, RetrySettings};
use crate::outcome::GatewayAnswer;
use crate::telemetry::metrics::{self, AttemptOutcome, Transient};

// What an attempt produced and the verdicts every endpoint shares are
// their own module; the paths stay `signed_call::Exchange` and so on.
mod verdict;
pub use verdict::*;

/// Bodies larger than this are not an answer of this API.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// What an answer's `Content-Length` may reserve before its bytes arrive:
/// answers are about a kilobyte.
const PRESIZE_BYTES: usize = 16 * 1024;

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

/// A decided value names its outcome in `h5pay_gateway_requests_total`.
pub trait Decided {
    fn outcome_label(&self) -> &'static str;
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended<F> {
    /// The gateway decided.
    Decided(F),
    /// Transient failures until the budget ran out.
    GaveUp {
        kind: TransientKind,
        message: String,
        why: GiveUpReason,
    },
}

/// A call to one endpoint, retries included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called<F> {
    pub ended: Ended<F>,
    /// HTTP attempts made.
    pub attempts: u32,
    /// The first attempt that may have reached the gateway (or what the
    /// caller said of an attempt before this call), described.
    pub reached: Option<String>,
    /// The last answer received, if any was.
    pub answer: Option<GatewayAnswer>,
}

/// When a call may be abandoned.
#[derive(Clone, Copy)]
pub struct Abandon<'a> {
    /// At any point between attempts (a lost claim).
    pub any_time: &'a CancellationToken,
    /// Only while no attempt has been made (a stop hands such intents back).
    pub before_first: &'a CancellationToken,
    /// Asked before every attempt, retries included: `false` abandons the
    /// call (a close whose payment is no longer open, contract §12).
    pub unless: Option<&'a dyn StillWanted>,
}

impl std::fmt::Debug for Abandon<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abandon")
            .field("any_time", &self.any_time.is_cancelled())
            .field("before_first", &self.before_first.is_cancelled())
            .field("unless", &self.unless.is_some())
            .finish()
    }
}

/// A condition a call's every attempt depends on, read again before each.
pub trait StillWanted: Sync {
    fn still_wanted(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The signed-call client: one per process, shared by every endpoint.
pub struct SignedClient {
    http: reqwest::Client,
    policy: RetryPolicy,
    breaker: Arc<Breaker>,
}

impl SignedClient {
    pub fn new(
        gateway: &GatewaySettings,
        retry: &RetrySettings,
        breaker: Arc<Breaker>,
    ) -> Result<Self, ClientError> {
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
        Ok(SignedClient {
            http,
            policy: RetryPolicy::from(retry),
            breaker,
        })
    }

    /// POSTs `body` to `url` until `classify` decides, retrying transient
    /// failures with the identical body (contract §5.6). The breaker holds
    /// back first attempts only (§5.11): a call that has made an attempt
    /// keeps its own schedule and budget, so it ends on time whatever the
    /// breaker says, and a failed probe is the probing call's first attempt.
    /// `earlier` says an attempt before this call (another worker's, whose
    /// claim was taken over) may have reached the gateway.
    pub async fn call<F: Decided>(
        &self,
        url: &reqwest::Url,
        body: bytes::Bytes,
        classify: impl Fn(&Exchange<'_>) -> Verdict<F>,
        abandon: Abandon<'_>,
        earlier: Option<&str>,
    ) -> Result<Called<F>, Abandoned> {
        let mut attempts = 0u32;
        // Time this call has spent on the gateway: its attempts and the
        // waits between them, not a wait at the breaker before the first.
        let mut spent = Duration::ZERO;
        let mut reached: Option<String> = earlier.map(str::to_owned);
        let mut last_answer: Option<GatewayAnswer> = None;
        loop {
            let (verdict, took, label) = self
                .attempt(url, &body, &classify, attempts, abandon)
                .await?;
            attempts += 1;
            spent += took;
            let failed = match verdict {
                Verdict::Final { value, answer } => {
                    return Ok(Called {
                        ended: Ended::Decided(value),
                        attempts,
                        reached,
                        answer: answer.or(last_answer),
                    });
                }
                Verdict::Transient(failed) => failed,
            };
            if failed.reached && reached.is_none() {
                reached = Some(format!("attempt {attempts}: {}", failed.message));
            }
            if failed.answer.is_some() {
                last_answer = failed.answer;
            }
            // Decided before sleeping: the thread-local rng must not live
            // across the wait.
            let next = self
                .policy
                .next(attempts, spent, failed.retry_after, &mut rand::rng());
            let wait = match next {
                Backoff::Wait(d) => d,
                Backoff::GiveUp(why) => {
                    return Ok(Called {
                        ended: Ended::GaveUp {
                            kind: failed.kind,
                            message: failed.message,
                            why,
                        },
                        attempts,
                        reached,
                        answer: last_answer,
                    });
                }
            };
            tracing::debug!(attempt = attempts, delay_ms = wait.as_millis() as u64, message = %failed.message, "gateway attempt failed; retrying");
            metrics::gateway_retry(label);
            tokio::select! {
                biased;
                _ = abandon.any_time.cancelled() => return Err(Abandoned { attempts }),
                _ = tokio::time::sleep(wait) => {}
            }
            spent += wait;
        }
    }

    /// One attempt: through the breaker if it is the first, sent, classified,
    /// reported to the breaker and counted. Returns the verdict, the time
    /// the attempt took, and its transient label (for the retry metric).
    async fn attempt<F: Decided>(
        &self,
        url: &reqwest::Url,
        body: &bytes::Bytes,
        classify: &impl Fn(&Exchange<'_>) -> Verdict<F>,
        made: u32,
        abandon: Abandon<'_>,
    ) -> Result<(Verdict<F>, Duration, Transient), Abandoned> {
        if let Some(guard) = abandon.unless
            && !guard.still_wanted().await
        {
            return Err(Abandoned { attempts: made });
        }
        let permit = if made == 0 {
            Some(tokio::select! {
                biased;
                _ = abandon.any_time.cancelled() => return Err(Abandoned { attempts: made }),
                _ = abandon.before_first.cancelled() => return Err(Abandoned { attempts: made }),
                p = self.breaker.acquire() => p,
            })
        } else if abandon.any_time.is_cancelled() {
            return Err(Abandoned { attempts: made });
        } else {
            None
        };
        let started = Instant::now();
        // A debug-level span: free at info level, the attempt number on
        // every line when debugging.
        let sent = self
            .send(url, body.clone())
            .instrument(tracing::debug_span!("attempt", n = made + 1))
            .await;
        let took = started.elapsed();
        let verdict = classify(&sent.as_exchange());
        let (outcome, label) = match &verdict {
            Verdict::Final { value, .. } => (
                AttemptOutcome::Decided(value.outcome_label()),
                Transient::BadResponse,
            ),
            Verdict::Transient(failed) => {
                let label = sent.transient(failed.kind);
                (AttemptOutcome::Transient(label), label)
            }
        };
        let is_transient = matches!(outcome, AttemptOutcome::Transient(_));
        match permit {
            Some(p) => p.record(is_transient),
            None => self.breaker.record(is_transient),
        }
        metrics::gateway_attempt(outcome, took);
        audit(url, made + 1, &verdict, outcome, took);
        Ok((verdict, took, label))
    }

    async fn send(&self, url: &reqwest::Url, body: bytes::Bytes) -> Sent {
        let result = self
            .http
            .post(url.clone())
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
        // Sized from the answer's length when it gives one, so the body is
        // not copied as it grows; a claimed length alone reserves at most
        // PRESIZE_BYTES (the limit is enforced on what arrives).
        let expected = response.content_length().unwrap_or(0);
        let mut buf =
            Vec::with_capacity(usize::try_from(expected).map_or(0, |n| n.min(PRESIZE_BYTES)));
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

/// One structured line per gateway attempt (target `h5pay_worker::audit`),
/// inside the intent's or the check's span (which names the payment and
/// its trace): enough to rebuild one payment's history from logs alone.
/// The gateway's codes only: never a key, a sign or a link.
fn audit<F>(
    url: &reqwest::Url,
    attempt: u32,
    verdict: &Verdict<F>,
    outcome: AttemptOutcome,
    took: Duration,
) {
    let answer = match verdict {
        Verdict::Final { answer, .. } | Verdict::Transient(TransientFailure { answer, .. }) => {
            answer.as_ref()
        }
    };
    let endpoint = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    tracing::info!(
        target: "h5pay_worker::audit",
        endpoint,
        attempt,
        http_status = answer.map_or(0, |a| a.http_status),
        return_code = answer.and_then(|a| a.return_code.as_deref()).unwrap_or(""),
        result_code = answer.and_then(|a| a.result_code.as_deref()).unwrap_or(""),
        outcome = outcome.as_str(),
        duration_ms = took.as_millis() as u64,
        "gateway attempt"
    );
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

    /// The metric label of a transient failure of this attempt.
    fn transient(&self, kind: TransientKind) -> Transient {
        match (kind, self) {
            (TransientKind::BadResponse, _) => Transient::BadResponse,
            (_, Sent::ConnectFailed(_)) => Transient::ConnectError,
            (
                _,
                Sent::SendFailed {
                    timed_out: true, ..
                },
            ) => Transient::Timeout,
            (_, Sent::SendFailed { .. }) => Transient::IoError,
            (_, Sent::Answered { status, .. }) if *status >= 500 => Transient::Http5xx,
            _ => Transient::Throttled,
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
