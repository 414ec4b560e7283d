//! Rate limits enforced with GCRA, in process and on Redis.
//!
//! GCRA (generic cell rate algorithm) stores one theoretical arrival time
//! (TAT) per limited subject. Each request moves the TAT one emission
//! interval (`period / rate`) later, starting from now if the TAT lies in
//! the past. A request conforms when the moved TAT is at most `burst`
//! intervals ahead of now. There are no fixed windows, so no window edge
//! lets two bursts through back to back: in any span of length `W` at most
//! `burst + rate * W / period` requests conform.
//!
//! A [`Decision`] checks several limits at once (a tenant's and a key's)
//! and moves no TAT when any enforced limit rejects. [`LocalLimiter`] keeps
//! TATs in process; [`RedisLimiter`] keeps them in Redis and decides in one
//! Lua script on the Redis clock, so replicas share one budget.
//!
//! Monthly quotas are counted by [`LocalQuota`] in process and by
//! [`RedisLimiter::take_quota`] in Redis.
//!
//! # Fallback
//! When [`RedisLimiter::decide`] returns an error, the intended fallback is
//! a [`LocalLimiter`] enforcing [`Limit::per_replica`] with the replica
//! count, so the replicas together stay near the shared limit.
//!
//! All times are integer microseconds, which stay exact in the doubles of
//! Redis Lua (below 2^53 until the year 2255).

mod local;
mod quota;
mod redis;

pub use local::{Clock, LocalLimiter, SystemClock};
pub use quota::{LocalQuota, QuotaMonth, QuotaOutcome, SEED_RETRY_INTERVAL};
pub use redis::{RedisLimiter, RedisLimiterError};

use std::time::Duration;

use crate::error::{Error, Result};

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Upper bound of `burst * emission interval`, in microseconds (about 1.1
/// years), so that sums of times stay exact in Redis Lua doubles.
const MAX_TOLERANCE_MICROS: i64 = 1 << 45;

/// Formats a period in seconds for an error message. Whole seconds print
/// as the exact integer that the request gave as `period_seconds`, because
/// an `f64` rounds values above 2^53. A fraction prints as a decimal.
fn format_seconds(period: Duration) -> String {
    if period.subsec_nanos() == 0 {
        period.as_secs().to_string()
    } else {
        period.as_secs_f64().to_string()
    }
}

/// A rate (`rate` requests per `period`) with a burst allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    rate: u32,
    period: Duration,
    burst: u32,
    shadow: bool,
}

impl Limit {
    /// Builds a limit of `rate` requests per `period`, of which up to
    /// `burst` may arrive at once.
    ///
    /// Rejects a zero rate, burst or period, an interval below one
    /// microsecond, and a `burst * period / rate` above about 1.1 years.
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Self> {
        let limit = Self {
            rate,
            period,
            burst,
            shadow: false,
        };
        let seconds = format_seconds(period);
        if rate == 0 || burst == 0 || period.is_zero() {
            return Err(Error::invalid(
                "rate limit",
                format!("rate {rate}, burst {burst} and period {seconds} s must all be above zero"),
            ));
        }
        if limit.interval_micros() < 1 {
            return Err(Error::invalid(
                "rate limit",
                format!("rate {rate} per {seconds} s is above one request per microsecond"),
            ));
        }
        if limit.tolerance_micros() > MAX_TOLERANCE_MICROS {
            return Err(Error::invalid(
                "rate limit",
                format!(
                    "burst {burst} at rate {rate} per {seconds} s spans more than 2^45 µs; \
                     lower the burst or raise the rate"
                ),
            ));
        }
        Ok(limit)
    }

    /// Returns this limit in shadow mode: a would-be rejection is counted
    /// and reported in [`LimitOutcome::conforms`] but lets the request
    /// through, so a new limit can be observed before it is enforced.
    pub fn shadow(self) -> Self {
        Self {
            shadow: true,
            ..self
        }
    }

    /// Returns the share of this limit that one of `replicas` replicas
    /// enforces on its own while the shared Redis limiter is unavailable:
    /// rate and burst divided by the replica count, each at least 1.
    pub fn per_replica(&self, replicas: u32) -> Result<Self> {
        let replicas = replicas.max(1);
        let limit = Self::new(
            (self.rate / replicas).max(1),
            self.period,
            (self.burst / replicas).max(1),
        )?;
        Ok(Self {
            shadow: self.shadow,
            ..limit
        })
    }

    /// Returns the number of requests per [`Limit::period`].
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Returns the period that [`Limit::rate`] counts over.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Returns the burst, the value of a `RateLimit-Limit` header.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Returns whether this limit only reports.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Returns the emission interval: the time one request occupies.
    ///
    /// NOTE: the interval is rounded down to whole microseconds, so a rate
    /// that does not divide the period runs faster by under one part in
    /// the interval (for 3 per second, one in 333,333).
    pub(crate) fn interval_micros(&self) -> i64 {
        let period = i64::try_from(self.period.as_micros()).unwrap_or(i64::MAX);
        period / i64::from(self.rate)
    }

    /// Returns how far ahead of now the TAT may run: `burst` intervals.
    pub(crate) fn tolerance_micros(&self) -> i64 {
        self.interval_micros().saturating_mul(i64::from(self.burst))
    }
}

/// The maximum monthly quota, chosen so that counts stay exact
/// in the signed 64-bit integers of the SQL stores and Redis.
pub const MAX_MONTHLY_QUOTA: u64 = 1 << 50;

/// A tenant's stored limits: a rate limit shared by all its keys and a
/// monthly request quota, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// The rate limit that every key of the tenant draws on together.
    pub limit: Option<Limit>,
    /// The maximum number of requests the tenant's keys may make in one
    /// calendar month (UTC), at most [`MAX_MONTHLY_QUOTA`].
    pub monthly_quota: Option<u64>,
}

impl TenantLimits {
    /// Checks the quota bound; [`Limit::new`] checked the rate limit.
    pub fn validate(&self) -> Result<()> {
        match self.monthly_quota {
            Some(0) => Err(Error::invalid(
                "monthly_quota",
                "is 0; give a quota of at least 1, or null for no quota",
            )),
            Some(quota) if quota > MAX_MONTHLY_QUOTA => Err(Error::invalid(
                "monthly_quota",
                format!("is {quota}; it must be at most {MAX_MONTHLY_QUOTA}"),
            )),
            _ => Ok(()),
        }
    }
}

/// One limit applied to one subject, such as a tenant or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    subject: Subject,
    limit: Limit,
}

/// The tenant, key or client address that a [`Check`] limits. Its
/// `Display` form names it in Redis keys: `tenant:<id>:<interval>:<burst>`
/// or `key:<id>:<interval>:<burst>`, with the limit's emission interval in
/// microseconds, or `client:<address>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A tenant or a key, by its full name.
    Named(String),
    /// A client address. It stays unformatted, because every authenticated
    /// request checks its client's failures, and formatting the address
    /// cost more than the rest of that check.
    Client(std::net::IpAddr),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Named(name) => f.write_str(name),
            Subject::Client(address) => write!(f, "client:{address}"),
        }
    }
}

impl Check {
    /// Applies `limit` to the tenant `tenant_id`.
    ///
    /// The subject names the limit's interval and burst too, so that a
    /// tenant whose limit changes shape starts the new one with its full
    /// burst. A stored TAT is in the old limit's terms: a backlog that one
    /// request makes under 1 an hour would block a limit of 100 a minute
    /// for the rest of the hour. Switching `shadow` alone keeps the state,
    /// so that enforcing a watched limit goes on from what it watched.
    /// Going back to an earlier shape finds that shape's state, until it
    /// drains.
    pub fn tenant(tenant_id: impl std::fmt::Display, limit: Limit) -> Self {
        Self {
            subject: Subject::Named(format!(
                "tenant:{tenant_id}:{}:{}",
                limit.interval_micros(),
                limit.burst
            )),
            limit,
        }
    }

    /// Applies `limit` to the key `key_id`, with the limit in the subject
    /// as for [`Check::tenant`]. Pass the key id, never the API key itself,
    /// because the id becomes part of a Redis key name.
    pub fn key(key_id: impl std::fmt::Display, limit: Limit) -> Self {
        Self {
            subject: Subject::Named(format!(
                "key:{key_id}:{}:{}",
                limit.interval_micros(),
                limit.burst
            )),
            limit,
        }
    }

    /// Applies `limit` to failed authentication attempts from the client
    /// address `client`.
    pub fn client(client: std::net::IpAddr, limit: Limit) -> Self {
        Self {
            subject: Subject::Client(client),
            limit,
        }
    }

    /// Returns this check with its limit cut to one replica's share; see
    /// [`Limit::per_replica`].
    pub fn per_replica(&self, replicas: u32) -> Result<Self> {
        Ok(Self {
            subject: self.subject.clone(),
            limit: self.limit.per_replica(replicas)?,
        })
    }

    /// Returns what this check limits.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Returns the limit applied.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }
}

/// Whether a decision consumes from the limits it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Counts the request when it is allowed.
    Consume,
    /// Reports what [`Mode::Consume`] would decide and changes nothing.
    Peek,
}

/// The state of one checked limit after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOutcome {
    /// Whether this request fits the limit. A shadow limit may report
    /// `false` in an allowed decision.
    pub conforms: bool,
    /// Whether the limit is in shadow mode.
    pub shadow: bool,
    /// The limit's burst.
    pub limit: u32,
    /// Requests that would still conform right after this decision.
    pub remaining: u32,
    /// Whole seconds, rounded up, until the limit's full burst is
    /// available again.
    pub reset_secs: u64,
    /// Whole seconds, rounded up and at least 1, until a request conforms
    /// again; `None` when this one conforms.
    pub retry_after_secs: Option<u64>,
}

/// The result of checking one request against its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed: every enforced limit conforms.
    pub allowed: bool,
    /// Whether some shadow limit would have rejected the request.
    pub shadow_rejected: bool,
    /// The `RateLimit-Limit` value: the burst of the reported limit. The
    /// reported limit is the enforced one with the longest retry-after
    /// when rejected, and otherwise the one with the fewest remaining.
    pub limit: u32,
    /// The `RateLimit-Remaining` value of the reported limit.
    pub remaining: u32,
    /// The `RateLimit-Reset` value of the reported limit, in seconds.
    pub reset_secs: u64,
    /// The `Retry-After` value in seconds when rejected, at least 1.
    pub retry_after_secs: Option<u64>,
    /// One outcome per check, in the order given.
    pub outcomes: Vec<LimitOutcome>,
}

/// Decides one request from the stored TATs (`None` for no entry) and the
/// current time. Returns the decision and, per check, the TAT to store
/// (`None` to leave the entry alone).
///
/// The Redis script makes the same choice; this function also derives the
/// header values from the TATs the script read.
pub(crate) fn evaluate(
    checks: &[Check],
    stored: &[Option<i64>],
    now: i64,
    mode: Mode,
) -> (Decision, Vec<Option<i64>>) {
    let moved: Vec<(i64, i64, bool)> = checks
        .iter()
        .zip(stored)
        .map(|(check, tat)| step(&check.limit, *tat, now))
        .collect();

    let allowed = checks
        .iter()
        .zip(&moved)
        .all(|(check, &(_, _, conforms))| conforms || check.limit.shadow);
    let consume = allowed && mode == Mode::Consume;

    let mut writes = Vec::with_capacity(checks.len());
    let mut outcomes = Vec::with_capacity(checks.len());
    for (check, &(tat, next, conforms)) in checks.iter().zip(&moved) {
        // A shadow limit that would reject keeps its TAT, as an enforced
        // one would, so its reports show what enforcing it would do.
        let write = consume && conforms;
        writes.push(write.then_some(next));
        outcomes.push(outcome(&check.limit, now, tat, next, conforms, write));
    }

    let reported = report_index(&outcomes, allowed);
    let headline = &outcomes[reported];
    let decision = Decision {
        allowed,
        shadow_rejected: outcomes.iter().any(|o| o.shadow && !o.conforms),
        limit: headline.limit,
        remaining: headline.remaining,
        reset_secs: headline.reset_secs,
        retry_after_secs: if allowed {
            None
        } else {
            headline.retry_after_secs
        },
        outcomes,
    };
    (decision, writes)
}

/// Returns the TAT that a request at `now` starts from, the TAT after it,
/// and whether it conforms to `limit`, given the `stored` TAT.
pub(crate) fn step(limit: &Limit, stored: Option<i64>, now: i64) -> (i64, i64, bool) {
    let tat = stored.unwrap_or(now).max(now);
    let next = tat + limit.interval_micros();
    let conforms = next - now <= limit.tolerance_micros();
    (tat, next, conforms)
}

fn outcome(
    limit: &Limit,
    now: i64,
    tat: i64,
    next: i64,
    conforms: bool,
    consumed: bool,
) -> LimitOutcome {
    let interval = limit.interval_micros();
    let tolerance = limit.tolerance_micros();
    let state = if consumed { next } else { tat };

    let remaining = if conforms {
        ((now + tolerance - state) / interval).clamp(0, i64::from(limit.burst))
    } else {
        0
    };
    let retry_after = (!conforms).then(|| ceil_secs(next - tolerance - now).max(1));

    LimitOutcome {
        conforms,
        shadow: limit.shadow,
        limit: limit.burst,
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_secs: ceil_secs(state - now),
        retry_after_secs: retry_after,
    }
}

/// Picks the outcome whose values go into the headers.
fn report_index(outcomes: &[LimitOutcome], allowed: bool) -> usize {
    let enforced = || outcomes.iter().enumerate().filter(|(_, o)| !o.shadow);
    let chosen = if allowed {
        enforced().min_by_key(|(_, o)| o.remaining)
    } else {
        enforced()
            .filter(|(_, o)| !o.conforms)
            .max_by_key(|(_, o)| o.retry_after_secs)
    };
    chosen
        .or_else(|| outcomes.iter().enumerate().min_by_key(|(_, o)| o.remaining))
        .map_or(0, |(index, _)| index)
}

fn ceil_secs(micros: i64) -> u64 {
    let micros = u64::try_from(micros).unwrap_or(0);
    micros.div_ceil(MICROS_PER_SECOND as u64)
}

/// Rejects a decision over no limits, which would allow everything.
fn require_checks(checks: &[Check]) -> Result<()> {
    if checks.is_empty() {
        return Err(Error::invalid(
            "rate limit checks",
            "a decision needs at least one check",
        ));
    }
    Ok(())
}
