//! The crate's one error type and its HTTP mapping.
//!
//! [`Error::parts`] contains the whole mapping to status, stable code and
//! message. Every error response has the body
//! `{"error": {"code": "...", "message": "..."}}` and the content type
//! `application/json`. Client errors get their response without an error log;
//! server failures get a generic message, and their cause chain is logged
//! once, when the response is built.

use std::fmt::Write as _;
use std::path::PathBuf;

use http::{HeaderValue, StatusCode, header};
use tenet_core::api::{ErrorDetail, ErrorResponse};

use crate::limiting::LimitExceeded;
use crate::response::{LogTenant, Response, json};

/// A boxed error kept as the source of a server failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can fail in `tenet-server`: a request, or the start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The credentials are missing, malformed, unknown, revoked or
    /// ambiguous. One variant for every reason, so that a response never
    /// reveals which keys exist.
    #[error("unauthorized")]
    Unauthorized,

    /// No route matches the path.
    #[error("no route for this path")]
    RouteNotFound,

    /// The route exists but not with this method; `allow` lists the
    /// methods it has.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },

    /// The tenant id is malformed or no such tenant exists.
    #[error("tenant not found")]
    TenantNotFound,

    /// The key id is malformed or this tenant has no such key.
    #[error("key not found")]
    KeyNotFound,

    /// A rotation was asked for a key whose expiry has passed.
    #[error("key {key} expired")]
    KeyExpired {
        key: tenet_core::KeyId,
        expired_at: time::OffsetDateTime,
    },

    /// A rotation was asked for a key that an earlier rotation replaced.
    #[error("key {key} already rotated")]
    KeyRotated {
        key: tenet_core::KeyId,
        successor: tenet_core::KeyId,
    },

    /// A rotation or a limit change was requested for a revoked key.
    #[error("key {key} revoked")]
    KeyRevoked { key: tenet_core::KeyId },

    /// The body is not the expected JSON document.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),

    /// A name failed validation; the message gives the reason.
    #[error("{0}")]
    InvalidName(String),

    /// A key's expiry (`expires_at` or `ttl_seconds`) failed validation.
    #[error("{0}")]
    InvalidExpiry(String),

    /// A scope list failed validation.
    #[error("{0}")]
    InvalidScopes(String),

    /// A key's `metadata` is not a JSON object or is too large.
    #[error("{0}")]
    InvalidMetadata(String),

    /// A usage query's `from` or `to` is missing, not RFC 3339, out of
    /// order or too far apart.
    #[error("{0}")]
    InvalidRange(String),

    /// A usage query's `granularity` is neither `hour` nor `day`.
    #[error("{0}")]
    InvalidGranularity(String),

    /// A listing's `cursor` query parameter is not one the server issued.
    #[error("{0}")]
    InvalidCursor(String),

    /// A listing's `limit` query parameter is not an integer in range.
    #[error("{0}")]
    InvalidLimit(String),

    /// A rate limit's `rate`, `period_seconds` or `burst` failed
    /// validation.
    #[error("{0}")]
    InvalidRateLimit(String),

    /// A `monthly_quota` failed validation.
    #[error("{0}")]
    InvalidQuota(String),

    /// A request over a rate limit, the monthly quota or the limit of
    /// failed authentications, rejected with 429 and `Retry-After`.
    #[error("request limited")]
    Limited(crate::limiting::LimitExceeded),
    /// A valid API key belongs to a suspended tenant, `tenant`, which the
    /// response carries as its [`LogTenant`] for the request log line.
    #[error("tenant {tenant} suspended")]
    TenantSuspended { tenant: tenet_core::TenantId },

    /// A valid API key lacks the scope that the route requires.
    #[error("missing scope {scope}")]
    MissingScope { scope: &'static str },

    /// An API key asked to grant a scope that it does not hold itself.
    #[error("cannot grant scope {scope}")]
    ScopeNotHeld { scope: String },

    /// The body is longer than the configured limit, in bytes.
    #[error("request body over {limit} bytes")]
    BodyTooLarge { limit: u64 },

    /// A body came with a content type other than `application/json`.
    #[error("unsupported content type")]
    UnsupportedMediaType,

    /// A body came with a `Content-Encoding` other than `identity`, which
    /// the server does not decode; `encoding` is the first such coding.
    #[error("unsupported content encoding {encoding}")]
    UnsupportedContentEncoding { encoding: String },

    /// A body came with a `Transfer-Encoding` other than `chunked` alone,
    /// such as `gzip, chunked`, and the server decodes no other transfer
    /// coding. `value` is the header as received, its lines joined with
    /// ", ".
    #[error("unsupported transfer encoding {value}")]
    UnsupportedTransferEncoding { value: String },

    /// The connection failed while the body was read.
    #[error("failed to read the request body")]
    BodyRead(#[source] hyper::Error),

    /// The body did not arrive in full within the read timeout, in seconds.
    #[error("request body not received within {seconds} s")]
    BodyTimeout { seconds: u64 },

    /// The store did not respond in time; retrying later may succeed.
    #[error("store unavailable")]
    StoreUnavailable(#[source] tenet_core::Error),

    /// The server is shutting down and fails its readiness probe.
    #[error("shutting down")]
    ShuttingDown,

    /// A failure on the server's side; the source has the cause.
    #[error("internal error")]
    Internal(#[source] BoxError),

    /// A configuration value is invalid or inconsistent; `setting` names
    /// the flag or environment variable (see [`crate::Config::setting_name`]),
    /// or the file that contains the value.
    #[error("invalid {setting}: {reason}")]
    Config { setting: String, reason: String },

    /// A setting that this configuration needs is not set.
    #[error("missing {setting}: {reason}")]
    Missing {
        setting: &'static str,
        reason: &'static str,
    },

    /// A file or directory operation failed at start.
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Binding a listening socket failed. `setting` names the flag that
    /// set `address`, and its environment variable when the value came
    /// from there, so that the user knows which one to change.
    #[error("failed to listen on {address}, the address of {setting}")]
    Bind {
        setting: String,
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the lock on the SQLite data directory;
    /// `holder` is the process id that it wrote into the lock file.
    #[error(
        "the data directory {} is in use by another tenet-server ({}); stop that \
         process or start with another --data-dir",
        dir.display(),
        describe_holder(*holder)
    )]
    DataDirLocked { dir: PathBuf, holder: Option<u32> },

    /// Opening or checking the store failed at start.
    #[error("failed to open the {kind} store")]
    OpenStore {
        kind: &'static str,
        #[source]
        source: tenet_core::Error,
    },

    /// The final write at shutdown failed, so the `data` (usage counts or
    /// key uses) since the last periodic write is lost.
    #[error("failed to write the {data} at shutdown; those since the last write are lost")]
    FinalWrite {
        data: &'static str,
        #[source]
        source: tenet_core::Error,
    },
}

impl From<tenet_core::Error> for Error {
    fn from(err: tenet_core::Error) -> Self {
        match err {
            tenet_core::Error::Invalid { field: "name", .. } => Error::InvalidName(err.to_string()),
            tenet_core::Error::Invalid {
                field: "expires_at" | "ttl_seconds",
                ..
            } => Error::InvalidExpiry(err.to_string()),
            tenet_core::Error::Invalid {
                field: "scopes", ..
            } => Error::InvalidScopes(err.to_string()),
            tenet_core::Error::Invalid {
                field: "rate limit",
                ..
            } => Error::InvalidRateLimit(err.to_string()),
            tenet_core::Error::Invalid {
                field: "monthly_quota",
                ..
            } => Error::InvalidQuota(err.to_string()),
            tenet_core::Error::Invalid {
                field: "metadata", ..
            } => Error::InvalidMetadata(err.to_string()),
            tenet_core::Error::Invalid {
                field: "usage range",
                ..
            } => Error::InvalidRange(err.to_string()),
            tenet_core::Error::Invalid {
                field: "granularity",
                ..
            } => Error::InvalidGranularity(err.to_string()),
            tenet_core::Error::Invalid {
                field: "tenant id", ..
            } => Error::TenantNotFound,
            tenet_core::Error::Invalid {
                field: "key id", ..
            } => Error::KeyNotFound,
            tenet_core::Error::NotFound { kind: "tenant", .. } => Error::TenantNotFound,
            tenet_core::Error::NotFound { kind: "key", .. } => Error::KeyNotFound,
            tenet_core::Error::KeyExpired { key, expired_at } => {
                Error::KeyExpired { key, expired_at }
            }
            tenet_core::Error::KeyRotated { key, successor } => {
                Error::KeyRotated { key, successor }
            }
            tenet_core::Error::KeyRevoked { key } => Error::KeyRevoked { key },
            tenet_core::Error::Rejected(tenet_core::Rejection::TenantSuspended { tenant }) => {
                Error::TenantSuspended { tenant }
            }
            tenet_core::Error::Rejected(_) => Error::Unauthorized,
            tenet_core::Error::Unavailable(_) => Error::StoreUnavailable(err),
            other => Error::Internal(other.into()),
        }
    }
}

impl Error {
    /// Maps the error to its status, stable code and client-facing message.
    ///
    /// Server failures get a generic message, so that no internal detail
    /// (paths, SQL, driver text) reaches the client.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        let (status, code, message) = match self {
            Error::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid credentials",
            ),
            Error::RouteNotFound => (StatusCode::NOT_FOUND, "not_found", "no route for this path"),
            Error::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this path; see the Allow header",
            ),
            Error::TenantNotFound => (
                StatusCode::NOT_FOUND,
                "tenant_not_found",
                "no tenant with this id; ids are lowercase hyphenated UUIDs, as returned \
                 when the tenant was created",
            ),
            Error::TenantSuspended { .. } => (
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                "this API key's tenant is suspended; its keys work again once an admin \
                 resumes it",
            ),
            Error::KeyNotFound => (
                StatusCode::NOT_FOUND,
                "key_not_found",
                "this tenant has no key with this id; ids are lowercase hyphenated UUIDs, \
                 as returned when the key was issued",
            ),
            Error::KeyExpired { key, expired_at } => {
                let expired_at = tenet_core::timestamp::format(*expired_at);
                return (
                    StatusCode::CONFLICT,
                    "key_expired",
                    format!(
                        "key {key} expired at {expired_at} and cannot be rotated, so \
                         issue a new key instead"
                    ),
                );
            }
            Error::KeyRotated { key, successor } => {
                return (
                    StatusCode::CONFLICT,
                    "key_rotated",
                    format!(
                        "key {key} was already rotated and replaced by key {successor}, so \
                         rotate {successor} instead, or issue a new key if {successor} is \
                         revoked"
                    ),
                );
            }
            Error::KeyRevoked { key } => {
                return (
                    StatusCode::CONFLICT,
                    "key_revoked",
                    format!(
                        "key {key} is revoked, and a revoked key can be neither rotated nor \
                         given a limit, so issue a new key instead"
                    ),
                );
            }
            Error::InvalidJson(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_json", detail.clone());
            }
            Error::InvalidName(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_name", detail.clone());
            }
            Error::InvalidExpiry(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_expiry", detail.clone());
            }
            Error::InvalidScopes(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_scopes", detail.clone());
            }
            Error::InvalidMetadata(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_metadata", detail.clone());
            }
            Error::InvalidRange(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_range", detail.clone());
            }
            Error::InvalidGranularity(detail) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "invalid_granularity",
                    detail.clone(),
                );
            }
            Error::InvalidCursor(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_cursor", detail.clone());
            }
            Error::InvalidLimit(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_limit", detail.clone());
            }
            Error::InvalidRateLimit(detail) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "invalid_rate_limit",
                    detail.clone(),
                );
            }
            Error::InvalidQuota(detail) => {
                return (StatusCode::BAD_REQUEST, "invalid_quota", detail.clone());
            }
            Error::Limited(exceeded) => return limited_parts(exceeded),
            Error::MissingScope { scope } => {
                return (
                    StatusCode::FORBIDDEN,
                    "missing_scope",
                    format!("this API key lacks the scope {scope}, which this route requires"),
                );
            }
            Error::ScopeNotHeld { scope } => {
                return (
                    StatusCode::FORBIDDEN,
                    "missing_scope",
                    format!(
                        "this API key cannot grant the scope {scope} because it does not hold it; \
                         use a key that holds it or the admin token"
                    ),
                );
            }
            Error::BodyTooLarge { limit } => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is over the limit of {limit} bytes"),
                );
            }
            Error::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ),
            Error::UnsupportedContentEncoding { encoding } => {
                return (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "the server does not decode a request body with Content-Encoding \
                         {encoding}; send the body unencoded, without Content-Encoding"
                    ),
                );
            }
            Error::UnsupportedTransferEncoding { value } => {
                return (
                    StatusCode::NOT_IMPLEMENTED,
                    "unsupported_transfer_encoding",
                    format!(
                        "the server does not decode a request body with Transfer-Encoding \
                         {value}, because chunked, applied once, is the only transfer coding \
                         it decodes; send the body uncompressed, with Transfer-Encoding \
                         chunked alone or with Content-Length"
                    ),
                );
            }
            Error::BodyRead(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "failed to read the request body",
            ),
            Error::BodyTimeout { seconds } => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {seconds} s; send it \
                         right after the request head"
                    ),
                );
            }
            Error::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; retry later",
            ),
            Error::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; send requests to another replica",
            ),
            Error::Internal(_)
            | Error::Config { .. }
            | Error::Missing { .. }
            | Error::Io { .. }
            | Error::Bind { .. }
            | Error::DataDirLocked { .. }
            | Error::OpenStore { .. }
            | Error::FinalWrite { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error",
            ),
        };
        (status, code, message.to_owned())
    }

    /// Builds the error response, and logs server failures with their cause
    /// chain.
    pub fn into_response(self) -> Response {
        let (status, code, message) = self.parts();

        // Shutting down is expected, so the probes it fails log nothing. A
        // 501 for a transfer coding is caused by the client's request, not
        // by a failure of the server, so it logs nothing either.
        let logged = !matches!(
            self,
            Error::ShuttingDown | Error::UnsupportedTransferEncoding { .. }
        );
        if status.is_server_error() && logged {
            let cause = cause_chain(&self);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(code, error = %cause, "request failed");
            } else {
                tracing::error!(code, error = %cause, "request failed");
            }
        }

        let body = ErrorResponse {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        };
        let mut response = json(status, &body);

        match self {
            Error::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tenet\""),
                );
            }
            Error::MethodNotAllowed { allow } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Error::Limited(exceeded) => {
                exceeded.apply(&mut response);
                // Kept for a recorder of request outcomes, as admitted
                // requests keep their `RequestLimit`.
                response.extensions_mut().insert(exceeded);
            }
            Error::TenantSuspended { tenant } => {
                response.extensions_mut().insert(LogTenant(tenant));
            }
            // RFC 7694: a 415 for a content coding lists the codings that
            // the server accepts.
            Error::UnsupportedContentEncoding { .. } => {
                response.headers_mut().insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
            }
            _ => {}
        }
        response
    }
}

fn limited_parts(exceeded: &LimitExceeded) -> (StatusCode, &'static str, String) {
    let retry = exceeded.retry_after_secs();
    match exceeded {
        LimitExceeded::RateLimited(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit exceeded; retry after {retry} second{}",
                if retry == 1 { "" } else { "s" }
            ),
        ),
        LimitExceeded::QuotaExceeded { quota, .. } => {
            let resets_at = tenet_core::timestamp::format(quota.resets_at);
            (
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "the monthly quota of {} requests is used up; it resets at {resets_at}",
                    quota.quota
                ),
            )
        }
    }
}

fn describe_holder(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("process {pid}"),
        None => "process id unknown".to_owned(),
    }
}

/// Formats an error and all its sources on one line, separated by ": ".
pub fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Some errors repeat their source in their own message, and some
        // start with their wrapper's message; either way, printing a text
        // twice adds nothing.
        let cause_text = cause.to_string();
        if cause_text.starts_with(&text) {
            text = cause_text;
        } else if !text.ends_with(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Returns a panic payload's message, for the log line of a panicked
/// request.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "non-text panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_stable_codes() {
        let cases = [
            (
                tenet_core::TenantName::parse("").unwrap_err(),
                "invalid_name",
            ),
            (
                tenet_core::TenantId::parse("x").unwrap_err(),
                "tenant_not_found",
            ),
            (tenet_core::KeyId::parse("x").unwrap_err(), "key_not_found"),
            (
                tenet_core::Error::Rejected(tenet_core::Rejection::Revoked),
                "unauthorized",
            ),
            (
                tenet_core::Error::unavailable("connection refused"),
                "store_unavailable",
            ),
            (
                tenet_core::Error::Rejected(tenet_core::Rejection::TenantSuspended {
                    tenant: tenet_core::TenantId::generate(),
                }),
                "tenant_suspended",
            ),
            (tenet_core::Error::store("disk full"), "internal"),
            (
                tenet_core::Error::KeyExpired {
                    key: tenet_core::KeyId::generate(),
                    expired_at: time::OffsetDateTime::UNIX_EPOCH,
                },
                "key_expired",
            ),
            (
                tenet_core::Error::KeyRotated {
                    key: tenet_core::KeyId::generate(),
                    successor: tenet_core::KeyId::generate(),
                },
                "key_rotated",
            ),
            (
                tenet_core::Error::KeyRevoked {
                    key: tenet_core::KeyId::generate(),
                },
                "key_revoked",
            ),
        ];

        for (core, code) in cases {
            let description = core.to_string();
            assert_eq!(Error::from(core).parts().1, code, "{description}");
        }
    }

    #[test]
    fn transfer_encoding_maps_to_501() {
        let err = Error::UnsupportedTransferEncoding {
            value: "gzip, chunked".to_owned(),
        };

        let (status, code, message) = err.parts();

        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(code, "unsupported_transfer_encoding");
        assert!(
            message.contains("Transfer-Encoding gzip, chunked"),
            "{message}"
        );
    }

    #[test]
    fn server_failures_hide_their_cause() {
        let err = Error::from(tenet_core::Error::store("/secret/path is corrupt"));

        let (status, _, message) = err.parts();

        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!message.contains("/secret/path"));
    }

    #[test]
    fn cause_chain_drops_a_repeated_prefix() {
        let err = Error::StoreUnavailable(tenet_core::Error::unavailable("connection refused"));

        assert_eq!(cause_chain(&err), "store unavailable: connection refused");
    }

    #[test]
    fn cause_chain_joins_sources() {
        let err = Error::OpenStore {
            kind: "sqlite",
            source: tenet_core::Error::store("disk full"),
        };

        assert_eq!(
            cause_chain(&err),
            "failed to open the sqlite store: store failed: disk full"
        );
    }
}
