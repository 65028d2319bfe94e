//! The one wait between tries to reach RabbitMQ or Redis again (contract
//! §14): exponential with full jitter, so replicas that lost the same broker
//! at the same moment do not come back in step. Written here rather than
//! taken from `backon`, whose jitter adds to the delay (between d and 2d)
//! instead of drawing the whole delay (between 0 and d), and whose builders
//! are meant to drive a retried closure, not a supervisor loop that also
//! waits on a stop signal. The gateway keeps its own policy
//! (`gateway::retry`): its budget and `Retry-After` rules are the
//! contract's.

use std::time::Duration;

use rand::RngExt;

/// Waits between tries: a draw from `[0, min(cap, first · 2^n)]` after the
/// n-th failure in a row.
#[derive(Debug, Clone)]
pub struct Reconnect {
    first: Duration,
    cap: Duration,
    failures: u32,
}

/// RabbitMQ sessions (the worker's consumer and every publishing link).
pub const BROKER_FIRST: Duration = Duration::from_millis(200);
/// The longest wait (contract §14: capped at 30 s).
pub const CAP: Duration = Duration::from_secs(30);
/// Redis calls of an intent that waits: short, since the intent holds a
/// delivery slot meanwhile (and Redis clients reconnect by themselves).
pub const REDIS_FIRST: Duration = Duration::from_millis(50);
pub const REDIS_CAP: Duration = Duration::from_secs(2);

impl Reconnect {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Reconnect {
            first,
            cap: cap.min(CAP),
            failures: 0,
        }
    }

    /// The policy of RabbitMQ reconnects.
    pub fn broker() -> Self {
        Reconnect::new(BROKER_FIRST, CAP)
    }

    /// The policy of Redis retries.
    pub fn redis() -> Self {
        Reconnect::new(REDIS_FIRST, REDIS_CAP)
    }

    /// The wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }

    /// The most the next wait can be.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(20));
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// After a success: the next failure waits little again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_drawn_whole_below_a_doubling_ceiling_capped_at_30_s() {
        let mut r = Reconnect::broker();
        let mut ceiling = BROKER_FIRST;
        for _ in 0..40 {
            assert_eq!(r.ceiling(), ceiling);
            let d = r.next_delay();
            assert!(d <= ceiling, "{d:?} over {ceiling:?}");
            ceiling = (ceiling * 2).min(CAP);
        }
        assert_eq!(r.ceiling(), CAP);
        r.reset();
        assert_eq!(r.ceiling(), BROKER_FIRST);
        assert_eq!(
            Reconnect::new(Duration::from_secs(10), Duration::from_secs(600)).cap,
            CAP,
            "nothing waits longer than the cap"
        );
        assert_eq!(Reconnect::redis().ceiling(), REDIS_FIRST);
    }

    #[test]
    fn replicas_that_failed_together_do_not_retry_in_step() {
        // Ten replicas, their fifth failure in a row: the waits spread over
        // the whole range instead of landing on one instant.
        let waits: Vec<Duration> = (0..10)
            .map(|_| {
                let mut r = Reconnect::broker();
                for _ in 0..4 {
                    r.next_delay();
                }
                r.next_delay()
            })
            .collect();
        let (min, max) = (
            waits.iter().min().copied().unwrap_or_default(),
            waits.iter().max().copied().unwrap_or_default(),
        );
        assert!(
            max - min > Duration::from_millis(500),
            "waits bunched together: {waits:?}"
        );
    }
}
