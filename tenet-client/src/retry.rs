//! Retries of idempotent requests, with exponential backoff and jitter.

use std::time::Duration;

use reqwest::Method;

/// How often and how patiently a client retries.
///
/// Only idempotent requests (GET, PUT, DELETE) are retried, and only after
/// a 503 or a failed connection, so a retry never repeats a request that
/// the server may have applied, except a PUT or DELETE, whose repeat is
/// harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// Upper bound of the backoff, before jitter.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Returns whether a request with this method may be sent again.
    pub fn is_idempotent(method: &Method) -> bool {
        matches!(*method, Method::GET | Method::PUT | Method::DELETE)
    }

    /// Returns the wait before retry number `retry` (1 for the first).
    ///
    /// The wait is drawn uniformly from the upper half of the capped
    /// exponential delay, so that clients which failed together do not
    /// retry together, while each still waits at least half the delay.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let delay = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);

        let half = delay / 2;
        let spread = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = match spread {
            0 => 0,
            spread => random_u64() % (spread + 1),
        };
        half + Duration::from_nanos(jitter)
    }
}

/// Returns a random number from the operating system; a failed read gives
/// 0, which only removes the jitter of one wait.
fn random_u64() -> u64 {
    getrandom::u64().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let cases = [
            (1, Duration::from_millis(100)),
            (2, Duration::from_millis(200)),
            (3, Duration::from_millis(350)),
            (9, Duration::from_millis(350)),
            (40, Duration::from_millis(350)),
        ];

        for (retry, delay) in cases {
            for _ in 0..50 {
                let wait = policy.backoff(retry);

                assert!(wait >= delay / 2, "retry {retry}: {wait:?}");
                assert!(wait <= delay, "retry {retry}: {wait:?}");
            }
        }
    }

    #[test]
    fn only_get_put_delete_are_idempotent() {
        assert!(RetryPolicy::is_idempotent(&Method::GET));
        assert!(RetryPolicy::is_idempotent(&Method::PUT));
        assert!(RetryPolicy::is_idempotent(&Method::DELETE));
        assert!(!RetryPolicy::is_idempotent(&Method::POST));
        assert!(!RetryPolicy::is_idempotent(&Method::PATCH));
    }
}
