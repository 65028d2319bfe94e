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
//! Escaping: `"`, `\`, every C0 control and every C1 control (U+0080 to
//! U+009F, which include the 8-bit CSI), so no logged value can carry a
//! terminal escape sequence or break the line.

use std::fmt::{self, Write};

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
/// as, each with its leading comma (`,"k":v`), so that fields recorded
/// later are simply appended.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        buffered(&mut writer, |out| {
            let mut v = Members::new(out);
            fields.record(&mut v);
            v.result
        })
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // No separator: every member carries its own comma.
        self.format_fields(current.as_writer(), fields)
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
fn line<S>(ctx: &FmtContext<'_, S, JsonFields>, out: &mut String, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    out.push_str("{\"timestamp\":\"");
    write_timestamp(out, chrono::Utc::now())?;
    out.push_str("\",\"level\":\"");
    out.push_str(level_name(*meta.level()));
    out.push_str("\",\"target\":");
    write_str_value(out, meta.target())?;
    let mut members = Members::new(out);
    event.record(&mut members);
    members.result?;
    // The event's own span as the log layer sees it (its filter skips the
    // step spans): the intent or the check, with its identity.
    if let Some(span) = ctx.parent_span() {
        out.push_str(",\"span\":{\"name\":");
        write_str_value(out, span.name())?;
        if let Some(fields) = span.extensions().get::<FormattedFields<JsonFields>>() {
            out.push_str(fields);
        }
        out.push('}');
    }
    out.push_str("}\n");
    Ok(())
}

/// Runs `f` on an empty scratch string and writes what it made to `out` in
/// one piece: appending to a `String` directly is much cheaper than
/// through `Writer`'s `dyn fmt::Write`, piece by piece. The scratch is the
/// thread's own, or a fresh one when that is in use (a logged value whose
/// `Debug` logs).
fn buffered(out: &mut Writer<'_>, f: impl FnOnce(&mut String) -> fmt::Result) -> fmt::Result {
    thread_local! {
        static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            let r = f(&mut s).and_then(|()| out.write_str(&s));
            // One huge line does not keep its memory for the thread's life.
            if s.capacity() > 64 * 1024 {
                *s = String::new();
            }
            r
        }
        Err(_) => {
            let mut s = String::new();
            f(&mut s)?;
            out.write_str(&s)
        }
    })
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
fn write_timestamp<W: Write + ?Sized>(w: &mut W, t: chrono::DateTime<chrono::Utc>) -> fmt::Result {
    use chrono::{Datelike, Timelike};
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    // A year past 9999 cannot come from the clock; it is clamped rather
    // than let widen the field.
    put_digits(&mut b[0..4], t.year().clamp(0, 9999) as u32);
    put_digits(&mut b[5..7], t.month());
    put_digits(&mut b[8..10], t.day());
    put_digits(&mut b[11..13], t.hour());
    put_digits(&mut b[14..16], t.minute());
    // A leap second shows as :59.999999, not as an eighth digit.
    let (second, micros) = match t.nanosecond() {
        n if n >= 1_000_000_000 => (t.second(), 999_999),
        n => (t.second(), n / 1_000),
    };
    put_digits(&mut b[17..19], second);
    put_digits(&mut b[20..26], micros);
    // Only ASCII digits were written into an ASCII template.
    w.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
}

/// `n` as the decimal digits that fill `out` (leading zeros).
fn put_digits(out: &mut [u8], mut n: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Writes each field it visits as `,"name":value`, remembering the first
/// write error (a `Visit` method cannot return one).
struct Members<'a, W: Write + ?Sized> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<'a, W: Write + ?Sized> Members<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Members {
            out,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_char(',')?;
            write_str_value(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: Write + ?Sized> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_str_value(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |w| write!(w, "{value}"));
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
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    /// `?x` and `%x` fields and the message: their text, as a string.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string, quotes included.
fn write_str_value<W: Write + ?Sized>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    escape_into(w, s)?;
    w.write_char('"')
}

/// Formatted text escaped on its way into the line.
struct Escaped<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s)
    }
}

/// The bytes `escape_into` must look at: C0 controls, `"`, `\\`, and 0xC2
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

/// Writes `s` with JSON's escapes; runs that need none are written whole.
fn escape_into<W: Write + ?Sized>(w: &mut W, s: &str) -> fmt::Result {
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
        // character boundary, so the slice is valid.
        w.write_str(s.get(start..i).ok_or(fmt::Error)?)?;
        match b {
            b'"' => w.write_str("\\\"")?,
            b'\\' => w.write_str("\\\\")?,
            b'\n' => w.write_str("\\n")?,
            b'\r' => w.write_str("\\r")?,
            b'\t' => w.write_str("\\t")?,
            // U+0080..=U+009F: the code point is the second byte.
            0xC2 => {
                write!(w, "\\u{next:04x}")?;
                i += 1;
            }
            _ => write!(w, "\\u{b:04x}")?,
        }
        i += 1;
        start = i;
    }
    w.write_str(s.get(start..).ok_or(fmt::Error)?)
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
    }

    #[test]
    fn text_is_escaped_so_no_value_breaks_the_line_or_reaches_a_terminal_raw() {
        let table = [
            ("plain", "plain"),
            ("quote \" and \\ back", "quote \" and \\ back"),
            ("new\nline\r\ttab", "new\nline\r\ttab"),
            ("esc \u{1b}[31mred", "esc \u{1b}[31mred"),
            ("c1 \u{9b}31m and \u{85}", "c1 \u{9b}31m and \u{85}"),
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
                    && !text.contains('\u{9b}')
                    && !text.contains('\u{85}'),
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
            assert!(write_timestamp(&mut out, t).is_ok());
            assert_eq!(out, want);
        }
    }
}
