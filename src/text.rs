//! Text that comes from outside (a gateway's answer, an intent's values)
//! and is copied into events, errors and logs is cut to a bounded length,
//! so one hostile message cannot make every stored outcome huge.

use std::borrow::Cow;

/// What the contract allows of gateway text in an event (§4).
pub const GATEWAY_TEXT_CHARS: usize = 256;

/// At most `max` characters of `s`, with `…` after a cut.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// Gateway text as an event may carry it.
pub fn gateway_text(s: &str) -> String {
    clip(s, GATEWAY_TEXT_CHARS).into_owned()
}

/// Outside text quoted with its control characters escaped, then cut: the
/// escapes count toward the bound (a run of `\u{7f}` must not grow a
/// message tenfold).
pub fn quoted(s: &str) -> String {
    clip(&format!("{s:?}"), GATEWAY_TEXT_CHARS).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_first_and_then_cuts() {
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        let hostile = "\u{7f}".repeat(300);
        assert!(quoted(&hostile).chars().count() <= GATEWAY_TEXT_CHARS + 1);
    }

    #[test]
    fn clipping_counts_characters_not_bytes() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("支付成功", 2), "支付…");
        assert_eq!(gateway_text(&"x".repeat(10_000)).chars().count(), 257);
    }
}
