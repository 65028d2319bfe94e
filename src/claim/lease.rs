//! The one lease renewer: an intent's claim while the pipeline calls the
//! gateway and stores the outcome, and a reconciler check's hold on the
//! same identity, are both kept by [`keep_lease`].

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Renews a lease of `lease` every third of it, on a fixed schedule, with
/// `renew`: `Ok(true)` the lease is still ours (held for `lease` from when
/// it was asked), `Ok(false)` it is not, `Err` the renewal failed (the
/// caller logs it if it wants to; the schedule goes on, and if the lease
/// lapses meanwhile the owner's next compare-and-set decides).
///
/// When the lease is lost, or this process stalled past it, `lost` is
/// cancelled and the future then waits forever: the work under the lease
/// notices the token and ends; run this alongside it (`select!`, biased
/// to the work).
pub async fn keep_lease<F, Fut, E>(
    lease: Duration,
    lost: &CancellationToken,
    mut renew: F,
) -> Infallible
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
{
    // On a fixed schedule, not "a third after the last renewal ended": a
    // renewal that times out must not push the next one past the lease.
    let period = lease / 3;
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut held_until = Instant::now() + lease;
    loop {
        let scheduled = ticks.tick().await;
        // A tick more than a period late, past the lease, means this
        // process stalled (a freeze, a starved runtime): another owner may
        // hold the identity now. Give the lease up at once, before asking
        // Redis, so a retry woken by the same stall cannot go out
        // meanwhile. (Renewals that merely fail keep their schedule.)
        let now = Instant::now();
        if now >= held_until && now.duration_since(scheduled) >= period {
            break;
        }
        let asked = Instant::now();
        match renew().await {
            Ok(true) => held_until = asked + lease,
            Ok(false) => break,
            Err(_) => {}
        }
    }
    lost.cancel();
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const LEASE: Duration = Duration::from_millis(3000);

    /// Runs `keep_lease` for `how_long` (paused time) with a renewal that
    /// answers `answer(n)` for its n-th call (from 0) after `takes(n)`;
    /// returns the renewals asked and whether the lease was given up.
    async fn run(
        how_long: Duration,
        answer: impl Fn(u32) -> Result<bool, ()>,
        takes: impl Fn(u32) -> Duration,
    ) -> (u32, bool) {
        let asked = Arc::new(AtomicU32::new(0));
        let lost = CancellationToken::new();
        let renew = || {
            let n = asked.fetch_add(1, Ordering::SeqCst);
            let (a, t) = (answer(n), takes(n));
            async move {
                tokio::time::sleep(t).await;
                a
            }
        };
        tokio::select! {
            never = keep_lease(LEASE, &lost, renew) => match never {},
            () = tokio::time::sleep(how_long) => {}
        }
        (asked.load(Ordering::SeqCst), lost.is_cancelled())
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_third_of_the_lease() {
        // Ticks at 1 s, 2 s, … 10 s.
        let (asked, lost) = run(
            Duration::from_millis(10_500),
            |_| Ok(true),
            |_| Duration::ZERO,
        )
        .await;
        assert_eq!((asked, lost), (10, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_no_longer_ours_is_given_up_and_not_asked_again() {
        let (asked, lost) = run(Duration::from_secs(20), |n| Ok(n < 2), |_| Duration::ZERO).await;
        assert_eq!((asked, lost), (3, true));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewals_keep_the_schedule_and_never_give_up() {
        // Long past the lease with no renewal answered: the owner's next
        // compare-and-set decides, not the renewer.
        let (asked, lost) = run(
            Duration::from_millis(30_500),
            |_| Err(()),
            |_| Duration::ZERO,
        )
        .await;
        assert_eq!((asked, lost), (30, false));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_renewals_keep_the_fixed_schedule() {
        // Each renewal takes most of a period: the next still starts on
        // its tick, not a period after the last one ended.
        let (asked, lost) = run(
            Duration::from_millis(10_500),
            |_| Ok(true),
            |_| Duration::from_millis(900),
        )
        .await;
        assert_eq!((asked, lost), (10, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_past_the_lease_gives_up_before_asking_again() {
        // The second renewal (at 2 s) hangs for two leases, then says the
        // lease is held: held until 5 s, but it is 8 s and the tick of 3 s
        // is late, so the lease is given up without asking Redis again.
        let (asked, lost) = run(
            Duration::from_secs(20),
            |_| Ok(true),
            |n| if n == 1 { 2 * LEASE } else { Duration::ZERO },
        )
        .await;
        assert_eq!((asked, lost), (2, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_tick_within_the_lease_still_renews() {
        // A renewal that takes 1.5 periods makes the next tick late, but
        // the lease (renewed at 1 s, held until 4 s) still holds at 2.5 s,
        // and the ticks after it are delayed, not bunched.
        let (asked, lost) = run(
            Duration::from_millis(6_000),
            |_| Ok(true),
            |n| {
                if n == 0 {
                    Duration::from_millis(1500)
                } else {
                    Duration::ZERO
                }
            },
        )
        .await;
        // Asked at 1 s, 2.5 s, then on the delayed schedule: 3.5, 4.5, 5.5.
        assert_eq!((asked, lost), (5, false));
    }
}
