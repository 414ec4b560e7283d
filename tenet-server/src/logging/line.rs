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

use http::{Method, StatusCode};
use tenet_core::TenantId;

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
    start_text(line, *metadata.level(), metadata.target(), now);
    let mut fields = TextFields { line, first: true };
    event.record(&mut fields);
    end_text(line, request_id);
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
    start_json(line, *metadata.level(), request_id, now);
    event.record(&mut JsonFields { line: &mut *line });
    end_json(line, metadata.target());
}

/// Target of access lines: the module that logs them, as when they were
/// `tracing` events, so that `RUST_LOG` directives select them by it.
pub const ACCESS_TARGET: &str = "tenet_server::service";

/// The fields of one request's access line.
///
/// [`write_access`] writes the line that [`Access::emit`] would log through
/// `tracing`, with the same fields in the same order, at a fraction of the
/// cost: no field visitor, no callsite lookups, no escaping scans and no
/// second copy of the line in tracing-subscriber's buffer. The field types
/// keep every value free of characters that need escaping: `http` accepts
/// only token characters in a method, route templates are constants, and
/// the tenant id is a UUID.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub method: &'a Method,
    /// A route template such as `/tenants/{id}`, or `unmatched`.
    pub route: &'static str,
    pub status: StatusCode,
    pub latency_us: u64,
    pub tenant_id: Option<TenantId>,
}

impl Access<'_> {
    /// Logs the line as an info event of [`ACCESS_TARGET`], for a
    /// subscriber that does not write access lines itself.
    pub fn emit(&self) {
        let mut tenant = [0; 36];
        tracing::info!(
            target: ACCESS_TARGET,
            message = "request",
            method = self.method.as_str(),
            route = self.route,
            status = self.status.as_u16(),
            latency_us = self.latency_us,
            tenant_id = self.tenant_id.map(|id| id.encode(&mut tenant)),
        );
    }
}

/// Writes the access line of `access` in `style`, ending in a newline.
pub fn write_access(
    line: &mut String,
    style: Style,
    access: &Access<'_>,
    request_id: Option<&str>,
    now: SystemTime,
) {
    debug_assert!(needs_no_escaping(access.route.as_bytes()));
    let mut tenant = [0; 36];
    let tenant = access.tenant_id.map(|id| id.encode(&mut tenant));
    let status = access.status.as_str();
    let mut latency = itoa::Buffer::new();
    let latency = latency.format(access.latency_us);

    match style {
        Style::Text => {
            start_text(line, Level::INFO, ACCESS_TARGET, now);
            push_access_fields(line, &TEXT_ACCESS, access, status, latency, tenant);
            end_text(line, request_id);
        }
        Style::Json => {
            start_json(line, Level::INFO, request_id, now);
            push_access_fields(line, &JSON_ACCESS, access, status, latency, tenant);
            end_json(line, ACCESS_TARGET);
        }
    }
}

/// The constant text around the values of an access line's fields, each
/// piece ending where the next value starts.
struct AccessPieces {
    method: &'static str,
    route: &'static str,
    status: &'static str,
    latency: &'static str,
    tenant: &'static str,
    end_tenant: &'static str,
}

const TEXT_ACCESS: AccessPieces = AccessPieces {
    method: "request method=\"",
    route: "\" route=\"",
    status: "\" status=",
    latency: " latency_us=",
    tenant: " tenant_id=\"",
    end_tenant: "\"",
};

const JSON_ACCESS: AccessPieces = AccessPieces {
    method: ",\"message\":\"request\",\"method\":\"",
    route: "\",\"route\":\"",
    status: "\",\"status\":",
    latency: ",\"latency_us\":",
    tenant: ",\"tenant_id\":\"",
    end_tenant: "\"",
};

/// Appends the fields of an access line. Each value goes between its
/// pieces as it is (see [`Access`]). Inlined into each caller, so that the
/// pieces' lengths are constants there and their copies need no calls.
#[inline(always)]
fn push_access_fields(
    line: &mut String,
    pieces: &AccessPieces,
    access: &Access<'_>,
    status: &str,
    latency: &str,
    tenant: Option<&str>,
) {
    line.push_str(pieces.method);
    line.push_str(access.method.as_str());
    line.push_str(pieces.route);
    line.push_str(access.route);
    line.push_str(pieces.status);
    line.push_str(status);
    line.push_str(pieces.latency);
    line.push_str(latency);
    if let Some(tenant) = tenant {
        line.push_str(pieces.tenant);
        line.push_str(tenant);
        line.push_str(pieces.end_tenant);
    }
}

/// Writes the start of a text line, up to the first field:
/// `<timestamp> <LEVEL> <target>: `.
fn start_text(line: &mut String, level: Level, target: &str, now: SystemTime) {
    push_timestamp(line, now);
    line.push(' ');
    line.push_str(padded_level(level));
    line.push(' ');
    line.push_str(target);
    line.push_str(": ");
}

/// Ends a text line: the request id when there is one, and the newline.
fn end_text(line: &mut String, request_id: Option<&str>) {
    if let Some(id) = request_id {
        line.push_str(" request_id=");
        line.push_str(id);
    }
    line.push('\n');
}

/// Writes the start of a JSON line, up to the first field: the request id
/// when there is one, the timestamp and the level.
fn start_json(line: &mut String, level: Level, request_id: Option<&str>, now: SystemTime) {
    line.push('{');
    if let Some(id) = request_id {
        line.push_str("\"span\":{\"request_id\":\"");
        line.push_str(id);
        line.push_str("\"},");
    }
    line.push_str("\"timestamp\":\"");
    push_timestamp(line, now);
    line.push_str("\",\"level\":\"");
    line.push_str(level.as_str());
    line.push('"');
}

/// Ends a JSON line: the target, the closing brace and the newline.
fn end_json(line: &mut String, target: &str) {
    line.push_str(",\"target\":");
    push_json_str(line, target);
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
        } else {
            push_text_str(self.line, value);
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

/// Appends a string field's value to a text line: between quotes, with
/// quotes, backslashes and control characters escaped.
fn push_text_str(line: &mut String, value: &str) {
    if needs_no_escaping(value.as_bytes()) {
        line.push('"');
        line.push_str(value);
        line.push('"');
    } else {
        // `Debug` quotes the string and escapes every control character,
        // like tracing-subscriber's format.
        let _ = write!(line, "{value:?}");
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

    /// Runs `log` with this format in `style` as the default subscriber,
    /// at every level, and returns the lines it wrote.
    fn capture_ours_of(style: Style, log: impl FnOnce()) -> Vec<String> {
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
                tracing::subscriber::with_default(subscriber, log);
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
                tracing::subscriber::with_default(subscriber, log);
            }
        }
        capture.lines()
    }

    fn capture_ours(style: Style) -> Vec<String> {
        capture_ours_of(style, log_samples)
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

    /// Writes `access` with [`write_access`], and logs it with
    /// [`Access::emit`] through this format, both with `request_id`.
    fn both_access_lines(style: Style, access: &Access<'_>, request_id: &str) -> (String, String) {
        let mut direct = String::new();
        write_access(
            &mut direct,
            style,
            access,
            Some(request_id),
            SystemTime::now(),
        );

        let id = http::HeaderValue::from_str(request_id).expect("valid request id");
        let emitted = capture_ours_of(style, || {
            request_id::sync_scope(id, || access.emit());
        });
        (direct, emitted.concat() + "\n")
    }

    #[test]
    fn access_lines_match_their_tracing_events() {
        let with_tenant = Access {
            method: &Method::GET,
            route: "/protected",
            status: StatusCode::OK,
            latency_us: 1_234,
            tenant_id: Some(TenantId::generate()),
        };
        let extension = Method::from_bytes(b"PURGE").expect("valid method");
        let without_tenant = Access {
            method: &extension,
            route: "unmatched",
            status: StatusCode::NOT_FOUND,
            latency_us: u64::MAX,
            tenant_id: None,
        };
        for access in [with_tenant, without_tenant] {
            let (direct, emitted) = both_access_lines(Style::Text, &access, "req-1");
            assert_eq!(split_timestamp(&direct).1, split_timestamp(&emitted).1);

            let (direct, emitted) = both_access_lines(Style::Json, &access, "req-1");
            serde_json::from_str::<serde_json::Value>(&direct).expect("JSON line");
            assert_eq!(
                without_json_timestamp(&direct),
                without_json_timestamp(&emitted)
            );
        }
    }

    /// Returns a JSON line with its timestamp's value left out, so that two
    /// lines compare byte for byte, field order included.
    fn without_json_timestamp(line: &str) -> String {
        let (before, rest) = line
            .split_once("\"timestamp\":\"")
            .expect("a timestamp field");
        let (_, after) = rest.split_once('"').expect("the timestamp's closing quote");
        format!("{before}\"timestamp\":\"{after}")
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
