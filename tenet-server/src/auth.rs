//! Credentials: the admin token check and API-key extraction.
//!
//! Every rejection is the same [`Error::Unauthorized`], whatever the reason,
//! so a response never reveals whether a key exists. The one exception is a
//! valid key of a suspended tenant, which gets [`Error::TenantSuspended`],
//! because only the holder of a valid key can learn it. The reason is logged
//! at debug level with at most the key's display prefix.

use std::net::IpAddr;
use std::pin::Pin;

use http::HeaderValue;
use http::header::{self, HeaderMap, HeaderName};
use tenet_core::key::DISPLAY_PREFIX_LEN;
use tenet_core::{Actor, AdminTokenDigest, Principal, Scope, Tenet, VerifiedKey};
use time::OffsetDateTime;

use crate::error::Error;
use crate::metrics::{Metrics, Verification};
use crate::setup::State;

/// Header that carries an API key as an alternative to
/// `Authorization: Bearer`.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// The reason the headers yield no single credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No credential header at all.
    Missing,
    /// More than one candidate: repeated headers, both headers, or a comma
    /// that joins two values.
    Ambiguous,
    /// `Authorization` with a scheme other than `Bearer`, or without one.
    NotBearer,
    /// A header value with bytes that are not visible ASCII.
    NotText,
}

impl Refusal {
    fn code(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Ambiguous => "ambiguous",
            Refusal::NotBearer => "not_bearer",
            Refusal::NotText => "not_text",
        }
    }
}

/// Checks `Authorization: Bearer <admin token>` against the stored digest
/// in constant time.
///
/// A request that also carries `X-API-Key` offers two credentials and is
/// rejected, as on every other route, whatever the token's value.
pub fn require_admin(headers: &HeaderMap, admin: &AdminTokenDigest) -> Result<(), Error> {
    let token = match admin_candidate(headers) {
        Ok(token) => token,
        Err(refusal) => {
            tracing::debug!(reason = refusal.code(), "rejected admin credentials");
            return Err(Error::Unauthorized);
        }
    };

    if admin.matches(token) {
        Ok(())
    } else {
        tracing::debug!(reason = "wrong_token", "rejected admin credentials");
        Err(Error::Unauthorized)
    }
}

/// Runs an authentication attempt within the client's limit of failed
/// authentications: over the limit, returns 429 without running it, and
/// counts the attempt when it returns [`Error::Unauthorized`].
///
/// Each client address has its own count, apart from any key's or
/// tenant's limit, so that guessing keys cannot lock out a key's owner.
/// The client is `peer`, the TCP peer, or the client that a trusted proxy
/// names in `X-Forwarded-For` (see
/// [`crate::forwarded::TrustedProxies::client_address`]). Behind a proxy
/// that `--trusted-proxies` omits, that is the proxy's address, so the
/// limit then applies to all clients together.
///
/// The attempt comes pinned by the caller (`std::pin::pin!`), so it is
/// stored once, in the caller's future. Taken by value, it would be stored
/// twice in this one, as the argument and as the awaited future.
pub async fn guard_failures<T, B>(
    state: &State,
    request: &http::Request<B>,
    peer: IpAddr,
    attempt: Pin<&mut impl Future<Output = Result<T, Error>>>,
) -> Result<T, Error> {
    let client = state
        .trusted_proxies
        .client_address(peer, request.headers());
    // NOTE: a failure counts only when its attempt ends, so concurrent
    // attempts from one address all pass this check until the first of
    // them fails. A burst of concurrent guesses can exceed the burst size.
    state.limiter.check_auth_failures(client, &state.metrics)?;

    let result = attempt.await;
    if matches!(result, Err(Error::Unauthorized)) {
        state.limiter.record_auth_failure(client);
    }
    result
}

/// Extracts the one API key of a request and verifies it.
///
/// The key comes from `X-API-Key` or from `Authorization: Bearer`, with the
/// scheme matched case-insensitively and the key exactly. Any request that
/// offers more than one candidate is rejected, never served. Each presented
/// key's outcome is counted in `metrics`; a request without exactly one
/// candidate presents none and is not counted.
pub async fn authenticate(
    headers: &HeaderMap,
    tenet: &Tenet,
    metrics: &Metrics,
) -> Result<Principal, Error> {
    authenticate_with(headers, tenet, metrics, &[])
        .await
        .map(|verified| verified.principal)
}

/// Authenticates like [`authenticate`] and counts a known key's rejection
/// in its usage. The caller records an accepted or rate-limited request
/// after applying the key's limits (see
/// [`Tenet::verify_metered_before_limits`]).
pub async fn authenticate_metered(
    headers: &HeaderMap,
    tenet: &Tenet,
    metrics: &Metrics,
) -> Result<Principal, Error> {
    let presented = extract_or_reject(headers)?;
    let verified = tenet.verify_metered_before_limits(presented, &[]).await;
    conclude(presented, verified, metrics).map(|verified| verified.principal)
}

/// Authenticates like [`authenticate`] and requires the key to hold every
/// scope in `required_scopes`; a key without one is rejected like any
/// other invalid key.
pub async fn authenticate_with(
    headers: &HeaderMap,
    tenet: &Tenet,
    metrics: &Metrics,
    required_scopes: &[&str],
) -> Result<VerifiedKey, Error> {
    let presented = extract_or_reject(headers)?;
    let verified = tenet.verify_with(presented, required_scopes).await;
    conclude(presented, verified, metrics)
}

fn extract_or_reject(headers: &HeaderMap) -> Result<&str, Error> {
    extract_api_key(headers).map_err(|refusal| {
        tracing::debug!(reason = refusal.code(), "rejected API key");
        Error::Unauthorized
    })
}

/// Counts a verification's outcome in `metrics` and maps a rejection to
/// the uniform [`Error::Unauthorized`].
fn conclude(
    presented: &str,
    verified: tenet_core::Result<VerifiedKey>,
    metrics: &Metrics,
) -> Result<VerifiedKey, Error> {
    metrics.observe_verification(Verification::of(&verified));

    match verified {
        Ok(verified) => Ok(verified),
        Err(tenet_core::Error::Rejected(rejection)) => {
            // Only a well-formed key has a display prefix; the start of a
            // malformed one may be some other secret, such as the admin
            // token.
            let prefix = match rejection {
                tenet_core::Rejection::Malformed => "",
                _ => presented.get(..DISPLAY_PREFIX_LEN).unwrap_or_default(),
            };
            tracing::debug!(reason = rejection.code(), prefix, "rejected API key");
            match rejection {
                tenet_core::Rejection::TenantSuspended { tenant } => {
                    Err(Error::TenantSuspended { tenant })
                }
                _ => Err(Error::Unauthorized),
            }
        }
        Err(other) => Err(other.into()),
    }
}

/// The caller of a route that accepts the admin token or an API key.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Key(VerifiedKey),
}

impl Caller {
    /// Returns the actor that the audit trail records for this caller.
    pub fn actor(&self) -> Actor {
        match self {
            Caller::Admin => Actor::Admin,
            Caller::Key(verified) => Actor::Key(verified.principal.key_id),
        }
    }

    /// Returns when the caller's credential expires: the API key's expiry,
    /// or `None` for the admin token and for keys without expiry.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        match self {
            Caller::Admin => None,
            Caller::Key(verified) => verified.expires_at,
        }
    }

    /// Checks that the caller may give a key `scopes`: the admin token may
    /// give any scope, and an API key only scopes that it holds itself, so
    /// that no key can mint a key with more power than its own.
    pub fn require_grantable(&self, scopes: &[Scope]) -> Result<(), Error> {
        let Caller::Key(verified) = self else {
            return Ok(());
        };
        match scopes.iter().find(|scope| !verified.scopes.contains(scope)) {
            None => Ok(()),
            Some(scope) => {
                tracing::debug!(
                    key_id = %verified.principal.key_id,
                    scope = scope.as_str(),
                    "API key cannot grant a scope it lacks"
                );
                Err(Error::ScopeNotHeld {
                    scope: scope.as_str().to_owned(),
                })
            }
        }
    }
}

/// Accepts the admin token, or else an API key that holds `scope`.
///
/// A valid key without `scope` gets 403 `missing_scope`; every other
/// failure is the uniform 401.
pub async fn require_admin_or_scope(
    headers: &HeaderMap,
    admin: &AdminTokenDigest,
    tenet: &Tenet,
    metrics: &Metrics,
    scope: &'static str,
) -> Result<Caller, Error> {
    let offered_admin = admin_candidate(headers).is_ok_and(|token| admin.matches(token));
    if offered_admin {
        return Ok(Caller::Admin);
    }

    let verified = authenticate_with(headers, tenet, metrics, &[]).await?;
    if verified.scopes.iter().any(|held| held.as_str() == scope) {
        Ok(Caller::Key(verified))
    } else {
        tracing::debug!(key_id = %verified.principal.key_id, scope, "API key lacks a scope");
        Err(Error::MissingScope { scope })
    }
}

/// Returns the bearer credential of a request that offers nothing else, so
/// an admin token sent together with `X-API-Key` is ambiguous.
fn admin_candidate(headers: &HeaderMap) -> Result<&str, Refusal> {
    if headers.contains_key(API_KEY_HEADER) {
        return Err(Refusal::Ambiguous);
    }
    single_value(headers, &header::AUTHORIZATION).and_then(bearer_token)
}

fn extract_api_key(headers: &HeaderMap) -> Result<&str, Refusal> {
    // One lookup per header name: this runs on every authenticated request.
    let mut by_header = headers.get_all(API_KEY_HEADER).iter();
    let mut by_bearer = headers.get_all(header::AUTHORIZATION).iter();

    match (by_header.next(), by_bearer.next()) {
        (None, None) => Err(Refusal::Missing),
        (Some(value), None) => only_value(value, by_header.next()),
        (None, Some(value)) => only_value(value, by_bearer.next()).and_then(bearer_token),
        (Some(_), Some(_)) => Err(Refusal::Ambiguous),
    }
}

/// Returns the value of a header that must occur exactly once and hold one
/// value, so a comma-joined list is ambiguous.
fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, Refusal> {
    let mut values = headers.get_all(name).iter();
    match values.next() {
        None => Err(Refusal::Missing),
        Some(value) => only_value(value, values.next()),
    }
}

/// Returns `value` as text when no `second` value of its header follows
/// and it lists no second value itself.
fn only_value<'a>(
    value: &'a HeaderValue,
    second: Option<&HeaderValue>,
) -> Result<&'a str, Refusal> {
    if second.is_some() {
        return Err(Refusal::Ambiguous);
    }
    let text = value.to_str().map_err(|_| Refusal::NotText)?;
    // Folded without an early exit, so that the compiler compares many
    // bytes at once; a call to `memchr` cost more for a key's length.
    let has_comma = text
        .bytes()
        .fold(false, |found, byte| found | (byte == b','));
    if has_comma {
        return Err(Refusal::Ambiguous);
    }
    Ok(text)
}

/// Splits `Bearer <credential>`, matching the scheme case-insensitively.
/// The credential is everything after the first space, unchanged.
fn bearer_token(value: &str) -> Result<&str, Refusal> {
    match value.split_once(' ') {
        Some((scheme, credential)) if scheme.eq_ignore_ascii_case("bearer") => Ok(credential),
        _ => Err(Refusal::NotBearer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn extracts_one_candidate() {
        let cases = [
            ("x-api-key", headers(&[("x-api-key", "k")]), Ok("k")),
            ("bearer", headers(&[("authorization", "Bearer k")]), Ok("k")),
            (
                "lowercase scheme",
                headers(&[("authorization", "bearer k")]),
                Ok("k"),
            ),
            (
                "upper scheme",
                headers(&[("authorization", "BEARER k")]),
                Ok("k"),
            ),
            ("no headers", headers(&[]), Err(Refusal::Missing)),
            (
                "basic scheme",
                headers(&[("authorization", "Basic k")]),
                Err(Refusal::NotBearer),
            ),
            (
                "scheme only",
                headers(&[("authorization", "Bearer")]),
                Err(Refusal::NotBearer),
            ),
            (
                "repeated x-api-key",
                headers(&[("x-api-key", "a"), ("x-api-key", "b")]),
                Err(Refusal::Ambiguous),
            ),
            (
                "comma in x-api-key",
                headers(&[("x-api-key", "a,b")]),
                Err(Refusal::Ambiguous),
            ),
            (
                "both headers",
                headers(&[("x-api-key", "a"), ("authorization", "Bearer a")]),
                Err(Refusal::Ambiguous),
            ),
            (
                "repeated authorization",
                headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
                Err(Refusal::Ambiguous),
            ),
            (
                "comma in authorization",
                headers(&[("authorization", "Bearer a, Bearer b")]),
                Err(Refusal::Ambiguous),
            ),
        ];

        for (description, map, expected) in cases {
            assert_eq!(extract_api_key(&map), expected, "{description}");
        }
    }

    #[test]
    fn admin_candidate_rejects_a_second_credential() {
        let cases = [
            (
                "bearer only",
                headers(&[("authorization", "Bearer t")]),
                Ok("t"),
            ),
            (
                "with x-api-key",
                headers(&[("authorization", "Bearer t"), ("x-api-key", "k")]),
                Err(Refusal::Ambiguous),
            ),
            (
                "with two x-api-key",
                headers(&[
                    ("authorization", "Bearer t"),
                    ("x-api-key", "a"),
                    ("x-api-key", "b"),
                ]),
                Err(Refusal::Ambiguous),
            ),
            (
                "x-api-key only",
                headers(&[("x-api-key", "k")]),
                Err(Refusal::Ambiguous),
            ),
        ];

        for (description, map, expected) in cases {
            assert_eq!(admin_candidate(&map), expected, "{description}");
        }
    }

    #[test]
    fn bearer_keeps_the_credential_exactly() {
        assert_eq!(bearer_token("Bearer  k"), Ok(" k"));
        assert_eq!(bearer_token("Bearer k "), Ok("k "));
    }
}
