//! Text that comes from outside (a gateway's answer, an intent's values)
//! and is copied into events, errors and logs is cut to a bounded length,
//! so one hostile message cannot make every stored outcome huge; and every
//! command prints it through [`terminal_safe`] (contract §7), so nothing
//! read from a queue, Redis or the gateway can drive the operator's
//! terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

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

/// What text output escapes: every control character but newline and tab
/// — C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F), exactly
/// Unicode's `Cc`.
fn escaped_on_a_terminal(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// Text made safe to print on a terminal (contract §7): each control
/// character but newline and tab is shown as its code point, `\u{1b}`, so
/// an ESC sequence in a gateway's `return_msg` or a dead-lettered body is
/// read, not obeyed. Every text printer of the CLI goes through this (JSON
/// output needs no more than what serde_json escapes: C0).
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(escaped_on_a_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if escaped_on_a_terminal(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes one line of text output (a newline is added), terminal-safe.
pub fn print_line(out: &mut dyn std::io::Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{}", terminal_safe(line))
}

/// `n` as the decimal digits that fill `out`, with leading zeros: the
/// fixed-width fields of a timestamp or a pay_time, written without
/// `core::fmt` (on every intent's path).
pub fn put_digits(out: &mut [u8], mut n: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_but_newline_and_tab_is_escaped() {
        assert_eq!(terminal_safe("支付成功\tok\n"), "支付成功\tok\n");
        assert!(matches!(terminal_safe("plain"), Cow::Borrowed(_)));
        assert_eq!(
            terminal_safe("\u{1b}[31mred\u{1b}[0m"),
            "\\u{1b}[31mred\\u{1b}[0m"
        );
        assert_eq!(terminal_safe("a\rb\u{0}c\u{7}"), "a\\u{d}b\\u{0}c\\u{7}");
        assert_eq!(terminal_safe("\u{7f}"), "\\u{7f}");
        assert_eq!(terminal_safe("\u{9b}31m\u{85}"), "\\u{9b}31m\\u{85}");
        // Just outside C1: printable.
        assert_eq!(terminal_safe("\u{a0}\u{7e}"), "\u{a0}\u{7e}");
        for c in (0u32..=0x10ffff).filter_map(char::from_u32) {
            let shown = terminal_safe(c.encode_utf8(&mut [0; 4])).into_owned();
            let raw = shown
                .chars()
                .any(|d| d.is_control() && d != '\n' && d != '\t');
            assert!(!raw, "U+{:04X} printed raw", u32::from(c));
        }
    }

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
