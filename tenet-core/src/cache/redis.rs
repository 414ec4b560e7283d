//! The shared verification cache in Redis, and the invalidation channel.
//!
//! Every operation is bounded by [`RedisOptions::timeout`]. After
//! [`RedisOptions::failure_threshold`] failures in a row the breaker opens
//! and requests skip Redis entirely until a background probe succeeds, so
//! an unresponsive Redis costs at most a few timeouts, not one per request.
//!
//! Entries are keyed by the hex key digest, never by the key. Their values
//! carry a rank (unknown 0, valid 1, revoked 2) and one Lua script writes
//! them, refusing to replace a higher rank with a lower one. A key's life
//! only moves up that order, so writes that race (a fill that read the
//! store just before a revoke, and the revoke's own write) always settle on
//! the newest state.
//!
//! A valid entry also carries the key's expiry, and the script refuses to
//! replace a valid entry with one that expires later. A key's expiry only
//! ever moves earlier (a rotation shortens it), so a fill that read the
//! store before a rotation cannot undo the rotation's shorter expiry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bb8::{Pool, PooledConnection};
use bb8_redis::RedisConnectionManager;
use redis::{AsyncCommands as _, Script};
use tokio::time::timeout;

use super::{ValidKey, Verdict};
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::id::{KeyId, TenantId};
use crate::key::Principal;
use crate::scope::Scope;
use crate::secret::KeyDigest;
use crate::stats::{PoolStatus, WaitHistogram};

// Bytes 3 to 10 of a valid entry contain the expiry as a big-endian u64, so
// comparing them as strings compares the times.
const PUT_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local held = string.byte(current, 1)
  local offered = string.byte(ARGV[1], 1)
  if held > offered then
    return 0
  end
  if held == offered and string.sub(current, 2, 2) == 'e' and #current > 33
      and string.sub(current, 3, 10) < string.sub(ARGV[1], 3, 10) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Settings of the shared Redis cache.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` URL of the server.
    pub url: String,
    /// Pooled connections of the cache's Redis pool. A checkout keeps its
    /// connection for one whole call, so this bounds the calls in flight:
    /// at a 0.3 ms round trip, 32 connections carry about 100,000 calls a
    /// second (an estimate). The rate limiter ignores it, because all its
    /// calls share one pipelined connection. Default 32.
    pub pool_size: u32,
    /// Bound on every Redis call made for a request. Default 50 ms.
    pub timeout: Duration,
    /// Prefix of every Redis key and of the invalidation channel, so that
    /// several deployments (or tests) can share one Redis. Default `tenet:`.
    pub key_prefix: String,
    /// Failures in a row after which Redis is skipped until a probe
    /// succeeds. Default 3.
    pub failure_threshold: u32,
    /// How often a skipped Redis is probed. Default 1 s.
    pub probe_interval: Duration,
}

impl RedisOptions {
    /// Options with the documented defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 32,
            timeout: Duration::from_millis(50),
            key_prefix: "tenet:".to_owned(),
            failure_threshold: 3,
            probe_interval: Duration::from_secs(1),
        }
    }

    /// Checks that `url` parses as a Redis URL, without connecting, so that
    /// a caller can reject a malformed one before anything else. Fails
    /// with [`Error::Config`], whose message does not contain the URL.
    pub fn check_url(url: &str) -> Result<()> {
        redis::Client::open(url).map(drop).map_err(|err| {
            Error::Config(format!(
                "invalid Redis URL: {err}; expected redis://HOST:PORT"
            ))
        })
    }
}

/// A Redis connection pool with a circuit breaker.
pub(crate) struct RedisCache {
    pool: Pool<RedisConnectionManager>,
    client: redis::Client,
    options: RedisOptions,
    channel: String,
    put_script: Script,
    failures: AtomicU32,
    open: AtomicBool,
    /// Time each checkout waited for a connection.
    pool_wait: WaitHistogram,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password, so it is left out.
        f.debug_struct("RedisCache")
            .field("key_prefix", &self.options.key_prefix)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Builds the pool without connecting, so that a server can start
    /// while Redis is down; the first calls fail fast and open the breaker.
    pub(crate) fn new(options: RedisOptions) -> Result<Self> {
        let manager = RedisConnectionManager::new(options.url.as_str()).map_err(|err| {
            Error::Config(format!(
                "invalid Redis URL: {err}; expected redis://host:port"
            ))
        })?;
        let client = redis::Client::open(options.url.as_str())
            .map_err(|err| Error::Config(format!("invalid Redis URL: {err}")))?;
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .connection_timeout(options.timeout)
            // bb8-redis cannot tell that a multiplexed connection died, so
            // each checkout pings it and replaces a dead one. Redis is off
            // the warm path, so the extra round trip is affordable.
            .test_on_check_out(true)
            .build_unchecked(manager);
        Ok(Self {
            pool,
            client,
            channel: format!("{}invalidate", options.key_prefix),
            options,
            put_script: Script::new(PUT_SCRIPT),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            pool_wait: WaitHistogram::default(),
        })
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    pub(crate) fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// Returns the state of the connection pool, for metrics.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        PoolStatus::new(
            self.pool.state(),
            self.options.pool_size.max(1),
            &self.pool_wait,
        )
    }

    /// Checks out a pooled connection and records how long that took.
    ///
    /// NOTE: a checkout cut short by the timeout in [`RedisCache::run`] is
    /// dropped before it records its wait.
    async fn connection(&self) -> redis::RedisResult<PooledConnection<'_, RedisConnectionManager>> {
        let started = Instant::now();
        let checkout = self.pool.get().await;
        self.pool_wait.record(started.elapsed());
        checkout.map_err(pool_error)
    }

    /// Returns whether requests currently skip Redis.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Lets requests use Redis again after a successful probe.
    pub(crate) fn close(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis responds again; using the shared cache");
        }
    }

    /// Reads the cached verdict for `digest`; `None` on a miss or failure.
    pub(crate) async fn get(&self, digest: &KeyDigest) -> Option<Verdict> {
        if self.is_open() {
            return None;
        }
        let key = self.entry_key(digest);
        let value: Option<Vec<u8>> = self
            .run("read", async {
                let mut connection = self.connection().await?;
                connection.get(key).await
            })
            .await?;
        value.and_then(|bytes| decode(&bytes))
    }

    /// Writes a verdict unless Redis already has a later state of the key.
    pub(crate) async fn put(&self, digest: &KeyDigest, verdict: &Verdict, ttl: Duration) -> bool {
        !self.is_open() && self.put_while_open(digest, verdict, ttl).await
    }

    /// Writes like [`RedisCache::put`] even while requests skip Redis, to
    /// repair it before they use it again.
    pub(crate) async fn put_while_open(
        &self,
        digest: &KeyDigest,
        verdict: &Verdict,
        ttl: Duration,
    ) -> bool {
        let key = self.entry_key(digest);
        let value = encode(verdict);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run("write", async {
            let mut connection = self.connection().await?;
            self.put_script
                .key(key)
                .arg(value)
                .arg(ttl_ms)
                .invoke_async::<i64>(&mut *connection)
                .await
        })
        .await
        .is_some()
    }

    /// Tells every replica to drop its cached entry for `digest`.
    pub(crate) async fn publish(&self, digest: &KeyDigest) -> bool {
        self.publish_payload(digest.as_bytes().to_vec()).await
    }

    /// Tells every replica to drop its cached status of `tenant`. The
    /// payload is the id's 16 bytes, which subscribers tell apart from a
    /// 32-byte key digest by length.
    pub(crate) async fn publish_tenant(&self, tenant: TenantId) -> bool {
        self.publish_payload(tenant.as_uuid().as_bytes().to_vec())
            .await
    }

    async fn publish_payload(&self, payload: Vec<u8>) -> bool {
        if self.is_open() {
            return false;
        }
        self.run("publish", async {
            let mut connection = self.connection().await?;
            connection
                .publish::<_, _, i64>(&self.channel, payload)
                .await
        })
        .await
        .is_some()
    }

    /// Checks whether Redis responds, without touching the breaker.
    pub(crate) async fn probe(&self) -> bool {
        let ping = async {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut *connection)
                .await
        };
        matches!(timeout(self.options.timeout, ping).await, Ok(Ok(_)))
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let outcome = match timeout(self.options.timeout, call).await {
            Ok(Ok(value)) => {
                self.failures.store(0, Ordering::Release);
                return Some(value);
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("timed out after {:?}", self.options.timeout),
        };
        self.record_failure(operation, &outcome);
        None
    }

    fn record_failure(&self, operation: &'static str, error: &str) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.options.failure_threshold && !self.open.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                operation,
                error,
                failures,
                "Redis failed repeatedly; skipping the shared cache until it answers again"
            );
        } else {
            tracing::debug!(operation, error, failures, "Redis call failed");
        }
    }

    fn entry_key(&self, digest: &KeyDigest) -> String {
        let mut key = String::with_capacity(self.options.key_prefix.len() + 4 + 64);
        key.push_str(&self.options.key_prefix);
        key.push_str("key:");
        for byte in digest.as_bytes() {
            // Writing to a String cannot fail.
            let _ = write!(key, "{byte:02x}");
        }
        key
    }
}

fn pool_error(err: bb8::RunError<redis::RedisError>) -> redis::RedisError {
    match err {
        bb8::RunError::User(err) => err,
        bb8::RunError::TimedOut => redis::RedisError::from((
            redis::ErrorKind::Io,
            "timed out waiting for a Redis connection",
        )),
    }
}

const RANK_UNKNOWN: u8 = b'0';
const RANK_VALID: u8 = b'1';
const RANK_REVOKED: u8 = b'2';

/// Marks the valid-entry layout with an expiry and scopes. An entry of
/// the earlier layout (rank and two ids, 33 bytes) decodes as a miss, and
/// a reader of that layout takes this one for a miss too.
const VALID_LAYOUT: u8 = b'e';

/// Encodes a verdict. A valid entry is the rank, [`VALID_LAYOUT`], the
/// expiry as big-endian Unix milliseconds (`u64::MAX` for none), the
/// tenant and key ids, then each scope as one length byte and its bytes.
fn encode(verdict: &Verdict) -> Vec<u8> {
    match verdict {
        Verdict::Unknown => vec![RANK_UNKNOWN],
        Verdict::Revoked(_) => vec![RANK_REVOKED],
        Verdict::Valid(key) => {
            let scope_bytes: usize = key
                .scopes
                .iter()
                .map(|scope| 1 + scope.as_str().len())
                .sum();
            let mut value = Vec::with_capacity(42 + scope_bytes);
            value.push(RANK_VALID);
            value.push(VALID_LAYOUT);
            value.extend_from_slice(&key.expires_at.as_millis().to_be_bytes());
            value.extend_from_slice(key.principal.tenant_id.as_uuid().as_bytes());
            value.extend_from_slice(key.principal.key_id.as_uuid().as_bytes());
            for scope in key.scopes.iter() {
                // Scopes are at most 64 bytes long, so the length fits.
                value.push(scope.as_str().len() as u8);
                value.extend_from_slice(scope.as_str().as_bytes());
            }
            value
        }
    }
}

fn decode(value: &[u8]) -> Option<Verdict> {
    match value {
        [RANK_UNKNOWN] => Some(Verdict::Unknown),
        [RANK_REVOKED] => Some(Verdict::Revoked(None)),
        [RANK_VALID, VALID_LAYOUT, rest @ ..] if rest.len() >= 40 => {
            let (expiry, rest) = rest.split_at(8);
            let (ids, mut scope_bytes) = rest.split_at(32);
            let expires_at = Expiry::from_millis(u64::from_be_bytes(expiry.try_into().ok()?));
            let tenant = uuid::Uuid::from_slice(&ids[..16]).ok()?;
            let key = uuid::Uuid::from_slice(&ids[16..]).ok()?;
            let mut scopes = Vec::new();
            while let [len, tail @ ..] = scope_bytes {
                let len = usize::from(*len);
                let text = std::str::from_utf8(tail.get(..len)?).ok()?;
                scopes.push(Scope::parse(text).ok()?);
                scope_bytes = &tail[len..];
            }
            let key_id = KeyId::from_uuid(key);
            Some(Verdict::Valid(ValidKey {
                principal: Principal {
                    tenant_id: TenantId::from_uuid(tenant),
                    key_id,
                },
                expires_at,
                scopes: scopes.into(),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_key(expires_at: Expiry, scopes: &[&str]) -> Verdict {
        let key_id = KeyId::generate();
        Verdict::Valid(ValidKey {
            principal: Principal {
                tenant_id: TenantId::generate(),
                key_id,
            },
            expires_at,
            scopes: Scope::parse_list(scopes).expect("valid scopes").into(),
        })
    }

    #[test]
    fn verdicts_round_trip_through_encoding() {
        let longest = "s".repeat(crate::scope::MAX_SCOPE_LEN);
        for verdict in [
            Verdict::Unknown,
            Verdict::Revoked(None),
            valid_key(Expiry::NEVER, &[]),
            valid_key(Expiry::from_millis(1_800_000_000_000), &["a:b", &longest]),
        ] {
            assert_eq!(decode(&encode(&verdict)), Some(verdict));
        }
    }

    #[test]
    fn garbage_values_decode_to_nothing() {
        for value in [&b""[..], b"3", b"1short", b"01", b"1e"] {
            assert_eq!(decode(value), None, "{value:?}");
        }
    }

    #[test]
    fn earlier_layout_decodes_to_nothing() {
        let mut value = vec![RANK_VALID];
        value.extend_from_slice(&[7; 32]);

        assert_eq!(decode(&value), None);
    }

    #[test]
    fn truncated_scope_decodes_to_nothing() {
        let mut value = encode(&valid_key(Expiry::NEVER, &["billing"]));
        value.pop();

        assert_eq!(decode(&value), None);
    }
}

/// Tests against the Redis named by `TENET_TEST_REDIS_URL`, each under its
/// own key prefix.
#[cfg(test)]
mod live_tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    /// Returns the test Redis URL; fails under `CI=true` when it is unset,
    /// because CI must not skip these tests silently.
    fn redis_url() -> Option<String> {
        match std::env::var("TENET_TEST_REDIS_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("TENET_TEST_REDIS_URL is not set; CI must run the Redis tests")
            }
            Err(_) => {
                eprintln!("skipped: set TENET_TEST_REDIS_URL to run the Redis tests");
                None
            }
        }
    }

    fn options(url: &str) -> RedisOptions {
        RedisOptions {
            key_prefix: format!("tenet-test:{}:", uuid::Uuid::now_v7()),
            ..RedisOptions::new(url)
        }
    }

    fn valid(expires_at: Expiry) -> Verdict {
        let key_id = KeyId::generate();
        Verdict::Valid(ValidKey {
            principal: Principal {
                tenant_id: TenantId::generate(),
                key_id,
            },
            expires_at,
            scopes: Arc::from([]),
        })
    }

    async fn cleanup(cache: &RedisCache) {
        let mut connection = cache.pool.get().await.expect("connection");
        let keys: Vec<String> = connection
            .keys(format!("{}*", cache.options.key_prefix))
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: i64 = connection.del(keys).await.expect("DEL");
        }
    }

    #[tokio::test]
    async fn entries_only_move_forward() {
        let Some(url) = redis_url() else { return };
        let cache = RedisCache::new(options(&url)).expect("valid options");
        let digest = KeyDigest::from_bytes([1; 32]);
        let ttl = Duration::from_secs(30);
        let valid = valid(Expiry::NEVER);

        assert!(cache.put(&digest, &Verdict::Unknown, ttl).await);
        assert_eq!(cache.get(&digest).await, Some(Verdict::Unknown));
        assert!(cache.put(&digest, &valid, ttl).await);
        assert!(cache.put(&digest, &Verdict::Unknown, ttl).await);
        assert_eq!(cache.get(&digest).await, Some(valid.clone()));
        assert!(cache.put(&digest, &Verdict::Revoked(None), ttl).await);
        assert!(cache.put(&digest, &valid, ttl).await);
        assert_eq!(cache.get(&digest).await, Some(Verdict::Revoked(None)));

        cleanup(&cache).await;
    }

    #[tokio::test]
    async fn earlier_expiry_replaces_a_later_one() {
        let Some(url) = redis_url() else { return };
        let cache = RedisCache::new(options(&url)).expect("valid options");
        let digest = KeyDigest::from_bytes([5; 32]);
        let ttl = Duration::from_secs(30);
        let Verdict::Valid(never) = valid(Expiry::NEVER) else {
            unreachable!("valid() builds a valid verdict")
        };
        let later = Verdict::Valid(ValidKey {
            expires_at: Expiry::from_millis(2_000_000_000_000),
            ..never.clone()
        });
        let sooner = Verdict::Valid(ValidKey {
            expires_at: Expiry::from_millis(1_900_000_000_000),
            ..never.clone()
        });

        assert!(cache.put(&digest, &Verdict::Valid(never), ttl).await);
        assert!(cache.put(&digest, &later, ttl).await);
        assert_eq!(cache.get(&digest).await, Some(later.clone()));
        assert!(cache.put(&digest, &sooner, ttl).await);
        assert!(cache.put(&digest, &later, ttl).await);
        assert_eq!(cache.get(&digest).await, Some(sooner));
        assert!(cache.put(&digest, &Verdict::Revoked(None), ttl).await);
        assert_eq!(cache.get(&digest).await, Some(Verdict::Revoked(None)));

        cleanup(&cache).await;
    }

    #[tokio::test]
    async fn every_entry_has_an_expiry() {
        let Some(url) = redis_url() else { return };
        let cache = RedisCache::new(options(&url)).expect("valid options");
        let digest = KeyDigest::from_bytes([2; 32]);

        cache
            .put(&digest, &valid(Expiry::NEVER), Duration::from_secs(30))
            .await;

        let mut connection = cache.pool.get().await.expect("connection");
        let ttl: i64 = connection
            .pttl(cache.entry_key(&digest))
            .await
            .expect("PTTL");
        assert!(ttl > 0, "PTTL {ttl}");
        assert!(ttl <= 30_000, "PTTL {ttl}");
        drop(connection);
        cleanup(&cache).await;
    }

    #[tokio::test]
    async fn unanswering_redis_costs_at_most_the_timeout() {
        // A listener that accepts connections and never responds.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = silent.local_addr().expect("address");
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let cache = RedisCache::new(RedisOptions {
            timeout: Duration::from_millis(50),
            ..RedisOptions::new(format!("redis://{address}"))
        })
        .expect("valid options");
        let digest = KeyDigest::from_bytes([3; 32]);

        for _ in 0..5 {
            let started = Instant::now();
            assert_eq!(cache.get(&digest).await, None);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
        }

        assert!(cache.is_open(), "repeated timeouts open the breaker");
        accept.abort();
    }

    #[tokio::test]
    async fn breaker_closes_once_probe_succeeds() {
        let Some(url) = redis_url() else { return };
        let cache = RedisCache::new(options(&url)).expect("valid options");
        cache
            .failures
            .store(cache.options.failure_threshold, Ordering::Release);
        cache.open.store(true, Ordering::Release);
        let digest = KeyDigest::from_bytes([4; 32]);

        assert!(
            !cache
                .put(&digest, &Verdict::Unknown, Duration::from_secs(5))
                .await
        );
        assert!(cache.probe().await);
        cache.close();

        assert!(
            cache
                .put(&digest, &Verdict::Unknown, Duration::from_secs(5))
                .await
        );
        cleanup(&cache).await;
    }
}
