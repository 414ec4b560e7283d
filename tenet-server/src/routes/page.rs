//! The `limit` and `cursor` query parameters of the listing routes.
//!
//! A cursor is the base64url form, without padding, of three parts: a tag
//! byte for the listing, the 16 bytes of the last id on the previous page,
//! and a 4-byte BLAKE3 checksum. The checksum covers the listing, the
//! tenant of a per-tenant listing, and the id. It makes a mistyped cursor,
//! or one taken from another listing, an `invalid_cursor` error instead of
//! a wrong page.
//! It is not a signature: cursors carry no secret, and a client that forges
//! one only pages through data it may already list. Clients must treat a
//! cursor as opaque, which leaves the server free to change its form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tenet_core::TenantId;
use uuid::Uuid;

use crate::error::Error;

/// Page size when the request has no `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest `limit` a request may give.
pub const MAX_LIMIT: usize = 100;

/// Bytes of a decoded cursor: tag, id and checksum.
const CURSOR_LEN: usize = 1 + 16 + CHECKSUM_LEN;

const CHECKSUM_LEN: usize = 4;

/// The listing that a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Tenants,
    /// The keys of one tenant.
    Keys(TenantId),
    /// The audit trail of one tenant.
    Audit(TenantId),
}

impl Listing {
    fn tag(self) -> u8 {
        match self {
            Listing::Tenants => 1,
            Listing::Keys(_) => 2,
            Listing::Audit(_) => 3,
        }
    }

    fn checksum(self, id: &Uuid) -> [u8; CHECKSUM_LEN] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tenet cursor");
        hasher.update(&[self.tag()]);
        match self {
            Listing::Tenants => {}
            Listing::Keys(tenant) | Listing::Audit(tenant) => {
                hasher.update(tenant.as_uuid().as_bytes());
            }
        }
        hasher.update(id.as_bytes());

        let mut checksum = [0; CHECKSUM_LEN];
        checksum.copy_from_slice(&hasher.finalize().as_bytes()[..CHECKSUM_LEN]);
        checksum
    }
}

/// The page that a listing request selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// The last id of the previous page, decoded from `cursor`.
    pub after: Option<Uuid>,
    pub limit: usize,
}

impl PageQuery {
    /// Parses `limit` and `cursor` of `listing` from a raw query string,
    /// percent-decoding names and values and ignoring every other
    /// parameter.
    ///
    /// A `limit` outside 1 to [`MAX_LIMIT`] is [`Error::InvalidLimit`], and a
    /// `cursor` that is not a cursor of this listing is
    /// [`Error::InvalidCursor`]. Either parameter given twice is invalid too,
    /// because the two values could disagree.
    pub fn parse(query: Option<&str>, listing: Listing) -> Result<Self, Error> {
        let mut limit = None;
        let mut cursor = None;
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (name, value) in pairs {
            match &*name {
                "limit" if limit.is_some() => {
                    return Err(Error::InvalidLimit(
                        "invalid limit: given more than once; give it once".to_owned(),
                    ));
                }
                "limit" => limit = Some(parse_limit(&value)?),
                "cursor" if cursor.is_some() => {
                    return Err(Error::InvalidCursor(
                        "invalid cursor: given more than once; give it once".to_owned(),
                    ));
                }
                "cursor" => cursor = Some(decode_cursor(&value, listing)?),
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

/// Encodes the last id of a page of `listing` as the cursor of the next
/// page.
pub fn encode_cursor(listing: Listing, last: Uuid) -> String {
    let mut bytes = [0; CURSOR_LEN];
    bytes[0] = listing.tag();
    bytes[1..17].copy_from_slice(last.as_bytes());
    bytes[17..].copy_from_slice(&listing.checksum(&last));
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_cursor(value: &str, listing: Listing) -> Result<Uuid, Error> {
    let invalid = || {
        Error::InvalidCursor(
            "invalid cursor: pass the next_cursor value of a previous page of the same listing \
             unchanged"
                .to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| invalid())?;
    let bytes: [u8; CURSOR_LEN] = bytes.try_into().map_err(|_| invalid())?;
    if bytes[0] != listing.tag() {
        return Err(invalid());
    }

    let mut id = [0; 16];
    id.copy_from_slice(&bytes[1..17]);
    let id = Uuid::from_bytes(id);
    if bytes[17..] != listing.checksum(&id) {
        return Err(invalid());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let id = Uuid::now_v7();

        let query = format!("cursor={}", encode_cursor(Listing::Tenants, id));
        let page = PageQuery::parse(Some(&query), Listing::Tenants).expect("valid cursor");

        assert_eq!(page.after, Some(id));
        assert_eq!(page.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn defaults_without_query() {
        let page = PageQuery::parse(None, Listing::Tenants).expect("no query");

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
        let page = PageQuery::parse(Some("x=1&limit=7&&sort=desc"), Listing::Tenants)
            .expect("valid query");

        assert_eq!(page.limit, 7);
        assert_eq!(page.after, None);
    }

    #[test]
    fn limits_outside_range_are_invalid() {
        for value in ["0", "101", "-1", "+5", "", "ten", "99999999999999999999999"] {
            let query = format!("limit={value}");

            let parsed = PageQuery::parse(Some(&query), Listing::Tenants);

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

            let parsed = PageQuery::parse(Some(&query), Listing::Tenants);

            assert!(
                matches!(parsed, Err(Error::InvalidCursor(_))),
                "{query}: {parsed:?}"
            );
        }
    }

    #[test]
    fn repeated_parameters_are_invalid() {
        let limit = PageQuery::parse(Some("limit=1&limit=2"), Listing::Tenants);
        let cursor = PageQuery::parse(Some("cursor=a&cursor=b"), Listing::Tenants);

        assert!(matches!(limit, Err(Error::InvalidLimit(_))), "{limit:?}");
        assert!(matches!(cursor, Err(Error::InvalidCursor(_))), "{cursor:?}");
    }

    #[test]
    fn percent_encoded_parameters_are_decoded() {
        let cursor = encode_cursor(Listing::Tenants, Uuid::now_v7());
        let query = format!("%6Cimit=%31%30&cursor={cursor}");

        let page = PageQuery::parse(Some(&query), Listing::Tenants).expect("valid query");

        assert_eq!(page.limit, 10);
        assert!(page.after.is_some());
    }

    #[test]
    fn cursor_of_another_listing_is_invalid() {
        let id = Uuid::now_v7();
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let other_tenant = TenantId::from_uuid(Uuid::now_v7());
        let cases = [
            (Listing::Tenants, Listing::Keys(tenant)),
            (Listing::Keys(tenant), Listing::Tenants),
            (Listing::Keys(tenant), Listing::Keys(other_tenant)),
        ];

        for (issued_for, used_for) in cases {
            let query = format!("cursor={}", encode_cursor(issued_for, id));

            let parsed = PageQuery::parse(Some(&query), used_for);

            assert!(
                matches!(parsed, Err(Error::InvalidCursor(_))),
                "{issued_for:?} cursor on {used_for:?}: {parsed:?}"
            );
        }
    }

    #[test]
    fn altered_cursor_is_invalid() {
        let cursor = encode_cursor(Listing::Tenants, Uuid::now_v7());
        let mut altered = cursor.clone().into_bytes();
        altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ASCII cursor");

        let parsed = PageQuery::parse(Some(&format!("cursor={altered}")), Listing::Tenants);

        assert!(matches!(parsed, Err(Error::InvalidCursor(_))), "{parsed:?}");
    }
}
