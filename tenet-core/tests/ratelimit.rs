//! Rate limit engine tests: the local limiter on an injected clock, and the
//! Redis limiter against the Redis named by `TENET_TEST_REDIS_URL`, each
//! test under its own key prefix.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use tenet_core::RedisOptions;
use tenet_core::ratelimit::{Check, Clock, Decision, Limit, LocalLimiter, Mode, RedisLimiter};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A clock the test moves by hand, in milliseconds.
#[derive(Debug, Clone)]
struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn starting_at(millis: u64) -> Self {
        Self(Arc::new(AtomicU64::new(millis)))
    }

    fn set(&self, millis: u64) {
        self.0.store(millis, Ordering::SeqCst);
    }

    fn advance(&self, millis: u64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    fn limiter(&self) -> LocalLimiter {
        let time = Arc::clone(&self.0);
        LocalLimiter::with_clock(Arc::new(move || time.load(Ordering::SeqCst)))
    }
}

const START_MILLIS: u64 = 1_800_000_000_000;

fn per_second(rate: u32, burst: u32) -> Limit {
    Limit::new(rate, Duration::from_secs(1), burst).expect("valid limit")
}

fn allowed_count(decisions: &[Decision]) -> usize {
    decisions.iter().filter(|d| d.allowed).count()
}

#[test]
fn invalid_limits_are_rejected() {
    assert!(Limit::new(0, Duration::from_secs(1), 1).is_err());
    assert!(Limit::new(1, Duration::from_secs(1), 0).is_err());
    assert!(Limit::new(1, Duration::ZERO, 1).is_err());
    assert!(Limit::new(2_000_000, Duration::from_secs(1), 1).is_err());
    assert!(Limit::new(1, Duration::from_secs(3600), 100_000).is_err());
}

#[test]
fn empty_checks_are_rejected() {
    let limiter = LocalLimiter::new();

    assert!(limiter.decide(&[], Mode::Consume).is_err());
}

#[test]
fn burst_then_one_per_interval() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let checks = [Check::key("k1", per_second(2, 3))];

    let first = limiter.decide(&checks, Mode::Consume).expect("decision");
    assert!(first.allowed);
    assert_eq!(first.limit, 3);
    assert_eq!(first.remaining, 2);
    assert_eq!(first.reset_secs, 1);
    assert_eq!(first.retry_after_secs, None);

    let decisions: Vec<Decision> = (0..3)
        .map(|_| limiter.decide(&checks, Mode::Consume).expect("decision"))
        .collect();
    assert!(decisions[0].allowed);
    assert!(decisions[1].allowed);
    assert_eq!(decisions[1].remaining, 0);
    assert_eq!(decisions[1].reset_secs, 2);
    assert!(!decisions[2].allowed);
    assert_eq!(decisions[2].remaining, 0);
    assert_eq!(decisions[2].retry_after_secs, Some(1));

    clock.advance(499);
    assert!(
        !limiter
            .decide(&checks, Mode::Consume)
            .expect("decision")
            .allowed
    );
    clock.advance(1);
    assert!(
        limiter
            .decide(&checks, Mode::Consume)
            .expect("decision")
            .allowed
    );
}

#[test]
fn retry_after_covers_the_wait() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let checks = [Check::key(
        "slow",
        Limit::new(1, Duration::from_secs(10), 1).unwrap(),
    )];

    assert!(limiter.decide(&checks, Mode::Consume).unwrap().allowed);
    clock.advance(2_500);
    let rejected = limiter.decide(&checks, Mode::Consume).unwrap();

    assert!(!rejected.allowed);
    assert_eq!(rejected.retry_after_secs, Some(8));
    clock.advance(7_499);
    assert!(!limiter.decide(&checks, Mode::Consume).unwrap().allowed);
    clock.advance(1);
    assert!(limiter.decide(&checks, Mode::Consume).unwrap().allowed);
}

/// Checks that every window of `window` milliseconds starting at an
/// allowed request contains at most `burst + rate * window` allowed requests.
fn assert_windows_bounded(allowed_at: &[u64], rate_per_second: u64, burst: u64) {
    for window in [1, 50, 100, 999, 1_000, 1_500, 5_000, 20_000] {
        let bound = burst + rate_per_second * window / 1_000;
        for (start, &from) in allowed_at.iter().enumerate() {
            let count = allowed_at[start..]
                .iter()
                .take_while(|&&at| at < from + window)
                .count() as u64;
            assert!(
                count <= bound,
                "{count} allowed in the {window} ms from {from}, bound {bound}"
            );
        }
    }
}

#[test]
fn windows_never_exceed_burst_plus_rate() {
    let rate = 10;
    let burst = 5;
    let checks = [Check::key("steady", per_second(rate, burst))];

    // Evenly spaced arrivals at twice the rate, then clumps of 40 at the
    // start of each second, over 20 simulated seconds.
    let even: Vec<u64> = (0..400).map(|i| i * 50).collect();
    let clumped: Vec<u64> = (0..20)
        .flat_map(|second| std::iter::repeat_n(second * 1_000, 40))
        .collect();

    // GCRA lets 5 through at each clump, as the burst never refills past 5.
    for (arrivals, minimum) in [(even, 200), (clumped, 100)] {
        let clock = ManualClock::starting_at(START_MILLIS);
        let limiter = clock.limiter();
        let mut allowed_at = Vec::new();
        for offset in arrivals {
            clock.set(START_MILLIS + offset);
            if limiter.decide(&checks, Mode::Consume).unwrap().allowed {
                allowed_at.push(offset);
            }
        }

        assert_windows_bounded(&allowed_at, u64::from(rate), u64::from(burst));
        // The limiter lets the full rate through, not just fewer requests.
        assert!(allowed_at.len() >= minimum, "{} allowed", allowed_at.len());
    }
}

#[test]
fn peek_consumes_nothing_locally() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let checks = [Check::key("peeked", per_second(1, 2))];

    for _ in 0..5 {
        let peek = limiter.decide(&checks, Mode::Peek).unwrap();
        assert!(peek.allowed);
        assert_eq!(peek.remaining, 2);
    }
    assert!(limiter.is_empty());

    assert!(limiter.decide(&checks, Mode::Consume).unwrap().allowed);
    assert!(limiter.decide(&checks, Mode::Consume).unwrap().allowed);
    let peek = limiter.decide(&checks, Mode::Peek).unwrap();
    assert!(!peek.allowed);
    assert_eq!(peek.retry_after_secs, Some(1));
}

#[test]
fn allows_agrees_with_peek_decisions() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let client = Check::client("192.0.2.7".parse().unwrap(), per_second(2, 3));
    let checks = [client.clone()];

    // Each step consumes once, then compares `allows` with a peek, over a
    // fresh subject, a drained burst and the refill after it.
    let mut seen = Vec::new();
    for step in 0..12 {
        let peek = limiter.decide(&checks, Mode::Peek).unwrap();
        assert_eq!(limiter.allows(&client), peek.allowed, "step {step}");
        seen.push(peek.allowed);
        limiter.decide(&checks, Mode::Consume).unwrap();
        if step >= 6 {
            clock.advance(500);
        }
    }
    assert!(seen.contains(&true) && seen.contains(&false), "{seen:?}");

    let shadowed = [Check::key("shadowed", per_second(1, 1).shadow())];
    limiter.decide(&shadowed, Mode::Consume).unwrap();
    limiter.decide(&shadowed, Mode::Consume).unwrap();
    assert!(limiter.allows(&shadowed[0]));
}

#[test]
fn allows_after_entries_drain() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let guessing = Check::client("192.0.2.7".parse().unwrap(), per_second(1, 2));
    let other = Check::client("192.0.2.8".parse().unwrap(), per_second(1, 2));
    for _ in 0..3 {
        limiter
            .decide(std::slice::from_ref(&guessing), Mode::Consume)
            .unwrap();
    }

    assert!(!limiter.allows(&guessing));
    assert!(limiter.allows(&other));

    // One interval refills one request of the burst; after three, the
    // entry has drained and decides like a client never seen.
    clock.advance(1_000);
    assert!(limiter.allows(&guessing));
    clock.advance(2_000);
    assert!(limiter.allows(&guessing));
    assert_eq!(limiter.len(), 1, "drained entries stay until a sweep");

    for _ in 0..3 {
        limiter
            .decide(std::slice::from_ref(&other), Mode::Consume)
            .unwrap();
    }
    assert!(!limiter.allows(&other));
    assert!(limiter.allows(&guessing));
}

/// A clock whose cheap reading trails the exact one by `lag` milliseconds,
/// as the coarse system clock trails by up to one tick.
struct LaggingClock {
    now: Arc<AtomicU64>,
    lag: u64,
}

impl Clock for LaggingClock {
    fn now_millis(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn lagging_millis(&self) -> u64 {
        self.now_millis() - self.lag
    }
}

#[test]
fn allows_with_lagging_clock() {
    let now = Arc::new(AtomicU64::new(START_MILLIS));
    let limiter = LocalLimiter::with_clock(Arc::new(LaggingClock {
        now: Arc::clone(&now),
        lag: 5_000,
    }));
    let client = Check::client("192.0.2.9".parse().unwrap(), per_second(1, 1));
    let checks = [client.clone()];
    limiter.decide(&checks, Mode::Consume).unwrap();
    limiter.decide(&checks, Mode::Consume).unwrap();
    assert!(!limiter.allows(&client));

    // The exact time has passed the entry's TAT, the lagging one has not.
    now.fetch_add(2_000, Ordering::SeqCst);
    assert!(limiter.allows(&client));
    assert_eq!(
        limiter.allows(&client),
        limiter.decide(&checks, Mode::Peek).unwrap().allowed
    );
}

#[test]
fn shadow_reports_without_rejecting_locally() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let checks = [Check::key("shadowed", per_second(1, 2).shadow())];

    let decisions: Vec<Decision> = (0..5)
        .map(|_| limiter.decide(&checks, Mode::Consume).unwrap())
        .collect();

    assert_eq!(allowed_count(&decisions), 5);
    assert!(!decisions[1].shadow_rejected);
    assert!(decisions[2..].iter().all(|d| d.shadow_rejected));
    assert!(decisions[2..].iter().all(|d| !d.outcomes[0].conforms));
    assert_eq!(decisions[4].outcomes[0].retry_after_secs, Some(1));
}

#[test]
fn shadow_limit_beside_enforced_one() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let checks = [
        Check::tenant("t1", per_second(1, 10)),
        Check::key("k1", per_second(1, 1).shadow()),
    ];

    let decisions: Vec<Decision> = (0..12)
        .map(|_| limiter.decide(&checks, Mode::Consume).unwrap())
        .collect();

    assert_eq!(allowed_count(&decisions), 10);
    assert!(decisions[1].shadow_rejected);
    assert_eq!(
        decisions[1].limit, 10,
        "headers describe the enforced limit"
    );
    assert_eq!(decisions[1].remaining, 8);
    assert_eq!(decisions[11].retry_after_secs, Some(1));
}

/// Runs the tenant-and-key scenario against any limiter: `decide` takes a
/// key id and returns the decision for that key within tenant `t1`.
async fn assert_tenant_and_key_limits<F, Fut>(decide: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Decision>,
{
    // Key `k1` is limited to 3; `k2` and `k3` to 100; the tenant to 5.
    for _ in 0..3 {
        assert!(decide("k1").await.allowed);
    }
    let key_rejection = decide("k1").await;
    assert!(!key_rejection.allowed);
    assert_eq!(key_rejection.limit, 3, "the key limit rejected");

    // The rejection left the tenant at 2 remaining.
    assert!(decide("k2").await.allowed);
    let last = decide("k2").await;
    assert!(last.allowed);
    assert_eq!(last.remaining, 0);

    for key in ["k2", "k3"] {
        let rejected = decide(key).await;
        assert!(!rejected.allowed, "{key} shares the exhausted tenant");
        assert_eq!(rejected.limit, 5, "the tenant limit rejected {key}");
        assert!(rejected.retry_after_secs.unwrap() >= 1);
    }
}

fn tenant_and_key_checks(key: &str) -> Vec<Check> {
    let key_burst = if key == "k1" { 3 } else { 100 };
    let hour = Duration::from_secs(3600);
    vec![
        Check::tenant("t1", Limit::new(1, hour, 5).unwrap()),
        Check::key(key, Limit::new(1, hour, key_burst).unwrap()),
    ]
}

#[tokio::test]
async fn tenant_limit_spans_keys_locally() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();

    assert_tenant_and_key_limits(|key| {
        let decision = limiter
            .decide(&tenant_and_key_checks(key), Mode::Consume)
            .unwrap();
        async move { decision }
    })
    .await;
}

/// Returns the limits of the changed-limit scenario: one request an hour,
/// then 100 a minute with a burst of 50.
fn hourly_then_raised() -> (Limit, Limit) {
    let hourly = Limit::new(1, Duration::from_secs(3600), 1).expect("valid limit");
    let raised = Limit::new(100, Duration::from_secs(60), 50).expect("valid limit");
    (hourly, raised)
}

/// Runs the changed-limit scenario against any limiter: `decide` takes
/// the tenant's limit and returns the decision of one request.
async fn assert_changed_limit_starts_afresh<F, Fut>(decide: F)
where
    F: Fn(Limit) -> Fut,
    Fut: Future<Output = Decision>,
{
    let (hourly, raised) = hourly_then_raised();

    let first = decide(hourly.clone()).await;
    let over = decide(hourly.clone()).await;
    let watched = decide(raised.clone().shadow()).await;
    let raised_first = decide(raised.clone()).await;
    let enforced = decide(raised).await;

    assert!(first.allowed);
    assert!(!over.allowed, "the hourly limit holds");
    assert!(watched.allowed);
    assert_eq!(watched.remaining, 49, "the new limit starts with its burst");
    assert!(raised_first.allowed, "enforcing the watched limit goes on");
    assert_eq!(raised_first.remaining, 48, "from the watched state");
    assert!(enforced.allowed);
    assert_eq!(enforced.remaining, 47);
}

#[tokio::test]
async fn changed_limit_starts_afresh_locally() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();

    assert_changed_limit_starts_afresh(|limit| {
        let decision = limiter
            .decide(&[Check::tenant("t1", limit)], Mode::Consume)
            .unwrap();
        async move { decision }
    })
    .await;
}

#[test]
fn drained_entries_are_dropped() {
    let clock = ManualClock::starting_at(START_MILLIS);
    let limiter = clock.limiter();
    let limit = per_second(10, 1);

    for i in 0..1_000 {
        let checks = [Check::key(format!("old{i}"), limit.clone())];
        limiter.decide(&checks, Mode::Consume).unwrap();
    }
    assert_eq!(limiter.len(), 1_000);

    clock.advance(1_000);
    for i in 0..5_000 {
        let checks = [Check::key(format!("new{i}"), limit.clone())];
        limiter.decide(&checks, Mode::Consume).unwrap();
        clock.advance(1);
    }

    // Each entry drains 100 ms after its write, so only the last 100 are
    // live; sweeps run whenever the map doubles since the last one.
    assert!(limiter.len() <= 2_048, "{} entries kept", limiter.len());
}

#[test]
fn per_replica_divides_rate_and_burst() {
    let limit = Limit::new(100, Duration::from_secs(1), 30).unwrap();

    let share = limit.per_replica(3).unwrap();

    assert_eq!(share, Limit::new(33, Duration::from_secs(1), 10).unwrap());
    assert_eq!(limit.per_replica(1000).unwrap().burst(), 1);
}

// Redis tests.

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

/// Options under a fresh key prefix, with a timeout generous enough for a
/// loaded test machine.
fn options(url: &str) -> RedisOptions {
    RedisOptions {
        key_prefix: format!("tenet-test:{}:", uuid::Uuid::now_v7()),
        timeout: Duration::from_secs(10),
        ..RedisOptions::new(url)
    }
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis connection")
}

async fn keys_under(url: &str, prefix: &str) -> Vec<String> {
    let mut connection = connect(url).await;
    connection.keys(format!("{prefix}*")).await.expect("KEYS")
}

async fn cleanup(url: &str, prefix: &str) {
    let keys = keys_under(url, prefix).await;
    if !keys.is_empty() {
        let mut connection = connect(url).await;
        let _: i64 = connection.del(keys).await.expect("DEL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_never_overspend() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let limiters: Vec<Arc<RedisLimiter>> = (0..3)
        .map(|_| Arc::new(RedisLimiter::new(options.clone()).expect("valid options")))
        .collect();
    // One request per hour: no capacity returns during the run.
    let checks = Arc::new([Check::key(
        "shared",
        Limit::new(1, Duration::from_secs(3600), 100).unwrap(),
    )]);

    let started = Instant::now();
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let limiter = Arc::clone(&limiters[i % limiters.len()]);
            let checks = Arc::clone(&checks);
            tokio::spawn(async move { limiter.decide(&checks[..], Mode::Consume).await })
        })
        .collect();
    let mut allowed = 0;
    let mut failed = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(decision) if decision.allowed => allowed += 1,
            Ok(_) => {}
            Err(err) => {
                eprintln!("decision failed: {err}");
                failed += 1;
            }
        }
    }
    let elapsed = started.elapsed();

    assert!(allowed <= 100, "{allowed} allowed");
    assert_eq!(failed, 0, "decisions failed");
    if elapsed < Duration::from_secs(3600) {
        assert_eq!(allowed, 100, "in {elapsed:?}");
    }
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn local_clock_offset_has_no_effect() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let accurate = RedisLimiter::new(options.clone()).unwrap();
    let ahead = RedisLimiter::with_clock(options.clone(), Arc::new(move || now() + 7_000)).unwrap();
    let behind =
        RedisLimiter::with_clock(options.clone(), Arc::new(move || now() - 7_000)).unwrap();
    // One request per 5 s: a clock 7 s ahead would see the spent burst as
    // refilled if decisions used it.
    let checks = [Check::key(
        "skewed",
        Limit::new(1, Duration::from_secs(5), 2).unwrap(),
    )];

    assert!(
        accurate
            .decide(&checks, Mode::Consume)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        accurate
            .decide(&checks, Mode::Consume)
            .await
            .unwrap()
            .allowed
    );
    let baseline = accurate.decide(&checks, Mode::Peek).await.unwrap();
    assert!(!baseline.allowed);

    for limiter in [&ahead, &behind] {
        let peek = limiter.decide(&checks, Mode::Peek).await.unwrap();
        let consume = limiter.decide(&checks, Mode::Consume).await.unwrap();
        for decision in [peek, consume] {
            assert!(!decision.allowed);
            assert_eq!(decision.remaining, 0);
            assert_eq!(decision.retry_after_secs, baseline.retry_after_secs);
            assert_eq!(decision.reset_secs, baseline.reset_secs);
        }
    }
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn tenant_limit_spans_keys_on_redis() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let limiter = RedisLimiter::new(options.clone()).unwrap();

    assert_tenant_and_key_limits(|key| {
        let limiter = &limiter;
        async move {
            limiter
                .decide(&tenant_and_key_checks(key), Mode::Consume)
                .await
                .unwrap()
        }
    })
    .await;
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn every_written_key_expires() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let limiter = RedisLimiter::new(options.clone()).unwrap();
    let checks = [
        Check::tenant("t1", Limit::new(1, Duration::from_secs(60), 10).unwrap()),
        Check::key("k1", per_second(5, 3)),
        Check::key("k2", per_second(5, 3).shadow()),
    ];

    for _ in 0..4 {
        limiter.decide(&checks, Mode::Consume).await.unwrap();
    }

    let written = keys_under(&url, &options.key_prefix).await;
    assert_eq!(written.len(), 3, "{written:?}");
    // The fourth decision is rejected by `k1`, so each TAT is three
    // intervals: 3 min for the tenant, 600 ms for the keys.
    let drain_millis = [180_000, 600, 600];
    let mut connection = connect(&url).await;
    for (check, drain) in checks.iter().zip(drain_millis) {
        let key = limiter.redis_key(check);
        let ttl: i64 = connection.pttl(&key).await.expect("PTTL");
        assert!(ttl > 0, "{key} has PTTL {ttl}");
        assert!(
            ttl <= drain,
            "{key} outlives its drain time {drain}: {ttl} ms"
        );
    }
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn peek_consumes_nothing_on_redis() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let limiter = RedisLimiter::new(options.clone()).unwrap();
    let checks = [Check::key(
        "peeked",
        Limit::new(1, Duration::from_secs(60), 2).unwrap(),
    )];

    for _ in 0..5 {
        let peek = limiter.decide(&checks, Mode::Peek).await.unwrap();
        assert!(peek.allowed);
        assert_eq!(peek.remaining, 2);
    }
    assert!(keys_under(&url, &options.key_prefix).await.is_empty());

    assert!(
        limiter
            .decide(&checks, Mode::Consume)
            .await
            .unwrap()
            .allowed
    );
    let mut connection = connect(&url).await;
    let key = limiter.redis_key(&checks[0]);
    let stored: String = connection.get(&key).await.expect("GET");
    let peek = limiter.decide(&checks, Mode::Peek).await.unwrap();
    assert_eq!(peek.remaining, 1);
    let after: String = connection.get(&key).await.expect("GET");
    assert_eq!(stored, after, "peek rewrote the TAT");
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn shadow_reports_without_rejecting_on_redis() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let limiter = RedisLimiter::new(options.clone()).unwrap();
    let checks = [Check::key(
        "shadowed",
        Limit::new(1, Duration::from_secs(60), 2).unwrap().shadow(),
    )];

    let mut decisions = Vec::new();
    for _ in 0..5 {
        decisions.push(limiter.decide(&checks, Mode::Consume).await.unwrap());
    }

    assert_eq!(allowed_count(&decisions), 5);
    assert!(decisions[..2].iter().all(|d| !d.shadow_rejected));
    assert!(decisions[2..].iter().all(|d| d.shadow_rejected));
    assert!(
        decisions[2..]
            .iter()
            .all(|d| d.outcomes[0].retry_after_secs >= Some(1))
    );
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn unanswering_redis_fails_within_the_timeout() {
    // A listener that accepts connections and never replies.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let limiter = RedisLimiter::new(RedisOptions {
        timeout: Duration::from_millis(50),
        ..RedisOptions::new(format!("redis://{address}"))
    })
    .unwrap();
    let checks = [Check::key("k1", per_second(1, 1))];

    for _ in 0..5 {
        let started = Instant::now();
        let outcome = limiter.decide(&checks, Mode::Consume).await;
        assert!(
            matches!(outcome, Err(tenet_core::Error::Unavailable(_))),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    accept.abort();
}

/// A TCP proxy in front of the test Redis that can close, or go silent on,
/// the connections it accepted so far while it forwards new ones.
struct RedisProxy {
    /// The Redis URL of the proxy, with the credentials and database of the
    /// test Redis URL.
    url: String,
    accepted: Arc<AtomicUsize>,
    /// Connections with an index below this one stop forwarding requests.
    silent_below: Arc<AtomicUsize>,
    forwarders: Arc<Mutex<Vec<JoinHandle<()>>>>,
    listener: JoinHandle<()>,
}

impl RedisProxy {
    async fn start(redis_url: &str) -> Self {
        let (scheme, rest) = redis_url
            .split_once("://")
            .expect("Redis URL with a scheme");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (format!("{credentials}@"), host_port),
            None => (String::new(), authority),
        };
        let upstream = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:6379")
        };

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!(
            "{scheme}://{credentials}{}/{path}",
            listener.local_addr().expect("proxy address")
        );
        let accepted = Arc::new(AtomicUsize::new(0));
        let silent_below = Arc::new(AtomicUsize::new(0));
        let forwarders = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::spawn({
            let accepted = Arc::clone(&accepted);
            let silent_below = Arc::clone(&silent_below);
            let forwarders = Arc::clone(&forwarders);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let index = accepted.fetch_add(1, Ordering::SeqCst);
                    let server = TcpStream::connect(&upstream)
                        .await
                        .expect("connect to Redis");
                    let forwarder =
                        tokio::spawn(forward(client, server, index, Arc::clone(&silent_below)));
                    forwarders.lock().unwrap().push(forwarder);
                }
            }
        });
        Self {
            url,
            accepted,
            silent_below,
            forwarders,
            listener,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection accepted so far, as a Redis restart does.
    fn close_accepted(&self) {
        for forwarder in self.forwarders.lock().unwrap().drain(..) {
            forwarder.abort();
        }
    }

    /// Stops forwarding requests on every connection accepted so far and
    /// keeps them open, like a Redis that stopped replying.
    fn silence_accepted(&self) {
        self.silent_below.store(self.accepted(), Ordering::SeqCst);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.close_accepted();
    }
}

/// Copies replies to the client and requests to Redis, dropping requests
/// once `index` is below `silent_below`. Aborting the task closes both
/// sockets.
async fn forward(
    client: TcpStream,
    server: TcpStream,
    index: usize,
    silent_below: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies = tokio::io::copy(&mut server_read, &mut client_write);
    let requests = async {
        let mut buffer = vec![0; 4096];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if index < silent_below.load(Ordering::SeqCst) {
                continue;
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = replies => {}
        () = requests => {}
    }
}

#[tokio::test]
async fn limiter_reconnects_after_its_connection_closes() {
    let Some(url) = redis_url() else { return };
    let proxy = RedisProxy::start(&url).await;
    let options = RedisOptions {
        // Below the attempts made here, so that no pause starts.
        failure_threshold: 10,
        ..options(&proxy.url)
    };
    let limiter = RedisLimiter::new(options.clone()).unwrap();
    let checks = [Check::key("reconnected", per_second(1_000, 1_000))];
    limiter.decide(&checks, Mode::Consume).await.unwrap();
    assert_eq!(proxy.accepted(), 1);

    proxy.close_accepted();
    // The first call may fail on the closed connection, which discards it.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let outcome = limiter.decide(&checks, Mode::Consume).await;
        let decided = outcome.is_ok();
        outcomes.push(outcome.map(|decision| decision.allowed));
        if decided {
            break;
        }
    }

    assert!(
        matches!(outcomes.last(), Some(Ok(true))),
        "no decision after the close: {outcomes:?}"
    );
    assert_eq!(proxy.accepted(), 2, "one new connection: {outcomes:?}");
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn limiter_replaces_a_silent_connection() {
    let Some(url) = redis_url() else { return };
    let proxy = RedisProxy::start(&url).await;
    let options = RedisOptions {
        timeout: Duration::from_millis(200),
        failure_threshold: 10,
        ..options(&proxy.url)
    };
    let limiter = RedisLimiter::new(options.clone()).unwrap();
    let checks = [Check::key("replaced", per_second(1_000, 1_000))];
    limiter.decide(&checks, Mode::Consume).await.unwrap();

    proxy.silence_accepted();
    let timed_out = limiter.decide(&checks, Mode::Consume).await;
    let next = limiter.decide(&checks, Mode::Consume).await;

    assert!(
        matches!(timed_out, Err(tenet_core::Error::Unavailable(_))),
        "{timed_out:?}"
    );
    assert!(
        next.as_ref().is_ok_and(|decision| decision.allowed),
        "the call after a timeout uses a new connection: {next:?}"
    );
    assert_eq!(proxy.accepted(), 2);
    cleanup(&url, &options.key_prefix).await;
}

#[tokio::test]
async fn changed_limit_starts_afresh_on_redis() {
    let Some(url) = redis_url() else { return };
    let options = options(&url);
    let limiter = RedisLimiter::new(options.clone()).unwrap();

    assert_changed_limit_starts_afresh(|limit| {
        let limiter = &limiter;
        async move {
            limiter
                .decide(&[Check::tenant("t1", limit)], Mode::Consume)
                .await
                .unwrap()
        }
    })
    .await;
    cleanup(&url, &options.key_prefix).await;
}
