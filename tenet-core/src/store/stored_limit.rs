//! The columns of a stored rate limit, shared by the SQL backends.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ratelimit::Limit;

/// A limit as the SQL stores keep it: the period in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LimitColumns {
    pub rate: i64,
    pub period_ms: i64,
    pub burst: i64,
    pub shadow: bool,
}

impl LimitColumns {
    pub fn of(limit: &Limit) -> Self {
        Self {
            rate: i64::from(limit.rate()),
            period_ms: i64::try_from(limit.period().as_millis()).unwrap_or(i64::MAX),
            burst: i64::from(limit.burst()),
            shadow: limit.is_shadow(),
        }
    }

    /// Rebuilds the limit; a row that no longer passes [`Limit::new`] is a
    /// store failure, because only checked limits are written.
    pub fn into_limit(self) -> Result<Limit> {
        let invalid = |reason: String| Error::store(format!("invalid stored rate limit: {reason}"));
        let rate = u32::try_from(self.rate).map_err(|err| invalid(err.to_string()))?;
        let burst = u32::try_from(self.burst).map_err(|err| invalid(err.to_string()))?;
        let period_ms = u64::try_from(self.period_ms).map_err(|err| invalid(err.to_string()))?;
        let limit = Limit::new(rate, Duration::from_millis(period_ms), burst)
            .map_err(|err| invalid(err.to_string()))?;
        Ok(if self.shadow { limit.shadow() } else { limit })
    }
}
