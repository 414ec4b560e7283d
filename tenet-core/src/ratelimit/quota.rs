//! Monthly request quotas: a count per tenant and calendar month (UTC).
//!
//! A quota admits a request while the month's count is below the quota and
//! counts it in the same step, so concurrent requests never push the count
//! past the quota. [`LocalQuota`] counts in process; the Redis count lives
//! in [`RedisLimiter::take_quota`](super::RedisLimiter::take_quota).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use time::{Date, Month, OffsetDateTime, Time};

use super::Mode;
use crate::error::Result;

/// How long a subject whose seed read failed counts without one before
/// the next request reads again. A read of a store that hangs can hold
/// that subject's requests for its timeout, so reads are not retried on
/// every request.
pub const SEED_RETRY_INTERVAL: time::Duration = time::Duration::seconds(5);

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

    /// Returns the first instant of the month, midnight UTC on its first day.
    pub fn starts_at(&self) -> OffsetDateTime {
        // As in `resets_at`, the first day of the month always exists.
        let first = Date::from_calendar_date(self.year, self.month, 1).unwrap_or(Date::MIN);
        first.with_time(Time::MIDNIGHT).assume_utc()
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
///
/// [`LocalQuota::take`] counts from zero in each process.
/// [`LocalQuota::take_seeded`] first reads how many requests the month
/// already used, from the store's usage counts, so that a restart does not
/// give every subject a fresh month.
#[derive(Debug, Default)]
pub struct LocalQuota {
    counts: Mutex<HashMap<String, Count>>,
    /// Whether the last seed read failed, so that an outage logs one
    /// warning and one line when reads succeed again, not one per subject.
    seed_failing: AtomicBool,
}

/// One subject's count in its current month.
#[derive(Debug)]
struct Count {
    month: QuotaMonth,
    used: u64,
    seed: Seed,
    /// Held while one request reads the seed, so that concurrent first
    /// requests wait for that read instead of starting their own. An
    /// async mutex is released when its holder's future is dropped, so a
    /// cancelled request lets the next one read.
    seed_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Whether a subject's count includes the month's earlier requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seed {
    /// Not read yet: the next seeded request reads it.
    Missing,
    /// The read failed: requests count in process without it, and the
    /// first request at or after `retry_at` reads again.
    Failed { retry_at: OffsetDateTime },
    /// The count includes the stored usage.
    Done,
}

impl Count {
    fn new(month: QuotaMonth) -> Self {
        Self {
            month,
            used: 0,
            seed: Seed::Missing,
            seed_lock: Arc::default(),
        }
    }

    /// Admits and, with [`Mode::Consume`], counts one request.
    fn take(&mut self, quota: u64, mode: Mode) -> QuotaOutcome {
        let allowed = self.used < quota;
        if allowed && mode == Mode::Consume {
            self.used += 1;
        }
        QuotaOutcome {
            allowed,
            used: self.used,
            quota,
            resets_at: self.month.resets_at(),
        }
    }

    /// Returns whether a seeded request must read the seed first.
    fn needs_seed(&self, now: OffsetDateTime) -> bool {
        match self.seed {
            Seed::Missing => true,
            Seed::Failed { retry_at } => now >= retry_at,
            Seed::Done => false,
        }
    }
}

impl LocalQuota {
    /// Builds an empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits and, with [`Mode::Consume`], counts one request of `subject`
    /// against `quota` in the month that contains `now`, counting from zero
    /// in this process.
    pub fn take(&self, subject: &str, quota: u64, now: OffsetDateTime, mode: Mode) -> QuotaOutcome {
        let month = QuotaMonth::containing(now);
        self.lock().current(subject, month).take(quota, mode)
    }

    /// Admits and counts one request like [`LocalQuota::take`], but starts
    /// each subject's month from `read_used(month)`: the number of requests
    /// already admitted that month, such as the accepted requests in the
    /// store's usage counts.
    ///
    /// The seed is read once per subject and month. Concurrent first
    /// requests wait for one read and then count on top of it, so none is
    /// counted twice. The seed replaces the count only where it is larger
    /// (see the note below).
    ///
    /// When the read fails, the request is decided on the count kept in
    /// process so far, which starts at zero, and a warning is logged. The
    /// first request [`SEED_RETRY_INTERVAL`] later reads again. While reads
    /// fail, each process therefore admits at most one quota, never
    /// unlimited requests.
    ///
    /// The seed is only as recent as the store: usage counts reach it when
    /// they are flushed, so requests that a crashed process had not flushed
    /// are not in it, and neither are other processes' unflushed requests.
    pub async fn take_seeded<F, Fut>(
        &self,
        subject: &str,
        quota: u64,
        now: OffsetDateTime,
        mode: Mode,
        read_used: F,
    ) -> QuotaOutcome
    where
        F: FnOnce(QuotaMonth) -> Fut,
        Fut: Future<Output = Result<u64>>,
    {
        let month = QuotaMonth::containing(now);
        let seed_lock = {
            let mut counts = self.lock();
            let count = counts.current(subject, month);
            if !count.needs_seed(now) {
                return count.take(quota, mode);
            }
            Arc::clone(&count.seed_lock)
        };

        let _reading = seed_lock.lock().await;
        // A concurrent request may have read the seed, or failed to, while
        // this one waited for the lock.
        {
            let mut counts = self.lock();
            let count = counts.current(subject, month);
            if !count.needs_seed(now) {
                return count.take(quota, mode);
            }
        }

        let read = read_used(month).await;
        let mut counts = self.lock();
        let count = counts.current(subject, month);
        match read {
            Ok(stored) => {
                if self.seed_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("reading quota counts from the store again");
                }
                // NOTE: after a failed read, this process counted from zero,
                // and some of those requests may already be in `stored`, so
                // the larger of the two is kept rather than their sum. That
                // never counts a request twice, but it drops this process's
                // unflushed requests from before the read.
                count.used = count.used.max(stored);
                count.seed = Seed::Done;
            }
            Err(err) => {
                if self.seed_failing.swap(true, Ordering::AcqRel) {
                    tracing::debug!(subject, error = %err, "failed to read a quota count");
                } else {
                    tracing::warn!(
                        subject,
                        error = %err,
                        retry_s = SEED_RETRY_INTERVAL.whole_seconds(),
                        "failed to read a quota count from the store; \
                         counting this month's requests in process only until a read succeeds"
                    );
                }
                count.seed = Seed::Failed {
                    retry_at: now + SEED_RETRY_INTERVAL,
                };
            }
        }
        count.take(quota, mode)
    }

    /// Marks `subject`'s count to be read from the store again at its next
    /// seeded request. The read keeps the larger of the stored count and
    /// this one, so nothing counted here is lost.
    ///
    /// The store counts a tenant's accepted requests also while the tenant
    /// has no quota, and this process does not. Calling this when the quota
    /// changes makes a quota set again count those requests, except the
    /// ones not flushed to the store yet.
    pub fn reseed(&self, subject: &str) {
        if let Some(count) = self.lock().0.get_mut(subject) {
            count.seed = Seed::Missing;
        }
    }

    fn lock(&self) -> Counts<'_> {
        Counts(self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The locked map of counts.
struct Counts<'a>(MutexGuard<'a, HashMap<String, Count>>);

impl Counts<'_> {
    /// Returns `subject`'s count, starting it over, unseeded, when it
    /// belongs to an earlier month.
    fn current(&mut self, subject: &str, month: QuotaMonth) -> &mut Count {
        let count = self
            .0
            .entry(subject.to_owned())
            .or_insert_with(|| Count::new(month));
        if count.month != month {
            *count = Count::new(month);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use time::macros::datetime;

    use super::*;
    use crate::error::Error;

    const NOW: OffsetDateTime = datetime!(2026-12-04 18:00 UTC);

    /// Takes one request of `tenant:a` with a quota of 5 and `read` as the
    /// seed read.
    async fn take_one_of_five<Fut>(
        quota: &LocalQuota,
        at: OffsetDateTime,
        read: Fut,
    ) -> QuotaOutcome
    where
        Fut: Future<Output = Result<u64>>,
    {
        quota
            .take_seeded("tenant:a", 5, at, Mode::Consume, |_| read)
            .await
    }

    #[tokio::test]
    async fn seeded_count_starts_from_the_stored_usage() {
        let quota = LocalQuota::new();
        let months = Mutex::new(Vec::new());

        let first = quota
            .take_seeded("tenant:a", 5, NOW, Mode::Consume, |month| {
                months.lock().expect("not poisoned").push(month);
                async { Ok(3) }
            })
            .await;
        let second = take_one_of_five(&quota, NOW, async { panic!("read twice") }).await;
        let over = take_one_of_five(&quota, NOW, async { panic!("read twice") }).await;

        assert_eq!(
            *months.lock().expect("not poisoned"),
            [QuotaMonth::containing(NOW)]
        );
        assert!(first.allowed);
        assert_eq!(first.used, 4);
        assert!(second.allowed);
        assert_eq!(second.used, 5);
        assert!(!over.allowed);
        assert_eq!(over.used, 5);
    }

    #[tokio::test]
    async fn seed_at_the_quota_rejects_at_once() {
        let quota = LocalQuota::new();

        let over = take_one_of_five(&quota, NOW, async { Ok(5) }).await;

        assert!(!over.allowed);
        assert_eq!(over.remaining(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_read_once() {
        let quota = Arc::new(LocalQuota::new());
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);

        let requests: Vec<_> = (0..8)
            .map(|_| {
                let quota = Arc::clone(&quota);
                let reads = Arc::clone(&reads);
                let mut released = released.clone();
                tokio::spawn(async move {
                    quota
                        .take_seeded("tenant:a", 10, NOW, Mode::Consume, |_| async move {
                            reads.fetch_add(1, Ordering::SeqCst);
                            // Hold the read while the other requests start.
                            let _ = released.wait_for(|released| *released).await;
                            Ok(4)
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        release.send(true).expect("a request is waiting");
        let mut admitted = 0;
        for request in requests {
            admitted += usize::from(request.await.expect("request task").allowed);
        }
        let after = take_one_of_five(&quota, NOW, async { panic!("read again") }).await;

        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(admitted, 6, "4 stored plus 6 admitted fill the quota of 10");
        assert!(!after.allowed);
        assert_eq!(after.used, 10);
    }

    #[tokio::test]
    async fn failed_read_counts_from_zero_and_retries_later() {
        let quota = LocalQuota::new();
        let failure = || async { Err::<u64, _>(Error::store("connection refused")) };

        let failed = take_one_of_five(&quota, NOW, failure()).await;
        let meanwhile = take_one_of_five(&quota, NOW + time::Duration::seconds(1), async {
            panic!("retried before the interval")
        })
        .await;
        let retried = take_one_of_five(&quota, NOW + SEED_RETRY_INTERVAL, async { Ok(1) }).await;
        let seeded = take_one_of_five(&quota, NOW + SEED_RETRY_INTERVAL, async { Ok(4) }).await;

        assert!(failed.allowed, "a failed read admits within the quota");
        assert_eq!(failed.used, 1);
        assert_eq!(meanwhile.used, 2);
        assert_eq!(
            retried.used, 3,
            "a seed below the local count keeps the local count"
        );
        assert_eq!(seeded.used, 4, "the seed is read once");
    }

    #[tokio::test]
    async fn failing_store_admits_one_quota_at_most() {
        let quota = LocalQuota::new();
        let failure = || async { Err::<u64, _>(Error::store("connection refused")) };

        let mut admitted = 0;
        for second in 0..20 {
            let at = NOW + time::Duration::seconds(second);
            admitted += usize::from(take_one_of_five(&quota, at, failure()).await.allowed);
        }

        assert_eq!(admitted, 5);
    }

    #[tokio::test]
    async fn cancelled_read_lets_the_next_request_read() {
        let quota = LocalQuota::new();
        let cancelled = quota.take_seeded("tenant:a", 5, NOW, Mode::Consume, |_| {
            std::future::pending::<Result<u64>>()
        });
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), cancelled).await;

        let next = take_one_of_five(&quota, NOW, async { Ok(2) }).await;

        assert!(timed_out.is_err(), "the pending read never finishes");
        assert_eq!(next.used, 3);
    }

    #[tokio::test]
    async fn new_month_reads_a_new_seed() {
        let quota = LocalQuota::new();
        let months = Mutex::new(Vec::new());
        let read = |month| {
            months.lock().expect("not poisoned").push(month);
            async { Ok(2) }
        };

        quota
            .take_seeded("tenant:a", 5, NOW, Mode::Consume, read)
            .await;
        let next_month = datetime!(2027-01-01 0:00 UTC);
        let outcome = quota
            .take_seeded("tenant:a", 5, next_month, Mode::Consume, read)
            .await;

        assert_eq!(
            *months.lock().expect("not poisoned"),
            [
                QuotaMonth::containing(NOW),
                QuotaMonth::containing(next_month)
            ]
        );
        assert_eq!(outcome.used, 3);
        assert_eq!(outcome.resets_at, datetime!(2027-02-01 0:00 UTC));
    }

    #[tokio::test]
    async fn seeded_peek_counts_nothing() {
        let quota = LocalQuota::new();

        let peeked = quota
            .take_seeded("tenant:a", 5, NOW, Mode::Peek, |_| async { Ok(2) })
            .await;
        let taken = take_one_of_five(&quota, NOW, async { panic!("read twice") }).await;

        assert_eq!(peeked.used, 2);
        assert_eq!(taken.used, 3);
    }

    #[tokio::test]
    async fn reseed_reads_the_stored_count_again() {
        let quota = LocalQuota::new();
        take_one_of_five(&quota, NOW, async { Ok(0) }).await;

        quota.reseed("tenant:a");
        let over = take_one_of_five(&quota, NOW, async { Ok(6) }).await;

        assert!(!over.allowed, "6 stored requests exceed the quota of 5");
        assert_eq!(over.used, 6);
    }

    #[tokio::test]
    async fn reseed_keeps_a_larger_local_count() {
        let quota = LocalQuota::new();
        take_one_of_five(&quota, NOW, async { Ok(0) }).await;
        take_one_of_five(&quota, NOW, async { panic!("read twice") }).await;

        quota.reseed("tenant:a");
        let outcome = take_one_of_five(&quota, NOW, async { Ok(1) }).await;

        assert_eq!(outcome.used, 3, "2 counted here, then this request");
    }

    #[test]
    fn reseed_of_an_unknown_subject_adds_no_count() {
        let quota = LocalQuota::new();

        quota.reseed("tenant:a");

        assert!(quota.lock().0.is_empty());
    }

    #[test]
    fn month_starts_at_its_first_midnight() {
        let month = QuotaMonth::containing(datetime!(2026-03-31 23:30 -01:00));

        assert_eq!(month.starts_at(), datetime!(2026-04-01 0:00 UTC));
        assert_eq!(month.label(), "2026-04");
    }

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
