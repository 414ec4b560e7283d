//! Criterion benchmarks of key handling and `Tenet::verify`.
//!
//! Ids read `group/backend/cache-state/key-count`. The `verify` group puts
//! the warm in-process cache next to its floor (`verify/floor/std-hashmap`:
//! decode, keyed digest and a plain `HashMap` lookup over the same keys),
//! so the report reads as a ratio. Postgres and Redis benchmarks run only
//! when `TENET_TEST_DATABASE_URL` and `TENET_TEST_REDIS_URL` are set, each
//! in a fresh schema or key prefix that is removed afterwards.
//!
//! Run with `cargo bench -p tenet-benches --bench verify`; pass a filter
//! such as `verify/memory` to run a subset.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tenet_benches::fixture::{self, IssuedKeys};
use tenet_benches::floor::Floor;
use tenet_benches::postgres::{self, ScratchSchema};
use tenet_benches::redis;
use tenet_core::{
    ApiKey, MemoryStore, Pepper, PostgresStore, RedisOptions, SqliteStore, Store, Tenet,
};
use tokio::runtime::Runtime;

/// Key counts of the warm-cache benchmarks.
const WARM_COUNTS: [usize; 2] = [10_000, 1_000_000];

/// Key count of the store benchmarks, whose lookups go to the store.
const STORE_COUNT: usize = 10_000;

/// Issues in flight while a fixture is built; only Postgres gains from it.
const ISSUE_CONCURRENCY: usize = 16;

/// Redis benchmarks use a local cache of this many entries (one per shard),
/// so that almost every lookup misses it and goes to Redis.
const TINY_LOCAL_CACHE: usize = 64;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Issues `count` keys through `tenet` and reports how long that took.
fn build_keys(runtime: &Runtime, tenet: &Tenet, count: usize, purpose: &str) -> IssuedKeys {
    let started = Instant::now();
    let issued = runtime
        .block_on(fixture::issue(tenet, count, ISSUE_CONCURRENCY))
        .unwrap_or_else(|err| panic!("issuing {count} keys for {purpose} failed: {err}"));
    eprintln!(
        "fixture: issued {count} keys for {purpose} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    issued
}

fn key_handling(c: &mut Criterion) {
    let pepper = fixture::pepper();
    let key = ApiKey::generate();
    let text = key.expose_secret().to_owned();
    let secret = [7u8; 32];

    let mut group = c.benchmark_group("key");
    group.bench_function("generate", |b| b.iter(ApiKey::generate));
    group.bench_function("parse", |b| b.iter(|| ApiKey::parse(black_box(&text))));
    group.bench_function("digest/32B", |b| {
        b.iter(|| pepper.digest(black_box(&secret)))
    });
    group.finish();
}

/// Warm in-process cache over the memory store, next to its floor.
fn warm_cache(c: &mut Criterion) {
    let runtime = runtime();
    for count in WARM_COUNTS {
        let label = fixture::count_label(count);
        let pepper = fixture::pepper();
        let tenet = runtime
            .block_on(
                Tenet::builder(Arc::new(MemoryStore::new()), pepper.clone())
                    .cache(fixture::cache_options(count * 2))
                    .build(),
            )
            .expect("the cached memory service opens");
        let issued = build_keys(&runtime, &tenet, count, "the warm cache");
        runtime.block_on(fixture::warm(&tenet, &issued));
        let floor = Floor::new(pepper, issued.pairs());
        assert_eq!(floor.len(), count, "the floor indexes every key");
        assert_eq!(tenet.cached_keys(), count, "the cache holds every key");

        let mut group = c.benchmark_group("verify");
        group.bench_function(BenchmarkId::new("memory/cache-warm", &label), |b| {
            let mut keys = issued.cycle();
            b.to_async(&runtime).iter(|| {
                let key = keys.next_key();
                let tenet = &tenet;
                async move { black_box(tenet.verify(key).await) }
            });
        });
        // The same lookup plus the usage count that `/protected` and
        // `/verify` add.
        group.bench_function(BenchmarkId::new("memory/cache-warm-metered", &label), |b| {
            let mut keys = issued.cycle();
            b.to_async(&runtime).iter(|| {
                let key = keys.next_key();
                let tenet = &tenet;
                async move { black_box(tenet.verify_metered(key, &[]).await) }
            });
        });
        group.bench_function(BenchmarkId::new("floor/std-hashmap", &label), |b| {
            let mut keys = issued.cycle();
            b.iter(|| black_box(floor.lookup(keys.next_key())));
        });
        group.finish();
    }
}

/// Unknown well-formed keys: a cached miss, and a miss in the store with
/// the cache off.
fn unknown_key(c: &mut Criterion) {
    let runtime = runtime();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pepper = fixture::pepper();
    let cached = runtime
        .block_on(
            Tenet::builder(Arc::clone(&store), pepper.clone())
                .cache(fixture::cache_options(STORE_COUNT * 2))
                .build(),
        )
        .expect("the cached memory service opens");
    let uncached = runtime
        .block_on(Tenet::open(Arc::clone(&store), pepper))
        .expect("the uncached memory service opens");
    let issued = build_keys(&runtime, &cached, STORE_COUNT, "the unknown-key benchmarks");
    runtime.block_on(fixture::warm(&cached, &issued));
    let stranger = ApiKey::generate();
    let stranger = stranger.expose_secret();
    assert!(runtime.block_on(cached.verify(stranger)).is_err());

    let label = fixture::count_label(STORE_COUNT);
    let mut group = c.benchmark_group("verify");
    group.bench_function(
        BenchmarkId::new("memory/unknown-cached-miss", &label),
        |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(cached.verify(stranger).await) });
        },
    );
    group.bench_function(BenchmarkId::new("memory/unknown-uncached", &label), |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(uncached.verify(stranger).await) });
    });
    group.finish();
}

/// Benchmarks `verify` of valid keys under `id` with the store `tenet`
/// uses and no cache, after issuing the keys.
fn bench_cache_off(c: &mut Criterion, runtime: &Runtime, tenet: &Tenet, id: &str) {
    let issued = build_keys(runtime, tenet, STORE_COUNT, id);
    runtime.block_on(fixture::warm(tenet, &issued));

    let mut group = c.benchmark_group("verify");
    let label = fixture::count_label(STORE_COUNT);
    group.bench_function(BenchmarkId::new(id, &label), |b| {
        let mut keys = issued.cycle();
        b.to_async(runtime).iter(|| {
            let key = keys.next_key();
            async move { black_box(tenet.verify(key).await) }
        });
    });
    group.finish();
}

/// Lookups that reach the memory and SQLite stores, with the cache off.
fn embedded_stores(c: &mut Criterion) {
    let runtime = runtime();

    let memory = runtime
        .block_on(Tenet::open(Arc::new(MemoryStore::new()), fixture::pepper()))
        .expect("the memory service opens");
    bench_cache_off(c, &runtime, &memory, "memory/cache-off");

    let dir = std::env::temp_dir().join(format!("tenet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the SQLite benchmark directory is created");
    let sqlite = runtime.block_on(async {
        let store = SqliteStore::open(dir.join("tenet.db"))
            .await
            .expect("the SQLite store opens");
        Tenet::open(Arc::new(store), fixture::pepper())
            .await
            .expect("the SQLite service opens")
    });
    bench_cache_off(c, &runtime, &sqlite, "sqlite/cache-off");
    drop(sqlite);
    if let Err(err) = std::fs::remove_dir_all(&dir) {
        eprintln!("warning: cannot remove {}: {err}", dir.display());
    }
}

/// Postgres with the cache off, and Postgres behind Redis: a warm local
/// cache, and a local cache too small to hit so that Redis returns the
/// verdict.
fn shared_stores(c: &mut Criterion) {
    let Some(url) = postgres::database_url() else {
        eprintln!(
            "skipped: set {} to run the Postgres benchmarks",
            postgres::DATABASE_URL_VARIABLE
        );
        return;
    };
    let runtime = runtime();
    let schema = runtime
        .block_on(ScratchSchema::create(&url))
        .unwrap_or_else(|err| panic!("cannot create a scratch schema through {url}: {err}"));
    let store: Arc<PostgresStore> = Arc::new(
        runtime
            .block_on(schema.store(16))
            .unwrap_or_else(|err| panic!("cannot open the store in {}: {err}", schema.name())),
    );
    let pepper = fixture::pepper();

    let uncached = runtime
        .block_on(Tenet::open(store.clone(), pepper.clone()))
        .expect("the Postgres service opens");
    bench_cache_off(c, &runtime, &uncached, "postgres/cache-off");

    match redis::redis_url() {
        Some(redis_url) => with_redis(c, &runtime, &store, &pepper, &redis_url),
        None => eprintln!(
            "skipped: set {} to run the Redis benchmarks",
            redis::REDIS_URL_VARIABLE
        ),
    }

    drop(uncached);
    drop(store);
    let name = schema.name().to_owned();
    if let Err(err) = runtime.block_on(schema.drop_schema()) {
        eprintln!("warning: cannot drop the scratch schema {name}: {err}");
    }
}

fn with_redis(
    c: &mut Criterion,
    runtime: &Runtime,
    store: &Arc<PostgresStore>,
    pepper: &Pepper,
    url: &str,
) {
    let prefix = redis::scratch_prefix();
    let open = |local_capacity: usize| {
        let options = RedisOptions {
            key_prefix: prefix.clone(),
            ..RedisOptions::new(url)
        };
        runtime
            .block_on(
                Tenet::builder(store.clone(), pepper.clone())
                    .cache(fixture::cache_options(local_capacity))
                    .redis(options)
                    .build(),
            )
            .expect("the Postgres and Redis service opens")
    };
    let warm = open(STORE_COUNT * 2);
    let issued = build_keys(runtime, &warm, STORE_COUNT, "postgres+redis");
    runtime.block_on(fixture::warm(&warm, &issued));
    let label = fixture::count_label(STORE_COUNT);

    let mut group = c.benchmark_group("verify");
    group.bench_function(BenchmarkId::new("postgres+redis/cache-warm", &label), |b| {
        let mut keys = issued.cycle();
        b.to_async(runtime).iter(|| {
            let key = keys.next_key();
            let tenet = &warm;
            async move { black_box(tenet.verify(key).await) }
        });
    });

    // A second service on the same store and prefix, whose local cache
    // contains almost none of the keys that the first one put in Redis.
    let redis_hit = open(TINY_LOCAL_CACHE);
    group.bench_function(BenchmarkId::new("postgres+redis/redis-hit", &label), |b| {
        let mut keys = issued.cycle();
        b.to_async(runtime).iter(|| {
            let key = keys.next_key();
            let tenet = &redis_hit;
            async move { black_box(tenet.verify(key).await) }
        });
    });
    group.finish();

    drop(redis_hit);
    drop(warm);
    match runtime.block_on(redis::delete_prefixed(url, &prefix)) {
        Ok(deleted) => eprintln!("removed {deleted} Redis keys under {prefix}"),
        Err(err) => eprintln!("warning: cannot remove the Redis keys under {prefix}: {err}"),
    }
}

criterion_group!(
    benches,
    key_handling,
    warm_cache,
    unknown_key,
    embedded_stores,
    shared_stores
);
criterion_main!(benches);
