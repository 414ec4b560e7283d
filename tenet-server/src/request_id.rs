//! Request ids: the client's `X-Request-Id` when it is valid, else a new
//! UUIDv7.
//!
//! The id is set for the task that serves the request ([`scope`]), and the
//! log formatter adds it to every line that task logs, so that all lines of
//! one request carry it. The response echoes it in the same header. Only a
//! short value from a restricted alphabet is accepted, because it is
//! written into log lines as it is. A value that may be a credential is
//! replaced too (see [`may_be_credential`]), because a client or proxy that
//! copies a key or token into the header would otherwise put the secret in
//! the log.
//!
//! A task-local value costs far less per request than a tracing span,
//! which the fmt subscriber formats and stores on creation even when the
//! request logs nothing. Tasks that a request spawns do not inherit it.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tenet_core::AdminTokenDigest;
use tenet_core::key::KEY_PREFIX;
use uuid::{Builder, Uuid};

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// Header that carries the request id, in requests and responses.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted client request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Shortest client request id that [`may_be_credential`] rejects for its
/// shape alone: the length of a generated admin token or pepper (32 random
/// bytes in unpadded base64url). API keys are longer.
pub const MIN_CREDENTIAL_SHAPED_LEN: usize = 43;

/// Returns the request id for a request with these headers.
///
/// A single `X-Request-Id` value of 1 to 128 characters from
/// `[A-Za-z0-9._:-]` that is no possible credential (see
/// [`may_be_credential`]) is kept. Anything else (no header, a repeated
/// header, another character or length, a value shaped like a key or
/// token) gets a new UUIDv7. The rejected value is neither logged nor
/// echoed.
pub fn resolve(headers: &HeaderMap, admin: &AdminTokenDigest) -> HeaderValue {
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if is_valid(value.as_bytes()) && !may_be_credential(value, admin) => {
            value.clone()
        }
        _ => generate(),
    }
}

/// Returns whether `id` is an acceptable client request id.
pub fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
}

/// Returns whether a syntactically valid client request id may be a
/// credential, and so must not be logged. That is the case when it
///
/// - contains `tnt_` in any letter case, because every API key starts with
///   it (a copied key, or a value that embeds one);
/// - has a part that starts with `eyJ`, the base64url form of `{"` that
///   begins every JSON Web Token;
/// - has a part of [`MIN_CREDENTIAL_SHAPED_LEN`] or more characters of
///   only `[A-Za-z0-9_-]`, the shape of generated admin tokens, peppers,
///   and API keys or other random tokens without their prefix;
/// - is the admin token itself, or has a part that is, compared by digest
///   like a presented token, which catches a configured token of any shape.
///   A configured token that itself contains `.` or `:` is found only as
///   the whole id.
///
/// The parts are the pieces between the separators `.` and `:`, so that a
/// secret behind a label such as `req:` or `x.` is found too. An
/// `Authorization` value such as `Bearer <token>` or `Basic <secret>` needs
/// no rule of its own: its space already makes it invalid. UUIDs, shorter
/// hex ids and dotted or colon-separated ids of short parts pass.
// NOTE: the server keeps only the admin token's digest, so a configured
// token shorter than `MIN_CREDENTIAL_SHAPED_LEN` is found as the whole id
// or as a whole part, not inside a longer part such as `x<token>`.
pub fn may_be_credential(id: &HeaderValue, admin: &AdminTokenDigest) -> bool {
    let bytes = id.as_bytes();
    let prefix = KEY_PREFIX.as_bytes();
    let has_key_prefix = bytes
        .windows(prefix.len())
        .any(|window| window.eq_ignore_ascii_case(prefix));
    if has_key_prefix || id.to_str().is_ok_and(|text| admin.matches(text)) {
        return true;
    }

    bytes
        .split(|byte| matches!(byte, b'.' | b':'))
        .any(|part| part_may_be_credential(part, admin))
}

/// Applies the per-part rules of [`may_be_credential`] to one part.
fn part_may_be_credential(part: &[u8], admin: &AdminTokenDigest) -> bool {
    let token_shaped = part.len() >= MIN_CREDENTIAL_SHAPED_LEN
        && part
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'));

    part.starts_with(b"eyJ")
        || token_shaped
        || std::str::from_utf8(part).is_ok_and(|text| admin.matches(text))
}

/// Runs `future` with `id` as the current request id of its task.
///
/// A plain function, not an `async fn`, whose future would hold `future`
/// twice (its argument and the task-local future) and be copied once more
/// per request.
pub fn scope<F: Future>(id: HeaderValue, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(id, future)
}

/// Returns the request id of the current task, or `None` outside a
/// request. The id is visible ASCII, because [`resolve`] returns only such
/// ids.
pub fn current() -> Option<HeaderValue> {
    CURRENT.try_with(HeaderValue::clone).ok()
}

/// Runs `f` with `id` as the current request id, like [`scope`] for
/// synchronous code.
pub fn sync_scope<R>(id: HeaderValue, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(id, f)
}

fn generate() -> HeaderValue {
    // The bits after the millisecond come from a per-thread generator that
    // is not cryptographic: request ids need to differ, not to be
    // unpredictable, and `Uuid::new_v7` with its secure generator cost
    // about twice as many instructions. `Uuid::now_v7` would also order
    // the ids of one millisecond through a process-wide mutex, which every
    // request of every worker would take.
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let random = fastrand::u128(..).to_le_bytes();
    let mut bits = [0; 10];
    bits.copy_from_slice(&random[..10]);
    let uuid = Builder::from_unix_timestamp_millis(millis, &bits).into_uuid();

    let mut buffer = Uuid::encode_buffer();
    let text = uuid.hyphenated().encode_lower(&mut buffer);
    let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
    id.copy_from_slice(text.as_bytes());
    // An owned array makes one shared allocation, so the clones for the
    // task and the response share it; a copied slice would be copied
    // again on its first clone.
    let bytes = Bytes::from_owner(id);
    HeaderValue::from_maybe_shared(bytes).expect("a hyphenated UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use tenet_core::{AdminToken, ApiKey};

    use super::*;

    /// An admin token in the request id alphabet that no shape rule
    /// catches, so that only the digest comparison rejects it.
    const ADMIN_TOKEN: &str = "ops.admin:token.0123456789.abcdefghij";

    fn admin() -> AdminTokenDigest {
        AdminTokenDigest::of(ADMIN_TOKEN)
    }

    fn assert_generated(id: &HeaderValue, description: &str) {
        let text = id.to_str().expect("generated id is ASCII");
        let parsed = Uuid::parse_str(text).expect("generated id is a UUID");
        assert_eq!(parsed.get_version_num(), 7, "{description}");
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                REQUEST_ID_HEADER,
                HeaderValue::from_bytes(value).expect("valid header value"),
            );
        }
        map
    }

    #[test]
    fn generated_ids_are_distinct_and_carry_the_time() {
        let before = SystemTime::now();
        let ids: std::collections::HashSet<Uuid> = (0..10_000)
            .map(|_| {
                let id = generate();
                Uuid::parse_str(id.to_str().expect("ASCII")).expect("a UUID")
            })
            .collect();
        let after = SystemTime::now();

        assert_eq!(ids.len(), 10_000);
        let millis = |at: SystemTime| {
            at.duration_since(UNIX_EPOCH)
                .expect("after the epoch")
                .as_millis()
        };
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            let (seconds, nanos) = id.get_timestamp().expect("a v7 timestamp").to_unix();
            let at = u128::from(seconds) * 1_000 + u128::from(nanos / 1_000_000);
            assert!((millis(before)..=millis(after)).contains(&at), "{id}");
        }
    }

    #[test]
    fn valid_client_id_is_kept() {
        let long_with_dots = [b'x', b'.'].repeat(MAX_REQUEST_ID_LEN / 2);
        let short_of_token_shape = [b'x'; MIN_CREDENTIAL_SHAPED_LEN - 1];
        for id in [
            &b"a"[..],
            b"req-1.2_3:4",
            b"01932c07-a9f4-7b3e-8c5d-1f2e3d4c5b6a",
            b"4bf92f3577b34da6a3ce929d0e0e4736",
            b"tnt.not-a-key",
            &long_with_dots,
            &short_of_token_shape,
        ] {
            assert_eq!(resolve(&headers(&[id]), &admin()).as_bytes(), id);
        }
    }

    #[test]
    fn invalid_client_id_is_replaced() {
        let too_long = [b'x'; MAX_REQUEST_ID_LEN + 1];
        for (description, values) in [
            ("missing", &[][..]),
            ("empty", &[&b""[..]]),
            ("space", &[&b"a b"[..]]),
            ("slash", &[&b"a/b"[..]]),
            ("quote", &[&b"a\"b"[..]]),
            ("non-ASCII", &[&b"caf\xc3\xa9"[..]]),
            ("too long", &[&too_long[..]]),
            ("repeated", &[&b"a"[..], &b"b"[..]]),
        ] {
            let id = resolve(&headers(values), &admin());

            assert_generated(&id, description);
        }
    }

    #[test]
    fn credential_shaped_id_is_replaced() {
        let key = ApiKey::generate();
        let key_without_prefix = &key.expose_secret()[KEY_PREFIX.len()..];
        let generated_token = AdminToken::generate();
        let embedded_key = format!("req:{}", key.expose_secret());
        let labelled_key = format!("req:{key_without_prefix}");
        let dotted_token = format!("x.{}", generated_token.expose_secret());
        let hex_token = "0123456789abcdef".repeat(4);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        for (description, id) in [
            ("API key", key.expose_secret()),
            ("API key without its prefix", key_without_prefix),
            ("embedded API key", embedded_key.as_str()),
            ("key prefix in upper case", "TNT_abc"),
            ("generated admin token", generated_token.expose_secret()),
            ("hex token", hex_token.as_str()),
            ("JSON Web Token", jwt),
            ("configured admin token", ADMIN_TOKEN),
            ("key without prefix behind a label", labelled_key.as_str()),
            ("generated token behind a dot", dotted_token.as_str()),
            ("JSON Web Token behind a label", "jwt:eyJhbGciOiJIUzI1NiJ9"),
        ] {
            let id = resolve(&headers(&[id.as_bytes()]), &admin());

            assert_generated(&id, description);
        }
    }
}
