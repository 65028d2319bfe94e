//! The backoff policy (contract §5.6): exponential backoff with full jitter,
//! `Retry-After` honoured even above `max_interval_ms`, and a total budget.
//!
//! *Whether* an answer may be retried is decided by
//! [`classify`](super::classify); this module only decides *when*.

use std::time::Duration;

use rand::{Rng, RngExt};

use crate::config::RetrySettings;

/// Backoff settings in their working units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Budget for all attempts and waits of one intent.
    pub max_elapsed: Duration,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(s: &RetrySettings) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(s.initial_ms),
            multiplier: s.multiplier,
            max_interval: Duration::from_millis(s.max_interval_ms),
            max_attempts: s.max_attempts,
            max_elapsed: Duration::from_millis(s.max_elapsed_ms),
        }
    }
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Sleep this long, then send the identical request again.
    Wait(Duration),
    /// Stop: the failure becomes final.
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    MaxAttempts,
    /// The time budget is spent.
    Budget,
    /// The gateway asked to wait longer than the budget has left.
    RetryAfterBeyondBudget,
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GiveUpReason::MaxAttempts => "retry.max_attempts reached",
            GiveUpReason::Budget => "retry.max_elapsed_ms spent",
            GiveUpReason::RetryAfterBeyondBudget => {
                "Retry-After is beyond what retry.max_elapsed_ms has left"
            }
        })
    }
}

impl RetryPolicy {
    /// The upper end of the jitter window before the next attempt, after
    /// `attempts_made` attempts: `min(max_interval, initial * multiplier^(n-1))`.
    pub fn ceiling(&self, attempts_made: u32) -> Duration {
        let exp = attempts_made.saturating_sub(1).min(64) as i32;
        let scaled = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let cap = self.max_interval.as_secs_f64();
        Duration::from_secs_f64(if scaled.is_finite() {
            scaled.min(cap)
        } else {
            cap
        })
    }

    /// Decides the wait before the next attempt. `elapsed` is the time this
    /// intent has spent on the gateway so far; `retry_after` is the gateway's
    /// own request, which replaces the jittered delay.
    pub fn next(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Backoff {
        if attempts_made >= self.max_attempts {
            return Backoff::GiveUp(GiveUpReason::MaxAttempts);
        }
        let Some(left) = self
            .max_elapsed
            .checked_sub(elapsed)
            .filter(|l| !l.is_zero())
        else {
            return Backoff::GiveUp(GiveUpReason::Budget);
        };
        if let Some(wanted) = retry_after {
            return if wanted >= left {
                Backoff::GiveUp(GiveUpReason::RetryAfterBeyondBudget)
            } else {
                Backoff::Wait(wanted)
            };
        }
        let ceiling = self.ceiling(attempts_made).as_nanos().min(u64::MAX as u128) as u64;
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling));
        // Never sleep past the budget: the last attempt still gets its chance.
        Backoff::Wait(jittered.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            multiplier: 2.0,
            max_interval: Duration::from_millis(5000),
            max_attempts: 6,
            max_elapsed: Duration::from_millis(60_000),
        }
    }

    #[test]
    fn the_ceiling_grows_exponentially_up_to_max_interval() {
        let p = policy();
        let ms: Vec<u128> = (1..=7).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(
            p.ceiling(1_000).as_millis(),
            5000,
            "no overflow on huge counts"
        );
    }

    #[test]
    fn full_jitter_stays_inside_the_window_and_spreads_over_it() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        let mut low_half = 0;
        for _ in 0..2000 {
            match p.next(3, Duration::ZERO, None, &mut rng) {
                Backoff::Wait(d) => {
                    assert!(d <= Duration::from_millis(800), "{d:?}");
                    if d < Duration::from_millis(400) {
                        low_half += 1;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            (800..1200).contains(&low_half),
            "not uniform: {low_half}/2000 in the low half"
        );
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(matches!(
            p.next(5, Duration::ZERO, None, &mut rng),
            Backoff::Wait(_)
        ));
        assert_eq!(
            p.next(6, Duration::ZERO, None, &mut rng),
            Backoff::GiveUp(GiveUpReason::MaxAttempts)
        );
    }

    #[test]
    fn retry_after_is_honoured_above_max_interval_but_not_past_the_budget() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        let wanted = Duration::from_secs(20);
        assert_eq!(
            p.next(1, Duration::from_secs(30), Some(wanted), &mut rng),
            Backoff::Wait(wanted)
        );
        assert_eq!(
            p.next(1, Duration::from_secs(45), Some(wanted), &mut rng),
            Backoff::GiveUp(GiveUpReason::RetryAfterBeyondBudget)
        );
    }

    #[test]
    fn a_spent_budget_gives_up_and_a_nearly_spent_one_clamps_the_wait() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            p.next(1, Duration::from_secs(60), None, &mut rng),
            Backoff::GiveUp(GiveUpReason::Budget)
        );
        for _ in 0..100 {
            match p.next(5, Duration::from_millis(59_990), None, &mut rng) {
                Backoff::Wait(d) => assert!(d <= Duration::from_millis(10)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
