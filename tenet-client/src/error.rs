//! The client's one error type.

use std::io::ErrorKind;
use std::time::Duration;

use reqwest::StatusCode;
use tenet_core::api::ErrorResponse;

/// Result of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error body of a response: its status and the server's stable `code`
/// and `message`.
///
/// A response without a JSON error body, such as hyper's 431, gets an
/// empty `code` and the status text as `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ServerError {
    /// Reads an error body, falling back to the status text.
    pub(crate) fn from_body(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(response) => Self {
                status,
                code: response.error.code,
                message: response.error.message,
            },
            Err(_) => Self {
                status,
                code: String::new(),
                message: status
                    .canonical_reason()
                    .unwrap_or("unknown status")
                    .to_owned(),
            },
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code.is_empty() {
            write!(f, "{} {}", self.status.as_u16(), self.message)
        } else {
            write!(
                f,
                "{} {}: {}",
                self.status.as_u16(),
                self.code,
                self.message
            )
        }
    }
}

/// Returns the advice that ends an [`Error::Unauthorized`] message: none
/// for a suspended tenant, whose credential is valid.
fn unauthorized_hint(error: &ServerError) -> &'static str {
    if error.code == "tenant_suspended" {
        ""
    } else {
        "; check the admin token or API key"
    }
}

/// Everything a client call can fail with.
///
/// `request` is the method and URL, such as `GET http://host/tenants`; URLs
/// never carry a credential. Programs should branch on the variant or the
/// `is_*` helpers and on [`Error::code`], not on the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server rejected the admin token or API key (401 or 403).
    #[error("{request} failed: {error}{}", unauthorized_hint(error))]
    Unauthorized { request: String, error: ServerError },

    /// `verify_key` found the presented API key invalid; `code` gives the
    /// reason, such as `key_revoked`, or is `unauthorized` when the server
    /// gives none.
    #[error("{request}: the API key is rejected: {code}")]
    KeyRejected { request: String, code: String },

    /// The tenant, key or path does not exist (404).
    #[error("{request} failed: {error}")]
    NotFound { request: String, error: ServerError },

    /// The request conflicts with the current state (409).
    #[error("{request} failed: {error}")]
    Conflict { request: String, error: ServerError },

    /// The server rejected the request's input (400, 413, 415 or 422).
    #[error("{request} failed: {error}")]
    InvalidInput { request: String, error: ServerError },

    /// The server refused the request over a rate limit, the monthly
    /// quota or the limit of failed authentications (429). The client does
    /// not retry it; `retry_after` is the server's `Retry-After`.
    #[error("{request} failed: {error}")]
    Limited {
        request: String,
        error: ServerError,
        retry_after: Option<Duration>,
    },

    /// The server returned 503, or refused or dropped the connection. A
    /// later retry may succeed.
    #[error("{request} failed: server unavailable: {detail}")]
    Unavailable {
        request: String,
        /// The 503 body; `None` when the connection failed.
        error: Option<ServerError>,
        /// The 503 body or the connection failure, for the message.
        detail: String,
        #[source]
        source: Option<reqwest::Error>,
    },

    /// No response arrived within the client's timeout.
    #[error("{request} timed out after {timeout:?}; the server may be overloaded")]
    Timeout {
        request: String,
        timeout: Duration,
        #[source]
        source: reqwest::Error,
    },

    /// The request failed in transport other than by an unreachable server:
    /// a TLS failure, a connection closed before the response, a malformed
    /// response.
    #[error("{request} failed: {source}")]
    Transport {
        request: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server returned a status or a body that this client does not
    /// expect, such as 500 or a body that is not the documented JSON.
    #[error("{request} failed: unexpected response {status}: {detail}")]
    UnexpectedResponse {
        request: String,
        status: StatusCode,
        /// The error body when the server sent one.
        error: Option<ServerError>,
        detail: String,
    },

    /// The base URL is not an absolute `http` or `https` URL.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The credential contains bytes that an HTTP header cannot carry.
    #[error(
        "invalid credential: it contains bytes that an HTTP header cannot carry, such as a \
         line break; trim a token read from a file"
    )]
    InvalidCredential,

    /// A call that needs the client's own credential was made on a client
    /// without one, such as checking scopes with
    /// [`Client::verify_key_with`](crate::Client::verify_key_with).
    #[error(
        "{request} needs a credential: build the client with the admin token or a key with the tenet:verify scope"
    )]
    MissingCredential { request: String },

    /// A scope given to the client is not a valid scope.
    #[error("invalid scope {scope:?}: {reason}")]
    InvalidScope { scope: String, reason: String },

    /// The request body could not be serialized, such as a time outside
    /// the years that RFC 3339 can express.
    #[error("{request} failed: invalid request body: {reason}")]
    InvalidBody { request: String, reason: String },

    /// A query parameter could not be formatted, such as a time outside
    /// the years that RFC 3339 can express.
    #[error("{request} failed: invalid query: {reason}")]
    InvalidQuery { request: String, reason: String },

    /// The HTTP client could not be built, for example without TLS roots.
    #[error("failed to build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

impl Error {
    /// Builds the error for a non-success response.
    /// `retry_after` is the response's `Retry-After`, when it had one.
    pub(crate) fn from_status(
        request: String,
        status: StatusCode,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> Self {
        let error = ServerError::from_body(status, body);
        match status.as_u16() {
            401 | 403 => Error::Unauthorized { request, error },
            429 => Error::Limited {
                request,
                error,
                retry_after,
            },
            404 => Error::NotFound { request, error },
            409 => Error::Conflict { request, error },
            400 | 413 | 415 | 422 => Error::InvalidInput { request, error },
            503 => Error::Unavailable {
                request,
                detail: error.to_string(),
                error: Some(error),
                source: None,
            },
            _ => Error::UnexpectedResponse {
                request,
                status,
                detail: error.to_string(),
                error: Some(error),
            },
        }
    }

    /// Classifies a failure of reqwest to deliver a response.
    pub(crate) fn from_reqwest(request: String, timeout: Duration, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            Error::Timeout {
                request,
                timeout,
                source,
            }
        } else if source.is_connect() && is_network_failure(&source) {
            Error::Unavailable {
                request,
                error: None,
                detail: connection_detail(&source),
                source: Some(source),
            }
        } else {
            Error::Transport { request, source }
        }
    }

    /// Returns the server's error body, when the server sent one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Unauthorized { error, .. }
            | Error::NotFound { error, .. }
            | Error::Conflict { error, .. }
            | Error::InvalidInput { error, .. }
            | Error::Limited { error, .. } => Some(error),
            Error::Unavailable { error, .. } | Error::UnexpectedResponse { error, .. } => {
                error.as_ref()
            }
            _ => None,
        }
    }

    /// Returns the server's stable error code, such as `tenant_not_found`,
    /// or the rejection code of [`Error::KeyRejected`].
    pub fn code(&self) -> Option<&str> {
        if let Error::KeyRejected { code, .. } = self {
            return Some(code);
        }
        self.server_error()
            .map(|error| error.code.as_str())
            .filter(|code| !code.is_empty())
    }

    /// Returns the HTTP status, when a response arrived.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::UnexpectedResponse { status, .. } => Some(*status),
            _ => self.server_error().map(|error| error.status),
        }
    }

    /// Returns whether the server rejected the client's credential (401 or
    /// 403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// Returns whether `verify_key` found the presented key invalid.
    pub fn is_key_rejected(&self) -> bool {
        matches!(self, Error::KeyRejected { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidInput { .. })
    }

    /// Returns whether a limit refused the request (429).
    pub fn is_limited(&self) -> bool {
        matches!(self, Error::Limited { .. })
    }

    /// Returns the wait that the server asked for before a retry, for
    /// [`Error::Limited`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Limited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport { .. })
    }

    pub fn is_unexpected_response(&self) -> bool {
        matches!(self, Error::UnexpectedResponse { .. })
    }

    /// Returns whether a retry of an idempotent request may succeed: a 503
    /// or a failed connection. Timeouts are not retried, because the
    /// server may still be working on the request.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable()
    }
}

/// Returns whether a connection failed because the server could not be
/// reached (refused, reset, unreachable), as opposed to TLS or name
/// resolution, which a retry does not fix.
fn is_network_failure(source: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::NetworkDown
                    | ErrorKind::TimedOut
            );
        }
        cause = error.source();
    }
    false
}

/// Returns the innermost cause of a connection failure, such as
/// "Connection refused (os error 111)", which reqwest's own message omits.
fn connection_detail(source: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = source;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspended_tenant_gets_no_credential_hint() {
        let error = |code: &str| Error::Unauthorized {
            request: "GET http://127.0.0.1:8080/whoami".to_owned(),
            error: ServerError {
                status: StatusCode::FORBIDDEN,
                code: code.to_owned(),
                message: "some message".to_owned(),
            },
        };

        let suspended = error("tenant_suspended").to_string();
        let rejected = error("unauthorized").to_string();

        assert!(!suspended.contains("check the admin token"), "{suspended}");
        assert!(
            rejected.ends_with("; check the admin token or API key"),
            "{rejected}"
        );
    }

    #[test]
    fn statuses_map_to_kinds() {
        let body = br#"{"error":{"code":"some_code","message":"some message"}}"#;
        type IsKind = fn(&Error) -> bool;
        let cases: [(u16, IsKind); 11] = [
            (401, Error::is_unauthorized),
            (403, Error::is_unauthorized),
            (404, Error::is_not_found),
            (409, Error::is_conflict),
            (400, Error::is_invalid_input),
            (413, Error::is_invalid_input),
            (415, Error::is_invalid_input),
            (422, Error::is_invalid_input),
            (429, Error::is_limited),
            (503, Error::is_unavailable),
            (500, Error::is_unexpected_response),
        ];

        for (status, is_kind) in cases {
            let status = StatusCode::from_u16(status).expect("valid status");
            let error = Error::from_status("GET /x".to_owned(), status, body, None);

            assert!(is_kind(&error), "{status}: {error:?}");
            assert_eq!(error.code(), Some("some_code"), "{status}");
            assert_eq!(error.status(), Some(status));
        }
    }

    #[test]
    fn limited_keeps_the_retry_after() {
        let body = br#"{"error":{"code":"rate_limited","message":"over the rate limit"}}"#;

        let error = Error::from_status(
            "GET /protected".to_owned(),
            StatusCode::TOO_MANY_REQUESTS,
            body,
            Some(Duration::from_secs(3)),
        );

        assert!(error.is_limited());
        assert!(!error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(error.code(), Some("rate_limited"));
    }

    #[test]
    fn body_without_json_keeps_the_status_text() {
        let error = Error::from_status(
            "GET /x".to_owned(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            b"",
            None,
        );

        assert!(error.is_unexpected_response());
        assert_eq!(error.code(), None);
        assert_eq!(
            error.to_string(),
            "GET /x failed: unexpected response 431 Request Header Fields Too Large: \
             431 Request Header Fields Too Large"
        );
    }

    #[test]
    fn message_names_request_code_and_message() {
        let body = br#"{"error":{"code":"tenant_not_found","message":"no tenant with this id"}}"#;

        let error = Error::from_status(
            "GET /tenants/t".to_owned(),
            StatusCode::NOT_FOUND,
            body,
            None,
        );

        assert_eq!(
            error.to_string(),
            "GET /tenants/t failed: 404 tenant_not_found: no tenant with this id"
        );
    }
}
