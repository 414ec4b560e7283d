//! Verification caches: a bounded in-process cache, optionally backed by
//! Redis shared between replicas, kept honest by a feed of key events.
//!
//! # Staleness bound
//! A revoked key stops verifying on every replica within
//! [`CacheOptions::max_staleness`] of the revoke's commit:
//! - the revoking replica drops its own entry at once;
//! - the others hear of it through Redis pub/sub within milliseconds, and
//!   through a poll of the store's key events every
//!   [`CacheOptions::poll_interval`] even when pub/sub lost the message;
//! - a replica that can confirm neither (its poll fails and its
//!   subscription is down) trusts no entry read longer ago than the bound.
//!
//! Suspending, resuming or deleting a tenant reaches every replica within
//! the same bound. The changing replica drops its cached status at once and
//! publishes the tenant id on Redis. A shared store also records a tenant
//! event, which the same poll reads.
//!
//! Fills cannot resurrect a revoked entry: the in-process cache discards a
//! fill whose shard was invalidated after the fill's read began, and Redis
//! entries only move forward in a key's life (see [`redis`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::CacheClock;
use crate::error::{Error, Rejection, Result};
use crate::expiry::Expiry;
use crate::id::TenantId;
use crate::key::{KeyInfo, Principal, VerifiedKey};
use crate::key_use::unix_millis_now;
use crate::scope::{self, Scope};
use crate::secret::KeyDigest;
use crate::stats::CacheStats;

pub(crate) mod feed;
pub(crate) mod fills;
pub(crate) mod local;
pub mod redis;
pub(crate) mod tenants;

use fills::Fills;
use local::{Generation, LocalCache, Millis};
use redis::RedisCache;
use tenants::{TenantCache, TenantState};

/// The cached state of one key digest.
///
/// Cloning copies an `Arc` at most, so a warm cache hit allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Valid(ValidKey),
    /// Whom the revoked key acted for, when known. A revoked state learned
    /// from a key event or read from Redis does not carry it.
    Revoked(Option<Principal>),
    Unknown,
}

/// An issued, unrevoked key: whom it acts for, until when, with which
/// scopes. Expiry and scopes are checked at each use, so a cached entry
/// turns into a rejection once its expiry passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidKey {
    pub(crate) principal: Principal,
    pub(crate) expires_at: Expiry,
    pub(crate) scopes: Arc<[Scope]>,
}

/// A key that passed the checks of its verdict, before its tenant's
/// status is checked: the parts of a [`VerifiedKey`] that cost nothing to
/// copy, and its scopes when the caller asked for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Passed {
    pub(crate) principal: Principal,
    pub(crate) expires_at: Expiry,
    /// The key's scopes, or `None` when they were not asked for, which
    /// spares two reference count updates per verification.
    pub(crate) scopes: Option<Arc<[Scope]>>,
}

impl Passed {
    /// Turns the passed key into the public result. A key checked without
    /// its scopes reads as holding none.
    pub(crate) fn into_verified(self) -> VerifiedKey {
        VerifiedKey {
            principal: self.principal,
            scopes: self.scopes.unwrap_or_else(|| Arc::from([])),
            expires_at: self.expires_at.to_time(),
        }
    }
}

impl Verdict {
    /// Turns the verdict into the result of a verification that requires
    /// `required_scopes`, checking expiry before scopes. The key's scopes
    /// are cloned into the result only when `want_scopes` is set.
    #[inline]
    pub(crate) fn check(
        &self,
        required_scopes: &[&str],
        want_scopes: bool,
    ) -> Result<Passed, Rejection> {
        match self {
            Verdict::Valid(key) => {
                if key.expires_at.has_passed() {
                    return Err(Rejection::Expired);
                }
                if !scope::covers(&key.scopes, required_scopes) {
                    return Err(Rejection::MissingScope);
                }
                Ok(Passed {
                    principal: key.principal,
                    expires_at: key.expires_at,
                    scopes: want_scopes.then(|| Arc::clone(&key.scopes)),
                })
            }
            Verdict::Revoked(_) => Err(Rejection::Revoked),
            Verdict::Unknown => Err(Rejection::Unknown),
        }
    }
}

impl Verdict {
    /// Returns whom the key acts or acted for, when that is known.
    #[inline]
    pub(crate) fn principal(&self) -> Option<Principal> {
        match self {
            Verdict::Valid(key) => Some(key.principal),
            Verdict::Revoked(principal) => *principal,
            Verdict::Unknown => None,
        }
    }
}

/// Builds the cached form of an unrevoked key.
pub(crate) fn valid_verdict(info: &KeyInfo) -> Verdict {
    Verdict::Valid(ValidKey {
        principal: Principal {
            tenant_id: info.tenant_id,
            key_id: info.id,
        },
        expires_at: Expiry::from_time(info.expires_at),
        scopes: info.scopes.as_slice().into(),
    })
}

/// Settings of the verification cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Maximum entries in the in-process cache. Default 100,000; an entry
    /// takes about 280 bytes, as measured with 1,000,000 keys without
    /// scopes (`docs/benchmarks.md`).
    pub capacity: usize,
    /// How long a valid or revoked verdict is cached. Default 60 s.
    ///
    /// Cache time reads the coarse monotonic clock, so an entry may be
    /// used for up to one timer tick (4 ms with `CONFIG_HZ=250`) past its
    /// TTL. The staleness bound and key expiry stay exact.
    pub ttl: Duration,
    /// How long an unknown key is cached, so that repeated guesses do not
    /// each reach the store. Default 5 s, late by one tick at most like
    /// `ttl`.
    pub negative_ttl: Duration,
    /// The longest a replica may keep accepting a revoked key. Default 1 s.
    pub max_staleness: Duration,
    /// How often a replica reads the store's key events. Default 250 ms;
    /// must be well under `max_staleness`.
    pub poll_interval: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_staleness: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
        }
    }
}

impl CacheOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::Config(
                "the cache capacity must be at least 1".to_owned(),
            ));
        }
        if self.ttl <= self.max_staleness || self.negative_ttl.is_zero() {
            return Err(Error::Config(format!(
                "the cache TTL ({:?}) must exceed the staleness bound ({:?}), and the \
                 negative TTL must be above zero",
                self.ttl, self.max_staleness
            )));
        }
        if self.poll_interval.is_zero() || self.poll_interval * 2 > self.max_staleness {
            return Err(Error::Config(format!(
                "the key event poll interval ({:?}) must be above zero and at most half \
                 the staleness bound ({:?})",
                self.poll_interval, self.max_staleness
            )));
        }
        Ok(())
    }
}

/// The caches in front of the store, and how far they can be trusted.
#[derive(Debug)]
pub(crate) struct CacheLayer {
    pub(crate) local: LocalCache,
    /// Tenant status, timed by `local`'s clock.
    pub(crate) tenants: TenantCache,
    /// Unix milliseconds at cache time 0.
    wall_at_epoch: i64,
    pub(crate) redis: Option<RedisCache>,
    pub(crate) options: CacheOptions,
    /// Present when other processes write to the store.
    pub(crate) health: Option<FeedHealth>,
    pub(crate) stats: CacheStats,
    /// Fills in flight, so that concurrent misses of one key share one.
    pub(crate) fills: Fills,
    /// The staleness bound less one tick of the cache clock, which keeps
    /// the bound exact although cache time runs up to one tick late.
    trusted_staleness: Millis,
}

impl CacheLayer {
    pub(crate) fn new(
        options: CacheOptions,
        redis: Option<RedisCache>,
        shared: bool,
        clock: CacheClock,
    ) -> Self {
        let local =
            LocalCache::with_clock(options.capacity, options.ttl, options.negative_ttl, clock);
        let wall_at_epoch = unix_millis_now().saturating_sub_unsigned(local.now());
        let trusted_staleness = millis(options.max_staleness).saturating_sub(local.tick());
        Self {
            local,
            tenants: TenantCache::new(options.capacity, millis(options.ttl)),
            wall_at_epoch,
            redis,
            health: shared.then(FeedHealth::default),
            options,
            stats: CacheStats::default(),
            fills: Fills::default(),
            trusted_staleness,
        }
    }

    /// Caches `verdict` for `digest` in process like [`LocalCache::insert`],
    /// with the status slot of a valid key's tenant.
    pub(crate) fn fill_local(
        &self,
        digest: KeyDigest,
        verdict: Verdict,
        read_at: Millis,
        generation: Generation,
    ) -> bool {
        let tenant = match &verdict {
            Verdict::Valid(key) => Some(self.tenants.slot(key.principal.tenant_id)),
            Verdict::Revoked(_) | Verdict::Unknown => None,
        };
        self.local
            .insert(digest, verdict, read_at, generation, tenant)
    }

    /// Returns the state of `tenant` from the tenant cache, if it is fresh
    /// and trusted at cache time `now`.
    pub(crate) fn tenant_state(&self, tenant: TenantId, now: Millis) -> Option<TenantState> {
        self.tenants.get(tenant, now, self.trust_cutoff(now))
    }

    /// Converts a cache time to Unix milliseconds, which saves a second
    /// clock read on the warm path.
    ///
    /// NOTE: cache time is monotonic. It follows NTP's rate adjustments but
    /// not steps of the wall clock, so after a step the recorded uses are
    /// off by the step until the process restarts.
    pub(crate) fn wall_millis(&self, now: Millis) -> i64 {
        self.wall_at_epoch.saturating_add_unsigned(now)
    }

    /// Returns the earliest read time of an entry that may be used now.
    ///
    /// While the feed is not current, an entry is trusted for the
    /// staleness bound less one tick after its read, so that cache time
    /// running up to one tick late cannot stretch the bound.
    #[inline]
    pub(crate) fn trust_cutoff(&self, now: Millis) -> Millis {
        let staleness = self.trusted_staleness;
        match &self.health {
            Some(health) if !health.is_current(now, staleness) => now.saturating_sub(staleness),
            _ => 0,
        }
    }

    /// Returns how long Redis should keep `verdict`.
    pub(crate) fn ttl_for(&self, verdict: &Verdict) -> Duration {
        match verdict {
            Verdict::Unknown => self.options.negative_ttl,
            Verdict::Valid(_) | Verdict::Revoked(_) => self.options.ttl,
        }
    }

    /// Returns the maximum time from a fill's read to its Redis write. It is
    /// half the staleness bound, so a revoke's Redis entry always outlives a
    /// fill that read the store before the revoke.
    pub(crate) fn fill_deadline(&self) -> Millis {
        millis(self.options.max_staleness) / 2
    }
}

/// Evidence that this replica has heard of every key change so far.
///
/// Times are cache times plus one, with 0 meaning "never".
#[derive(Debug, Default)]
pub(crate) struct FeedHealth {
    /// Start of the last poll of key events that succeeded.
    last_poll: AtomicU64,
    /// When the current pub/sub subscription was established.
    subscribed: AtomicU64,
    /// Last time a ping on the subscription came back.
    last_ping: AtomicU64,
}

impl FeedHealth {
    fn is_current(&self, now: Millis, staleness: Millis) -> bool {
        let since = |stamp: u64| (stamp != 0).then(|| now.saturating_sub(stamp - 1));

        let last_poll = self.last_poll.load(Ordering::Acquire);
        if since(last_poll).is_some_and(|age| age < staleness) {
            return true;
        }

        // A live subscription is enough only if a poll completed after it
        // started, so that nothing from before it can be missing.
        let subscribed = self.subscribed.load(Ordering::Acquire);
        let pinged = since(self.last_ping.load(Ordering::Acquire));
        subscribed != 0 && last_poll >= subscribed && pinged.is_some_and(|age| age < staleness / 2)
    }

    pub(crate) fn record_poll(&self, started: Millis) {
        self.last_poll.store(started + 1, Ordering::Release);
    }

    pub(crate) fn record_subscribed(&self, at: Millis) {
        self.subscribed.store(at + 1, Ordering::Release);
    }

    pub(crate) fn record_unsubscribed(&self) {
        self.subscribed.store(0, Ordering::Release);
    }

    pub(crate) fn record_ping(&self, at: Millis) {
        self.last_ping.store(at + 1, Ordering::Release);
    }
}

pub(crate) fn millis(duration: Duration) -> Millis {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn stale_cutoff_subtracts_one_tick() {
        let manual = ManualClock::new(4);
        let layer = CacheLayer::new(
            CacheOptions::default(),
            None,
            true,
            CacheClock::manual(manual.clone()),
        );
        let bound = millis(CacheOptions::default().max_staleness);

        // No poll has succeeded, so the feed is not current.
        manual.set(10_000);
        let cutoff = layer.trust_cutoff(10_000);

        assert_eq!(cutoff, 10_000 - bound + 4);
    }

    #[test]
    fn current_feed_trusts_every_entry() {
        let manual = ManualClock::new(4);
        let layer = CacheLayer::new(
            CacheOptions::default(),
            None,
            true,
            CacheClock::manual(manual.clone()),
        );
        let health = layer.health.as_ref().expect("a shared store has a feed");

        health.record_poll(9_500);

        assert_eq!(layer.trust_cutoff(10_000), 0);
        // One tick before the bound, the poll no longer vouches.
        assert_ne!(layer.trust_cutoff(9_500 + 996), 0);
    }
}
