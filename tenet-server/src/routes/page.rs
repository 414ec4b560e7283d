//! The `limit` and `cursor` query parameters of the listing routes.
//!
//! A cursor is the base64url form, without padding, of the 16 bytes of the
//! last id on the previous page. Clients must treat it as opaque, which
//! leaves the server free to change its form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::Error;

/// Page size when the request has no `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest `limit` a request may give.
pub const MAX_LIMIT: usize = 100;

/// The page that a listing request selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// The last id of the previous page, decoded from `cursor`.
    pub after: Option<Uuid>,
    pub limit: usize,
}

impl PageQuery {
    /// Parses `limit` and `cursor` from a raw query string, ignoring every
    /// other parameter.
    ///
    /// A `limit` outside 1 to [`MAX_LIMIT`] is [`Error::InvalidLimit`], and a
    /// `cursor` that does not decode to an id is [`Error::InvalidCursor`].
    /// Either parameter given twice is invalid too, because the two values
    /// could disagree.
    pub fn parse(query: Option<&str>) -> Result<Self, Error> {
        let mut limit = None;
        let mut cursor = None;
        for pair in query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" if limit.is_some() => {
                    return Err(Error::InvalidLimit(
                        "invalid limit: given more than once; give it once".to_owned(),
                    ));
                }
                "limit" => limit = Some(parse_limit(value)?),
                "cursor" if cursor.is_some() => {
                    return Err(Error::InvalidCursor(
                        "invalid cursor: given more than once; give it once".to_owned(),
                    ));
                }
                "cursor" => cursor = Some(decode_cursor(value)?),
                _ => {}
            }
        }

        Ok(Self {
            after: cursor,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

fn parse_limit(value: &str) -> Result<usize, Error> {
    let invalid = || {
        Error::InvalidLimit(format!(
            "invalid limit {value:?}: expected an integer from 1 to {MAX_LIMIT}"
        ))
    };
    // `usize::from_str` accepts a leading '+', which no client needs.
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(invalid()),
    }
}

/// Encodes the last id of a page as the cursor of the next page.
pub fn encode_cursor(last: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn decode_cursor(value: &str) -> Result<Uuid, Error> {
    let invalid = || {
        Error::InvalidCursor(
            "invalid cursor: pass the next_cursor value of a previous page unchanged".to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| invalid())?;
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| invalid())?;
    Ok(Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let id = Uuid::now_v7();

        let query = format!("cursor={}", encode_cursor(id));
        let page = PageQuery::parse(Some(&query)).expect("valid cursor");

        assert_eq!(page.after, Some(id));
        assert_eq!(page.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn defaults_without_query() {
        let page = PageQuery::parse(None).expect("no query");

        assert_eq!(
            page,
            PageQuery {
                after: None,
                limit: DEFAULT_LIMIT
            }
        );
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        let page = PageQuery::parse(Some("x=1&limit=7&&sort=desc")).expect("valid query");

        assert_eq!(page.limit, 7);
        assert_eq!(page.after, None);
    }

    #[test]
    fn limits_outside_range_are_invalid() {
        for value in ["0", "101", "-1", "+5", "", "ten", "99999999999999999999999"] {
            let query = format!("limit={value}");

            let parsed = PageQuery::parse(Some(&query));

            assert!(
                matches!(parsed, Err(Error::InvalidLimit(_))),
                "{query}: {parsed:?}"
            );
        }
    }

    #[test]
    fn malformed_cursors_are_invalid() {
        let short = URL_SAFE_NO_PAD.encode([1u8; 15]);
        for value in ["", "!!!!", "AAAA=", short.as_str()] {
            let query = format!("cursor={value}");

            let parsed = PageQuery::parse(Some(&query));

            assert!(
                matches!(parsed, Err(Error::InvalidCursor(_))),
                "{query}: {parsed:?}"
            );
        }
    }

    #[test]
    fn repeated_parameters_are_invalid() {
        let limit = PageQuery::parse(Some("limit=1&limit=2"));
        let cursor = PageQuery::parse(Some("cursor=a&cursor=b"));

        assert!(matches!(limit, Err(Error::InvalidLimit(_))), "{limit:?}");
        assert!(matches!(cursor, Err(Error::InvalidCursor(_))), "{cursor:?}");
    }
}
