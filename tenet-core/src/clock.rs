//! Cache time: a coarse monotonic clock in milliseconds, and the coarse
//! wall clock that key expiry checks read first.
//!
//! A warm verification reads the clock once, so its cost counts. The exact
//! monotonic clock (`clock_gettime(CLOCK_MONOTONIC)` through the vDSO)
//! reads the CPU's time stamp counter and costs about as much as the keyed
//! digest of the key. On Linux, cache time reads `CLOCK_MONOTONIC_COARSE`
//! instead, which returns the time of the last timer tick from memory the
//! kernel shares with the process, without reading the counter.
//!
//! # Precision
//! A coarse reading is never later than the exact time and lags it by less
//! than one tick, the coarse clock's resolution ([`CacheClock::tick`]: 4 ms
//! with the usual `CONFIG_HZ=250`, 1 ms at most elsewhere). Hence:
//! - a cache TTL decision may come late by at most one tick: an entry may
//!   serve up to one tick past its TTL;
//! - the staleness bound is kept exact: [`crate::cache::CacheLayer`] trusts
//!   entries for the bound minus one tick, so a replica that cannot confirm
//!   its feed stops trusting an entry no later than the bound after its
//!   read;
//! - key expiry is exact: [`crate::expiry::Expiry::has_passed`] reads the
//!   coarse wall clock and reads the exact one only within
//!   [`EXACT_EXPIRY_WINDOW`] of the expiry, far more than one tick;
//! - recorded uses (`last_used_at`) may read up to one tick early;
//! - a usage count may fall in the hour before its request's, when the
//!   request came within one tick after the hour started.
//!
//! Elsewhere than Linux both clocks fall back to the exact ones, with a
//! tick of zero.

#[cfg(test)]
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::local::Millis;

/// The time before a key's expiry, in milliseconds, within which its
/// expiry check reads the exact wall clock. The coarse wall clock lags by
/// one tick at most, so one second leaves room for ticks delayed far
/// beyond their period.
pub(crate) const EXACT_EXPIRY_WINDOW: Millis = 1_000;

/// The clock of one cache: milliseconds since its creation, read from the
/// coarse monotonic clock.
#[derive(Debug, Clone)]
pub(crate) struct CacheClock {
    /// The coarse monotonic reading, in milliseconds, at cache time 0.
    origin: Millis,
    /// The coarse clock's resolution in whole milliseconds, rounded up.
    tick: Millis,
    /// A clock that tests set by hand, in place of the system's.
    #[cfg(test)]
    manual: Option<ManualClock>,
}

impl CacheClock {
    /// Starts a clock at cache time 0.
    pub(crate) fn new() -> Self {
        Self {
            origin: monotonic_coarse_millis(),
            tick: tick_millis(),
            #[cfg(test)]
            manual: None,
        }
    }

    /// Returns a clock that reads `manual`, for tests.
    #[cfg(test)]
    pub(crate) fn manual(manual: ManualClock) -> Self {
        Self {
            origin: 0,
            tick: manual.tick,
            manual: Some(manual),
        }
    }

    /// Returns the current cache time. It never runs ahead of the exact
    /// time since the clock started and lags it by less than one tick.
    #[inline]
    pub(crate) fn now(&self) -> Millis {
        #[cfg(test)]
        if let Some(manual) = &self.manual {
            return manual.now();
        }
        monotonic_coarse_millis().saturating_sub(self.origin)
    }

    /// Returns the coarse clock's resolution: how far, at most, a reading
    /// lags the exact time.
    pub(crate) fn tick(&self) -> Millis {
        self.tick
    }
}

/// A cache clock that a test moves by hand, with the coarse clock's tick.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct ManualClock {
    now: Arc<AtomicU64>,
    tick: Millis,
}

#[cfg(test)]
impl ManualClock {
    pub(crate) fn new(tick: Millis) -> Self {
        Self {
            now: Arc::default(),
            tick,
        }
    }

    pub(crate) fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    pub(crate) fn set(&self, now: Millis) {
        self.now.store(now, Ordering::SeqCst);
    }
}

/// Returns Unix milliseconds from the coarse wall clock, which lags the
/// exact one by less than one tick and never runs ahead of it.
#[cfg(target_os = "linux")]
pub(crate) fn unix_coarse_millis() -> Millis {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    timespec_millis(now.tv_sec, now.tv_nsec)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn unix_coarse_millis() -> Millis {
    unix_exact_millis()
}

/// Returns Unix milliseconds from the exact wall clock.
pub(crate) fn unix_exact_millis() -> Millis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(target_os = "linux")]
fn monotonic_coarse_millis() -> Millis {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    timespec_millis(now.tv_sec, now.tv_nsec)
}

#[cfg(target_os = "linux")]
fn tick_millis() -> Millis {
    let resolution = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
    let nanos = u64::try_from(resolution.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(resolution.tv_nsec).unwrap_or(0));
    nanos.div_ceil(1_000_000)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_coarse_millis() -> Millis {
    use std::sync::OnceLock;
    use std::time::Instant;

    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(not(target_os = "linux"))]
fn tick_millis() -> Millis {
    0
}

#[cfg(target_os = "linux")]
fn timespec_millis(seconds: i64, nanos: i64) -> Millis {
    // Both clocks read non-negative values: the monotonic one counts from
    // boot and the wall clock from 1970 on any sane host.
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let nanos = u64::try_from(nanos).unwrap_or(0);
    seconds
        .saturating_mul(1_000)
        .saturating_add(nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn duration_millis(duration: Duration) -> Millis {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    /// Lag beyond a tick is not asserted: on a loaded virtual machine a
    /// tick can come late, which the expiry window allows for.
    const LAG_LIMIT: Millis = EXACT_EXPIRY_WINDOW;

    #[test]
    fn cache_time_never_runs_ahead() {
        let clock = CacheClock::new();
        let started = Instant::now();

        for _ in 0..100_000 {
            let before = duration_millis(started.elapsed());
            let now = clock.now();
            let after = duration_millis(started.elapsed());

            // The coarse origin may itself lag by up to a tick, and
            // milliseconds truncate on both sides.
            assert!(
                now <= after + clock.tick() + 1,
                "{now} ran ahead of {after}"
            );
            assert!(now + LAG_LIMIT >= before, "{now} lags {before}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tick_is_a_few_milliseconds() {
        let tick = tick_millis();

        assert!((1..=10).contains(&tick), "tick {tick} ms");
    }

    #[test]
    fn coarse_wall_clock_never_runs_ahead() {
        for _ in 0..100_000 {
            let coarse = unix_coarse_millis();
            let exact = unix_exact_millis();

            assert!(coarse <= exact, "coarse {coarse} after exact {exact}");
            assert!(exact - coarse < LAG_LIMIT, "coarse {coarse} lags {exact}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_set() {
        let manual = ManualClock::new(4);
        let clock = CacheClock::manual(manual.clone());

        assert_eq!(clock.now(), 0);
        manual.set(1_234);
        assert_eq!(clock.now(), 1_234);
        assert_eq!(clock.tick(), 4);
    }
}
