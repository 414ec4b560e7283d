//! Usage metering: accepted and rejected requests per tenant, key and UTC
//! hour.
//!
//! Requests are counted in memory and [`crate::Tenet::flush_usage`] adds
//! the counts to the store's hourly rows in one atomic call. Stores add to
//! a row rather than overwrite it, so replicas that flush the same hour sum
//! up. Counts not yet flushed are lost when the process dies; a graceful
//! shutdown flushes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::api::{KeyUsage, UsagePeriod, UsageTotals};
use crate::clock::unix_coarse_millis;
use crate::error::{Error, Result};
use crate::id::{KeyId, TenantId};

/// Maximum range that a usage query or export may cover: 31 days.
pub const MAX_USAGE_RANGE: Duration = Duration::from_secs(31 * 24 * 60 * 60);

const SHARDS: usize = 16;
const HOUR_SECONDS: i64 = 3600;
const DAY_SECONDS: i64 = 24 * HOUR_SECONDS;

/// The outcome of a metered request for the key it presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The key verified and the request went ahead.
    Accepted,
    /// The key is known but was rejected: revoked, expired or missing a
    /// required scope.
    Rejected,
    /// The key verified but a rate limit rejected the request; counted as
    /// rejected.
    RateLimited,
}

/// Requests of one key in one UTC hour, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageCount {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    /// Start of the hour, in UTC.
    pub hour: OffsetDateTime,
    pub accepted: u64,
    pub rejected: u64,
}

impl UsageCount {
    /// Returns an id derived from the tenant, the key and the hour only, so
    /// that exporting the same row twice gives the same id.
    ///
    /// It is the first 16 bytes of a BLAKE3 key derivation over the three
    /// values, shaped as a UUID.
    pub fn event_id(&self) -> Uuid {
        let mut hasher = blake3::Hasher::new_derive_key("tenet usage event id v1");
        hasher.update(self.tenant_id.as_uuid().as_bytes());
        hasher.update(self.key_id.as_uuid().as_bytes());
        hasher.update(&self.hour.unix_timestamp().to_be_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

/// The span of a usage query: hours that start at or after `from` and
/// before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRange {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl UsageRange {
    /// Checks that `from` is before `to` and that the range is at most
    /// [`MAX_USAGE_RANGE`] long.
    pub fn new(from: OffsetDateTime, to: OffsetDateTime) -> Result<Self> {
        if from >= to {
            return Err(Error::invalid(
                "usage range",
                format!(
                    "from ({}) must be before to ({})",
                    rfc3339(from),
                    rfc3339(to)
                ),
            ));
        }
        if to - from > MAX_USAGE_RANGE {
            // The latest allowed `to` shows exactly how far to move it, where
            // a rounded length in hours or days could equal the maximum. The
            // times keep every fractional digit the request gave, because at
            // milliseconds a `to` just past the limit would read as equal.
            return Err(Error::invalid(
                "usage range",
                format!(
                    "to ({}) is more than {} days after from ({}); the latest allowed to is {}",
                    precise(to),
                    MAX_USAGE_RANGE.as_secs() / DAY_SECONDS.unsigned_abs(),
                    precise(from),
                    precise(from + MAX_USAGE_RANGE)
                ),
            ));
        }
        Ok(Self { from, to })
    }
}

/// The length of the periods that a usage report sums into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    /// Parses `hour` or `day`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            other => Err(Error::invalid(
                "granularity",
                format!("is {other:?}; expected hour or day"),
            )),
        }
    }

    /// Returns `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    fn period_start(self, hour: OffsetDateTime) -> OffsetDateTime {
        let seconds = match self {
            Granularity::Hour => HOUR_SECONDS,
            Granularity::Day => DAY_SECONDS,
        };
        floor(hour.unix_timestamp(), seconds)
    }
}

/// Sums hourly counts, ordered by hour, into the whole range's totals and
/// one entry per period, with each period's keys ordered by key id.
pub fn summarize(
    counts: &[UsageCount],
    granularity: Granularity,
) -> (UsageTotals, Vec<UsagePeriod>) {
    let mut totals = UsageTotals::default();
    let mut periods: Vec<UsagePeriod> = Vec::new();
    for count in counts {
        totals.accepted += count.accepted;
        totals.rejected += count.rejected;

        let start = granularity.period_start(count.hour);
        if periods.last().is_none_or(|period| period.start != start) {
            periods.push(UsagePeriod {
                start,
                accepted: 0,
                rejected: 0,
                keys: Vec::new(),
            });
        }
        let Some(period) = periods.last_mut() else {
            continue;
        };
        period.accepted += count.accepted;
        period.rejected += count.rejected;
        match period
            .keys
            .iter_mut()
            .find(|key| key.key_id == count.key_id)
        {
            Some(key) => {
                key.accepted += count.accepted;
                key.rejected += count.rejected;
            }
            None => period.keys.push(KeyUsage {
                key_id: count.key_id,
                accepted: count.accepted,
                rejected: count.rejected,
            }),
        }
    }
    for period in &mut periods {
        period.keys.sort_by_key(|key| key.key_id);
    }
    (totals, periods)
}

/// One hour of one key, as counted in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    tenant_id: TenantId,
    key_id: KeyId,
    /// Unix seconds at the start of the hour.
    hour: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    accepted: u64,
    rejected: u64,
}

/// Counts per tenant, key and hour since the last flush.
///
/// Recording locks one shard for a map update and never awaits while
/// holding it; a flush drains the maps, which keeps their capacity. Each
/// recording thread has its own shard, so that the server's workers do
/// not contend for one lock when a single key makes most requests. A
/// slot may therefore be counted in several shards, which a flush adds
/// up.
///
/// The maps hash with foldhash rather than SipHash: every verified request
/// records, and the slots' ids are server-generated, so a client cannot
/// choose colliding keys.
#[derive(Debug)]
pub(crate) struct UsageRecorder {
    shards: Box<[Mutex<Counters>]>,
    /// Held for writing by a flush from its [`take`](Self::take) until its
    /// counts are in the store or restored. A quota count that adds the
    /// stored and the pending counts takes it for reading, so that no count
    /// is in flight between the two and the sum finds each one once.
    pub(crate) flush_gate: tokio::sync::RwLock<()>,
}

type Counters = HashMap<Slot, Counts, foldhash::fast::RandomState>;

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            flush_gate: tokio::sync::RwLock::default(),
        }
    }
}

impl UsageRecorder {
    /// Counts one request of `key` in the current hour.
    pub(crate) fn record(&self, tenant: TenantId, key: KeyId, outcome: Outcome) {
        // The coarse clock, because the hour is all that counts: a request
        // within one tick after an hour starts may count in the hour before.
        let hour = i64::try_from(unix_coarse_millis() / 1000).unwrap_or(i64::MAX);
        let slot = Slot {
            tenant_id: tenant,
            key_id: key,
            hour: hour - hour.rem_euclid(HOUR_SECONDS),
        };
        let (accepted, rejected) = match outcome {
            Outcome::Accepted => (1, 0),
            Outcome::Rejected | Outcome::RateLimited => (0, 1),
        };
        self.add(slot, accepted, rejected);
    }

    fn add(&self, slot: Slot, accepted: u64, rejected: u64) {
        let mut shard = self.shard();
        let counts = shard.entry(slot).or_default();
        counts.accepted = counts.accepted.saturating_add(accepted);
        counts.rejected = counts.rejected.saturating_add(rejected);
    }

    /// Removes and returns every count.
    pub(crate) fn take(&self) -> Vec<UsageCount> {
        let mut merged = Counters::default();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (slot, counts) in shard.drain() {
                let total = merged.entry(slot).or_default();
                total.accepted = total.accepted.saturating_add(counts.accepted);
                total.rejected = total.rejected.saturating_add(counts.rejected);
            }
        }
        merged
            .into_iter()
            .map(|(slot, counts)| UsageCount {
                tenant_id: slot.tenant_id,
                key_id: slot.key_id,
                hour: floor(slot.hour, HOUR_SECONDS),
                accepted: counts.accepted,
                rejected: counts.rejected,
            })
            .collect()
    }

    /// Returns the accepted requests of `tenant` counted here and not yet
    /// taken, in the hours that start within `range`.
    pub(crate) fn accepted_pending(&self, tenant: TenantId, range: UsageRange) -> u64 {
        let (from, to) = (range.from.unix_timestamp(), range.to.unix_timestamp());
        let mut accepted = 0_u64;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (slot, counts) in shard.iter() {
                if slot.tenant_id == tenant && (from..to).contains(&slot.hour) {
                    accepted = accepted.saturating_add(counts.accepted);
                }
            }
        }
        accepted
    }

    /// Adds back counts that a failed flush took.
    pub(crate) fn restore(&self, counts: &[UsageCount]) {
        for count in counts {
            let slot = Slot {
                tenant_id: count.tenant_id,
                key_id: count.key_id,
                hour: count.hour.unix_timestamp(),
            };
            self.add(slot, count.accepted, count.rejected);
        }
    }

    /// Locks the calling thread's shard.
    fn shard(&self) -> MutexGuard<'_, Counters> {
        static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        self.shards[SHARD.with(|index| *index)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Formats a time for a message, falling back to `Display` for a year
/// that RFC 3339 cannot express.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    crate::timestamp::format(at)
}

/// Formats `at` in RFC 3339 with as many fractional digits as it has, up
/// to nanoseconds.
fn precise(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| rfc3339(at))
}

/// Returns the UTC time of `seconds` rounded down to a multiple of
/// `period` seconds.
fn floor(seconds: i64, period: i64) -> OffsetDateTime {
    let start = seconds - seconds.rem_euclid(period);
    // The hour start of any valid `OffsetDateTime` is valid too.
    OffsetDateTime::from_unix_timestamp(start).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn count(key: KeyId, hour: OffsetDateTime, accepted: u64, rejected: u64) -> UsageCount {
        UsageCount {
            tenant_id: TenantId::from_uuid(Uuid::nil()),
            key_id: key,
            hour,
            accepted,
            rejected,
        }
    }

    #[test]
    fn recorder_sums_per_slot() {
        let recorder = UsageRecorder::default();
        let (tenant, key) = (TenantId::generate(), KeyId::generate());

        for _ in 0..3 {
            recorder.record(tenant, key, Outcome::Accepted);
        }
        recorder.record(tenant, key, Outcome::Rejected);
        recorder.record(tenant, key, Outcome::RateLimited);
        let taken = recorder.take();

        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].accepted, 3);
        assert_eq!(taken[0].rejected, 2);
        assert_eq!(taken[0].hour.minute(), 0);
        assert_eq!(taken[0].hour.second(), 0);
        assert!(recorder.take().is_empty());
    }

    #[test]
    fn counts_of_several_threads_add_up() {
        let recorder = UsageRecorder::default();
        let (tenant, key) = (TenantId::generate(), KeyId::generate());

        std::thread::scope(|threads| {
            for _ in 0..SHARDS + 1 {
                threads.spawn(|| {
                    for _ in 0..100 {
                        recorder.record(tenant, key, Outcome::Accepted);
                    }
                    recorder.record(tenant, key, Outcome::Rejected);
                });
            }
        });
        let counts = recorder.take();

        let threads = u64::try_from(SHARDS + 1).expect("a small count");
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].accepted, 100 * threads);
        assert_eq!(counts[0].rejected, threads);
    }

    #[test]
    fn restore_adds_to_new_counts() {
        let recorder = UsageRecorder::default();
        let (tenant, key) = (TenantId::generate(), KeyId::generate());
        recorder.record(tenant, key, Outcome::Accepted);
        let failed = recorder.take();

        recorder.record(tenant, key, Outcome::Accepted);
        recorder.restore(&failed);

        assert_eq!(recorder.take()[0].accepted, 2);
    }

    #[test]
    fn event_id_ignores_the_counts() {
        let key = KeyId::generate();
        let hour = datetime!(2026-12-04 15:00 UTC);

        let first = count(key, hour, 1, 0).event_id();
        let recounted = count(key, hour, 7, 3).event_id();
        let next_hour = count(key, hour + Duration::from_secs(3600), 1, 0).event_id();

        assert_eq!(first, recounted);
        assert_ne!(first, next_hour);
    }

    #[test]
    fn summarize_sums_days_and_keys() {
        let (a, b) = (KeyId::generate(), KeyId::generate());
        let counts = [
            count(a, datetime!(2026-12-03 23:00 UTC), 1, 0),
            count(a, datetime!(2026-12-04 00:00 UTC), 2, 1),
            count(b, datetime!(2026-12-04 00:00 UTC), 4, 0),
            count(a, datetime!(2026-12-04 05:00 UTC), 8, 0),
        ];

        let (totals, days) = summarize(&counts, Granularity::Day);
        let (_, hours) = summarize(&counts, Granularity::Hour);

        assert_eq!((totals.accepted, totals.rejected), (15, 1));
        assert_eq!(days.len(), 2);
        assert_eq!(days[1].start, datetime!(2026-12-04 00:00 UTC));
        assert_eq!(days[1].accepted, 14);
        let key_a = days[1].keys.iter().find(|key| key.key_id == a);
        assert_eq!(key_a.map(|key| key.accepted), Some(10));
        assert_eq!(hours.len(), 3);
    }

    #[test]
    fn range_is_checked() {
        let from = datetime!(2026-12-01 00:00 UTC);

        assert!(UsageRange::new(from, from).is_err(), "empty");
        assert!(UsageRange::new(from, from - Duration::from_secs(1)).is_err());
        assert!(UsageRange::new(from, from + MAX_USAGE_RANGE).is_ok());
        let over = from + MAX_USAGE_RANGE + Duration::from_secs(1);
        assert!(UsageRange::new(from, over).is_err(), "too long");
    }

    #[test]
    fn long_range_error_names_latest_to() {
        let from = datetime!(2026-11-05 00:00 UTC);
        let to = datetime!(2026-12-06 00:00:00.001 UTC);

        let message = UsageRange::new(from, to)
            .expect_err("a millisecond over 31 days")
            .to_string();

        assert!(
            message.contains("the latest allowed to is 2026-12-06T00:00:00Z"),
            "{message}"
        );
        assert!(
            message.contains("to (2026-12-06T00:00:00.001Z)"),
            "{message}"
        );

        let just_over = datetime!(2026-12-06 00:00:00.000_000_001 UTC);
        let message = UsageRange::new(from, just_over)
            .expect_err("a nanosecond over 31 days")
            .to_string();
        assert!(
            message.contains("to (2026-12-06T00:00:00.000000001Z)"),
            "{message}"
        );
    }
}
