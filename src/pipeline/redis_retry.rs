//! The retry around every Redis step of the pipeline.

use std::future::Future;

use tracing::{error, info, warn};

use super::Pipeline;
use crate::claim::StoreError;
use crate::telemetry::metrics::{self, HandBack, Label, RedisOp};

impl Pipeline {
    /// Runs a Redis operation until it succeeds, or until retrying cannot
    /// help: a reply the worker cannot use (contract §5.13) is tried
    /// [`UNUSABLE_TRIES`] times, then given up so the intent is handed back
    /// and the delivery limit moves it to the DLQ. `persist` says whether a
    /// stop interrupts the retries.
    pub(super) async fn redis<T, F, Fut>(
        &self,
        op: RedisOp,
        persist: Persist,
        f: F,
    ) -> Result<T, RedisGaveUp>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = crate::reconnect::Reconnect::redis();
        let mut failures = 0u32;
        let mut unusable = 0u32;
        loop {
            if persist == Persist::UntilStop && self.stop.is_cancelled() {
                return Err(RedisGaveUp::Stopping);
            }
            let e = match f().await {
                Ok(v) => {
                    if failures > 0 {
                        info!(op = op.as_str(), failures, "redis answers again");
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let cause = e.cause();
            metrics::redis_error(op, cause);
            if cause.is_unusable() {
                unusable += 1;
                if unusable >= UNUSABLE_TRIES {
                    error!(op = op.as_str(), cause = cause.as_str(), error = %e, "redis answered something no retry can fix; handing the intent back (the delivery limit moves it to the DLQ)");
                    metrics::handed_back(HandBack::RedisUnusable);
                    return Err(RedisGaveUp::Unusable);
                }
            } else if failures == 0 {
                warn!(op = op.as_str(), error = %e, "redis unavailable: the intent waits (no gateway call, no ack)");
            }
            failures += 1;
            let jittered = backoff.next_delay();
            if persist == Persist::UntilStop {
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(RedisGaveUp::Stopping),
                    _ = tokio::time::sleep(jittered) => {}
                }
            } else {
                tokio::time::sleep(jittered).await;
            }
        }
    }
}

/// Whether a stop interrupts a Redis step's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persist {
    /// Nothing is decided yet: a stop hands the intent back.
    UntilStop,
    /// The step after it must not be skipped (an outcome waits to be
    /// stored or marked): keep trying while the process lives.
    WhileAlive,
}

/// Why a Redis step was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RedisGaveUp {
    Stopping,
    /// Redis answered something retrying cannot fix.
    Unusable,
}

/// Tries of a Redis step whose reply is unusable before the intent is
/// handed back.
const UNUSABLE_TRIES: u32 = 3;
