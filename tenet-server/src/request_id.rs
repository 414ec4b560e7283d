//! Request ids: the client's `X-Request-Id` when it is valid, else a new
//! UUIDv7.
//!
//! The id is set for the task that serves the request ([`scope`]), and the
//! log formatter adds it to every line that task logs, so that all lines of
//! one request carry it. The response echoes it in the same header. Only a
//! short value from a restricted alphabet is accepted, because it is
//! written into log lines as it is.
//!
//! A task-local value costs far less per request than a tracing span,
//! which the fmt subscriber formats and stores on creation even when the
//! request logs nothing. Tasks that a request spawns do not inherit it.

use std::future::Future;

use http::{HeaderMap, HeaderName, HeaderValue};
use uuid::Uuid;

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// Header that carries the request id, in requests and responses.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted client request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Returns the request id for a request with these headers.
///
/// A single `X-Request-Id` value of 1 to 128 characters from
/// `[A-Za-z0-9._:-]` is kept. Anything else (no header, a repeated header,
/// another character or length) gets a new UUIDv7.
pub fn resolve(headers: &HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if is_valid(value.as_bytes()) => value.clone(),
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

/// Runs `future` with `id` as the current request id of its task.
pub async fn scope<F: Future>(id: HeaderValue, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// Returns the request id of the current task, or `None` outside a
/// request. The id is visible ASCII, because [`resolve`] returns only such
/// ids.
pub fn current() -> Option<HeaderValue> {
    CURRENT.try_with(HeaderValue::clone).ok()
}

fn generate() -> HeaderValue {
    let mut buffer = Uuid::encode_buffer();
    let text = Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).expect("a hyphenated UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn valid_client_id_is_kept() {
        for id in [&b"a"[..], b"req-1.2_3:4", &[b'x'; MAX_REQUEST_ID_LEN]] {
            assert_eq!(resolve(&headers(&[id])).as_bytes(), id);
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
            let id = resolve(&headers(values));

            let text = id.to_str().expect("generated id is ASCII");
            let parsed = Uuid::parse_str(text).expect("generated id is a UUID");
            assert_eq!(parsed.get_version_num(), 7, "{description}");
        }
    }
}
