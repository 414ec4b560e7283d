//! The JSON form of times: RFC 3339 in UTC with exactly three fractional
//! digits, such as `2026-12-04T20:19:52.530Z`.
//!
//! Stores keep milliseconds, so three digits lose nothing, and a fixed
//! width makes the strings sort like the times they stand for. Reading
//! accepts any RFC 3339 time.

use serde::{Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

const FORMAT: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Formats `at` in UTC with three fractional digits, or as plain RFC 3339
/// for a year outside 0 to 9999, which the fixed form cannot hold.
pub fn format(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    utc.format(FORMAT)
        .or_else(|_| utc.format(&time::format_description::well_known::Rfc3339))
        .unwrap_or_else(|_| utc.to_string())
}

/// Writes `at` in the form of [`format`].
pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*at))
}

/// Reads any RFC 3339 time.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OffsetDateTime, D::Error> {
    time::serde::rfc3339::deserialize(deserializer)
}

/// The same form for an optional time, `null` for `None`.
pub mod option {
    use serde::{Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(
        at: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_some(&super::format(*at)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        time::serde::rfc3339::option::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn format_keeps_three_digits_in_utc() {
        let cases = [
            (
                datetime!(2026-12-04 20:19:52 UTC),
                "2026-12-04T20:19:52.000Z",
            ),
            (
                datetime!(2026-12-04 20:19:52.53 UTC),
                "2026-12-04T20:19:52.530Z",
            ),
            (
                datetime!(2026-12-04 21:19:52.5 +01:00),
                "2026-12-04T20:19:52.500Z",
            ),
        ];

        for (at, expected) in cases {
            assert_eq!(format(at), expected);
        }
    }

    #[test]
    fn reading_accepts_any_rfc_3339_time() {
        #[derive(serde::Deserialize)]
        struct Holder {
            #[serde(with = "super")]
            at: OffsetDateTime,
        }

        let holder: Holder =
            serde_json::from_str(r#"{"at": "2030-01-01T02:00:00+02:00"}"#).expect("valid time");

        assert_eq!(holder.at, datetime!(2030-01-01 00:00:00 UTC));
    }
}
