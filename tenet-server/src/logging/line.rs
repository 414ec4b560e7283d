//! The event format: lines written straight into a buffer for the common
//! case, and tracing-subscriber's own format for coloured output and for
//! events inside spans.
//!
//! The access log writes a line for every request, so the cost of one
//! line bounds the server's throughput. tracing-subscriber's format runs
//! every field and the timestamp through `core::fmt` and its styling
//! wrappers even without colours; in a callgrind profile of a release
//! build, that was about a quarter of the instructions of a warm
//! `/protected`. This format writes the same lines with plain string
//! pushes, integer formatting by `itoa`, and a date cached per second.
//!
//! Text lines look like tracing-subscriber's `Full` format without spans:
//! `<timestamp> <LEVEL> <target>: <message> <name>=<value> ...`, with
//! `request_id=<id>` last inside a request. Control characters in messages
//! and in `Display` or `Debug` values are escaped (`\x0a`), so a value can
//! never start a new line. JSON lines have the fields of tracing-subscriber's
//! flattened JSON format, with the request id as `"span":{"request_id":..}`
//! first.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::request_id;

/// The shape of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `<timestamp> <LEVEL> <target>: <message> <name>=<value> ...`
    Text,
    /// One JSON object per line.
    Json,
}

/// Formats events in `style`, and hands those this format does not cover
/// to `fallback`: every event when `ansi` is set, and events inside a span.
#[derive(Debug)]
pub struct LineFormat<E> {
    pub style: Style,
    pub ansi: bool,
    pub fallback: E,
}

thread_local! {
    /// The date and time to the second of the last line on this thread,
    /// `YYYY-MM-DDTHH:MM:SS`, with its Unix time.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl<S, N, E> FormatEvent<S, N> for LineFormat<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.ansi || ctx.lookup_current().is_some() {
            return self.fallback.format_event(ctx, writer, event);
        }

        let request_id = request_id::current();
        // `resolve` lets through only `[A-Za-z0-9._:-]`, which needs no
        // escaping in JSON or text.
        let request_id = request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .filter(|id| !id.is_empty());

        // A record of the `log` crate arrives as an event of target `log`,
        // with its own target in a `log.target` field.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());

        super::with_line(|line| {
            match self.style {
                Style::Text => write_text(line, event, metadata, request_id, SystemTime::now()),
                Style::Json => write_json(line, event, metadata, request_id, SystemTime::now()),
            }
            writer.write_str(line)
        })
    }
}

/// Writes one text line for `event`, with the level and target of
/// `metadata`, ending in a newline.
fn write_text(
    line: &mut String,
    event: &Event<'_>,
    metadata: &Metadata<'_>,
    request_id: Option<&str>,
    now: SystemTime,
) {
    push_timestamp(line, now);
    line.push(' ');
    line.push_str(padded_level(*metadata.level()));
    line.push(' ');
    line.push_str(metadata.target());
    line.push_str(": ");

    let mut fields = TextFields { line, first: true };
    event.record(&mut fields);

    if let Some(id) = request_id {
        line.push_str(" request_id=");
        line.push_str(id);
    }
    line.push('\n');
}

/// Writes one JSON line for `event`, with the level and target of
/// `metadata`, ending in a newline.
fn write_json(
    line: &mut String,
    event: &Event<'_>,
    metadata: &Metadata<'_>,
    request_id: Option<&str>,
    now: SystemTime,
) {
    line.push('{');
    if let Some(id) = request_id {
        line.push_str("\"span\":{\"request_id\":\"");
        line.push_str(id);
        line.push_str("\"},");
    }
    line.push_str("\"timestamp\":\"");
    push_timestamp(line, now);
    line.push_str("\",\"level\":\"");
    line.push_str(metadata.level().as_str());
    line.push('"');

    event.record(&mut JsonFields { line: &mut *line });

    line.push_str(",\"target\":");
    push_json_str(line, metadata.target());
    line.push_str("}\n");
}

/// Returns the level right-aligned in five characters, as
/// tracing-subscriber writes it.
fn padded_level(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// Appends `now` in RFC 3339 UTC with microseconds, such as
/// `2026-12-04T23:40:58.860452Z`.
fn push_timestamp(line: &mut String, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();

    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != seconds {
            let text = &mut second.1;
            text.clear();
            write_date_time(text, seconds);
            second.0 = seconds;
        }
        line.push_str(&second.1);
    });

    let micros = since_epoch.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    line.push('.');
    for _ in digits.len()..6 {
        line.push('0');
    }
    line.push_str(digits);
    line.push('Z');
}

/// Writes `YYYY-MM-DDTHH:MM:SS` for `seconds` since the Unix epoch.
fn write_date_time(text: &mut String, seconds: u64) {
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Writing to a `String` cannot fail. This runs once a second per
    // thread, so `write!` costs nothing that matters.
    let _ = write!(
        text,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
}

/// Returns a field's name as it is written: without the `r#` of a raw
/// identifier.
fn field_name(field: &Field) -> &'static str {
    let name = field.name();
    name.strip_prefix("r#").unwrap_or(name)
}

/// Whether a field carries metadata of a `log` record, which the line
/// already shows.
fn is_log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// Writes the fields of a text line: the message as it is, the others as
/// `name=value`, separated by spaces.
struct TextFields<'a> {
    line: &'a mut String,
    first: bool,
}

impl TextFields<'_> {
    /// Starts a field: a separating space, then `name=` unless it is the
    /// message. Returns `false` for a field that is not written.
    fn start(&mut self, field: &Field) -> bool {
        if is_log_metadata(field) {
            return false;
        }
        if !self.first {
            self.line.push(' ');
        }
        self.first = false;
        if field.name() != "message" {
            self.line.push_str(field_name(field));
            self.line.push('=');
        }
        true
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        if field.name() == "message" {
            push_escaped_controls(self.line, value);
        } else if needs_no_escaping(value.as_bytes()) {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            // `Debug` quotes the string and escapes every control
            // character, like tracing-subscriber's format.
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        let _ = write!(ControlEscaper(self.line), "{value}");
        if let Some(source) = value.source() {
            self.line.push(' ');
            self.line.push_str(field_name(field));
            self.line.push_str(".sources=[");
            let mut next = Some(source);
            let mut first = true;
            while let Some(error) = next {
                if !first {
                    self.line.push_str(", ");
                }
                first = false;
                let _ = write!(ControlEscaper(self.line), "{error}");
                next = error.source();
            }
            self.line.push(']');
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            let _ = write!(ControlEscaper(self.line), "{value:?}");
        }
    }
}

/// Writes the fields of a JSON line, each as `,"name":value`.
struct JsonFields<'a> {
    line: &'a mut String,
}

impl JsonFields<'_> {
    /// Starts a field with `,"name":`. Returns `false` for a field that is
    /// not written.
    fn start(&mut self, field: &Field) -> bool {
        if is_log_metadata(field) {
            return false;
        }
        self.line.push(',');
        push_json_str(self.line, field_name(field));
        self.line.push(':');
        true
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.start(field) {
            push_json_str(self.line, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            // serde_json writes a non-finite number as `null`.
            self.line
                .push_str(&serde_json::Value::from(value).to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.line.push('"');
            let _ = write!(JsonEscaper(self.line), "{value:?}");
            self.line.push('"');
        }
    }
}

/// Appends `value` with control characters escaped: C0 controls and DEL
/// as `\xNN`, C1 controls as `\u{NN}`.
fn push_escaped_controls(line: &mut String, value: &str) {
    if !has_control_byte(value.as_bytes()) {
        line.push_str(value);
        return;
    }
    for ch in value.chars() {
        if is_control(ch) {
            let code = u32::from(ch);
            let _ = if code < 0x80 {
                write!(line, "\\x{code:02x}")
            } else {
                write!(line, "\\u{{{code:x}}}")
            };
        } else {
            line.push(ch);
        }
    }
}

/// Returns whether `bytes` may hold a control character. A byte scan finds
/// every one: C0 and DEL are single bytes, and each C1 control is 0xC2
/// followed by 0x80 to 0x9F. It may also flag other characters that start
/// with 0xC2, which the caller then checks one by one.
fn has_control_byte(bytes: &[u8]) -> bool {
    let flagged = |byte: u8| (byte < 0x20) | (byte == 0x7f) | (byte == 0xc2);
    // Each chunk is folded without an early exit, so that the compiler can
    // compare its bytes together: every field of every log line passes here.
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if chunk
            .iter()
            .fold(false, |found, &byte| found | flagged(byte))
        {
            return true;
        }
    }
    chunks.remainder().iter().any(|&byte| flagged(byte))
}

/// Returns whether `bytes` are all printable ASCII other than `"` and `\`,
/// which a text line writes between quotes as they are.
fn needs_no_escaping(bytes: &[u8]) -> bool {
    let plain = |byte: u8| (b' '..=b'~').contains(&byte) & (byte != b'"') & (byte != b'\\');
    // Folded in chunks without an early exit, like `has_control_byte`.
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if !chunk.iter().fold(true, |all, &byte| all & plain(byte)) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&byte| plain(byte))
}

fn is_control(ch: char) -> bool {
    matches!(ch, '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}')
}

/// A `fmt::Write` that escapes control characters on the way into a line.
struct ControlEscaper<'a>(&'a mut String);

impl fmt::Write for ControlEscaper<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped_controls(self.0, text);
        Ok(())
    }
}

/// Appends `value` as a quoted JSON string.
fn push_json_str(line: &mut String, value: &str) {
    line.push('"');
    push_json_escaped(line, value);
    line.push('"');
}

/// Appends `value` escaped for the inside of a JSON string.
fn push_json_escaped(line: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(|ch: char| ch < ' ' || ch == '"' || ch == '\\') {
        line.push_str(&rest[..at]);
        let ch = rest[at..].chars().next().unwrap_or_default();
        match ch {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            other => {
                let _ = write!(line, "\\u{:04x}", u32::from(other));
            }
        }
        rest = &rest[at + ch.len_utf8()..];
    }
    line.push_str(rest);
}

/// A `fmt::Write` that escapes text for the inside of a JSON string.
struct JsonEscaper<'a>(&'a mut String);

impl fmt::Write for JsonEscaper<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_json_escaped(self.0, text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::{self, JsonFields as TracingJsonFields};

    use super::*;

    /// Collects everything a subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().expect("capture lock");
            String::from_utf8(bytes.clone())
                .expect("UTF-8 log output")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .expect("capture lock")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner cause")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl std::error::Error for Inner {}

    /// The number of events that [`log_samples`] logs.
    const SAMPLE_EVENTS: usize = 9;

    /// Logs events that cover every kind of field the visitors handle, and
    /// a record of the `log` crate, which reaches tracing with target `log`
    /// and its own target in a field.
    fn log_samples() {
        // Another test may have installed it already, which is as good.
        let _ = tracing_log::LogTracer::init();

        let error = Outer(Inner);
        tracing::info!("plain message");
        tracing::warn!(count = 3_u64, delta = -4_i64, ok = true, "with numbers");
        tracing::info!(
            name = "simple",
            quoted = "say \"hi\"",
            path = "C:\\x",
            "strings"
        );
        tracing::error!(error = %"shown", debug = ?Some(7), "display and debug");
        tracing::info!(r#type = "raw", "raw identifier");
        tracing::info!(
            error = &error as &dyn std::error::Error,
            "error with a source"
        );
        tracing::debug!(id = 12_u64);
        tracing::info!(unicode = "naïve ✓", "unicode");
        log::warn!(target: "driver::connection", "from the log crate");
    }

    fn capture_ours(style: Style) -> Vec<String> {
        let capture = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(capture.clone());
        match style {
            Style::Text => {
                let subscriber = builder
                    .event_format(LineFormat {
                        style,
                        ansi: false,
                        fallback: format::format().with_ansi(false),
                    })
                    .finish();
                tracing::subscriber::with_default(subscriber, log_samples);
            }
            Style::Json => {
                let subscriber = builder
                    .fmt_fields(TracingJsonFields::new())
                    .event_format(LineFormat {
                        style,
                        ansi: false,
                        fallback: format::format().json().flatten_event(true),
                    })
                    .finish();
                tracing::subscriber::with_default(subscriber, log_samples);
            }
        }
        capture.lines()
    }

    fn capture_tracing_subscriber(style: Style) -> Vec<String> {
        let capture = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(capture.clone());
        match style {
            Style::Text => {
                tracing::subscriber::with_default(builder.finish(), log_samples);
            }
            Style::Json => {
                let subscriber = builder.json().flatten_event(true).finish();
                tracing::subscriber::with_default(subscriber, log_samples);
            }
        }
        capture.lines()
    }

    /// Splits a text line into its timestamp and the rest.
    fn split_timestamp(line: &str) -> (&str, &str) {
        line.split_once(' ').expect("timestamp then the rest")
    }

    #[test]
    fn text_lines_match_tracing_subscriber_format() {
        let ours = capture_ours(Style::Text);
        let theirs = capture_tracing_subscriber(Style::Text);

        assert_eq!(ours.len(), SAMPLE_EVENTS);
        assert_eq!(ours.len(), theirs.len());
        for (our_line, their_line) in ours.iter().zip(&theirs) {
            let (our_time, our_rest) = split_timestamp(our_line);
            let (their_time, their_rest) = split_timestamp(their_line);
            assert_eq!(our_rest, their_rest);
            assert_eq!(
                our_time.len(),
                their_time.len(),
                "{our_time} vs {their_time}"
            );
            time::OffsetDateTime::parse(our_time, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339 timestamp");
        }
    }

    #[test]
    fn json_lines_match_tracing_subscriber_format() {
        let ours = capture_ours(Style::Json);
        let theirs = capture_tracing_subscriber(Style::Json);

        assert_eq!(ours.len(), SAMPLE_EVENTS);
        assert_eq!(ours.len(), theirs.len());
        for (our_line, their_line) in ours.iter().zip(&theirs) {
            let mut our_value: serde_json::Value = serde_json::from_str(our_line).expect("JSON");
            let mut their_value: serde_json::Value =
                serde_json::from_str(their_line).expect("JSON");
            let our_time = our_value["timestamp"].take();
            their_value["timestamp"].take();
            // tracing-subscriber's JSON also keeps the `log.*` fields of a
            // `log` record, which these lines leave out.
            their_value
                .as_object_mut()
                .expect("object")
                .retain(|key, _| !key.starts_with("log."));
            assert_eq!(our_value, their_value);

            let our_keys: Vec<&String> = our_value.as_object().expect("object").keys().collect();
            let their_keys: Vec<&String> =
                their_value.as_object().expect("object").keys().collect();
            assert_eq!(our_keys, their_keys, "field order");
            time::OffsetDateTime::parse(
                our_time.as_str().expect("timestamp string"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339 timestamp");
        }
    }

    #[test]
    fn control_characters_never_break_a_text_line() {
        let mut line = String::new();
        push_escaped_controls(&mut line, "one\ntwo\r\x1b[31mred\u{85}end");

        assert_eq!(line, "one\\x0atwo\\x0d\\x1b[31mred\\u{85}end");
    }

    #[test]
    fn control_bytes_are_found_at_every_position() {
        for length in 0..=25 {
            let clean = "a".repeat(length);
            assert!(!has_control_byte(clean.as_bytes()), "length {length}");
            for at in 0..length {
                for control in ["\n", "\x7f", "\u{85}"] {
                    let mut text = clean.clone();
                    text.replace_range(at..=at, control);

                    assert!(has_control_byte(text.as_bytes()), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn escaping_check_finds_every_position() {
        for length in 0..=25 {
            let clean = "a".repeat(length);
            assert!(needs_no_escaping(clean.as_bytes()), "length {length}");
            for at in 0..length {
                for special in ["\"", "\\", "\n", "\x7f", "é"] {
                    let mut text = clean.clone();
                    text.replace_range(at..=at, special);

                    assert!(!needs_no_escaping(text.as_bytes()), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let mut line = String::new();
        push_json_str(&mut line, "a\"b\\c\nd\u{1}é");

        assert_eq!(line, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&line).expect("valid JSON string");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn timestamps_pad_microseconds_and_cache_the_second() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_780_000_000_000_042);
        let mut first = String::new();
        let mut second = String::new();

        push_timestamp(&mut first, at);
        push_timestamp(&mut second, at + std::time::Duration::from_micros(5));

        assert_eq!(first, "2026-05-28T20:26:40.000042Z");
        assert_eq!(second, "2026-05-28T20:26:40.000047Z");
    }
}
