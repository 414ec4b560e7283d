//! The in-process limiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Check, Decision, Mode, Subject, evaluate, require_checks, step};
use crate::error::Result;

/// A source of the current time in milliseconds since the Unix epoch.
/// Tests inject one to move time without sleeping.
pub trait Clock: Send + Sync {
    /// Returns the current time in milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// Returns a time never later than [`Clock::now_millis`], from a
    /// cheaper source where there is one. The limiter reads it to find
    /// that nothing it stores can decide, and the exact time otherwise.
    fn lagging_millis(&self) -> u64 {
        self.now_millis()
    }
}

impl<F: Fn() -> u64 + Send + Sync> Clock for F {
    fn now_millis(&self) -> u64 {
        self()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }

    /// Reads the coarse wall clock, which lags the exact one by less than
    /// one timer tick and reads no time stamp counter.
    fn lagging_millis(&self) -> u64 {
        crate::clock::unix_coarse_millis()
    }
}

/// Converts a clock reading to microseconds, the unit of the stored TATs.
fn micros(millis: u64) -> i64 {
    i64::try_from(millis)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// Entries kept before the first sweep for drained TATs.
const FIRST_SWEEP_AT: usize = 1024;

/// GCRA limits kept in this process.
///
/// Memory stays bounded by the subjects active within their limits'
/// tolerances: once the map doubles in size since the last sweep, entries
/// whose TAT has passed are dropped, because a missing entry and a drained
/// one decide alike.
pub struct LocalLimiter {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// The latest TAT ever stored, in microseconds. Once it has passed,
    /// every stored entry is drained and decides like a missing one, so
    /// [`LocalLimiter::allows`] needs neither the lock nor a lookup.
    latest_tat: AtomicI64,
}

#[derive(Debug)]
struct State {
    tats: HashMap<Subject, i64>,
    sweep_at: usize,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// Builds a limiter on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// Builds a limiter on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::new(State {
                tats: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
            }),
            latest_tat: AtomicI64::new(i64::MIN),
        }
    }

    /// Decides one request against every check, consuming from all of
    /// them or, when any enforced check rejects, from none.
    ///
    /// Fails only on an empty `checks`.
    pub fn decide(&self, checks: &[Check], mode: Mode) -> Result<Decision> {
        require_checks(checks)?;
        let now = self.now_micros();

        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let stored: Vec<Option<i64>> = checks
            .iter()
            .map(|check| state.tats.get(check.subject()).copied())
            .collect();
        let (decision, writes) = evaluate(checks, &stored, now, mode);

        for (check, write) in checks.iter().zip(writes) {
            if let Some(tat) = write {
                state.tats.insert(check.subject().clone(), tat);
                self.latest_tat.fetch_max(tat, Ordering::Relaxed);
            }
        }
        if state.tats.len() >= state.sweep_at {
            state.tats.retain(|_, tat| *tat > now);
            state.sweep_at = (state.tats.len() * 2).max(FIRST_SWEEP_AT);
            tracing::trace!(
                entries = state.tats.len(),
                "dropped drained rate limit entries"
            );
        }
        Ok(decision)
    }

    /// Returns whether a request would pass `check` now, changing nothing:
    /// the `allowed` of a [`Mode::Peek`] decision on `check` alone.
    ///
    /// It builds no [`Decision`], so it allocates nothing; the server runs
    /// it on every authenticated request, and builds the decision only for
    /// a rejection.
    ///
    /// While no stored entry can decide (every TAT has passed, as when no
    /// limit has been hit for a while), it takes no lock, so that the
    /// server's workers do not contend for it on every request. A TAT that
    /// another thread stores meanwhile orders this check before that
    /// write.
    pub fn allows(&self, check: &Check) -> bool {
        // A lagging time that has passed every TAT proves the exact one
        // has too. Whether a subject without an entry conforms depends on
        // its limit alone, not on the time.
        let lagging = micros(self.clock.lagging_millis());
        let (stored, now) = if self.latest_tat.load(Ordering::Relaxed) <= lagging {
            (None, lagging)
        } else {
            let now = self.now_micros();
            let state = self
                .state
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            (state.tats.get(check.subject()).copied(), now)
        };

        let (_, _, conforms) = step(check.limit(), stored, now);
        conforms || check.limit().shadow
    }

    /// The clock's time in microseconds, the unit of the stored TATs.
    fn now_micros(&self) -> i64 {
        micros(self.clock.now_millis())
    }

    /// Returns the number of subjects currently stored.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .tats
            .len()
    }

    /// Returns whether no subject is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
