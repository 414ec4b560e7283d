//! Log output: tracing to standard output through a log thread that
//! writes the collected lines in batches.

mod line;

use std::cell::RefCell;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, FilterFn, ParseError, filter_fn};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use self::line::{ACCESS_TARGET, Access};
use self::line::{LineFormat, Style, write_access};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::request_id;

/// Filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info";

/// Crates whose debug and trace lines contain secrets. They log at info and
/// above only, unless `RUST_LOG` names them (see [`secret_crates_filter`]).
/// tokio-postgres 0.7.18 logs each statement "with parameters" at debug
/// level (in its `query.rs`), and the parameters of key lookups are key
/// digests.
const SECRET_LOGGING_CRATES: &[&str] = &["tokio_postgres"];

/// Interval at which the log thread writes the lines collected since its
/// last write.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Maximum bytes of lines waiting for the log thread. A line that does not
/// fit is dropped and counted.
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// The buffer and format that [`log_access`] writes access lines in.
/// [`init`] sets it when lines are not coloured, and otherwise access lines
/// go through `tracing`.
static ACCESS_SINK: OnceLock<AccessSink> = OnceLock::new();

#[derive(Debug)]
struct AccessSink {
    shared: Arc<Shared>,
    style: Style,
    /// Whether `RUST_LOG` lets access lines through.
    enabled: bool,
}

/// Installs the global subscriber and returns the guard that writes the
/// remaining lines and stops the log thread when dropped. Keep the guard
/// alive until the process exits.
///
/// Text lines are coloured only when standard output is a terminal.
///
/// Worker threads append each line to a shared buffer, and a background
/// thread writes the buffer to standard output every 10 ms. So a slow
/// standard output never delays a request, and a busy server wakes the log
/// thread once per interval instead of once per line. When the buffer
/// holds 8 MiB, further lines are dropped instead of blocking, and the log
/// thread reports how many.
///
/// Debug and trace lines of [`SECRET_LOGGING_CRATES`] are dropped unless
/// `RUST_LOG` names the crate or one of its modules.
pub fn init(format: LogFormat) -> LogGuard {
    let shared = Arc::new(Shared::default());
    let thread = spawn_log_thread(Arc::clone(&shared));
    let writer = BatchWriter(Arc::clone(&shared));
    // An empty RUST_LOG counts as unset, like the empty TENET_* variables.
    // EnvFilter would read it as a filter without directives, which logs
    // nothing.
    let rust_log_var = std::env::var("RUST_LOG");
    let rust_log_not_unicode = matches!(rust_log_var, Err(std::env::VarError::NotUnicode(_)));
    let rust_log = rust_log_var.ok().filter(|value| !value.trim().is_empty());
    let (filter, invalid_filter) = match rust_log.as_deref().map(parse_filter) {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(Ok(filter)) => (filter, None),
        Some(Err(invalid)) => (EnvFilter::new(DEFAULT_FILTER), Some(invalid)),
    };
    let secret_filter = secret_crates_filter(rust_log.as_deref());

    let ansi = std::io::stdout().is_terminal();

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder
            .event_format(LineFormat {
                style: Style::Text,
                ansi,
                fallback: WithRequestId {
                    inner: format::format().with_ansi(ansi),
                    placement: Placement::TextSuffix,
                },
            })
            .finish()
            .with(secret_filter)
            .init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(LineFormat {
                style: Style::Json,
                ansi: false,
                fallback: WithRequestId {
                    inner: format::format().json().flatten_event(true),
                    placement: Placement::JsonSpanField,
                },
            })
            .finish()
            .with(secret_filter)
            .init(),
    }
    if !ansi {
        let style = match format {
            LogFormat::Text => Style::Text,
            LogFormat::Json => Style::Json,
        };
        // `RUST_LOG` is read once, so whether it lets access lines through
        // is known from here on.
        let _ = ACCESS_SINK.set(AccessSink {
            shared: Arc::clone(&shared),
            style,
            enabled: tracing::enabled!(target: ACCESS_TARGET, Level::INFO),
        });
    }
    // Logged once the subscriber is installed, so that it is not lost.
    // RUST_LOG contains no secret, so its value is logged whole.
    if rust_log_not_unicode {
        tracing::warn!(
            "RUST_LOG is not valid UTF-8, so it is ignored and the filter {DEFAULT_FILTER:?} is \
             used instead; set it to ASCII directives such as tenet_server=debug, or unset it"
        );
    }
    if let (Some(invalid), Some(rust_log)) = (invalid_filter, rust_log.as_deref()) {
        tracing::warn!(
            rust_log,
            directive = invalid.directive.as_deref(),
            error = %invalid.error,
            "RUST_LOG is invalid, so it is ignored and the filter {DEFAULT_FILTER:?} is used \
             instead; fix the directive, or unset RUST_LOG"
        );
    }
    LogGuard {
        shared,
        thread: thread.ok(),
    }
}

/// The reason that [`parse_filter`] rejected a `RUST_LOG` value.
#[derive(Debug)]
struct InvalidFilter {
    /// The first directive that fails to parse alone. `None` only if
    /// `EnvFilter` stops splitting the value as [`parse_filter`] does.
    directive: Option<String>,
    error: ParseError,
}

/// Parses a `RUST_LOG` value into a filter, or names the first directive
/// that fails, because `EnvFilter`'s error describes the failure without
/// naming the directive.
fn parse_filter(rust_log: &str) -> Result<EnvFilter, InvalidFilter> {
    EnvFilter::try_new(rust_log).map_err(|error| {
        // `EnvFilter::try_new` splits the value at every comma and parses
        // each non-empty part as a `Directive` (tracing-subscriber 0.3.23,
        // `Builder::parse`), so the first part that fails alone is the one
        // its error is about.
        let directive = rust_log
            .split(',')
            .filter(|part| !part.is_empty())
            .find(|part| part.parse::<Directive>().is_err())
            .map(str::to_owned);
        InvalidFilter { directive, error }
    })
}

/// Builds the filter that limits [`SECRET_LOGGING_CRATES`] to info and
/// above.
///
/// It drops the debug and trace events of those crates, except those of a
/// target that a directive of `rust_log` names: the crate itself, or one of
/// its modules. The filter only narrows `RUST_LOG`, so a crate that
/// `RUST_LOG` sets to warn stays at warn. Events of the `log` crate, which
/// tokio-postgres uses, reach it through the `LogTracer` that `init`
/// installs, with their module path as the target.
fn secret_crates_filter(
    rust_log: Option<&str>,
) -> FilterFn<impl Fn(&Metadata<'_>) -> bool + use<>> {
    // `EnvFilter` splits directives at commas and reads the target up to
    // a span filter (`[...]`) or the level (`=...`).
    let named: Vec<String> = rust_log
        .unwrap_or_default()
        .split(',')
        .filter_map(|directive| directive.split(['[', '=']).next())
        .map(str::trim)
        .filter(|target| in_secret_logging_crate(target))
        .map(str::to_owned)
        .collect();

    filter_fn(move |metadata| {
        let target = metadata.target();
        let capped = in_secret_logging_crate(target)
            && !named.iter().any(|module| in_module(target, module));
        *metadata.level() <= Level::INFO || !capped
    })
}

fn in_secret_logging_crate(target: &str) -> bool {
    SECRET_LOGGING_CRATES
        .iter()
        .any(|name| in_module(target, name))
}

/// Returns whether `target` is the module path `module` or inside it, so
/// that `tokio_postgres` covers `tokio_postgres::query` but not
/// `tokio_postgres_extra`.
fn in_module(target: &str, module: &str) -> bool {
    target
        .strip_prefix(module)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Logs the access line of one request, whose id is `request_id`: an info
/// line of [`ACCESS_TARGET`] with the message `request`, subject to
/// `RUST_LOG` like any event of that target.
///
/// After [`init`] without colours, the line is written straight into the
/// log thread's buffer, the same bytes that the subscriber would write for
/// [`Access::emit`] at less than half the instructions. Every request
/// that the access log samples writes one, so this is the one line whose
/// cost the server's throughput shows. Without that sink (coloured output,
/// or another subscriber, as in tests) the line is a `tracing` event.
pub fn log_access(access: &Access<'_>, request_id: &HeaderValue) {
    let Some(sink) = ACCESS_SINK.get() else {
        request_id::sync_scope(request_id.clone(), || access.emit());
        return;
    };
    if !sink.enabled {
        return;
    }

    // `resolve` lets through only `[A-Za-z0-9._:-]`, which needs no
    // escaping in JSON or text.
    let request_id = request_id.to_str().ok().filter(|id| !id.is_empty());
    with_line(|line| {
        write_access(line, sink.style, access, request_id, SystemTime::now());
        sink.shared.append(line.as_bytes());
    });
}

/// Writes an error that ends the process to standard error.
///
/// The text format writes `tenet-server: <error>`. The JSON format writes
/// one object with the fields of the other JSON lines (`timestamp`,
/// `level`, `message`, `error`, `target`), so that a log collector parses
/// it like them. Either way the line bypasses `RUST_LOG` and the log
/// thread, so that the cause shows whatever the filter, and also when the
/// log thread did not start.
pub fn report_fatal(format: LogFormat, message: &str, error: &str) {
    match format {
        LogFormat::Text => eprintln!("tenet-server: {error}"),
        LogFormat::Json => {
            let stderr = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .finish();
            tracing::subscriber::with_default(stderr, || {
                tracing::error!(target: "tenet_server", error, "{message}");
            });
        }
    }
}

/// An event format that adds the current request id (see
/// [`request_id::current`]) to the lines that `inner` formats inside a
/// request. It formats the lines that [`LineFormat`] leaves to
/// tracing-subscriber: coloured text and events inside spans.
///
/// JSON lines get it as `"span": {"request_id": ...}`, where a request span
/// would have put it, and text lines end with `request_id=...`.
struct WithRequestId<E> {
    inner: E,
    placement: Placement,
}

#[derive(Debug, Clone, Copy)]
enum Placement {
    TextSuffix,
    JsonSpanField,
}

thread_local! {
    /// The line being formatted. Reusing it means a line needs a new
    /// allocation only when it is longer than every earlier line on this
    /// thread.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `build` on this thread's line buffer, emptied first.
///
/// Formatting an event logs nothing, so the buffer is never borrowed
/// twice; a fresh buffer keeps that case correct anyway.
fn with_line<R>(build: impl FnOnce(&mut String) -> R) -> R {
    LINE.with(|line| {
        let mut fresh = String::new();
        let mut borrowed = line.try_borrow_mut();
        let line = match borrowed.as_deref_mut() {
            Ok(line) => line,
            Err(_) => &mut fresh,
        };
        line.clear();
        build(line)
    })
}

impl<S, N, E> FormatEvent<S, N> for WithRequestId<E>
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
    ) -> std::fmt::Result {
        let Some(request_id) = request_id::current() else {
            return self.inner.format_event(ctx, writer, event);
        };
        // `resolve` lets through only `[A-Za-z0-9._:-]`, which needs no
        // escaping in JSON or text.
        let request_id = request_id.to_str().unwrap_or_default();

        with_line(|line| {
            self.inner.format_event(ctx, Writer::new(line), event)?;
            match self.placement {
                Placement::JsonSpanField => match line.strip_prefix('{') {
                    Some(fields) => {
                        writer.write_str("{\"span\":{\"request_id\":\"")?;
                        writer.write_str(request_id)?;
                        writer.write_str("\"},")?;
                        writer.write_str(fields)
                    }
                    None => writer.write_str(line),
                },
                Placement::TextSuffix => {
                    let text = line.trim_end_matches('\n');
                    writer.write_str(text)?;
                    writer.write_str(" request_id=")?;
                    writer.write_str(request_id)?;
                    writer.write_str(&line[text.len()..])
                }
            }
        })
    }
}

/// Stops the log thread when dropped, after it has written every pending
/// line.
#[derive(Debug)]
pub struct LogGuard {
    shared: Arc<Shared>,
    /// `None` when the thread could not be started. Lines then stay in the
    /// buffer until it is full, and later ones are dropped.
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // A panic of the log thread has already been reported by the
            // panic hook, so there is nothing more to do with it here.
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    dropped_lines: AtomicU64,
    stopping: AtomicBool,
}

impl Shared {
    /// Appends all of `line`, or drops it when the buffer is full, so a
    /// line is never split.
    fn append(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() + line.len() > MAX_PENDING_BYTES {
            drop(pending);
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(line);
        }
    }
}

/// The subscriber's writer: appends each formatted line to the shared
/// buffer.
struct BatchWriter(Arc<Shared>);

/// One line's writer, borrowed from [`BatchWriter`] so that making it
/// touches no reference count.
struct LineWriter<'a>(&'a Shared);

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

impl std::io::Write for LineWriter<'_> {
    /// Appends all of `line` to the shared buffer (see [`Shared::append`]).
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn spawn_log_thread(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let spawned = std::thread::Builder::new()
        .name("tenet-log".to_owned())
        .spawn(move || write_batches(&shared));
    if let Err(err) = &spawned {
        eprintln!("tenet-server: failed to start the log thread, so log lines are dropped: {err}");
    }
    spawned
}

/// Writes the pending lines every [`WRITE_INTERVAL`] until the guard stops
/// the thread, then writes the rest.
fn write_batches(shared: &Shared) {
    let mut batch = Vec::new();
    // Reports only the first of consecutive failed writes, because a closed
    // standard output fails every one of them.
    let mut write_failing = false;
    loop {
        let stopping = shared.stopping.load(Ordering::Acquire);

        std::mem::swap(
            &mut *shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            &mut batch,
        );
        if !batch.is_empty() {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&batch).and_then(|()| stdout.flush()) {
                Ok(()) => write_failing = false,
                Err(err) if !write_failing => {
                    write_failing = true;
                    eprintln!(
                        "tenet-server: failed to write log lines to standard output, so they \
                         are lost until a write succeeds: {err}"
                    );
                }
                Err(_) => {}
            }
            batch.clear();
        }

        let dropped = shared.dropped_lines.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped_lines = dropped,
                "dropped log lines because standard output did not keep up"
            );
        }

        if stopping {
            return;
        }
        std::thread::park_timeout(WRITE_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::Context;

    use super::*;

    /// Records the target and level of every event that the filters let
    /// through.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(String, Level)>>>);

    impl<S: Subscriber> Layer<S> for Recorder {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let metadata = event.metadata();
            self.0
                .lock()
                .expect("recorder lock")
                .push((metadata.target().to_owned(), *metadata.level()));
        }
    }

    /// Logs one event at each level of interest under `RUST_LOG=rust_log`,
    /// and returns the `target level` of those that pass.
    fn passing_events(rust_log: &str) -> Vec<String> {
        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(rust_log))
            .with(secret_crates_filter(Some(rust_log)))
            .with(recorder.clone());

        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "tokio_postgres::query", "executing statement");
            tracing::trace!(target: "tokio_postgres::connection", "poll_read");
            tracing::info!(target: "tokio_postgres::connection", "NOTICE: relation exists");
            tracing::debug!(target: "tokio_postgres_other", "another crate");
            tracing::debug!(target: "tenet_core::store", "tenet line");
        });

        let events = recorder.0.lock().expect("recorder lock");
        events
            .iter()
            .map(|(target, level)| format!("{target} {level}"))
            .collect()
    }

    #[test]
    fn secret_logging_crates_stay_at_info_unless_named() {
        // `EnvFilter` matches a directive's target as a plain prefix, so
        // `tokio` and `tokio_postgres` also select `tokio_postgres_other`,
        // which the filter of secret crates leaves alone.
        let cases: [(&str, &[&str]); 6] = [
            (
                "trace",
                &[
                    "tokio_postgres::connection INFO",
                    "tokio_postgres_other DEBUG",
                    "tenet_core::store DEBUG",
                ],
            ),
            (
                "info,tokio=trace",
                &[
                    "tokio_postgres::connection INFO",
                    "tokio_postgres_other DEBUG",
                ],
            ),
            ("warn", &[]),
            (
                "info,tokio_postgres=debug",
                &[
                    "tokio_postgres::query DEBUG",
                    "tokio_postgres::connection INFO",
                    "tokio_postgres_other DEBUG",
                ],
            ),
            (
                "info,tokio_postgres",
                &[
                    "tokio_postgres::query DEBUG",
                    "tokio_postgres::connection TRACE",
                    "tokio_postgres::connection INFO",
                    "tokio_postgres_other DEBUG",
                ],
            ),
            (
                "info,tokio_postgres::connection=trace",
                &[
                    "tokio_postgres::connection TRACE",
                    "tokio_postgres::connection INFO",
                ],
            ),
        ];

        for (rust_log, expected) in cases {
            assert_eq!(passing_events(rust_log), expected, "RUST_LOG={rust_log}");
        }
    }

    #[test]
    fn invalid_filter_names_the_first_failing_directive() {
        let cases = [
            ("foo=notalevel", "foo=notalevel"),
            ("info,foo=notalevel,bar=verbose", "foo=notalevel"),
            ("info,,tenet_server=debug,foo[span{=x", "foo[span{=x"),
        ];

        for (rust_log, expected) in cases {
            let invalid = parse_filter(rust_log).expect_err("invalid filter");

            assert_eq!(
                invalid.directive.as_deref(),
                Some(expected),
                "RUST_LOG={rust_log}"
            );
        }
    }

    #[test]
    fn valid_filter_parses() {
        for rust_log in ["info", "info,tenet_server::service=warn", "warn,,debug"] {
            assert!(parse_filter(rust_log).is_ok(), "RUST_LOG={rust_log}");
        }
    }

    #[test]
    fn full_buffer_drops_whole_lines() {
        let shared = Shared::default();
        shared
            .pending
            .lock()
            .expect("buffer lock")
            .resize(MAX_PENDING_BYTES - 4, b'x');

        LineWriter(&shared).write_all(b"fit\n").expect("write");
        LineWriter(&shared).write_all(b"no\n").expect("write");

        let pending = shared.pending.lock().expect("buffer lock");
        assert_eq!(pending.len(), MAX_PENDING_BYTES);
        assert!(pending.ends_with(b"fit\n"));
        assert_eq!(shared.dropped_lines.load(Ordering::Relaxed), 1);
    }
}
