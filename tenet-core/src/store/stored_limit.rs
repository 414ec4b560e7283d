//! The columns of a stored rate limit, shared by the SQL backends.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ratelimit::{Limit, TenantLimits};

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

/// Rebuilds a tenant's limits from the nullable columns of its limits row.
/// A limit needs its rate, period and burst, and `shadow` defaults to false.
/// A negative stored quota reads as no quota.
pub fn tenant_limits_of(
    rate: Option<i64>,
    period_ms: Option<i64>,
    burst: Option<i64>,
    shadow: Option<bool>,
    quota: Option<i64>,
) -> Result<TenantLimits> {
    let limit = match (rate, period_ms, burst) {
        (Some(rate), Some(period_ms), Some(burst)) => Some(
            LimitColumns {
                rate,
                period_ms,
                burst,
                shadow: shadow.unwrap_or(false),
            }
            .into_limit()?,
        ),
        _ => None,
    };
    Ok(TenantLimits {
        limit,
        monthly_quota: quota.and_then(|quota| u64::try_from(quota).ok()),
    })
}
