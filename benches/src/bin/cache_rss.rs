//! Measures the resident memory that the in-process verification cache
//! takes per cached key.
//!
//! Usage: `cache_rss [COUNT]` (default 1000000). It issues COUNT keys into
//! a memory store, reads the process's VmRSS, verifies every key once so
//! that the cache (capacity COUNT) fills, reads VmRSS again and prints the
//! difference per cached entry. The store and the plaintext keys exist
//! before the first reading, so the difference is the cache alone, plus
//! whatever freed memory the allocator keeps.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tenet_benches::fixture;
use tenet_benches::memory::resident_bytes;
use tenet_core::{MemoryStore, Tenet};

const DEFAULT_COUNT: usize = 1_000_000;

fn main() -> ExitCode {
    let count = match std::env::args().nth(1).map(|text| text.parse::<usize>()) {
        None => DEFAULT_COUNT,
        Some(Ok(count)) if count > 0 => count,
        Some(_) => {
            eprintln!("cache_rss: the key count must be a positive integer");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cache_rss: failed to start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(measure(count)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cache_rss: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(count: usize) -> Result<(), String> {
    let rss = || resident_bytes().map_err(|err| format!("cannot read VmRSS: {err}"));
    let idle = rss()?;

    let tenet = Tenet::builder(Arc::new(MemoryStore::new()), fixture::pepper())
        .cache(fixture::cache_options(count))
        .build()
        .await
        .map_err(|err| format!("cannot open the service: {err}"))?;
    let started = Instant::now();
    let issued = fixture::issue(&tenet, count, 1)
        .await
        .map_err(|err| format!("issuing {count} keys failed: {err}"))?;
    let issue_seconds = started.elapsed().as_secs_f64();
    let before = rss()?;

    let started = Instant::now();
    fixture::warm(&tenet, &issued).await;
    let warm_seconds = started.elapsed().as_secs_f64();
    let after = rss()?;
    let cached = tenet.cached_keys();
    if cached == 0 {
        return Err("the cache is empty after verifying every key".to_owned());
    }

    let grown = after.saturating_sub(before);
    println!("keys issued:            {count} in {issue_seconds:.1} s");
    println!("cache entries:          {cached} (capacity {count}) after {warm_seconds:.1} s");
    println!("VmRSS at start:         {:.1} MiB", mebibytes(idle));
    println!("VmRSS with keys:        {:.1} MiB", mebibytes(before));
    println!("VmRSS with cache full:  {:.1} MiB", mebibytes(after));
    println!(
        "cache bytes per entry:  {:.0}",
        grown as f64 / cached as f64
    );
    Ok(())
}

fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
