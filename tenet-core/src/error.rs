//! The one error type of `tenet-core`.

use std::fmt;

use time::OffsetDateTime;

use crate::id::{KeyId, TenantId};

/// A boxed error from a storage driver, kept as the source of [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout `tenet-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tenet-core`.
///
/// The variants are grouped by who must act: the caller ([`Error::Invalid`],
/// [`Error::NotFound`], [`Error::KeyExpired`], [`Error::KeyRotated`],
/// [`Error::KeyRevoked`], [`Error::Rejected`]), the operator
/// ([`Error::Config`]), or nobody yet because a backend is down
/// ([`Error::Unavailable`]) or broke ([`Error::Store`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request value failed validation; `field` names the value.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    /// No resource of this kind exists with this id (or it belongs to
    /// another tenant, which callers must not be able to tell apart).
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// A rotation was asked for a key whose expiry has passed. An expired
    /// key has nothing left to hand over, so the caller must issue a new
    /// key instead.
    #[error("key {key} expired at {expired_at}, so it cannot be rotated")]
    KeyExpired {
        key: KeyId,
        expired_at: OffsetDateTime,
    },

    /// A rotation was asked for a key that an earlier rotation already
    /// replaced with `successor`.
    #[error("key {key} was already rotated and replaced by key {successor}")]
    KeyRotated { key: KeyId, successor: KeyId },

    /// A rotation or a limit change was requested for a revoked key. The key
    /// exists and stays listed, but a revoke is final, so the caller must
    /// issue a new key instead.
    #[error("key {key} is revoked, so it cannot be rotated or given a limit")]
    KeyRevoked { key: KeyId },

    /// A presented API key was rejected; the reason is for logs and for
    /// trusted callers only, never for the party that presented the key.
    #[error("API key rejected: {0}")]
    Rejected(Rejection),

    /// The configuration does not match the stored data, for example a
    /// pepper other than the one the keys were issued under.
    #[error("{0}")]
    Config(String),

    /// A backend could not be reached in time; the same call may succeed
    /// later without any change.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),

    /// A backend failed in a way that retrying will not fix.
    #[error("store failed: {0}")]
    Store(#[source] BoxError),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// Wraps a driver error as [`Error::Store`].
    pub fn store(err: impl Into<BoxError>) -> Self {
        Error::Store(err.into())
    }

    /// Wraps a driver error as [`Error::Unavailable`].
    pub fn unavailable(err: impl Into<BoxError>) -> Self {
        Error::Unavailable(err.into())
    }
}

/// The reason a presented API key was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a Tenet key: wrong prefix, length, alphabet or checksum. Found by
    /// parsing alone, before any storage is touched.
    Malformed,
    /// Well-formed, but no key with this digest was ever issued.
    Unknown,
    /// The key was issued and has since been revoked.
    Revoked,
    /// The key's expiry has passed.
    Expired,
    /// The key is valid but lacks a scope that the caller required.
    MissingScope,
    /// The key is valid but its tenant, `tenant`, is suspended. Only a
    /// valid key gets this rejection, so naming the tenant (as the server's
    /// request log does) reveals nothing about unknown keys.
    TenantSuspended { tenant: TenantId },
}

impl Rejection {
    /// Returns the stable snake_case code used in logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::Malformed => "key_malformed",
            Rejection::Unknown => "key_unknown",
            Rejection::Revoked => "key_revoked",
            Rejection::Expired => "key_expired",
            Rejection::MissingScope => "missing_scope",
            Rejection::TenantSuspended { .. } => "tenant_suspended",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Rejection::Malformed => "malformed",
            Rejection::Unknown => "unknown",
            Rejection::Revoked => "revoked",
            Rejection::Expired => "expired",
            Rejection::MissingScope => "missing a required scope",
            Rejection::TenantSuspended { .. } => "of a suspended tenant",
        };
        f.write_str(text)
    }
}
