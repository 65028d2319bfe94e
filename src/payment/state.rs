//! The payment's state and the rules that move it (contract §10), as a pure
//! function: what is known of a payment, plus a new piece of evidence (a
//! verified notify or query answer), gives the next step. No I/O, no clock.

use serde::{Deserialize, Serialize};

/// A followed payment's state. `open`: placed, not known to be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    Open,
    Paid,
    Failed,
    Closed,
    Unresolved,
}

impl PaymentState {
    pub const ALL: [PaymentState; 5] = [
        PaymentState::Open,
        PaymentState::Paid,
        PaymentState::Failed,
        PaymentState::Closed,
        PaymentState::Unresolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Open => "open",
            PaymentState::Paid => "paid",
            PaymentState::Failed => "failed",
            PaymentState::Closed => "closed",
            PaymentState::Unresolved => "unresolved",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentState> {
        PaymentState::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The event of a move to this state (`open` has none).
    pub fn event(self) -> Option<crate::domain::EventState> {
        use crate::domain::EventState;
        match self {
            PaymentState::Open => None,
            PaymentState::Paid => Some(EventState::Paid),
            PaymentState::Failed => Some(EventState::Failed),
            PaymentState::Closed => Some(EventState::Closed),
            PaymentState::Unresolved => Some(EventState::Unresolved),
        }
    }

    /// Nothing more is learned of a final payment (`paid` stays final; the
    /// others can still become `paid`: money wins).
    pub fn is_final(self) -> bool {
        self != PaymentState::Open
    }
}

/// What the worker knows of an identity's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The identity was never seen (or its key expired).
    Unknown,
    /// Claimed, the gateway's answer not stored yet (a crash between the
    /// answer and the store, or a notify faster than the store): an order
    /// may exist, so it counts as open.
    Pending,
    /// An outcome is stored and the payment is followed: its state.
    Followed(PaymentState),
    /// An outcome is stored that is not followed (refused, failed, never
    /// sent): as far as the worker knew, no payment would come.
    NotFollowed,
}

impl Known {
    /// The state a transition leaves: `open` for a pending payment,
    /// `failed` for one that was not followed.
    pub fn state(self) -> Option<PaymentState> {
        match self {
            Known::Unknown => None,
            Known::Pending => Some(PaymentState::Open),
            Known::Followed(s) => Some(s),
            Known::NotFollowed => Some(PaymentState::Failed),
        }
    }
}

/// What a verified answer says about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Paid (`PAY_SUCCESS`, or `trade_state` `SUCCESS`), with the gateway's
    /// order number.
    Paid { trade_no: Option<String> },
    /// The payment failed (`PAY_FAIL`, or `CLOSED`/`REVOKED`/`PAYERROR`).
    Failed,
    /// A query's `PAY_FAIL` after closeorder said closed: `closed`.
    ClosedAfterClose,
    /// Not paid yet (`PAY_IN_PROCESS`, `NOTPAY`, `USERPAYING`).
    NotYet,
    /// Past `reconcile.max_age_secs` still open: give up.
    GiveUp,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Move to `to`, leaving `from`. `late`: money won over a state that
    /// said no payment would come (contract §10 rule 3).
    Transition {
        from: PaymentState,
        to: PaymentState,
        late: bool,
    },
    /// The payment is already in the state the evidence names (a
    /// duplicate notify, a query after a notify).
    Already(PaymentState),
    /// Nothing to do: not paid yet, or evidence that cannot move a payment
    /// out of its state (`paid` is final; a late `PAY_FAIL`).
    NoChange,
    /// An answer the worker cannot place: an `anomaly` event, no change.
    Unexpected(String),
    /// Evidence about a payment the worker does not know.
    UnknownPayment,
}

/// The rules of contract §10 for one piece of verified, matching evidence.
pub fn next(known: Known, evidence: &Evidence) -> Step {
    let Some(current) = known.state() else {
        return Step::UnknownPayment;
    };
    use PaymentState::*;
    match evidence {
        Evidence::Paid { trade_no: None } => {
            Step::Unexpected("PAY_SUCCESS without a trade_no".to_owned())
        }
        Evidence::Paid { trade_no: Some(_) } => match current {
            Paid => Step::Already(Paid),
            Open => Step::Transition {
                from: Open,
                to: Paid,
                late: false,
            },
            // Money wins: the payment said no payment would come.
            Failed | Closed | Unresolved => Step::Transition {
                from: current,
                to: Paid,
                late: true,
            },
        },
        Evidence::Failed => match current {
            Open => Step::Transition {
                from: Open,
                to: Failed,
                late: false,
            },
            Failed => Step::Already(Failed),
            Paid | Closed | Unresolved => Step::NoChange,
        },
        Evidence::ClosedAfterClose => match current {
            Open => Step::Transition {
                from: Open,
                to: Closed,
                late: false,
            },
            Closed => Step::Already(Closed),
            Paid | Failed | Unresolved => Step::NoChange,
        },
        Evidence::GiveUp => match current {
            Open => Step::Transition {
                from: Open,
                to: Unresolved,
                late: false,
            },
            Unresolved => Step::Already(Unresolved),
            Paid | Failed | Closed => Step::NoChange,
        },
        Evidence::NotYet => Step::NoChange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentState::*;

    fn paid() -> Evidence {
        Evidence::Paid {
            trade_no: Some("T1".into()),
        }
    }

    #[test]
    fn paid_is_final() {
        for e in [
            Evidence::Failed,
            Evidence::ClosedAfterClose,
            Evidence::GiveUp,
            Evidence::NotYet,
        ] {
            assert_eq!(next(Known::Followed(Paid), &e), Step::NoChange, "{e:?}");
        }
        assert_eq!(next(Known::Followed(Paid), &paid()), Step::Already(Paid));
    }

    #[test]
    fn money_wins_over_every_state_that_said_no_payment_would_come() {
        for from in [Failed, Closed, Unresolved] {
            assert_eq!(
                next(Known::Followed(from), &paid()),
                Step::Transition {
                    from,
                    to: Paid,
                    late: true
                }
            );
        }
        assert_eq!(
            next(Known::NotFollowed, &paid()),
            Step::Transition {
                from: Failed,
                to: Paid,
                late: true
            },
            "an outcome that was not followed counts as failed"
        );
        for known in [Known::Followed(Open), Known::Pending] {
            assert_eq!(
                next(known, &paid()),
                Step::Transition {
                    from: Open,
                    to: Paid,
                    late: false
                },
                "{known:?}: a notify before the outcome was stored still applies"
            );
        }
    }

    #[test]
    fn only_an_open_payment_fails_closes_or_is_given_up() {
        let cases = [
            (Evidence::Failed, Failed),
            (Evidence::ClosedAfterClose, Closed),
            (Evidence::GiveUp, Unresolved),
        ];
        for (e, to) in cases {
            assert_eq!(
                next(Known::Followed(Open), &e),
                Step::Transition {
                    from: Open,
                    to,
                    late: false
                }
            );
            assert_eq!(next(Known::Followed(to), &e), Step::Already(to));
            for other in [Paid, Failed, Closed, Unresolved] {
                if other != to {
                    assert_eq!(
                        next(Known::Followed(other), &e),
                        Step::NoChange,
                        "{e:?} {other:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_payments_and_paid_answers_without_an_order_number_are_anomalies() {
        assert_eq!(next(Known::Unknown, &paid()), Step::UnknownPayment);
        assert!(matches!(
            next(Known::Followed(Open), &Evidence::Paid { trade_no: None }),
            Step::Unexpected(_)
        ));
        assert_eq!(
            next(Known::Followed(Open), &Evidence::NotYet),
            Step::NoChange
        );
    }
}
