//! The echo check: an answer or a notify must repeat what the worker sent
//! or knows, or it may be meant for another request (contract §4, §10
//! rule 4, §12). One checker and one wording for the h5pay answer,
//! queryorder, closeorder and the notify; each says which fields it checks
//! and how strictly.

use std::fmt::Display;

use crate::text::quoted;

/// Whether a field must be in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Missing is a difference (and empty is not the value sent).
    Required,
    /// Checked when the answer carries it, even empty.
    WhenPresent,
    /// Checked when the answer carries it and it is not empty: the field a
    /// gateway leaves empty when it has nothing to say.
    WhenNotEmpty,
}

/// The differences found, one line each: `mch_no "M2", expected M1`.
#[derive(Debug, Default)]
#[must_use = "the differences are the check's result"]
pub struct Echoes {
    wrong: Vec<String>,
}

impl Echoes {
    pub fn new() -> Self {
        Echoes::default()
    }

    /// A text field: equal, byte for byte, to `want`. Nothing known
    /// (`want` is `None`) checks nothing.
    pub fn text(mut self, field: &str, got: Option<&str>, want: Option<&str>, p: Presence) -> Self {
        if let Some(want) = want {
            self.check(field, got, want, p, |g| g == want);
        }
        self
    }

    /// `total_amount`: the same value in fen, written as plain digits
    /// ([`is_same_amount`]).
    pub fn amount(
        mut self,
        field: &str,
        got: Option<&str>,
        want: Option<u64>,
        p: Presence,
    ) -> Self {
        if let Some(want) = want {
            self.check(field, got, want, p, |g| is_same_amount(g, want));
        }
        self
    }

    fn check(
        &mut self,
        field: &str,
        got: Option<&str>,
        want: impl Display,
        p: Presence,
        same: impl FnOnce(&str) -> bool,
    ) {
        let got = match p {
            Presence::WhenNotEmpty => got.filter(|g| !g.is_empty()),
            Presence::Required | Presence::WhenPresent => got,
        };
        match got {
            None if p == Presence::Required => {
                self.wrong.push(format!("{field} missing, expected {want}"));
            }
            None => {}
            Some(g) if same(g) => {}
            Some(g) => self
                .wrong
                .push(format!("{field} {}, expected {want}", quoted(g))),
        }
    }

    /// Every difference found, in the order checked.
    pub fn differences(self) -> Vec<String> {
        self.wrong
    }

    /// `Ok` when everything matched, else one message: `what` and every
    /// difference.
    pub fn verdict(self, what: &str) -> Result<(), String> {
        if self.wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: {}", self.wrong.join("; ")))
        }
    }
}

/// Whether an echoed `total_amount` (as text) is the amount sent: decimal
/// digits only (no sign, no point, no exponent), the same value.
pub fn is_same_amount(got: &str, sent: u64) -> bool {
    !got.is_empty() && got.bytes().all(|b| b.is_ascii_digit()) && got.parse::<u64>() == Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::Presence::{Required, WhenNotEmpty, WhenPresent};
    use super::*;

    #[test]
    fn an_echoed_amount_is_the_sent_one_only_as_plain_digits() {
        for (got, same) in [
            ("100", true),
            ("0100", true),
            ("101", false),
            ("", false),
            ("+100", false),
            ("100.0", false),
            ("1e2", false),
            (" 100", false),
            ("-100", false),
            ("99999999999999999999999", false),
        ] {
            assert_eq!(is_same_amount(got, 100), same, "{got:?}");
        }
    }

    #[test]
    fn each_field_is_checked_as_strictly_as_asked() {
        let s = Some;
        for (name, echoes, want) in [
            (
                "equal",
                Echoes::new().text("f", s("a"), s("a"), Required),
                vec![],
            ),
            (
                "different",
                Echoes::new().text("f", s("b"), s("a"), WhenPresent),
                vec![r#"f "b", expected a"#],
            ),
            (
                "nothing known",
                Echoes::new().text("f", s("b"), None, Required),
                vec![],
            ),
            (
                "required, missing",
                Echoes::new().text("f", None, s("a"), Required),
                vec!["f missing, expected a"],
            ),
            (
                "required, empty",
                Echoes::new().text("f", s(""), s("a"), Required),
                vec![r#"f "", expected a"#],
            ),
            (
                "optional, missing",
                Echoes::new().text("f", None, s("a"), WhenPresent),
                vec![],
            ),
            (
                "optional, empty",
                Echoes::new().text("f", s(""), s("a"), WhenPresent),
                vec![r#"f "", expected a"#],
            ),
            (
                "if not empty, missing",
                Echoes::new().text("f", None, s("a"), WhenNotEmpty),
                vec![],
            ),
            (
                "if not empty, empty",
                Echoes::new().text("f", s(""), s("a"), WhenNotEmpty),
                vec![],
            ),
            (
                "if not empty, different",
                Echoes::new().text("f", s("b"), s("a"), WhenNotEmpty),
                vec![r#"f "b", expected a"#],
            ),
            (
                "an empty amount is no match",
                Echoes::new().amount("n", s(""), Some(1), WhenPresent),
                vec![r#"n "", expected 1"#],
            ),
            (
                "amount",
                Echoes::new().amount("n", s("0100"), Some(100), Required),
                vec![],
            ),
            (
                "amount as a decimal",
                Echoes::new().amount("n", s("100.0"), Some(100), WhenPresent),
                vec![r#"n "100.0", expected 100"#],
            ),
            (
                "amount missing",
                Echoes::new().amount("n", None, Some(100), Required),
                vec!["n missing, expected 100"],
            ),
            (
                "every difference, in order",
                Echoes::new().text("a", s("x"), s("y"), Required).amount(
                    "n",
                    s("1"),
                    Some(2),
                    Required,
                ),
                vec![r#"a "x", expected y"#, r#"n "1", expected 2"#],
            ),
        ] {
            assert_eq!(echoes.differences(), want, "{name}");
        }
    }

    #[test]
    fn the_verdict_names_what_and_every_difference() {
        assert_eq!(Echoes::new().verdict("x"), Ok(()));
        let e = Echoes::new()
            .text("mch_no", Some("M2"), Some("M1"), Required)
            .text("pay_trace_no", None, Some("T1"), Required)
            .verdict("answer does not echo the request");
        assert_eq!(
            e,
            Err(r#"answer does not echo the request: mch_no "M2", expected M1; pay_trace_no missing, expected T1"#.to_owned())
        );
    }
}
