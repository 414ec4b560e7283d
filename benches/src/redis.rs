//! Scratch Redis key prefixes for the benchmarks that use Redis.

use redis::AsyncCommands as _;
use uuid::Uuid;

/// Environment variable with the URL of a Redis the benchmarks may write
/// to under a prefix of their own, such as `redis://127.0.0.1:6379`.
pub const REDIS_URL_VARIABLE: &str = "TENET_TEST_REDIS_URL";

/// Returns the benchmark Redis URL, or `None` when it is unset or empty
/// and the Redis benchmarks are skipped.
pub fn redis_url() -> Option<String> {
    std::env::var(REDIS_URL_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Returns a key prefix that no other run uses, for
/// [`tenet_core::RedisOptions::key_prefix`].
pub fn scratch_prefix() -> String {
    format!("tenet-bench-{}:", Uuid::now_v7().simple())
}

/// Deletes every key under `prefix` and returns how many there were.
///
/// Uses `KEYS`, which blocks Redis while it scans, so point it at a test
/// Redis only.
pub async fn delete_prefixed(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = connection.keys(format!("{prefix}*")).await?;
    if !keys.is_empty() {
        let _: i64 = connection.del(&keys).await?;
    }
    Ok(keys.len())
}
