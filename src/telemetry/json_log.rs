//! The JSON log line: one object per event,
//! `{"timestamp","level","target", the event's fields, "span":{"name", its fields}}`,
//! written straight into tracing-subscriber's line buffer.
//!
//! Why not a crate's JSON format: both tracing-subscriber's `json()` and
//! json-subscriber first collect an event's fields into a
//! `serde_json::Value` map and then serialise it; at two `info` lines per
//! intent that was 10 % of the worker's instructions (BENCHMARKS.md, fifth
//! sitting). Here each field is escaped once into the buffer, and a span's
//! fields are kept as the JSON text they will be printed as.
//!
//! Every line is one JSON object whatever is logged:
//! - escaped: `"`, `\`, every C0 control and every C1 control (U+0080 to
//!   U+009F, which include the 8-bit CSI), so no value can carry a terminal
//!   escape sequence or break the line;
//! - no key twice: a field named like a key of the line itself (`level`,
//!   or a span field `name`) is written as `field.<name>`, and a span field
//!   recorded again replaces its earlier value;
//! - a value whose `Debug` or `Display` fails is written as `null`.

use std::fmt::{self, Write};
use std::ops::Range;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event half: [`FormatEvent`] for tracing-subscriber's fmt layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

/// The span half: a span's fields as the JSON members they are printed
/// as, each with its leading comma (`,"k":v`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

/// The keys of the line itself, and of the span object.
const LINE_KEYS: &[&str] = &["timestamp", "level", "target", "span"];
const SPAN_KEYS: &[&str] = &["name"];

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        buffered(&mut writer, |out| {
            fields.record(&mut Members::new(out, SPAN_KEYS))
        })
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Rare (a span recorded after its creation): a plain String will do.
        let mut added = String::new();
        fields.record(&mut Members::new(&mut added, SPAN_KEYS));
        for (key, _) in members(&added) {
            remove_members(&mut current.fields, key);
        }
        current.fields.push_str(&added);
        Ok(())
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        buffered(&mut writer, |out| line(ctx, out, event))
    }
}

/// The whole line of `event`.
fn line<S>(ctx: &FmtContext<'_, S, JsonFields>, out: &mut String, event: &Event<'_>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    out.push_str("{\"timestamp\":\"");
    write_timestamp(out, chrono::Utc::now());
    out.push_str("\",\"level\":\"");
    out.push_str(level_name(*meta.level()));
    out.push_str("\",\"target\":");
    write_str_value(out, meta.target());
    event.record(&mut Members::new(out, LINE_KEYS));
    // The event's own span as the log layer sees it (its filter skips the
    // step spans): the intent or the check, with its identity.
    if let Some(span) = ctx.parent_span() {
        out.push_str(",\"span\":{\"name\":");
        write_str_value(out, span.name());
        if let Some(fields) = span.extensions().get::<FormattedFields<JsonFields>>() {
            out.push_str(fields);
        }
        out.push('}');
    }
    out.push_str("}\n");
}

/// Runs `f` on an empty scratch string and writes what it made to `out` in
/// one piece: appending to a `String` directly is much cheaper than
/// through `Writer`'s `dyn fmt::Write`, piece by piece. The scratch is the
/// thread's own, or a fresh one when that is in use (a logged value whose
/// `Debug` logs) or gone (the thread is exiting).
fn buffered(out: &mut Writer<'_>, f: impl FnOnce(&mut String)) -> fmt::Result {
    thread_local! {
        static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let mut f = Some(f);
    let done = SCRATCH.try_with(|cell| {
        let mut s = cell.try_borrow_mut().ok()?;
        s.clear();
        if let Some(f) = f.take() {
            f(&mut s);
        }
        let written = out.write_str(&s);
        // One huge line does not keep its memory for the thread's life.
        if s.capacity() > 64 * 1024 {
            *s = String::new();
        }
        Some(written)
    });
    match done {
        Ok(Some(written)) => written,
        _ => {
            let mut s = String::new();
            if let Some(f) = f.take() {
                f(&mut s);
            }
            out.write_str(&s)
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// `2026-12-07T03:34:03.884039Z`: RFC 3339 in UTC to the microsecond,
/// written by hand (chrono's `format` reads its pattern on every call).
fn write_timestamp(out: &mut String, t: chrono::DateTime<chrono::Utc>) {
    use crate::text::put_digits;
    use chrono::{Datelike, Timelike};
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    // A year past 9999 cannot come from the clock; it is clamped rather
    // than let widen the field.
    put_digits(&mut b[0..4], t.year().clamp(0, 9999) as u32);
    put_digits(&mut b[5..7], t.month());
    put_digits(&mut b[8..10], t.day());
    put_digits(&mut b[11..13], t.hour());
    put_digits(&mut b[14..16], t.minute());
    put_digits(&mut b[17..19], t.second());
    // A leap second shows as :59.999999, not as a seventh digit.
    put_digits(&mut b[20..26], (t.nanosecond() / 1_000).min(999_999));
    // Only ASCII digits were written into an ASCII template.
    out.push_str(std::str::from_utf8(&b).unwrap_or("0000-00-00T00:00:00.000000Z"));
}

/// Writes each field it visits as `,"name":value`; a name in `reserved`
/// (a key of the enclosing object) as `,"field.name":value`.
struct Members<'a> {
    out: &'a mut String,
    reserved: &'static [&'static str],
}

impl<'a> Members<'a> {
    fn new(out: &'a mut String, reserved: &'static [&'static str]) -> Self {
        Members { out, reserved }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        let name = field.name();
        self.out.push(',');
        if self.reserved.contains(&name) {
            self.out.push_str("\"field.");
            escape_into(self.out, name);
            self.out.push('"');
        } else {
            write_str_value(self.out, name);
        }
        self.out.push(':');
        let start = self.out.len();
        // Only a value's own Debug or Display can fail (writing to a
        // String cannot): the member is kept, as null.
        if value(self.out).is_err() {
            self.out.truncate(start);
            self.out.push_str("null");
        }
    }

    /// Integers through itoa: `write!` goes through `core::fmt`'s
    /// machinery, about 400 instructions per number, and every intent logs
    /// four.
    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        self.member(field, |w| {
            w.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }
}

impl Visit for Members<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| {
            write_str_value(w, value);
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.integer(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.integer(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.member(field, |w| {
            if value.is_finite() {
                write!(w, "{value:?}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |w| {
            w.push('"');
            write!(Escaped(w), "{value}")?;
            w.push('"');
            Ok(())
        });
    }

    /// `?x` and `%x` fields and the message: their text, as a string.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.push('"');
            write!(Escaped(w), "{value:?}")?;
            w.push('"');
            Ok(())
        });
    }
}

/// The members of `text` (as [`Members`] writes them): each one's key, as
/// written (quoted and escaped), and its range, leading comma included.
/// Text not of that shape ends the list.
fn members(text: &str) -> Vec<(&str, Range<usize>)> {
    let b = text.as_bytes();
    // The index just past the JSON string starting at `i` (a quote).
    let string_end = |i: usize| -> Option<usize> {
        let mut j = i + 1;
        loop {
            match b.get(j)? {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
    };
    let mut found = Vec::new();
    let mut i = 0;
    while b.get(i) == Some(&b',') && b.get(i + 1) == Some(&b'"') {
        let Some(key_end) = string_end(i + 1) else {
            break;
        };
        if b.get(key_end) != Some(&b':') {
            break;
        }
        let v = key_end + 1;
        // A string value may hold commas; numbers, booleans and null don't.
        let end = if b.get(v) == Some(&b'"') {
            match string_end(v) {
                Some(e) => e,
                None => break,
            }
        } else {
            b[v..]
                .iter()
                .position(|&c| c == b',')
                .map_or(b.len(), |p| v + p)
        };
        let Some(key) = text.get(i + 1..key_end) else {
            break;
        };
        found.push((key, i..end));
        i = end;
    }
    found
}

/// Removes every member of `fields` whose key is `key` (as written).
fn remove_members(fields: &mut String, key: &str) {
    let ranges: Vec<Range<usize>> = members(fields)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, r)| r)
        .collect();
    for r in ranges.into_iter().rev() {
        fields.replace_range(r, "");
    }
}

/// `s` as a JSON string, quotes included.
fn write_str_value(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// Formatted text escaped on its way into the line.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// The bytes `escape_into` must look at: C0 controls, `"`, `\`, and 0xC2
/// (the lead byte of the C1 controls). A table, because this loop runs over
/// every byte of every line.
static LOOK: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0xC2] = true;
    t
};

/// Appends `s` with JSON's escapes; runs that need none are copied whole.
fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !LOOK[b as usize] {
            i += 1;
            continue;
        }
        // A C1 control is U+0080..=U+009F: 0xC2 then 0x80..=0x9F in UTF-8;
        // any other 0xC2 character passes unchanged.
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        if b == 0xC2 && !(0x80..=0x9F).contains(&next) {
            i += 1;
            continue;
        }
        // `start..i` ends before an ASCII byte or a 0xC2 lead byte: a
        // character boundary, so `get` finds it.
        out.push_str(s.get(start..i).unwrap_or(""));
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            // U+0080..=U+009F: the code point is the second byte.
            0xC2 => {
                let _ = write!(out, "\\u{next:04x}");
                i += 1;
            }
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        i += 1;
        start = i;
    }
    out.push_str(s.get(start..).unwrap_or(""));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use chrono::Timelike as _;
    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt;

    /// Every byte the layer writes, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs, as the worker's JSON layer writes them.
    fn lines(emit: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let sink = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(JsonLine)
            .with_writer(move || sink.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8(bytes)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn parsed(emit: impl FnOnce()) -> Vec<Value> {
        lines(emit)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn an_event_is_one_line_with_its_fields_its_level_and_target() {
        let got = parsed(|| {
            tracing::info!(
                target: "h5pay_worker::audit",
                endpoint = "h5pay",
                attempt = 3u32,
                delta = -2i64,
                ok = true,
                ratio = 0.25f64,
                big = 7u128,
                "gateway attempt"
            );
        });
        assert_eq!(got.len(), 1);
        let mut line = got[0].clone();
        let ts = line
            .as_object_mut()
            .and_then(|o| o.remove("timestamp"))
            .unwrap_or_default();
        assert_eq!(
            line,
            json!({
                "level": "INFO",
                "target": "h5pay_worker::audit",
                "endpoint": "h5pay",
                "attempt": 3,
                "delta": -2,
                "ok": true,
                "ratio": 0.25,
                "big": 7,
                "message": "gateway attempt",
            })
        );
        let ts = ts.as_str().unwrap_or("");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(ts.len(), "2026-12-07T03:34:03.884039Z".len(), "{ts}");
        // Past u64, a number is still written whole.
        let raw = lines(|| tracing::info!(big = u128::MAX, small = i128::MIN));
        assert!(
            raw[0].contains(&format!(",\"big\":{},\"small\":{}}}", u128::MAX, i128::MIN)),
            "{raw:?}"
        );
        // And the 64-bit ends, each written exactly.
        let raw = lines(|| tracing::info!(a = u64::MAX, b = i64::MIN, c = 0u64, d = -1i64));
        assert!(
            raw[0].contains(&format!(
                ",\"a\":{},\"b\":{},\"c\":0,\"d\":-1}}",
                u64::MAX,
                i64::MIN
            )),
            "{raw:?}"
        );
    }

    #[test]
    fn text_is_escaped_so_no_value_breaks_the_line_or_reaches_a_terminal_raw() {
        let table = [
            ("plain", "plain"),
            ("quote \" and \\ back", "quote \" and \\ back"),
            ("new\nline\r\ttab", "new\nline\r\ttab"),
            ("esc \u{1b}[31mred", "esc \u{1b}[31mred"),
            ("c1 \u{9b}31m and \u{85}", "c1 \u{9b}31m and \u{85}"),
            ("\u{85}\u{9b}", "\u{85}\u{9b}"),
            ("\u{80}start and end\u{9f}", "\u{80}start and end\u{9f}"),
            ("nul \u{0} and \u{7f}", "nul \u{0} and \u{7f}"),
            (
                "chinese 支付 and é and \u{a0}",
                "chinese 支付 and é and \u{a0}",
            ),
            ("", ""),
        ];
        for (input, want) in table {
            let raw = lines(|| tracing::warn!(value = input, shown = %input, debugged = ?input));
            assert_eq!(raw.len(), 1, "{input:?}: {raw:?}");
            let text = &raw[0];
            assert!(
                !text.bytes().any(|b| b < 0x20)
                    && !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
                "{input:?}: raw controls in {text:?}"
            );
            let line: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(line["value"], want, "{input:?}");
            assert_eq!(line["shown"], want, "{input:?}");
            assert_eq!(line["debugged"], format!("{input:?}"), "{input:?}");
        }
    }

    #[test]
    fn numbers_json_cannot_hold_are_null_and_errors_are_their_text() {
        #[derive(Debug)]
        struct Broken;
        impl fmt::Display for Broken {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the \"answer\" was cut")
            }
        }
        impl std::error::Error for Broken {}
        let got = parsed(|| {
            let e: &(dyn std::error::Error + 'static) = &Broken;
            tracing::error!(
                nan = f64::NAN,
                inf = f64::INFINITY,
                whole = 2.0f64,
                error = e
            );
        });
        assert_eq!(got[0]["nan"], Value::Null);
        assert_eq!(got[0]["inf"], Value::Null);
        assert_eq!(got[0]["whole"], 2.0);
        assert_eq!(got[0]["error"], "the \"answer\" was cut");
        assert_eq!(got[0]["level"], "ERROR");
    }

    #[test]
    fn a_line_names_its_span_with_the_fields_recorded_then_and_later() {
        let got = parsed(|| {
            let span = tracing::info_span!(
                "intent",
                pay_trace_no = "TR-1",
                amount = 100u64,
                trace_id = tracing::field::Empty
            );
            let _in = span.enter();
            tracing::info!("before");
            span.record("trace_id", "0af7651916cd43dd8448eb211c80319c");
            tracing::info!(status = "ready", "after");
            let inner = tracing::info_span!("check");
            tracing::info!(parent: &inner, "explicit parent");
        });
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0]["span"],
            json!({"name": "intent", "pay_trace_no": "TR-1", "amount": 100})
        );
        assert_eq!(
            got[1]["span"],
            json!({"name": "intent", "pay_trace_no": "TR-1", "amount": 100,
                   "trace_id": "0af7651916cd43dd8448eb211c80319c"})
        );
        assert_eq!(got[1]["status"], "ready");
        assert_eq!(got[2]["span"], json!({"name": "check"}));
    }

    #[test]
    fn the_keys_come_in_a_fixed_order() {
        let raw = lines(|| {
            let span = tracing::info_span!("intent", pay_trace_no = "TR-1");
            let _in = span.enter();
            tracing::info!(target: "t", status = "ready", attempts = 1u32, "decided");
        });
        assert_eq!(raw.len(), 1);
        let (head, rest) = raw[0].split_at("{\"timestamp\":\"2026-12-07T03:34:03.884039Z".len());
        assert!(head.starts_with("{\"timestamp\":\""), "{}", raw[0]);
        assert_eq!(
            rest,
            r#"","level":"INFO","target":"t","message":"decided","status":"ready","attempts":1,"span":{"name":"intent","pay_trace_no":"TR-1"}}"#
        );
    }

    #[test]
    fn no_key_appears_twice_in_a_line() {
        let raw = lines(|| {
            let span = tracing::info_span!(
                "check",
                name = "a span field called name",
                trace_id = "first",
                note = tracing::field::Empty
            );
            let _in = span.enter();
            span.record("trace_id", "second");
            span.record("note", "x\",\"trace_id\":\"not a key");
            span.record("trace_id", "third");
            tracing::warn!(
                level = 3u64,
                target = "mine",
                timestamp = "t",
                span = "s",
                "clash"
            );
        });
        assert_eq!(raw.len(), 1);
        let line: Value = serde_json::from_str(&raw[0]).unwrap_or_default();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["field.level"], 3);
        assert_eq!(line["field.target"], "mine");
        assert_eq!(line["field.timestamp"], "t");
        assert_eq!(line["field.span"], "s");
        assert_eq!(line["span"]["name"], "check");
        assert_eq!(line["span"]["field.name"], "a span field called name");
        assert_eq!(line["span"]["trace_id"], "third");
        assert_eq!(line["span"]["note"], "x\",\"trace_id\":\"not a key");
        for key in ["\"level\":", "\"name\":", "\"trace_id\":", "\"timestamp\":"] {
            assert_eq!(raw[0].matches(key).count(), 1, "{key} in {}", raw[0]);
        }
    }

    #[test]
    fn a_value_that_cannot_be_formatted_is_null_and_the_line_stays_json() {
        struct Failing;
        impl fmt::Display for Failing {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("half")?;
                Err(fmt::Error)
            }
        }
        let got = parsed(|| {
            let span = tracing::info_span!("intent", bad = %Failing, good = 1u64);
            let _in = span.enter();
            tracing::info!(bad = %Failing, after = "kept", "still logged");
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["bad"], Value::Null);
        assert_eq!(got[0]["after"], "kept");
        assert_eq!(got[0]["message"], "still logged");
        assert_eq!(
            got[0]["span"],
            json!({"name": "intent", "bad": null, "good": 1})
        );
    }

    #[test]
    fn a_line_outside_any_span_has_no_span_member() {
        let got = parsed(|| tracing::info!("alone"));
        assert_eq!(got[0]["message"], "alone");
        assert!(got[0].get("span").is_none(), "{}", got[0]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_microsecond() {
        use chrono::TimeZone;
        let table = [
            (
                (2026, 12, 7, 3, 4, 5),
                884_039_123,
                "2026-12-07T03:04:05.884039Z",
            ),
            ((1999, 1, 31, 23, 59, 59), 0, "1999-01-31T23:59:59.000000Z"),
            ((2024, 2, 29, 0, 0, 0), 1_000, "2024-02-29T00:00:00.000001Z"),
            // chrono's leap second.
            (
                (2016, 12, 31, 23, 59, 59),
                1_500_000_000,
                "2016-12-31T23:59:59.999999Z",
            ),
        ];
        for ((y, mo, d, h, mi, s), nanos, want) in table {
            let t = chrono::Utc
                .with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .and_then(|t| {
                    t.naive_utc()
                        .with_nanosecond(nanos)
                        .map(|n| chrono::Utc.from_utc_datetime(&n))
                })
                .unwrap_or_else(|| panic!("{want}"));
            let mut out = String::new();
            write_timestamp(&mut out, t);
            assert_eq!(out, want);
        }
    }
}
