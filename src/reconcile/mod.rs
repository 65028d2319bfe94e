//! The reconciler (contract §12): every followed payment is checked on a
//! schedule until it is final — queried, closed when it stays unpaid,
//! given up (`unresolved`) after `max_age_secs` — so no `in_process` or
//! `outcome_unknown` ends as a ticket for a person.
//!
//! * [`schedule`]: when a check is due and what it does (pure).
//! * [`store`]: the schedule in Redis (a sorted set picked up with
//!   leases), the identity's lease, the close pair.
//! * [`check`]: one check; `evidence`: what its query answer means (pure).
//!
//! The pipeline schedules a payment's first check when it stores a followed
//! outcome, before the intent is acknowledged ([`Scheduling`]); every
//! worker replica runs a [`Reconciler`] that picks up due checks.

pub mod check;
mod evidence;
pub mod schedule;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::claim::{SortedEntry, StoreError};
use crate::intent::Identity;
use crate::payment::apply::PaymentSink;
use crate::telemetry::metrics;
pub use check::Checker;
pub use schedule::{Plan, Schedule};
pub use store::ChecksStore;

/// How often due checks are looked for when none were waiting (the lag's
/// floor).
const POLL: Duration = Duration::from_millis(200);

/// Schedules first checks (the pipeline's side).
#[derive(Clone)]
pub struct Scheduling {
    pub checks: ChecksStore,
    pub schedule: Schedule,
}

impl Scheduling {
    /// Schedules the first check of a payment placed at `placed` (when its
    /// outcome was decided, never the publisher's `pay_time`), unless one is
    /// scheduled.
    pub async fn first_check(
        &self,
        id: &Identity,
        placed: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let due = self.schedule.first(placed);
        self.checks.schedule(id, due.timestamp_millis()).await
    }

    /// The same first check as an entry of the schedule, to be written in
    /// the outcome's store round trip ([`crate::claim::StoredOutcome`]).
    pub fn first_entry(&self, id: &Identity, placed: DateTime<Utc>) -> SortedEntry<'_> {
        let member = store::member(id);
        SortedEntry {
            key: self.checks.shard_key(&member),
            member,
            score: self.schedule.first(placed).timestamp_millis(),
        }
    }
}

/// Picks up due checks and runs them, up to `concurrency` at once.
pub struct Reconciler<S> {
    pub checker: Arc<Checker<S>>,
    /// `reconcile.concurrency`: checks this replica runs at once (at
    /// least 1).
    pub concurrency: u32,
}

impl<S: PaymentSink + Send + Sync + 'static> Reconciler<S> {
    /// Runs until `stop`; then waits (at most `grace`) for the checks in
    /// progress. A check cut off keeps its pick-up lease and runs again
    /// elsewhere after it.
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        let concurrency = self.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency as usize));
        let lease_ms = self.checker.lease_ms;
        let mut failing = false;
        let mut backoff = crate::reconnect::Reconnect::redis();
        info!(concurrency, "reconciler running");
        loop {
            if stop.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    p = slots.clone().acquire_owned() => drop(p),
                }
                continue;
            }
            let picked = self.checker.checks.due(free, lease_ms).await;
            let (now_ms, due) = match picked {
                Ok(p) => {
                    if failing {
                        info!("reconciler: Redis answers again");
                        failing = false;
                    }
                    backoff.reset();
                    p
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "reconciler cannot read its schedule; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            };
            let full = due.len() >= free;
            for d in due {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let checker = self.checker.clone();
                // Boxed for the reason given in `Worker::spawn`.
                tokio::spawn(async move {
                    Box::pin(checker.run(&d, now_ms)).await;
                    drop(permit);
                });
            }
            if !full {
                if let Ok(n) = self.checker.checks.overdue(now_ms).await {
                    metrics::reconcile_overdue(n);
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
        debug!("reconciler stopping: waiting for the checks in progress");
        if tokio::time::timeout(grace, slots.acquire_many(concurrency))
            .await
            .is_err()
        {
            warn!(
                "reconciler: checks still running at the end of the grace period; they run again after their lease"
            );
        }
        info!("reconciler stopped");
    }
}
