//! Reading JSON request bodies within the size and time limits.
//!
//! No more than the limit is ever read: a `Content-Length` over it is
//! rejected before reading, and a body that grows past it while being read
//! is rejected then (both 413). A body that has not arrived in full within
//! the read timeout is rejected with 408, so that a client cannot hold a
//! connection slot by sending its body slowly or not at all. A body sent
//! with a transfer coding other than `chunked` is rejected before reading
//! (501). A body that is not empty or only whitespace needs
//! `Content-Type: application/json` and no `Content-Encoding` other than
//! `identity` (415). Parsing rejects text that is not JSON, trailing
//! bytes, unknown and duplicate fields, wrong types and any value but an
//! object (`invalid_json`), and the message names which of these failed.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::error::Category;

use crate::error::Error;

/// The UTF-8 encoding of U+FEFF, the byte order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The deepest nesting of arrays and objects, counting the outermost
/// object, that serde_json parses into a route's body type. One level more
/// exceeds its recursion limit.
const MAX_DEPTH: usize = 127;

/// The size and time limits of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: u64,
    /// Time from the start of reading to the end of the body.
    pub read_timeout: Duration,
}

/// Reads and parses a JSON body that the route requires. A body that is
/// empty or only whitespace is `invalid_json`, whatever its content type.
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<T, Error> {
    let bytes = read_limited(headers, body, limits).await?;
    if is_blank(&bytes) {
        return Err(Error::InvalidJson(
            "the request body is empty or only whitespace; send a JSON object".to_owned(),
        ));
    }
    parse(headers, &bytes)
}

/// Reads and parses an optional JSON body: a body that is empty or only
/// whitespace, with or without a content type, is `None`.
pub async fn read_optional_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<Option<T>, Error> {
    read_optional_json_explained(headers, body, limits, |_| None).await
}

/// Reads an optional JSON body like [`read_optional_json`]. When parsing
/// fails, `explain` gets the body and may return a more specific error than
/// `invalid_json`, such as one naming the field that failed.
pub async fn read_optional_json_explained<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
    explain: fn(&[u8]) -> Option<Error>,
) -> Result<Option<T>, Error> {
    let bytes = read_limited(headers, body, limits).await?;
    if is_blank(&bytes) {
        return Ok(None);
    }
    parse(headers, &bytes)
        .map_err(|err| match err {
            Error::InvalidJson(_) => explain(&bytes).unwrap_or(err),
            other => other,
        })
        .map(Some)
}

/// Reads the whole body within `limits`, once its transfer coding is one
/// that the server decodes.
async fn read_limited(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<Bytes, Error> {
    check_transfer_encoding(headers)?;

    let limit = limits.max_bytes;
    if body.size_hint().lower() > limit {
        return Err(Error::BodyTooLarge { limit });
    }

    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(limits.read_timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_elapsed| Error::BodyTimeout {
            seconds: limits.read_timeout.as_secs(),
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(Error::BodyTooLarge { limit }),
        Err(err) => match err.downcast::<hyper::Error>() {
            Ok(hyper_error) => Err(Error::BodyRead(*hyper_error)),
            Err(other) => Err(Error::Internal(other)),
        },
    }
}

fn parse<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, Error> {
    check_content_type(headers)?;
    check_content_encoding(headers)?;

    // RFC 8259 forbids senders to add a byte order mark, and serde_json
    // rejects one. The message names it, because some editors and Windows
    // tools add one without showing it.
    if bytes.starts_with(UTF8_BOM) {
        return Err(Error::InvalidJson(
            "the request body starts with a UTF-8 byte order mark (EF BB BF), which JSON \
             does not allow; send the JSON object without it"
                .to_owned(),
        ));
    }

    // serde also reads a struct from a JSON array of its field values in
    // order; the API takes objects only.
    let first = bytes
        .iter()
        .copied()
        .find(|byte| !is_json_whitespace(*byte));
    if first != Some(b'{') {
        return Err(not_an_object(bytes));
    }

    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        Category::Syntax | Category::Eof => not_json(&err),
        Category::Data | Category::Io => Error::InvalidJson(err.to_string()),
    })
}

/// Returns whether the body contains only JSON whitespace, like an empty
/// body. Such a body gets the response of an empty one, because a client
/// that sends only a newline or a space has sent no JSON value either.
fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|byte| is_json_whitespace(*byte))
}

/// Returns whether `byte` is whitespace in JSON (RFC 8259): space, tab,
/// line feed or carriage return. Form feed and vertical tab are not.
fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Builds the error for a body that does not start with `{`. A body that
/// is not JSON gets the parser's reason and position, and a JSON value of
/// another type gets a message that names its type. The check runs only on
/// this error path. It builds no value and has no nesting limit, so a
/// deeply nested array is named as an array.
fn not_an_object(bytes: &[u8]) -> Error {
    if let Err(err) = serde_json::from_slice::<IgnoredAny>(bytes) {
        return not_json(&err);
    }
    let first = bytes
        .iter()
        .copied()
        .find(|byte| !is_json_whitespace(*byte));
    let kind = match first {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    Error::InvalidJson(format!(
        "the request body must be a JSON object, not {kind}"
    ))
}

/// Builds the error for a syntax or end-of-input error of the parser.
/// serde_json reports its nesting limit as a syntax error, but the body
/// may well be valid JSON, so that message names the limit instead.
/// serde_json has no public error code for it, so its text is matched; a
/// unit test fails if that text changes.
fn not_json(err: &serde_json::Error) -> Error {
    let reason = err.to_string();
    if reason.starts_with("recursion limit exceeded") {
        return Error::InvalidJson(format!(
            "the request body nests arrays and objects more than {MAX_DEPTH} levels deep, \
             counting its outermost value ({reason}); send a flatter body"
        ));
    }
    Error::InvalidJson(format!("the request body is not valid JSON: {reason}"))
}

/// Accepts exactly one `Content-Type` of `application/json`, with any
/// parameters, compared case-insensitively. A `charset` parameter must name
/// UTF-8, the only encoding JSON allows between systems (RFC 8259).
fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::UnsupportedMediaType);
    };
    let text = value.to_str().map_err(|_| Error::UnsupportedMediaType)?;

    if is_json_media_type(text) {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType)
    }
}

/// Accepts a body without `Transfer-Encoding`, or with `chunked` alone in
/// any letter case, the one transfer coding that hyper decodes.
///
/// hyper rejects a request whose last transfer coding is not `chunked`
/// with a bare 400, but passes one such as `gzip, chunked` to the route
/// after removing only the chunked framing. Reading that body as JSON would
/// ignore the gzip: a compressed body would fail with a misleading
/// `invalid_json`, and an uncompressed one would be taken as it is. RFC
/// 9112 says that a server should respond with 501 to a transfer coding it
/// does not implement, so this rejects the body before reading it. A
/// second `chunked` (RFC 9112 forbids applying it twice) is rejected as
/// well, because its framing would stay in the body. hyper rejects
/// `Transfer-Encoding` over HTTP/1.0, and HTTP/2 has no such header.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), Error> {
    let mut chunked = 0_usize;
    let mut other = false;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(text) = value.to_str() else {
            other = true;
            break;
        };
        for coding in text.split(',').map(str::trim) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else if !coding.is_empty() {
                other = true;
            }
        }
    }
    if !other && chunked <= 1 {
        return Ok(());
    }

    let lines: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    Err(Error::UnsupportedTransferEncoding {
        value: lines.join(", "),
    })
}

/// Accepts a body without `Content-Encoding`, or with `identity` only. The
/// server decodes no content coding, and parsing a gzip body as JSON would
/// fail with a misleading `invalid_json`.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), Error> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(Error::UnsupportedContentEncoding {
                encoding: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            });
        };

        let unsupported = text
            .split(',')
            .map(str::trim)
            .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if let Some(coding) = unsupported {
            return Err(Error::UnsupportedContentEncoding {
                encoding: coding.to_owned(),
            });
        }
    }
    Ok(())
}

fn is_json_media_type(text: &str) -> bool {
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }

    parts.all(|parameter| {
        let Some((name, value)) = parameter.split_once('=') else {
            return false;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            return true;
        }
        let charset = value.trim().trim_matches('"');
        charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tenet_core::api::CreateTenantRequest;

    use super::*;

    #[test]
    fn content_encodings_other_than_identity_are_rejected() {
        let accepted: [&[&str]; 4] = [&[], &["identity"], &["Identity"], &["identity, identity"]];
        let rejected: [(&[&str], &str); 4] = [
            (&["gzip"], "gzip"),
            (&["identity, br"], "br"),
            (&["identity", "deflate"], "deflate"),
            (&["x-custom"], "x-custom"),
        ];

        for values in accepted {
            let headers = encoding_headers(values);
            assert!(
                check_content_encoding(&headers).is_ok(),
                "rejected {values:?}"
            );
        }
        for (values, named) in rejected {
            let headers = encoding_headers(values);
            match check_content_encoding(&headers) {
                Err(Error::UnsupportedContentEncoding { encoding }) => {
                    assert_eq!(encoding, named, "{values:?}");
                }
                other => panic!("{values:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn non_chunked_transfer_codings_are_rejected() {
        let accepted: [&[&str]; 5] = [
            &[],
            &["chunked"],
            &["Chunked"],
            &["CHUNKED"],
            &[" chunked "],
        ];
        let rejected: [(&[&str], &str); 6] = [
            (&["gzip, chunked"], "gzip, chunked"),
            (&["deflate, chunked"], "deflate, chunked"),
            (&["GZIP, Chunked"], "GZIP, Chunked"),
            (&["gzip", "chunked"], "gzip, chunked"),
            (&["chunked, chunked"], "chunked, chunked"),
            (&["identity, chunked"], "identity, chunked"),
        ];

        for values in accepted {
            let headers = headers_with(header::TRANSFER_ENCODING, values);
            assert!(
                check_transfer_encoding(&headers).is_ok(),
                "rejected {values:?}"
            );
        }
        for (values, named) in rejected {
            let headers = headers_with(header::TRANSFER_ENCODING, values);
            match check_transfer_encoding(&headers) {
                Err(Error::UnsupportedTransferEncoding { value }) => {
                    assert_eq!(value, named, "{values:?}");
                }
                other => panic!("{values:?} gave {other:?}"),
            }
        }
    }

    fn encoding_headers(values: &[&str]) -> HeaderMap {
        headers_with(header::CONTENT_ENCODING, values)
    }

    fn headers_with(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                name.clone(),
                http::HeaderValue::from_str(value).expect("valid header value"),
            );
        }
        headers
    }

    #[test]
    fn json_media_types_are_recognised() {
        let accepted = [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; charset=utf8; other=1",
        ];
        let rejected = [
            "",
            "text/plain",
            "application/jsonx",
            "application/json-patch+json",
            "application/json; charset=latin1",
            "application/json; garbage",
            "multipart/form-data; boundary=x",
        ];

        for text in accepted {
            assert!(is_json_media_type(text), "rejected {text:?}");
        }
        for text in rejected {
            assert!(!is_json_media_type(text), "accepted {text:?}");
        }
    }

    /// Parses `body` as a tenant's creation body with a JSON content type
    /// and returns the `invalid_json` message.
    fn parse_message(body: &[u8]) -> String {
        parse_message_as::<CreateTenantRequest>(body)
    }

    /// Parses `body` as a `T` with a JSON content type and returns the
    /// `invalid_json` message.
    fn parse_message_as<T: DeserializeOwned + std::fmt::Debug>(body: &[u8]) -> String {
        let headers = headers_with(header::CONTENT_TYPE, &["application/json"]);
        match parse::<T>(&headers, body) {
            Err(Error::InvalidJson(message)) => message,
            other => panic!("{body:?} gave {other:?}"),
        }
    }

    #[test]
    fn text_that_is_not_json_is_named() {
        let cases: [(&[u8], &str); 8] = [
            (b"hello", "expected value at line 1 column 1"),
            (b"x", "expected value at line 1 column 1"),
            (b"\xff\xfe", "expected value at line 1 column 1"),
            (b"[1, 2", "EOF while parsing a list at line 1 column 5"),
            (b"1 x", "trailing characters at line 1 column 3"),
            (
                b"{\"name\":",
                "EOF while parsing a value at line 1 column 8",
            ),
            (b"{\"name\":\"\xff\"}", "invalid unicode code point"),
            (
                b"{\"name\":\"a\"} x",
                "trailing characters at line 1 column 14",
            ),
        ];

        for (body, reason) in cases {
            let message = parse_message(body);

            assert!(
                message.starts_with("the request body is not valid JSON: "),
                "{body:?}: {message}"
            );
            assert!(message.contains(reason), "{body:?}: {message}");
        }
    }

    #[test]
    fn json_values_other_than_objects_are_named() {
        let cases: [(&[u8], &str); 7] = [
            (b"1", "a number"),
            (b" -2.5e3 ", "a number"),
            (b"\" \"", "a string"),
            (b"[\"a\"]", "an array"),
            (b"true", "a boolean"),
            (b"false", "a boolean"),
            (b"null", "null"),
        ];

        for (body, kind) in cases {
            let message = parse_message(body);

            assert_eq!(
                message,
                format!("the request body must be a JSON object, not {kind}"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn field_type_error_keeps_serde_message() {
        let message = parse_message(br#"{"name":5}"#);

        assert_eq!(
            message,
            "invalid type: integer `5`, expected a string at line 1 column 9"
        );
    }

    #[test]
    fn only_json_whitespace_is_blank() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \t\r\n"));
        assert!(!is_blank(b" \x0c"));
        assert!(!is_blank(b" {}"));
    }

    #[test]
    fn nesting_over_the_limit_is_named() {
        let depth = MAX_DEPTH;
        // An object around `levels - 1` nested arrays: `levels` levels.
        let nested = |levels: usize| {
            let mut body = b"{\"a\":".to_vec();
            body.extend("[".repeat(levels - 1).into_bytes());
            body.extend("]".repeat(levels - 1).into_bytes());
            body.push(b'}');
            body
        };
        let headers = headers_with(header::CONTENT_TYPE, &["application/json"]);

        let deepest = parse::<Value>(&headers, &nested(depth));
        let too_deep = parse_message_as::<Value>(&nested(depth + 1));

        assert!(deepest.is_ok(), "{deepest:?}");
        assert!(
            too_deep.starts_with("the request body nests arrays and objects more than 127 levels"),
            "{too_deep}"
        );
        assert!(too_deep.contains("recursion limit exceeded"), "{too_deep}");
    }

    #[test]
    fn deep_array_is_named_as_an_array() {
        let levels = 1000;
        let mut body = "[".repeat(levels).into_bytes();
        body.extend("]".repeat(levels).into_bytes());

        let message = parse_message(&body);

        assert_eq!(
            message,
            "the request body must be a JSON object, not an array"
        );
    }
}
