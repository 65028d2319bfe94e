//! What a check's queryorder answer means (pure): the evidence it is for
//! the payment's state machine, and what the check counts as its result.

use chrono::{DateTime, Utc};

use crate::gateway::query::QueryAnswer;
use crate::payment::event::parse_end_time;
use crate::payment::{EventState, Evidence, EvidenceSource};
use crate::telemetry::metrics::CheckResult;

/// The evidence a query's `answer` is (none for an anomaly, not yet, or
/// no answer), what decided it, and when it was paid. `closed`: a
/// closeorder said closed, so a failed query means `closed`.
pub(super) fn evidence_of(
    answer: &QueryAnswer,
    closed: bool,
) -> (Option<Evidence>, EvidenceSource, Option<DateTime<Utc>>) {
    match answer {
        QueryAnswer::Paid { trade_no, end_time } => (
            Some(Evidence::Paid {
                trade_no: Some(trade_no.clone()),
            }),
            EvidenceSource::Query,
            end_time.as_deref().and_then(parse_end_time),
        ),
        QueryAnswer::Failed { .. } if closed => (
            Some(Evidence::ClosedAfterClose),
            EvidenceSource::Close,
            None,
        ),
        QueryAnswer::Failed { .. } => (Some(Evidence::Failed), EvidenceSource::Query, None),
        QueryAnswer::Anomaly { .. } | QueryAnswer::NotYet { .. } | QueryAnswer::NoAnswer(_) => {
            (None, EvidenceSource::Query, None)
        }
    }
}

/// The check's result: the final state the payment `moved` to, else (still
/// open, or moved by someone else meanwhile) what the answer was.
pub(super) fn check_result(moved: Option<EventState>, answer: &QueryAnswer) -> CheckResult {
    match (moved, answer) {
        (Some(state), _) => result_of(state),
        (None, QueryAnswer::Anomaly { .. }) => CheckResult::Anomaly,
        (None, QueryAnswer::NoAnswer(_)) => CheckResult::NoAnswer,
        (None, _) => CheckResult::Open,
    }
}

/// The check's result for a payment that moved to `state`.
pub(super) fn result_of(state: EventState) -> CheckResult {
    match state {
        EventState::Paid => CheckResult::Paid,
        EventState::Failed => CheckResult::Failed,
        EventState::Closed => CheckResult::Closed,
        _ => CheckResult::Unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::AnomalyKind;
    use crate::telemetry::metrics::Label;

    fn paid(end_time: Option<&str>) -> QueryAnswer {
        QueryAnswer::Paid {
            trade_no: "T1".into(),
            end_time: end_time.map(Into::into),
        }
    }

    fn anomaly() -> QueryAnswer {
        QueryAnswer::Anomaly {
            kind: AnomalyKind::Mismatch,
            message: "m".into(),
            sign: "s".into(),
        }
    }

    fn failed() -> QueryAnswer {
        QueryAnswer::Failed { trade_no: None }
    }

    fn not_yet() -> QueryAnswer {
        QueryAnswer::NotYet { trade_no: None }
    }

    fn no_answer() -> QueryAnswer {
        QueryAnswer::NoAnswer("down".into())
    }

    #[test]
    fn each_answer_is_its_evidence() {
        let paid_at = parse_end_time("2024-05-01 12:00:00");
        assert!(paid_at.is_some());
        let was_paid = Some(Evidence::Paid {
            trade_no: Some("T1".into()),
        });
        let cases = [
            (
                paid(Some("2024-05-01 12:00:00")),
                false,
                was_paid.clone(),
                EvidenceSource::Query,
                paid_at,
            ),
            (
                paid(Some("2024-05-01 12:00:00")),
                true,
                was_paid.clone(),
                EvidenceSource::Query,
                paid_at,
            ),
            (
                paid(None),
                false,
                was_paid.clone(),
                EvidenceSource::Query,
                None,
            ),
            (
                paid(Some("garbage")),
                false,
                was_paid,
                EvidenceSource::Query,
                None,
            ),
            (
                failed(),
                false,
                Some(Evidence::Failed),
                EvidenceSource::Query,
                None,
            ),
            (
                failed(),
                true,
                Some(Evidence::ClosedAfterClose),
                EvidenceSource::Close,
                None,
            ),
            (not_yet(), false, None, EvidenceSource::Query, None),
            (not_yet(), true, None, EvidenceSource::Query, None),
            (anomaly(), false, None, EvidenceSource::Query, None),
            (anomaly(), true, None, EvidenceSource::Query, None),
            (no_answer(), false, None, EvidenceSource::Query, None),
            (no_answer(), true, None, EvidenceSource::Query, None),
        ];
        for (answer, closed, evidence, source, at) in cases {
            assert_eq!(
                evidence_of(&answer, closed),
                (evidence, source, at),
                "{answer:?}, closed {closed}"
            );
        }
    }

    #[test]
    fn a_check_counts_the_move_else_the_answer() {
        let cases = [
            (Some(EventState::Paid), no_answer(), "paid"),
            (Some(EventState::Failed), failed(), "failed"),
            (Some(EventState::Closed), failed(), "closed"),
            (Some(EventState::Unresolved), no_answer(), "unresolved"),
            (Some(EventState::Anomaly), anomaly(), "unresolved"),
            (None, anomaly(), "anomaly"),
            (None, no_answer(), "no_answer"),
            (None, not_yet(), "open"),
            (None, paid(None), "open"),
            (None, failed(), "open"),
        ];
        for (moved, answer, want) in cases {
            assert_eq!(
                check_result(moved, &answer).as_str(),
                want,
                "{moved:?}, {answer:?}"
            );
        }
    }
}
