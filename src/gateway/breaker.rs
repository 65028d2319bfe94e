//! A circuit breaker for the gateway (contract §5.11). When attempts fail
//! transiently for everyone (`failure_threshold` in a row, across intents),
//! the breaker opens and holds back *first attempts*: intents that have not
//! called the gateway yet wait instead of all failing into
//! `gateway_unavailable`. Intents already retrying are not held: they keep
//! their own schedule and budget and report each attempt with
//! [`Breaker::record`]. After `open_ms` one waiting intent's first attempt
//! probes the gateway (a synthetic probe would be a junk order); its success
//! closes the breaker, its failure reopens it for twice as long, up to
//! `max_open_ms`, and counts as that intent's first attempt.
//!
//! Time spent waiting here is not charged to an intent's retry budget, and
//! an intent waiting here has not started: a graceful stop hands it back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::BreakerSettings;

/// The state, as shown in `/readyz` and the `h5pay_breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    open_for: Duration,
}

#[derive(Debug)]
pub struct Breaker {
    enabled: bool,
    threshold: u32,
    open_min: Duration,
    open_max: Duration,
    inner: Mutex<Inner>,
    /// Bumped on every state change so waiters re-check.
    changed: watch::Sender<BreakerState>,
}

/// Leave to make one attempt. Report how it went with [`Permit::record`];
/// a probe dropped without a record lets another attempt probe.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    pub fn new(s: &BreakerSettings) -> Self {
        let open_min = Duration::from_millis(s.open_ms);
        Breaker {
            enabled: s.enabled,
            threshold: s.failure_threshold.max(1),
            open_min,
            open_max: Duration::from_millis(s.max_open_ms).max(open_min),
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                open_for: open_min,
            }),
            changed: watch::Sender::new(BreakerState::Closed),
        }
    }

    /// A breaker that never opens.
    pub fn disabled() -> Self {
        Breaker::new(&BreakerSettings {
            enabled: false,
            ..BreakerSettings::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn set(&self, inner: &mut Inner, state: State) {
        inner.state = state;
        let public = match inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        crate::telemetry::metrics::breaker_state(public.gauge());
        self.changed.send_replace(public);
    }

    /// Waits until an attempt may be made.
    pub async fn acquire(&self) -> Permit<'_> {
        if !self.enabled {
            return Permit {
                breaker: self,
                probe: false,
                recorded: false,
            };
        }
        // Subscribed only when there is something to wait for: a closed
        // breaker costs one lock per attempt.
        let mut rx: Option<watch::Receiver<BreakerState>> = None;
        loop {
            let (wake_at, rx) = {
                let mut inner = self.lock();
                let wake_at = match inner.state {
                    State::Closed => {
                        return Permit {
                            breaker: self,
                            probe: false,
                            recorded: false,
                        };
                    }
                    State::Open { until } if Instant::now() >= until => {
                        self.set(&mut inner, State::HalfOpen { probing: true });
                        tracing::info!("gateway breaker half-open: probing with one attempt");
                        return Permit {
                            breaker: self,
                            probe: true,
                            recorded: false,
                        };
                    }
                    State::HalfOpen { probing: false } => {
                        inner.state = State::HalfOpen { probing: true };
                        return Permit {
                            breaker: self,
                            probe: true,
                            recorded: false,
                        };
                    }
                    State::Open { until } => Some(until),
                    State::HalfOpen { probing: true } => None,
                };
                // Subscribed (or marked seen) under the same lock as the look
                // above: every change is published under it, so none can slip
                // in between the look and the wait below (a lost wakeup would
                // park this attempt until the breaker next opens).
                let rx = rx.get_or_insert_with(|| self.changed.subscribe());
                rx.borrow_and_update();
                (wake_at, rx)
            };
            match wake_at {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = rx.changed() => {}
                    }
                }
                None => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    fn on_result(&self, probe: bool, transient_failure: bool) {
        if !self.enabled {
            return;
        }
        let mut inner = self.lock();
        if !transient_failure {
            inner.consecutive_failures = 0;
            if !matches!(inner.state, State::Closed) {
                inner.open_for = self.open_min;
                self.set(&mut inner, State::Closed);
                tracing::info!("gateway breaker closed: the gateway answers again");
            }
            return;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        match inner.state {
            State::HalfOpen { .. } if probe => {
                inner.open_for = (inner.open_for * 2).min(self.open_max);
                let until = Instant::now() + inner.open_for;
                self.set(&mut inner, State::Open { until });
                tracing::warn!(
                    open_ms = inner.open_for.as_millis() as u64,
                    "gateway breaker probe failed: open again"
                );
            }
            State::Closed if inner.consecutive_failures >= self.threshold => {
                inner.open_for = self.open_min;
                let until = Instant::now() + inner.open_for;
                self.set(&mut inner, State::Open { until });
                crate::telemetry::metrics::breaker_opened();
                tracing::warn!(
                    consecutive_failures = inner.consecutive_failures,
                    open_ms = inner.open_for.as_millis() as u64,
                    "gateway breaker open: attempts wait instead of failing"
                );
            }
            _ => {}
        }
    }
}

impl Breaker {
    /// Reports an attempt made without a permit (an intent retrying on its
    /// own schedule): it counts toward opening the breaker, and its success
    /// proves the gateway answers, but it is never the probe.
    pub fn record(&self, transient_failure: bool) {
        self.on_result(false, transient_failure);
    }
}

impl Permit<'_> {
    /// Whether this attempt is the half-open breaker's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Reports the attempt: `transient_failure` for connect errors,
    /// timeouts, 408/429/5xx and bad responses; anything the gateway decided
    /// (even a refusal) proves it answers.
    pub fn record(mut self, transient_failure: bool) {
        self.recorded = true;
        self.breaker.on_result(self.probe, transient_failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut inner = self.breaker.lock();
            if matches!(inner.state, State::HalfOpen { probing: true }) {
                inner.state = State::HalfOpen { probing: false };
                // Published under the lock, like every change.
                self.breaker.changed.send_modify(|_| {});
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(&BreakerSettings {
            enabled: true,
            failure_threshold: 3,
            open_ms: 1000,
            max_open_ms: 3000,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_then_probes_and_closes() {
        let b = breaker();
        for _ in 0..2 {
            b.acquire().await.record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().await.record(true);
        assert_eq!(b.state(), BreakerState::Open);

        let t0 = Instant::now();
        let probe = b.acquire().await;
        assert!(
            t0.elapsed() >= Duration::from_millis(1000),
            "waited {:?}",
            t0.elapsed()
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        let t1 = Instant::now();
        b.acquire().await.record(false);
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_open_period_up_to_the_max() {
        let b = breaker();
        for _ in 0..3 {
            b.acquire().await.record(true);
        }
        let mut waits = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let p = b.acquire().await;
            waits.push(t.elapsed().as_millis());
            p.record(true);
        }
        assert_eq!(waits, vec![1000, 2000, 3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_at_a_time_and_a_dropped_probe_frees_the_slot() {
        let b = std::sync::Arc::new(breaker());
        for _ in 0..3 {
            b.acquire().await.record(true);
        }
        let probe = b.acquire().await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let p = b2.acquire().await;
            let was_probe = p.probe;
            p.record(false);
            was_probe
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            !waiter.is_finished(),
            "a second attempt ran during the probe"
        );
        drop(probe);
        let second_was_probe = waiter.await.unwrap_or(false);
        assert!(second_was_probe);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_report_without_permits_and_are_never_the_probe() {
        let b = breaker();
        for _ in 0..3 {
            b.record(true);
        }
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "retries count toward opening"
        );
        let probe = b.acquire().await;
        assert!(probe.is_probe());
        // A retry failing during the probe does not decide it.
        b.record(true);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A retry's success proves the gateway answers.
        b.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        drop(probe);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_count_and_a_disabled_breaker_never_opens() {
        let b = breaker();
        for _ in 0..10 {
            b.acquire().await.record(true);
            b.acquire().await.record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let d = Breaker::disabled();
        for _ in 0..100 {
            d.acquire().await.record(true);
        }
        assert_eq!(d.state(), BreakerState::Closed);
    }
}
