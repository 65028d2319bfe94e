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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_counts_characters_not_bytes() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("支付成功", 2), "支付…");
        assert_eq!(gateway_text(&"x".repeat(10_000)).chars().count(), 257);
    }
}
