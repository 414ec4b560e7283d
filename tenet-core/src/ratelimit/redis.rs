//! The limiter shared by replicas through Redis.
//!
//! One Lua script per decision reads the Redis server's clock, checks every
//! limit and writes the TATs only when all enforced limits conform. Redis
//! runs scripts one at a time, so concurrent decisions on any replica never
//! overspend a limit, and clock skew between replicas has no effect. Redis 7 replicates scripts by
//! their effects, which is what lets a script call `TIME` before writing.
//!
//! Every key written expires when its TAT drains, because an absent key
//! and a drained one decide alike.
//!
//! NOTE: the keys of one decision (a tenant's and a key's) may hash to
//! different Redis Cluster slots, so this script needs a single Redis
//! server or a caller-supplied hash tag in the ids.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Script, ScriptInvocation};
use tokio::time::timeout;

use super::{
    Check, Clock, Decision, Mode, QuotaMonth, QuotaOutcome, Subject, SystemClock, evaluate,
    require_checks,
};
use crate::cache::redis::RedisOptions;
use crate::error::{Error, Result};

// ARGV[1] is 1 to consume and 0 to peek, then three values per key: the
// emission interval and the tolerance in microseconds, and 1 for a shadow
// limit. Returns the Redis time in microseconds, then each stored TAT or -1.
//
// Lua converts the numeric strings of ARGV and TIME in arithmetic, so the
// script calls `tonumber` only on values that it compares. `redis.call`
// converts a number argument to a string that `tonumber` reads back
// exactly (Redis 7.0 writes a whole number below 2^53 as plain digits), so
// the TAT is written without `string.format`. `nexts[i]` is set only for a
// key whose next TAT fits its tolerance. `Limit::new` keeps the interval at
// 1 µs or more, so every PX is at least 1 ms.
const DECIDE_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]
local result = {now}
local nexts = {}
local allowed = true
for i = 1, #KEYS do
  local base = i * 3 - 1
  local stored = tonumber(redis.call('GET', KEYS[i]))
  local tat = now
  if stored then
    result[i + 1] = stored
    if stored > now then
      tat = stored
    end
  else
    result[i + 1] = -1
  end
  local next_tat = tat + ARGV[base]
  if next_tat - now <= tonumber(ARGV[base + 1]) then
    nexts[i] = next_tat
  elseif ARGV[base + 2] ~= '1' then
    allowed = false
  end
end
if allowed and ARGV[1] == '1' then
  for i = 1, #KEYS do
    local next_tat = nexts[i]
    if next_tat then
      redis.call('SET', KEYS[i], next_tat, 'PX', math.ceil((next_tat - now) / 1000))
    end
  end
end
return result
";

// KEYS[1] is the month's count. ARGV[1] is the quota, ARGV[2] is 1 to
// consume and 0 to peek, ARGV[3] is the Unix time in seconds at which the
// count expires. Returns 1 or 0 for admitted, then the count afterwards.
const QUOTA_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  return {0, used}
end
if ARGV[2] == '1' then
  used = redis.call('INCR', KEYS[1])
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
end
return {1, used}
";

/// How long a month's quota count outlives the month, so that a replica
/// whose clock runs behind still finds the count it shares.
const QUOTA_KEY_GRACE_SECS: i64 = 86_400;

/// A failure of the Redis limiter. The caller then decides with a
/// [`LocalLimiter`](super::LocalLimiter) on [`Limit::per_replica`](super::Limit::per_replica)
/// limits.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    /// Redis did not reply within [`RedisOptions::timeout`].
    #[error("Redis rate limit call timed out after {0:?}")]
    TimedOut(Duration),
    /// Redis or the connection to it returned an error.
    #[error("Redis rate limit call failed: {0}")]
    Failed(#[source] redis::RedisError),
    /// Recent calls failed [`RedisOptions::failure_threshold`] times in a
    /// row, so calls skip Redis until [`RedisOptions::probe_interval`]
    /// passes.
    #[error("Redis rate limiting is paused after repeated failures")]
    Paused,
    /// The script returned a reply of the wrong shape.
    #[error("Redis rate limit script returned {0} values, expected {1}")]
    BadReply(usize, usize),
}

/// GCRA limits kept in Redis and shared by every replica that uses the
/// same Redis and key prefix.
pub struct RedisLimiter {
    connection: SharedConnection,
    options: RedisOptions,
    script: Script,
    quota_script: Script,
    failures: AtomicU32,
    /// Times the pause after repeated failures. Decisions never read it:
    /// they use the Redis clock.
    clock: Arc<dyn Clock>,
    /// End of the current pause, in [`Clock`] milliseconds.
    paused_until: Mutex<Option<u64>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password, so it is left out.
        f.debug_struct("RedisLimiter")
            .field("key_prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Builds the limiter without connecting, so that a server can start
    /// while Redis is down. Keys are named `<key_prefix>rl:<subject>`.
    pub fn new(options: RedisOptions) -> Result<Self> {
        Self::with_clock(options, Arc::new(SystemClock))
    }

    /// Builds the limiter like [`RedisLimiter::new`], timing its pause
    /// after repeated failures on `clock`.
    pub fn with_clock(options: RedisOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        let client = redis::Client::open(options.url.as_str()).map_err(|err| {
            Error::Config(format!(
                "invalid Redis URL for rate limits: {err}; expected redis://host:port"
            ))
        })?;
        // `bounded` times every call, connecting included, so the
        // connection's own response timeout (500 ms by default in redis
        // 1.2) is turned off. It would cut calls short under a longer
        // `options.timeout`, and it costs a timer per call.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(None);
        Ok(Self {
            connection: SharedConnection::new(client, config),
            options,
            script: Script::new(DECIDE_SCRIPT),
            quota_script: Script::new(QUOTA_SCRIPT),
            failures: AtomicU32::new(0),
            clock,
            paused_until: Mutex::new(None),
        })
    }

    /// Returns the Redis key that stores the TAT of `check`.
    pub fn redis_key(&self, check: &Check) -> String {
        // Built with `push_str`, because `format!` took about 1,300
        // instructions here (callgrind of a release build), and this runs
        // for every limited request.
        const INFIX: &str = "rl:";
        let prefix = &self.options.key_prefix;
        let subject = match check.subject() {
            Subject::Named(name) => std::borrow::Cow::Borrowed(name.as_str()),
            client @ Subject::Client(_) => std::borrow::Cow::Owned(client.to_string()),
        };
        let mut key = String::with_capacity(prefix.len() + INFIX.len() + subject.len());
        key.push_str(prefix);
        key.push_str(INFIX);
        key.push_str(&subject);
        key
    }

    /// Decides one request against every check on the Redis clock,
    /// consuming from all of them or, when any enforced check rejects,
    /// from none.
    ///
    /// # Errors
    /// Returns [`Error::Invalid`] on an empty `checks`. When Redis fails or
    /// is slow, returns [`Error::Unavailable`] wrapping a
    /// [`RedisLimiterError`], so the caller falls back to its local limiter.
    pub async fn decide(&self, checks: &[Check], mode: Mode) -> Result<Decision> {
        require_checks(checks)?;
        self.decide_on_redis(checks, mode)
            .await
            .map_err(|err| Error::Unavailable(Box::new(err)))
    }

    /// Admits and, with [`Mode::Consume`], counts one request of
    /// `subject` (such as `tenant:<id>`) against `quota` in the month that
    /// contains `now`, in one Lua script, so that replicas together admit
    /// exactly `quota` requests a month.
    ///
    /// The count's key, `<key_prefix>quota:<subject>:<YYYY-MM>`, expires a
    /// day after the month ends.
    ///
    /// NOTE: the month comes from the caller's clock, so replicas whose
    /// clocks disagree around midnight at a month's end count a few
    /// requests into different months.
    ///
    /// NOTE: the count starts at the month's first request under a quota.
    /// Unlike the in-process count, which starts from the stored usage, it
    /// leaves out requests accepted that month while the tenant had no
    /// quota.
    ///
    /// # Errors
    /// Like [`RedisLimiter::decide`], [`Error::Unavailable`] when Redis
    /// fails, is slow or is paused.
    pub async fn take_quota(
        &self,
        subject: &str,
        quota: u64,
        now: time::OffsetDateTime,
        mode: Mode,
    ) -> Result<QuotaOutcome> {
        self.take_quota_on_redis(subject, quota, now, mode)
            .await
            .map_err(|err| Error::Unavailable(Box::new(err)))
    }

    /// Returns the Redis key that counts `subject`'s requests in `month`.
    pub fn quota_key(&self, subject: &str, month: QuotaMonth) -> String {
        format!(
            "{}quota:{subject}:{}",
            self.options.key_prefix,
            month.label()
        )
    }

    async fn take_quota_on_redis(
        &self,
        subject: &str,
        quota: u64,
        now: time::OffsetDateTime,
        mode: Mode,
    ) -> std::result::Result<QuotaOutcome, RedisLimiterError> {
        if self.is_paused() {
            return Err(RedisLimiterError::Paused);
        }
        let month = QuotaMonth::containing(now);
        let expires_at = month.resets_at().unix_timestamp() + QUOTA_KEY_GRACE_SECS;

        let mut invocation = self.quota_script.prepare_invoke();
        invocation
            .key(self.quota_key(subject, month))
            .arg(quota)
            .arg(u8::from(mode == Mode::Consume))
            .arg(expires_at);
        let reply = self.bounded(self.connection.call(&invocation)).await?;

        let [admitted, used] = reply[..] else {
            return Err(RedisLimiterError::BadReply(reply.len(), 2));
        };
        Ok(QuotaOutcome {
            allowed: admitted == 1,
            used: u64::try_from(used).unwrap_or(0),
            quota,
            resets_at: month.resets_at(),
        })
    }

    /// Runs one Redis call within the timeout, recording failures for the
    /// pause and clearing them on success.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> std::result::Result<T, RedisLimiterError> {
        match timeout(self.options.timeout, call).await {
            Ok(Ok(reply)) => {
                self.failures.store(0, Ordering::Release);
                Ok(reply)
            }
            Ok(Err(err)) => Err(self.record_failure(RedisLimiterError::Failed(err))),
            Err(_) => Err(self.record_failure(RedisLimiterError::TimedOut(self.options.timeout))),
        }
    }

    async fn decide_on_redis(
        &self,
        checks: &[Check],
        mode: Mode,
    ) -> std::result::Result<Decision, RedisLimiterError> {
        if self.is_paused() {
            return Err(RedisLimiterError::Paused);
        }

        let mut invocation = self.script.prepare_invoke();
        invocation.arg(u8::from(mode == Mode::Consume));
        for check in checks {
            invocation
                .key(self.redis_key(check))
                .arg(check.limit().interval_micros())
                .arg(check.limit().tolerance_micros())
                .arg(u8::from(check.limit().is_shadow()));
        }
        let reply = self.bounded(self.connection.call(&invocation)).await?;

        if reply.len() != checks.len() + 1 {
            return Err(RedisLimiterError::BadReply(reply.len(), checks.len() + 1));
        }
        let now = reply[0];
        let stored: Vec<Option<i64>> = reply[1..]
            .iter()
            .map(|&tat| (tat >= 0).then_some(tat))
            .collect();
        let (decision, _) = evaluate(checks, &stored, now, mode);
        Ok(decision)
    }

    fn is_paused(&self) -> bool {
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match *paused {
            Some(until) if self.clock.now_millis() < until => true,
            Some(_) => {
                // The pause ran out: the next call probes Redis.
                *paused = None;
                false
            }
            None => false,
        }
    }

    fn record_failure(&self, error: RedisLimiterError) -> RedisLimiterError {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(%error, failures, "Redis rate limit call failed");
        if failures >= self.options.failure_threshold {
            self.failures.store(0, Ordering::Release);
            *self
                .paused_until
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()) =
                Some(self.clock.now_millis().saturating_add(
                    u64::try_from(self.options.probe_interval.as_millis()).unwrap_or(u64::MAX),
                ));
            tracing::debug!(
                pause = ?self.options.probe_interval,
                "pausing Redis rate limiting after repeated failures"
            );
        }
        error
    }
}

/// One multiplexed Redis connection that every call of a limiter shares.
///
/// Concurrent calls are pipelined on its socket, so one write and one read
/// event on each side carry many decisions, where a pool of exclusive
/// connections costs a write and a read per decision.
///
/// A call that fails, or is dropped at the timeout before its reply, discards
/// the connection it used, and the next call opens a new one. That replaces
/// a connection that a Redis restart closed, and also one to a Redis that
/// stopped replying, which reports no error. Calls already in flight on a
/// discarded connection finish or fail on it.
struct SharedConnection {
    client: redis::Client,
    config: AsyncConnectionConfig,
    current: Mutex<Option<Connection>>,
    /// Held while a connection is opened, so that the calls that find no
    /// connection wait for one attempt instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

/// A connection with the id that [`SharedConnection::discard`] compares, so
/// that a late failure on an old connection leaves its successor in place.
#[derive(Clone)]
struct Connection {
    id: u64,
    inner: MultiplexedConnection,
}

impl SharedConnection {
    fn new(client: redis::Client, config: AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Runs `invocation` on the shared connection, opening one first when
    /// there is none.
    async fn call(&self, invocation: &ScriptInvocation<'_>) -> RedisResult<Vec<i64>> {
        let mut connection = self.get().await?;
        let mut discard = DiscardUnlessDone {
            shared: self,
            id: connection.id,
            done: false,
        };
        let reply = invocation
            .invoke_async::<Vec<i64>>(&mut connection.inner)
            .await;
        discard.done = reply.is_ok();
        reply
    }

    async fn get(&self) -> RedisResult<Connection> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let _opening = self.opening.lock().await;
        // Another call may have opened one while this one waited.
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let inner = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let connection = Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            inner,
        };
        *self.lock() = Some(connection.clone());
        Ok(connection)
    }

    fn current(&self) -> Option<Connection> {
        self.lock().clone()
    }

    /// Drops the shared connection if it is still the one with `id`.
    fn discard(&self, id: u64) {
        let mut current = self.lock();
        if current
            .as_ref()
            .is_some_and(|connection| connection.id == id)
        {
            *current = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Discards its connection when dropped before `done` is set, which is what
/// happens to a call that failed or that the timeout abandoned.
struct DiscardUnlessDone<'a> {
    shared: &'a SharedConnection,
    id: u64,
    done: bool,
}

impl Drop for DiscardUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.discard(self.id);
        }
    }
}
