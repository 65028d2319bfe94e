//! When a payment is checked and what a check does (contract §12). Pure:
//! the clock and the payment's facts are passed in.

use chrono::{DateTime, Duration, Utc};

use crate::config::ReconcileSettings;

/// The reconciler's timetable, from `[reconcile]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Seconds after placement, increasing.
    points: Vec<i64>,
    /// After the last point: every this many seconds.
    repeat: i64,
    /// Seconds after placement when an unpaid order is closed (`None`:
    /// `close_unpaid` is off).
    close_at: Option<i64>,
    /// Seconds after placement when a payment still open is given up.
    max_age: i64,
}

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Query the order.
    Query,
    /// Close the order, then query it (contract §10 rule 6 decides).
    Close,
    /// One last query; if still open, `unresolved`.
    GiveUp,
}

fn secs(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX / 4).min(i64::MAX / 4)
}

impl Schedule {
    pub fn new(s: &ReconcileSettings) -> Self {
        let points: Vec<i64> = s.check_after_secs.iter().map(|p| secs(*p)).collect();
        let repeat = match points.as_slice() {
            [.., a, b] => b - a,
            [only] => *only,
            [] => 60,
        }
        .max(1);
        Schedule {
            points,
            repeat,
            close_at: s
                .close_unpaid
                .then(|| secs(s.order_ttl_secs).saturating_add(secs(s.close_grace_secs))),
            max_age: secs(s.max_age_secs),
        }
    }

    /// The first check of a payment placed at `placed` (it may be in the
    /// past: then it is simply due).
    pub fn first(&self, placed: DateTime<Utc>) -> DateTime<Utc> {
        let first = self.points.first().copied().unwrap_or(self.repeat);
        placed + Duration::seconds(first.min(self.max_age))
    }

    /// The next check after `now`: the first point of the schedule (the
    /// close point and the give-up point included) strictly after `now`.
    /// Checks missed while nothing ran are not replayed one by one.
    pub fn next(&self, placed: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let age = (now - placed).num_seconds();
        let mut best = self.max_age;
        if let Some(p) = self.points.iter().copied().find(|p| *p > age) {
            best = best.min(p);
        } else if let Some(last) = self.points.last().copied() {
            // Every `repeat` after the last point.
            let n = (age - last) / self.repeat + 1;
            best = best.min(last.saturating_add(n.saturating_mul(self.repeat)));
        }
        if let Some(c) = self.close_at
            && c > age
        {
            best = best.min(c);
        }
        if best <= age {
            // Past max_age: due at once (the check gives up).
            return now;
        }
        placed + Duration::seconds(best)
    }

    /// What a check at `now` does. `trade_no_known`: the order can be
    /// closed only by its gateway number; `closed`: closeorder already said
    /// closed (only a query is left to do).
    pub fn plan(
        &self,
        placed: DateTime<Utc>,
        now: DateTime<Utc>,
        trade_no_known: bool,
        closed: bool,
    ) -> Plan {
        let age = (now - placed).num_seconds();
        if age >= self.max_age {
            return Plan::GiveUp;
        }
        match self.close_at {
            Some(c) if age >= c && trade_no_known && !closed => Plan::Close,
            _ => Plan::Query,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default schedule, whose numbers the tests below read: a
    /// changed default must change them too.
    fn settings() -> ReconcileSettings {
        let s = ReconcileSettings::default();
        assert_eq!(
            (
                s.check_after_secs.as_slice(),
                s.order_ttl_secs,
                s.close_grace_secs,
                s.max_age_secs,
                s.close_unpaid,
            ),
            (&[60, 300, 900, 1800, 3600][..], 900, 300, 86_400, true)
        );
        s
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn the_first_check_is_the_first_point_after_placement() {
        let s = Schedule::new(&settings());
        assert_eq!(s.first(at(0)), at(60));
    }

    #[test]
    fn the_next_check_follows_the_points_the_close_point_then_every_last_interval() {
        let s = Schedule::new(&settings());
        let after = |age| (s.next(at(0), at(age)) - at(0)).num_seconds();
        assert_eq!(after(60), 300);
        assert_eq!(after(300), 900);
        assert_eq!(after(900), 1200, "the close point (ttl + grace)");
        assert_eq!(after(1200), 1800);
        assert_eq!(after(3600), 5400, "then every 3600 - 1800 s");
        assert_eq!(after(5400), 7200);
        // Missed checks are not replayed: the first point after now.
        assert_eq!(after(80_000), 81_000);
        assert_eq!(
            after(86_000),
            86_400,
            "capped at max_age: the give-up check"
        );
        assert_eq!(after(90_000), 90_000, "past max_age: at once");
    }

    #[test]
    fn a_check_queries_closes_after_ttl_and_grace_with_a_trade_no_and_gives_up_at_max_age() {
        let s = Schedule::new(&settings());
        assert_eq!(s.plan(at(0), at(60), true, false), Plan::Query);
        assert_eq!(s.plan(at(0), at(1199), true, false), Plan::Query);
        assert_eq!(s.plan(at(0), at(1200), true, false), Plan::Close);
        assert_eq!(
            s.plan(at(0), at(1200), false, false),
            Plan::Query,
            "no trade_no: cannot close"
        );
        assert_eq!(
            s.plan(at(0), at(1500), true, true),
            Plan::Query,
            "closed: the query decides"
        );
        assert_eq!(s.plan(at(0), at(86_400), true, false), Plan::GiveUp);
        let mut no_close = settings();
        no_close.close_unpaid = false;
        let s = Schedule::new(&no_close);
        assert_eq!(s.plan(at(0), at(5000), true, false), Plan::Query);
        assert_eq!(
            (s.next(at(0), at(900)) - at(0)).num_seconds(),
            1800,
            "no close point"
        );
    }

    #[test]
    fn one_point_repeats_itself() {
        let mut one = settings();
        one.check_after_secs = vec![2];
        one.max_age_secs = 20;
        one.close_unpaid = false;
        let s = Schedule::new(&one);
        let after = |age| (s.next(at(0), at(age)) - at(0)).num_seconds();
        assert_eq!(after(2), 4);
        assert_eq!(after(5), 6);
        assert_eq!(after(19), 20);
    }
}
