//! Mapping driver errors to [`Error`], with the URL's password redacted.

use std::error::Error as StdError;
use std::fmt;

use tokio_postgres::error::{Severity, SqlState};
use zeroize::Zeroizing;

use crate::error::Error;

/// A Postgres failure as text: what was being done and the driver's error
/// chain, with the password of the connection URL replaced.
///
/// The driver error is flattened into the message instead of being kept as
/// the source, so that no reporter can print an unredacted chain.
#[derive(Debug)]
pub(super) struct PostgresError(String);

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for PostgresError {}

/// Replaces the connection password in error text.
///
/// The driver's messages are not known to contain the password; this makes
/// sure they never do, whatever a future version or the server echoes.
#[derive(Clone)]
pub(super) struct Redactor {
    password: Option<Zeroizing<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(..)")
    }
}

impl Redactor {
    pub(super) fn new(password: Option<&[u8]>) -> Self {
        let password = password
            .map(|bytes| Zeroizing::new(String::from_utf8_lossy(bytes).into_owned()))
            .filter(|password| !password.is_empty());
        Self { password }
    }

    /// Builds a redactor from a URL that failed to parse, taking the text
    /// between `user:` and `@` as the password.
    pub(super) fn for_unparsed_url(url: &str) -> Self {
        let password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(credentials, _)| credentials.split_once(':'))
            .map(|(_, password)| password.as_bytes());
        Self::new(password)
    }

    pub(super) fn redact(&self, text: String) -> String {
        match &self.password {
            Some(password) => text.replace(password.as_str(), "<redacted>"),
            None => text,
        }
    }

    /// Renders an error and its sources on one line, redacted.
    pub(super) fn describe(&self, err: &(dyn StdError + 'static)) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        // Server errors put DETAIL and HINT on lines of their own.
        self.redact(text.replace('\n', "; "))
    }

    /// Wraps a failure while doing `action` as [`Error::Unavailable`] when
    /// retrying later can succeed, and as [`Error::Store`] otherwise.
    pub(super) fn error(&self, err: &tokio_postgres::Error, action: impl fmt::Display) -> Error {
        self.wrap(err, action, hint(err), is_transient(err))
    }

    /// Wraps the failure of a statement on an open connection like
    /// [`Redactor::error`]. A failure that lost the connection is
    /// [`Error::Unavailable`] whatever its code, because the pool drops
    /// that connection and the same call on another one can succeed.
    pub(super) fn call_error(
        &self,
        err: &tokio_postgres::Error,
        action: impl fmt::Display,
    ) -> Error {
        if is_connection_lost(err) {
            let hint = "the Postgres connection was lost and will not be reused; a write may \
                        have committed before the loss, so check before repeating it";
            return self.wrap(err, action, Some(hint), true);
        }
        self.error(err, action)
    }

    fn wrap(
        &self,
        err: &tokio_postgres::Error,
        action: impl fmt::Display,
        hint: Option<&str>,
        transient: bool,
    ) -> Error {
        let mut message = format!("{action} failed: {}", self.describe(err));
        if let Some(hint) = hint {
            message.push_str("; ");
            message.push_str(hint);
        }

        let wrapped = PostgresError(message);
        if transient {
            Error::unavailable(wrapped)
        } else {
            Error::store(wrapped)
        }
    }

    /// Wraps a message that has no driver error behind it.
    pub(super) fn message(&self, message: String) -> PostgresError {
        PostgresError(self.redact(message))
    }
}

/// Returns an error of the same kind and text as `err`, for a failure that
/// several callers share, such as the statement of a lookup batch.
pub(super) fn copy_error(err: &Error) -> Error {
    match err {
        Error::Unavailable(source) => Error::unavailable(PostgresError(source.to_string())),
        Error::Store(source) => Error::store(PostgresError(source.to_string())),
        // The store's calls fail with the two kinds above only.
        other => Error::store(PostgresError(other.to_string())),
    }
}

/// Tells whether `err` ended the connection it came from, so that the
/// connection must not be used again. That is the case when the driver saw
/// it close, when the socket failed, and when the server sent a FATAL or
/// PANIC error, after which it closes the session (as `pg_terminate_backend`
/// and a server shutdown do).
pub(super) fn is_connection_lost(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() || has_io_source(err) {
        return true;
    }
    let Some(db_error) = err.as_db_error() else {
        return false;
    };
    matches!(
        db_error.parsed_severity(),
        Some(Severity::Fatal | Severity::Panic)
    ) || db_error.code().code().starts_with("08")
}

/// Tells whether the same call can succeed later without any change: the
/// connection broke, the server is shutting down or full, or the statement
/// hit `statement_timeout`.
fn is_transient(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }

    if let Some(code) = err.code() {
        // Class 08 is "connection exception".
        return code.code().starts_with("08")
            || [
                SqlState::QUERY_CANCELED,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code);
    }

    // Refused, reset and broken connections surface as I/O errors.
    has_io_source(err)
}

fn has_io_source(err: &tokio_postgres::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Returns what the operator should do for errors with a known fix.
fn hint(err: &tokio_postgres::Error) -> Option<&'static str> {
    let code = err.code()?;
    if *code == SqlState::UNDEFINED_TABLE {
        Some("the Tenet tables are missing; run the migrations (`tenet-server migrate`)")
    } else if *code == SqlState::INVALID_SCHEMA_NAME {
        Some("the schema in search_path does not exist; create it, then run the migrations")
    } else if *code == SqlState::QUERY_CANCELED {
        Some("the statement hit statement_timeout or was cancelled; retry later")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_replaces_the_password() {
        let redactor = Redactor::new(Some(b"hunter2-secret"));

        let text = redactor.redact("auth for hunter2-secret failed".to_owned());

        assert_eq!(text, "auth for <redacted> failed");
    }

    #[test]
    fn redactor_finds_password_in_unparsed_url() {
        let redactor = Redactor::for_unparsed_url("postgres://user:pa55word@host:x/db");

        let text = redactor.redact("near pa55word@host".to_owned());

        assert_eq!(text, "near <redacted>@host");
    }

    #[test]
    fn redactor_without_password_keeps_text() {
        let redactor = Redactor::for_unparsed_url("postgres://user@host/db");

        assert_eq!(redactor.redact("user@host".to_owned()), "user@host");
    }
}
