//! Key expiry: checking a requested expiry and comparing it on the hot
//! path.

use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::{self, EXACT_EXPIRY_WINDOW};
use crate::error::{Error, Result};
use crate::usage::rfc3339;

/// The longest lifetime a key may be issued with: 3,650 days, about ten
/// years.
pub const MAX_KEY_LIFETIME: Duration = Duration::from_secs(3_650 * 24 * 60 * 60);

/// An expiry as Unix milliseconds, with [`Expiry::NEVER`] for a key that
/// does not expire. Comparing it costs no allocation and, for keys without
/// an expiry, no clock read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Expiry(u64);

impl Expiry {
    pub(crate) const NEVER: Expiry = Expiry(u64::MAX);

    pub(crate) fn from_time(at: Option<OffsetDateTime>) -> Self {
        match at {
            // Issued expiries are in the future, so never before 1970.
            Some(at) => Expiry(u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)),
            None => Expiry::NEVER,
        }
    }

    pub(crate) fn from_millis(millis: u64) -> Self {
        Expiry(millis)
    }

    pub(crate) fn as_millis(self) -> u64 {
        self.0
    }

    pub(crate) fn to_time(self) -> Option<OffsetDateTime> {
        if self == Expiry::NEVER {
            return None;
        }
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }

    /// Returns whether the expiry has passed, reading the wall clock only
    /// for keys that have one.
    ///
    /// The answer is exact to the millisecond. It reads the coarse wall
    /// clock, which never runs ahead of the exact one and lags it by one
    /// tick at most, and reads the exact clock only when the coarse time is
    /// within [`EXACT_EXPIRY_WINDOW`] before the expiry.
    #[inline]
    pub(crate) fn has_passed(self) -> bool {
        self.has_passed_reading(clock::unix_coarse_millis, clock::unix_exact_millis)
    }

    /// [`Expiry::has_passed`] with the coarse and exact wall clocks, in
    /// Unix milliseconds, given.
    #[inline]
    fn has_passed_reading(self, coarse: impl FnOnce() -> u64, exact: impl FnOnce() -> u64) -> bool {
        if self == Expiry::NEVER {
            return false;
        }
        let coarse = coarse();
        if coarse >= self.0 {
            // The exact time is at least the coarse one.
            return true;
        }
        if self.0 - coarse > EXACT_EXPIRY_WINDOW {
            // The exact time is less than a window past the coarse one.
            return false;
        }
        exact() >= self.0
    }
}

/// Resolves the expiry of a key to issue from an absolute time or a
/// lifetime in seconds, of which at most one may be given.
///
/// The result is truncated to milliseconds, as every store keeps times,
/// and must lie after `now` and at most [`MAX_KEY_LIFETIME`] after it.
pub fn resolve_expiry(
    expires_at: Option<OffsetDateTime>,
    ttl_seconds: Option<u64>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>> {
    let at = match (expires_at, ttl_seconds) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "expires_at",
                "give either expires_at or ttl_seconds, not both",
            ));
        }
        (None, None) => return Ok(None),
        (Some(at), None) => at,
        (None, Some(seconds)) => {
            if seconds == 0 || seconds > MAX_KEY_LIFETIME.as_secs() {
                return Err(Error::invalid(
                    "ttl_seconds",
                    format!(
                        "is {seconds}; it must be 1 to {} seconds",
                        MAX_KEY_LIFETIME.as_secs()
                    ),
                ));
            }
            now + Duration::from_secs(seconds)
        }
    };
    check_expiry(at, now).map(Some)
}

/// Checks that `at` lies after `now` and within [`MAX_KEY_LIFETIME`], and
/// truncates it to milliseconds.
pub(crate) fn check_expiry(at: OffsetDateTime, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_millisecond(at.millisecond())
        .map_err(|err| Error::invalid("expires_at", err.to_string()))?;
    if at <= now {
        return Err(Error::invalid(
            "expires_at",
            format!("{} is not in the future; give a later time", rfc3339(at)),
        ));
    }
    if at - now > MAX_KEY_LIFETIME {
        return Err(Error::invalid(
            "expires_at",
            format!(
                "{} is more than {} days ahead; give an earlier time",
                rfc3339(at),
                MAX_KEY_LIFETIME.as_secs() / 86_400
            ),
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

    #[test]
    fn ttl_seconds_counts_from_now() {
        let at = resolve_expiry(None, Some(60), NOW).expect("valid lifetime");

        assert_eq!(at, Some(datetime!(2026-01-01 00:01:00 UTC)));
    }

    #[test]
    fn expiry_is_optional() {
        assert_eq!(resolve_expiry(None, None, NOW).expect("no expiry"), None);
    }

    #[test]
    fn invalid_expiries_are_rejected() {
        let cases = [
            ("both", Some(NOW + Duration::from_secs(60)), Some(60)),
            ("past", Some(NOW - Duration::from_secs(1)), None),
            ("now", Some(NOW), None),
            ("too far", Some(NOW + MAX_KEY_LIFETIME * 2), None),
            ("zero ttl", None, Some(0)),
            ("huge ttl", None, Some(u64::MAX)),
        ];

        for (description, at, ttl) in cases {
            assert!(
                resolve_expiry(at, ttl, NOW).is_err(),
                "accepted {description}"
            );
        }
    }

    #[test]
    fn expiry_errors_show_rfc_3339_times() {
        let cases = [
            (
                datetime!(2020-01-01 00:00:00 UTC),
                "2020-01-01T00:00:00.000Z",
            ),
            (
                datetime!(2099-01-01 00:00:00 +02:00),
                "2098-12-31T22:00:00.000Z",
            ),
        ];

        for (at, expected) in cases {
            let message = check_expiry(at, NOW).expect_err("out of range").to_string();

            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn expiry_is_truncated_to_milliseconds() {
        let at = datetime!(2026-01-01 00:00:01.123456 UTC);

        let resolved = resolve_expiry(Some(at), None, NOW).expect("valid expiry");

        assert_eq!(resolved, Some(datetime!(2026-01-01 00:00:01.123 UTC)));
    }

    #[test]
    fn expiry_is_exact_although_the_coarse_clock_lags() {
        let expiry = Expiry::from_millis(10_000);
        let exact_reads = std::cell::Cell::new(0);
        let exact = |millis: u64| {
            let exact_reads = &exact_reads;
            move || {
                exact_reads.set(exact_reads.get() + 1);
                millis
            }
        };

        // Far from the expiry, the coarse clock alone decides.
        assert!(!expiry.has_passed_reading(|| 5_000, exact(5_004)));
        assert_eq!(exact_reads.get(), 0);
        // Within the window, a coarse time one tick behind the expiry does
        // not let the key through once the exact time has reached it.
        assert!(expiry.has_passed_reading(|| 9_996, exact(10_000)));
        assert!(!expiry.has_passed_reading(|| 9_996, exact(9_999)));
        assert!(!expiry.has_passed_reading(|| 9_000, exact(9_999)));
        assert_eq!(exact_reads.get(), 3);
        // Once the coarse time reaches the expiry, the exact clock is not
        // needed.
        assert!(expiry.has_passed_reading(|| 10_000, exact(10_003)));
        assert!(!Expiry::NEVER.has_passed_reading(|| u64::MAX, exact(u64::MAX)));
        assert_eq!(exact_reads.get(), 3);
    }

    #[test]
    fn expiry_round_trips_through_millis() {
        let at = datetime!(2026-01-01 00:00:01.123 UTC);

        assert_eq!(Expiry::from_time(Some(at)).to_time(), Some(at));
        assert_eq!(Expiry::from_time(None), Expiry::NEVER);
        assert!(Expiry::from_time(Some(NOW)).has_passed());
        assert!(!Expiry::NEVER.has_passed());
    }
}
