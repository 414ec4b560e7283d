//! A warm-cache `Tenet::verify`, `Tenet::verify_with` or
//! `Tenet::verify_metered` allocates nothing.
//!
//! This test binary installs a global allocator that counts, per thread,
//! every allocation the thread makes. The service runs on a current-thread
//! tokio runtime, so every poll of `verify` happens on the measuring thread
//! and no allocation of it can escape the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use tenet_benches::fixture;
use tenet_core::{ApiKey, KeyOptions, MemoryStore, Scope, TenantName, Tenet};
use time::OffsetDateTime;

/// Warm verifications measured per run.
const VERIFICATIONS: usize = 10_000;

/// Keys in the fixture; the measured verifications cycle through them.
const KEYS: usize = 1_000;

/// Capacity of the warm tests' caches. The cache splits its capacity over
/// 64 shards and the keys fall into them at random. At twice the key
/// count a shard has room for 32 keys. A shard that gets more evicts one
/// in each cycle, and the cold verification that follows allocates. So 4
/// of 300 runs of these tests failed, and none of 400 at four times the
/// key count.
const CACHE_CAPACITY: usize = KEYS * 4;

thread_local! {
    /// Allocations (including reallocations) made by this thread so far.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations of each thread.
struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over. The counter is a
// const-initialised thread local without a destructor, whose access never
// allocates, so counting cannot recurse into the allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(pointer, layout, new_size) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn count_allocation() {
    // `try_with` fails only while the thread is being torn down; such an
    // allocation is outside any measurement.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// Runs `work` and returns its result with the number of allocations this
/// thread made during it.
fn allocations_during<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = work();
    let after = ALLOCATIONS.with(Cell::get);
    (result, after - before)
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

#[test]
fn counter_sees_allocations() {
    let (boxed, allocations) = allocations_during(|| black_box(Box::new(7u64)));

    assert_eq!(*boxed, 7);
    assert_eq!(allocations, 1);
}

#[test]
fn warm_verify_allocates_nothing() {
    let runtime = current_thread_runtime();
    let tenet = runtime
        .block_on(
            Tenet::builder(Arc::new(MemoryStore::new()), fixture::pepper())
                .cache(fixture::cache_options(CACHE_CAPACITY))
                .build(),
        )
        .expect("the cached memory service opens");
    let issued = runtime
        .block_on(fixture::issue(&tenet, KEYS, 1))
        .expect("keys are issued");
    runtime.block_on(fixture::warm(&tenet, &issued));
    let mut keys = issued.cycle();

    // Unconstrained, so that tokio's cooperative budget never makes the
    // loop yield: a yield would let the service's background tasks (usage
    // flushes, cache upkeep) run on this thread, and their allocations are
    // not the warm path's.
    let (verified, allocations) = allocations_during(|| {
        runtime.block_on(tokio::task::unconstrained(async {
            let mut verified = 0;
            for _ in 0..VERIFICATIONS {
                if tenet.verify(keys.next_key()).await.is_ok() {
                    verified += 1;
                }
            }
            verified
        }))
    });

    assert_eq!(verified, VERIFICATIONS, "every warm key verifies");
    assert_eq!(
        allocations, 0,
        "allocations in {VERIFICATIONS} warm verifications"
    );
}

#[test]
fn warm_verify_with_scopes_and_expiry_allocates_nothing() {
    let runtime = current_thread_runtime();
    let tenet = runtime
        .block_on(
            Tenet::builder(Arc::new(MemoryStore::new()), fixture::pepper())
                .cache(fixture::cache_options(CACHE_CAPACITY))
                .build(),
        )
        .expect("the cached memory service opens");
    let options = KeyOptions {
        expires_at: Some(OffsetDateTime::now_utc() + Duration::from_secs(3600)),
        scopes: Scope::parse_list(&["billing:read", "billing:write", "tenet:verify"])
            .expect("valid scopes"),
        ..KeyOptions::default()
    };
    let keys: Vec<String> = runtime.block_on(async {
        let name = TenantName::parse("Bench").expect("a valid tenant name");
        let tenant = tenet.create_tenant(name).await.expect("tenant is created");
        let mut keys = Vec::with_capacity(KEYS);
        for _ in 0..KEYS {
            let issued = tenet
                .issue_key_with(tenant.id, options.clone())
                .await
                .expect("key is issued");
            keys.push(issued.api_key.expose_secret().to_owned());
        }
        for key in &keys {
            tenet.verify(key).await.expect("a fresh key verifies");
        }
        keys
    });
    let required = ["billing:write", "tenet:verify"];

    // Unconstrained, like the loop of `warm_verify_allocates_nothing`.
    let (verified, allocations) = allocations_during(|| {
        runtime.block_on(tokio::task::unconstrained(async {
            let mut verified = 0;
            for key in keys.iter().cycle().take(VERIFICATIONS) {
                if tenet.verify_with(key, &required).await.is_ok() {
                    verified += 1;
                }
            }
            verified
        }))
    });

    assert_eq!(verified, VERIFICATIONS, "every warm key verifies");
    assert_eq!(
        allocations, 0,
        "allocations in {VERIFICATIONS} warm scoped verifications"
    );
}

#[test]
fn warm_metered_verify_after_a_flush_allocates_nothing() {
    let runtime = current_thread_runtime();
    let tenet = runtime
        .block_on(
            Tenet::builder(Arc::new(MemoryStore::new()), fixture::pepper())
                .cache(fixture::cache_options(CACHE_CAPACITY))
                .build(),
        )
        .expect("the cached memory service opens");
    let issued = runtime
        .block_on(fixture::issue(&tenet, KEYS, 1))
        .expect("keys are issued");
    let mut keys = issued.cycle();
    runtime.block_on(async {
        for _ in 0..KEYS {
            tenet
                .verify_metered(keys.next_key(), &[])
                .await
                .expect("a fresh key verifies");
        }
        // The flush empties the in-memory maps but keeps their capacity.
        tenet.flush_usage().await.expect("usage is written");
        tenet.flush_key_uses().await.expect("key uses are written");
    });

    // Unconstrained, like the loop of `warm_verify_allocates_nothing`.
    let (verified, allocations) = allocations_during(|| {
        runtime.block_on(tokio::task::unconstrained(async {
            let mut verified = 0;
            for _ in 0..VERIFICATIONS {
                if tenet.verify_metered(keys.next_key(), &[]).await.is_ok() {
                    verified += 1;
                }
            }
            verified
        }))
    });

    assert_eq!(verified, VERIFICATIONS, "every warm key verifies");
    assert_eq!(
        allocations, 0,
        "allocations in {VERIFICATIONS} warm metered verifications"
    );
}

#[test]
fn uncached_verify_is_counted() {
    // The store lookup clones the key record, so this proves that the
    // counter counts allocations made inside `verify` on this runtime.
    let runtime = current_thread_runtime();
    let tenet = runtime
        .block_on(Tenet::open(Arc::new(MemoryStore::new()), fixture::pepper()))
        .expect("the memory service opens");
    let issued = runtime
        .block_on(fixture::issue(&tenet, 1, 1))
        .expect("a key is issued");
    let key = &issued.keys[0];

    let (result, allocations) = allocations_during(|| runtime.block_on(tenet.verify(key)));

    assert!(result.is_ok(), "the issued key verifies");
    assert!(allocations > 0, "an uncached verification allocates");
}

#[test]
fn malformed_key_rejection_allocates_nothing() {
    let runtime = current_thread_runtime();
    let tenet = runtime
        .block_on(
            Tenet::builder(Arc::new(MemoryStore::new()), fixture::pepper())
                .cache(fixture::cache_options(16))
                .build(),
        )
        .expect("the cached memory service opens");
    let key = ApiKey::generate();
    let truncated = &key.expose_secret()[1..];

    let (result, allocations) = allocations_during(|| runtime.block_on(tenet.verify(truncated)));

    assert!(result.is_err(), "a truncated key is rejected");
    assert_eq!(allocations, 0);
}
