//! Rate limits, monthly quotas and the limit of failed authentications,
//! applied on the request path.
//!
//! With `--redis-url`, decisions and quota counts go through Redis, so
//! replicas share one budget. Without it, or while Redis fails, they are
//! made in process. During a Redis failure each replica enforces its share
//! of every limit and quota (see [`tenet_core::Limit::per_replica`]), and
//! Redis is used again as soon as it responds. The limiter never makes a
//! request fail with 5xx.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tenet_core::api::LimitStateResponse;
use tenet_core::ratelimit::{
    Check, Decision, LocalLimiter, LocalQuota, Mode, QuotaOutcome, RedisLimiter,
};
use tenet_core::{Limit, Principal, RedisOptions, TenantId, Tenet};
use time::OffsetDateTime;

use crate::error::Error;
use crate::metrics::{LimitOutcome, Metrics};
use crate::response::Response;

mod cache;

pub use cache::LimitCache;

/// Header set on a response whose request a shadow limit would have
/// rejected.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("tenet-shadow-rejected");

const LIMIT_HEADER: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING_HEADER: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET_HEADER: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Settings of the [`Limiter`].
#[derive(Debug, Clone)]
pub struct LimiterOptions {
    /// Redis, shared by the replicas, or `None` to decide in process.
    pub redis: Option<RedisOptions>,
    /// The replica count, whose share of each limit a replica enforces
    /// while Redis fails.
    pub replicas: u32,
    /// How long cached tenant and key limits are used before a re-read.
    pub refresh: Duration,
    /// The limit of failed authentications per client address, if any.
    pub auth_failures: Option<Limit>,
}

/// Applies limits and quotas, in Redis or in process.
#[derive(Debug)]
pub struct Limiter {
    redis: Option<RedisLimiter>,
    local: LocalLimiter,
    local_quota: LocalQuota,
    replicas: u32,
    /// Whether the last Redis call failed, so that the fallback and the
    /// return are each logged once.
    falling_back: AtomicBool,
    /// This replica's share of the limit of failed authentications per
    /// client address. It is counted in process only, so that requests
    /// without limits make no Redis call.
    auth_failures: Option<Limit>,
    pub cache: LimitCache,
}

/// The limit state of an admitted request, which the route returns in
/// headers (or in the `/verify` body) and attaches to the response, so
/// that a recorder of request outcomes can read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLimit {
    /// The rate limit decision, or `None` when no rate limit applies.
    pub decision: Option<Decision>,
    /// The quota count, or `None` without a quota.
    pub quota: Option<QuotaOutcome>,
}

/// A request that a limit or the quota rejected, with the state to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitExceeded {
    /// Over the key's or the tenant's rate limit, or over the limit of
    /// failed authentications.
    RateLimited(Decision),
    /// Over the tenant's monthly quota, with the decision of the rate
    /// limits that admitted the request before the quota rejected it, or
    /// `None` when no rate limit applies.
    QuotaExceeded {
        quota: QuotaOutcome,
        decision: Option<Decision>,
    },
}

impl Limiter {
    /// Builds the limiter. The Redis limiter is built without connecting, so
    /// the server starts while Redis is down.
    pub fn new(options: LimiterOptions) -> Result<Self, tenet_core::Error> {
        let replicas = options.replicas.max(1);
        let auth_failures = options
            .auth_failures
            .map(|limit| limit.per_replica(replicas))
            .transpose()?;
        Ok(Self {
            redis: options.redis.map(RedisLimiter::new).transpose()?,
            local: LocalLimiter::new(),
            local_quota: LocalQuota::new(),
            replicas,
            falling_back: AtomicBool::new(false),
            auth_failures,
            cache: LimitCache::new(options.refresh),
        })
    }

    /// Checks one request of an authenticated key against the key's and
    /// the tenant's rate limits and the tenant's quota.
    ///
    /// The rate limits are decided together, so that when either rejects
    /// neither is consumed. The quota is counted after them.
    ///
    /// NOTE: a request that the rate limits admit and the quota then
    /// rejects has consumed from the rate limits.
    pub async fn check(
        &self,
        tenet: &Tenet,
        metrics: &Metrics,
        principal: Principal,
        mode: Mode,
    ) -> Result<RequestLimit, LimitExceeded> {
        // Most tenants and keys have no limits, and their cached limits are
        // fresh. That answer needs no await, so it comes before the boxed
        // future that reads and decides limits: unboxed, that future's
        // 4.5 KB would be copied into every request's future.
        if let Some((tenant_limits, key_limit)) = self
            .cache
            .fresh_limits(principal.tenant_id, principal.key_id)
            && tenant_limits.limit.is_none()
            && tenant_limits.monthly_quota.is_none()
            && key_limit.is_none()
        {
            return Ok(RequestLimit::default());
        }
        Box::pin(self.check_limits(tenet, metrics, principal, mode)).await
    }

    /// Reads the limits that apply, refreshing them from the store when
    /// needed, and decides them; see [`Limiter::check`].
    async fn check_limits(
        &self,
        tenet: &Tenet,
        metrics: &Metrics,
        principal: Principal,
        mode: Mode,
    ) -> Result<RequestLimit, LimitExceeded> {
        let (tenant_limits, key_limit) = self
            .cache
            .limits(tenet, principal.tenant_id, principal.key_id)
            .await;
        // `Vec::new` allocates nothing for the common case of no limits.
        let mut checks = Vec::new();
        if let Some(limit) = tenant_limits.limit {
            checks.push(Check::tenant(principal.tenant_id, limit));
        }
        if let Some(limit) = key_limit {
            checks.push(Check::key(principal.key_id, limit));
        }

        let decision = if checks.is_empty() {
            None
        } else {
            Some(self.decide(&checks, mode, metrics).await)
        };
        if let Some(decision) = &decision {
            if !decision.allowed {
                metrics.observe_limit(LimitOutcome::RateLimited);
                tracing::debug!(
                    tenant_id = %principal.tenant_id,
                    key_id = %principal.key_id,
                    "request over its rate limit"
                );
                return Err(LimitExceeded::RateLimited(decision.clone()));
            }
            if decision.shadow_rejected {
                metrics.observe_limit(LimitOutcome::ShadowRejected);
                tracing::debug!(
                    tenant_id = %principal.tenant_id,
                    key_id = %principal.key_id,
                    "request over a shadow rate limit"
                );
            }
        }

        let quota = match tenant_limits.monthly_quota {
            Some(quota) => Some(
                self.take_quota(tenet, principal.tenant_id, quota, mode, metrics)
                    .await,
            ),
            None => None,
        };
        if let Some(quota) = quota.as_ref().filter(|quota| !quota.allowed) {
            metrics.observe_limit(LimitOutcome::QuotaExceeded);
            tracing::debug!(tenant_id = %principal.tenant_id, "tenant over its monthly quota");
            return Err(LimitExceeded::QuotaExceeded {
                quota: quota.clone(),
                decision,
            });
        }

        if decision.is_some() || quota.is_some() {
            metrics.observe_limit(LimitOutcome::Allowed);
        }
        Ok(RequestLimit { decision, quota })
    }

    /// Checks, before verification, whether `client` may try to
    /// authenticate, without counting the attempt.
    pub fn check_auth_failures(
        &self,
        client: IpAddr,
        metrics: &Metrics,
    ) -> Result<(), LimitExceeded> {
        let Some(check) = self.auth_failure_check(client) else {
            return Ok(());
        };
        if self.local.allows(&check) {
            return Ok(());
        }
        let decision = self.decide_locally(&[check], Mode::Peek);
        if decision.allowed {
            return Ok(());
        }
        metrics.observe_limit(LimitOutcome::AuthFailuresLimited);
        tracing::debug!(
            %client,
            "client over its limit of failed authentications"
        );
        Err(LimitExceeded::RateLimited(decision))
    }

    /// Counts one failed authentication of `client`.
    pub fn record_auth_failure(&self, client: IpAddr) {
        if let Some(check) = self.auth_failure_check(client) {
            self.decide_locally(&[check], Mode::Consume);
        }
    }

    // NOTE: an IPv6 client is counted per /128 address, but a host usually
    // controls a /64 or more, so it can spread its guesses over many
    // budgets.
    fn auth_failure_check(&self, client: IpAddr) -> Option<Check> {
        let limit = self.auth_failures.clone()?;
        Some(Check::client(client, limit))
    }

    /// Decides in Redis, or in process without Redis or when it fails.
    async fn decide(&self, checks: &[Check], mode: Mode, metrics: &Metrics) -> Decision {
        let local_checks = match &self.redis {
            None => None,
            Some(redis) => match redis.decide(checks, mode).await {
                Ok(decision) => {
                    self.note_redis_result(None, metrics);
                    return decision;
                }
                Err(err) => {
                    self.note_redis_result(Some(&err), metrics);
                    Some(self.shares(checks))
                }
            },
        };
        self.decide_locally(local_checks.as_deref().unwrap_or(checks), mode)
    }

    fn decide_locally(&self, checks: &[Check], mode: Mode) -> Decision {
        match self.local.decide(checks, mode) {
            Ok(decision) => decision,
            // Only an empty list of checks fails, and callers pass none.
            Err(err) => {
                tracing::error!(error = %err, "in-process rate limit failed; allowing");
                Decision {
                    allowed: true,
                    shadow_rejected: false,
                    limit: 0,
                    remaining: 0,
                    reset_secs: 0,
                    retry_after_secs: None,
                    outcomes: Vec::new(),
                }
            }
        }
    }

    /// Returns each check with this replica's share of its limit.
    fn shares(&self, checks: &[Check]) -> Vec<Check> {
        checks
            .iter()
            .map(|check| {
                check
                    .per_replica(self.replicas)
                    .unwrap_or_else(|_| check.clone())
            })
            .collect()
    }

    /// Counts one request against the tenant's monthly quota: in Redis
    /// when it is configured and responds, otherwise in process.
    ///
    /// Without Redis, the in-process count of a tenant's month starts from
    /// its accepted requests, stored or not yet flushed (see
    /// [`Tenet::accepted_in_month`] and [`LocalQuota::take_seeded`]), so a
    /// restart keeps the month's count up to the requests not yet flushed
    /// when the process stopped. A graceful shutdown flushes them all; a
    /// crash loses at most one `--usage-flush-interval` of them. Accepted
    /// requests are exactly those that passed the rate limits and the quota
    /// with [`Mode::Consume`], so the seed counts what this count counts.
    async fn take_quota(
        &self,
        tenet: &Tenet,
        tenant: TenantId,
        quota: u64,
        mode: Mode,
        metrics: &Metrics,
    ) -> QuotaOutcome {
        let now = OffsetDateTime::now_utc();
        let subject = quota_subject(tenant);
        let Some(redis) = &self.redis else {
            return self
                .local_quota
                .take_seeded(&subject, quota, now, mode, |month| {
                    tenet.accepted_in_month(tenant, month)
                })
                .await;
        };
        match redis.take_quota(&subject, quota, now, mode).await {
            Ok(outcome) => {
                self.note_redis_result(None, metrics);
                outcome
            }
            Err(err) => {
                self.note_redis_result(Some(&err), metrics);
                let share = (quota / u64::from(self.replicas)).max(1);
                // NOTE: the in-process share starts at zero, not from the
                // stored usage, so during an outage each replica admits up
                // to its share again. A seed taken at one outage would be
                // stale at the next, because Redis counted in between.
                let mut outcome = self.local_quota.take(&subject, share, now, mode);
                outcome.quota = quota;
                outcome
            }
        }
    }

    /// Makes the next request of `tenant` under a quota read the stored
    /// count again; see [`LocalQuota::reseed`]. Call it when the tenant's
    /// limits change.
    pub fn reseed_quota(&self, tenant: TenantId) {
        self.local_quota.reseed(&quota_subject(tenant));
    }

    /// Logs the switch to the in-process fallback and back, once each.
    fn note_redis_result(&self, error: Option<&tenet_core::Error>, metrics: &Metrics) {
        let failing = error.is_some();
        if self.falling_back.swap(failing, Ordering::AcqRel) == failing {
            return;
        }
        metrics.set_limiter_fallback(failing);
        match error {
            Some(err) => tracing::warn!(
                error = %err,
                replicas = self.replicas,
                "Redis rate limiting failed; enforcing per-replica limits in process"
            ),
            None => tracing::info!("Redis rate limiting responds again; using Redis"),
        }
    }
}

/// Returns the name of a tenant's quota count, in process and in Redis.
fn quota_subject(tenant: TenantId) -> String {
    format!("tenant:{tenant}")
}

impl RequestLimit {
    /// Sets the `RateLimit-*` headers, and the shadow header when a shadow
    /// limit would have rejected the request.
    pub fn apply(&self, response: &mut Response) {
        if let Some(decision) = &self.decision {
            set_decision_headers(response, decision);
        }
    }

    /// Puts this state into the response's extensions when a rate limit or
    /// a quota applied. Without either there is nothing to record, and
    /// skipping it saves the allocations of the extension map on every
    /// request of an unlimited tenant.
    pub fn attach(self, response: &mut Response) {
        if self.decision.is_some() || self.quota.is_some() {
            response.extensions_mut().insert(self);
        }
    }

    /// Returns the state for the `/verify` body, or `None` when no limit
    /// or quota applies.
    pub fn state(&self) -> Option<LimitStateResponse> {
        if self.decision.is_none() && self.quota.is_none() {
            return None;
        }
        Some(state_of(
            true,
            None,
            self.decision.as_ref(),
            self.quota.as_ref(),
        ))
    }
}

impl LimitExceeded {
    /// Returns the state for the `/verify` body.
    pub fn state(&self) -> LimitStateResponse {
        match self {
            LimitExceeded::RateLimited(decision) => {
                state_of(false, Some("rate_limited"), Some(decision), None)
            }
            LimitExceeded::QuotaExceeded { quota, decision } => LimitStateResponse {
                retry_after_seconds: Some(seconds_until(quota.resets_at)),
                ..state_of(
                    false,
                    Some("quota_exceeded"),
                    decision.as_ref(),
                    Some(quota),
                )
            },
        }
    }

    /// Returns the seconds a client should wait before retrying, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            LimitExceeded::RateLimited(decision) => decision.retry_after_secs.unwrap_or(1).max(1),
            LimitExceeded::QuotaExceeded { quota, .. } => seconds_until(quota.resets_at),
        }
    }

    /// Sets `Retry-After` and, when a rate limit applies, the `RateLimit-*`
    /// headers and the shadow header, as an admitted request gets them.
    pub fn apply(&self, response: &mut Response) {
        insert_number(response, http::header::RETRY_AFTER, self.retry_after_secs());
        let decision = match self {
            LimitExceeded::RateLimited(decision) => Some(decision),
            LimitExceeded::QuotaExceeded { decision, .. } => decision.as_ref(),
        };
        if let Some(decision) = decision {
            set_decision_headers(response, decision);
        }
    }
}

impl From<LimitExceeded> for Error {
    fn from(exceeded: LimitExceeded) -> Self {
        Error::Limited(exceeded)
    }
}

fn state_of(
    allowed: bool,
    code: Option<&str>,
    decision: Option<&Decision>,
    quota: Option<&QuotaOutcome>,
) -> LimitStateResponse {
    LimitStateResponse {
        allowed,
        code: code.map(str::to_owned),
        limit: decision.map(|d| d.limit),
        remaining: decision.map(|d| d.remaining),
        reset_seconds: decision.map(|d| d.reset_secs),
        retry_after_seconds: match (decision, quota) {
            (Some(decision), _) => decision.retry_after_secs,
            (None, Some(quota)) if !quota.allowed => Some(seconds_until(quota.resets_at)),
            _ => None,
        },
        shadow_rejected: decision.is_some_and(|d| d.shadow_rejected),
        quota_remaining: quota.map(QuotaOutcome::remaining),
        quota_resets_at: quota.map(|quota| quota.resets_at),
    }
}

fn set_decision_headers(response: &mut Response, decision: &Decision) {
    insert_number(response, LIMIT_HEADER, u64::from(decision.limit));
    insert_number(response, REMAINING_HEADER, u64::from(decision.remaining));
    insert_number(response, RESET_HEADER, decision.reset_secs);
    if decision.shadow_rejected {
        response
            .headers_mut()
            .insert(SHADOW_HEADER, HeaderValue::from_static("true"));
    }
}

fn insert_number(response: &mut Response, name: HeaderName, value: u64) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from(value));
}

/// Returns the whole seconds from now until `at`, rounded up, at least 1.
fn seconds_until(at: OffsetDateTime) -> u64 {
    let left = at - OffsetDateTime::now_utc();
    let whole = left.whole_seconds() + i64::from(left.subsec_nanoseconds() > 0);
    u64::try_from(whole).unwrap_or(0).max(1)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use tenet_core::ratelimit::QuotaOutcome;

    use super::*;
    use crate::response::empty;

    fn rejection() -> Decision {
        Decision {
            allowed: false,
            shadow_rejected: false,
            limit: 10,
            remaining: 0,
            reset_secs: 30,
            retry_after_secs: Some(3),
            outcomes: Vec::new(),
        }
    }

    fn header(response: &Response, name: &str) -> Option<String> {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().expect("ASCII").to_owned())
    }

    #[test]
    fn rate_rejection_sets_every_header() {
        let mut response = empty(StatusCode::TOO_MANY_REQUESTS);

        LimitExceeded::RateLimited(rejection()).apply(&mut response);

        assert_eq!(header(&response, "retry-after").as_deref(), Some("3"));
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some("0")
        );
        assert_eq!(header(&response, "ratelimit-reset").as_deref(), Some("30"));
        assert_eq!(header(&response, "tenet-shadow-rejected"), None);
    }

    #[test]
    fn quota_retry_after_counts_to_the_reset() {
        let resets_at = OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let exceeded = LimitExceeded::QuotaExceeded {
            quota: QuotaOutcome {
                allowed: false,
                used: 5,
                quota: 5,
                resets_at,
            },
            decision: None,
        };
        let passed = LimitExceeded::QuotaExceeded {
            quota: QuotaOutcome {
                allowed: false,
                used: 5,
                quota: 5,
                resets_at: OffsetDateTime::now_utc() - time::Duration::seconds(1),
            },
            decision: None,
        };

        let retry = exceeded.retry_after_secs();

        assert!((89..=90).contains(&retry), "{retry}");
        assert_eq!(passed.retry_after_secs(), 1, "never below 1");
        assert_eq!(exceeded.state().code.as_deref(), Some("quota_exceeded"));
        assert_eq!(exceeded.state().quota_remaining, Some(0));
    }

    #[test]
    fn quota_rejection_keeps_the_rate_limit_headers() {
        let admitted = Decision {
            allowed: true,
            shadow_rejected: true,
            retry_after_secs: None,
            remaining: 4,
            ..rejection()
        };
        let exceeded = LimitExceeded::QuotaExceeded {
            quota: QuotaOutcome {
                allowed: false,
                used: 5,
                quota: 5,
                resets_at: OffsetDateTime::now_utc() + time::Duration::seconds(90),
            },
            decision: Some(admitted),
        };
        let mut response = empty(StatusCode::TOO_MANY_REQUESTS);

        exceeded.apply(&mut response);
        let state = exceeded.state();

        let retry = header(&response, "retry-after").expect("retry-after");
        assert!(["89", "90"].contains(&retry.as_str()), "{retry}");
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some("4")
        );
        assert_eq!(
            header(&response, "tenet-shadow-rejected").as_deref(),
            Some("true")
        );
        assert_eq!(state.remaining, Some(4));
        assert!(state.shadow_rejected);
        assert!(matches!(state.retry_after_seconds, Some(89..=90)));
    }

    #[test]
    fn shadow_rejection_is_marked() {
        let decision = Decision {
            allowed: true,
            shadow_rejected: true,
            retry_after_secs: None,
            ..rejection()
        };
        let limit = RequestLimit {
            decision: Some(decision),
            quota: None,
        };
        let mut response = empty(StatusCode::OK);

        limit.apply(&mut response);

        assert_eq!(
            header(&response, "tenet-shadow-rejected").as_deref(),
            Some("true")
        );
        assert_eq!(header(&response, "retry-after"), None);
    }
}
