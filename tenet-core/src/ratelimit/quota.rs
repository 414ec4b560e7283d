//! Monthly request quotas: a count per tenant and calendar month (UTC).
//!
//! A quota admits a request while the month's count is below the quota and
//! counts it in the same step, so concurrent requests never push the count
//! past the quota. [`LocalQuota`] counts in process; the Redis count lives
//! in [`RedisLimiter::take_quota`](super::RedisLimiter::take_quota).

use std::collections::HashMap;
use std::sync::Mutex;

use time::{Date, Month, OffsetDateTime, Time};

use super::Mode;

/// A tenant's calendar month in UTC, which one quota count covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaMonth {
    year: i32,
    month: Month,
}

impl QuotaMonth {
    /// Returns the month that contains `at`, taken in UTC.
    pub fn containing(at: OffsetDateTime) -> Self {
        let utc = at.to_offset(time::UtcOffset::UTC);
        Self {
            year: utc.year(),
            month: utc.month(),
        }
    }

    /// Returns the month as `YYYY-MM`, the form used in Redis key names.
    pub fn label(&self) -> String {
        format!("{:04}-{:02}", self.year, u8::from(self.month))
    }

    /// Returns the first instant of the next month, when the count resets.
    pub fn resets_at(&self) -> OffsetDateTime {
        let (year, month) = match self.month {
            Month::December => (self.year + 1, Month::January),
            other => (self.year, other.next()),
        };
        // The first day of a month exists in every year that `time`
        // represents, so the fallback is never taken.
        let first = Date::from_calendar_date(year, month, 1).unwrap_or(Date::MAX);
        first.with_time(Time::MIDNIGHT).assume_utc()
    }
}

/// The state of a tenant's quota after one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaOutcome {
    /// Whether the request fits the quota.
    pub allowed: bool,
    /// The month's count after this request.
    pub used: u64,
    /// The quota: the maximum number of requests the month admits.
    pub quota: u64,
    /// When the count resets: the start of the next month in UTC.
    pub resets_at: OffsetDateTime,
}

impl QuotaOutcome {
    /// Returns how many requests the month still admits.
    pub fn remaining(&self) -> u64 {
        self.quota.saturating_sub(self.used)
    }
}

/// Monthly counts kept in this process, one per subject.
///
/// Each subject keeps only its current month's count, so memory stays
/// bounded by the number of subjects with a quota.
#[derive(Debug, Default)]
pub struct LocalQuota {
    counts: Mutex<HashMap<String, (QuotaMonth, u64)>>,
}

impl LocalQuota {
    /// Builds an empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits and, with [`Mode::Consume`], counts one request of `subject`
    /// against `quota` in the month that contains `now`.
    pub fn take(&self, subject: &str, quota: u64, now: OffsetDateTime, mode: Mode) -> QuotaOutcome {
        let month = QuotaMonth::containing(now);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = counts.entry(subject.to_owned()).or_insert((month, 0));
        if entry.0 != month {
            *entry = (month, 0);
        }

        let allowed = entry.1 < quota;
        if allowed && mode == Mode::Consume {
            entry.1 += 1;
        }
        QuotaOutcome {
            allowed,
            used: entry.1,
            quota,
            resets_at: month.resets_at(),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn month_resets_at_the_next_month() {
        let cases = [
            (
                datetime!(2026-12-04 18:00 UTC),
                datetime!(2027-01-01 0:00 UTC),
            ),
            (
                datetime!(2026-02-28 23:59:59 UTC),
                datetime!(2026-03-01 0:00 UTC),
            ),
            (
                datetime!(2026-03-31 23:30 -01:00),
                datetime!(2026-05-01 0:00 UTC),
            ),
        ];

        for (at, expected) in cases {
            assert_eq!(QuotaMonth::containing(at).resets_at(), expected, "{at}");
        }
    }

    #[test]
    fn local_quota_admits_exactly_the_quota() {
        let quota = LocalQuota::new();
        let now = datetime!(2026-12-04 18:00 UTC);

        let admitted = (0..10)
            .filter(|_| quota.take("tenant:a", 3, now, Mode::Consume).allowed)
            .count();

        assert_eq!(admitted, 3);
    }

    #[test]
    fn local_quota_peek_counts_nothing() {
        let quota = LocalQuota::new();
        let now = datetime!(2026-12-04 18:00 UTC);

        let peeked = quota.take("tenant:a", 1, now, Mode::Peek);
        let taken = quota.take("tenant:a", 1, now, Mode::Consume);

        assert!(peeked.allowed);
        assert_eq!(peeked.used, 0);
        assert!(taken.allowed);
        assert_eq!(taken.used, 1);
    }

    #[test]
    fn local_quota_starts_over_in_a_new_month() {
        let quota = LocalQuota::new();
        quota.take(
            "tenant:a",
            1,
            datetime!(2026-11-30 23:00 UTC),
            Mode::Consume,
        );

        let next = quota.take("tenant:a", 1, datetime!(2026-12-01 0:00 UTC), Mode::Consume);

        assert!(next.allowed);
        assert_eq!(next.resets_at, datetime!(2027-01-01 0:00 UTC));
    }
}
