//! Finding the one API key of a request, by the server's rules.

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName};

/// Header that carries an API key as an alternative to
/// `Authorization: Bearer`.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// Returns the request's one API key, from `X-API-Key` or from
/// `Authorization: Bearer` with the scheme matched case-insensitively.
///
/// Like the server, returns `None` when the request offers no key or more
/// than one candidate: a repeated header, both headers, or a comma that
/// joins two values. An ambiguous request is rejected, never served.
pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    let by_header = headers.get_all(API_KEY_HEADER).iter().count();
    let by_bearer = headers.get_all(AUTHORIZATION).iter().count();

    match (by_header, by_bearer) {
        (1, 0) => single_value(headers, &API_KEY_HEADER),
        (0, 1) => single_value(headers, &AUTHORIZATION).and_then(bearer_credential),
        _ => None,
    }
}

fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let text = headers.get(name)?.to_str().ok()?;
    (!text.contains(',') && !text.is_empty()).then_some(text)
}

fn bearer_credential(value: &str) -> Option<&str> {
    match value.split_once(' ') {
        Some((scheme, credential)) if scheme.eq_ignore_ascii_case("bearer") => Some(credential),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn finds_exactly_one_candidate() {
        let cases = [
            (headers(&[("x-api-key", "k")]), Some("k")),
            (headers(&[("authorization", "Bearer k")]), Some("k")),
            (headers(&[("authorization", "bearer k")]), Some("k")),
            (headers(&[]), None),
            (headers(&[("x-api-key", "")]), None),
            (headers(&[("authorization", "Basic k")]), None),
            (headers(&[("authorization", "Bearer")]), None),
            (headers(&[("x-api-key", "a"), ("x-api-key", "b")]), None),
            (headers(&[("x-api-key", "a,b")]), None),
            (
                headers(&[("x-api-key", "a"), ("authorization", "Bearer a")]),
                None,
            ),
            (
                headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
                None,
            ),
        ];

        for (map, expected) in cases {
            assert_eq!(api_key(&map), expected, "{map:?}");
        }
    }
}
