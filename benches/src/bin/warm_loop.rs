//! Runs warm-cache verifications, or their floor, in a plain loop, for
//! instruction counts and profiles that criterion's harness would blur.
//!
//! `warm_loop MODE COUNT [KEYS]` issues KEYS keys (default 10,000) to a
//! cached memory service, warms the cache, then runs COUNT lookups of MODE:
//! `verify` for `Tenet::verify`, `floor` for the floor of
//! `benches/verify.rs`, or `none` for neither. A few keys, which fit in the
//! CPU's first-level cache, leave out the cost of memory accesses. Under `valgrind --tool=callgrind`, the difference of
//! two counts divided by the difference of COUNT gives the instructions of
//! one lookup, free of the fixture's cost:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null warm_loop verify 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null warm_loop verify 100000
//! ```

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use tenet_benches::fixture;
use tenet_benches::floor::Floor;
use tenet_core::{MemoryStore, Tenet};

/// Keys issued when the command line gives no key count.
const DEFAULT_KEYS: usize = 10_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, count, keys) = match args.as_slice() {
        [mode, count] => (mode.as_str(), count.parse(), Ok(DEFAULT_KEYS)),
        [mode, count, keys] => (mode.as_str(), count.parse(), keys.parse()),
        _ => return usage(),
    };
    let (Ok(count), Ok(key_count)) = (count, keys) else {
        return usage();
    };
    if key_count == 0 {
        return usage();
    }
    if !matches!(mode, "verify" | "floor" | "none") {
        return usage();
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let pepper = fixture::pepper();
    let tenet = runtime
        .block_on(
            Tenet::builder(Arc::new(MemoryStore::new()), pepper.clone())
                .cache(fixture::cache_options(key_count * 2))
                .build(),
        )
        .expect("the cached memory service opens");
    let issued = runtime
        .block_on(fixture::issue(&tenet, key_count, 1))
        .expect("keys are issued");
    runtime.block_on(fixture::warm(&tenet, &issued));
    let floor = Floor::new(pepper, issued.pairs());
    let mut keys = issued.cycle();

    let passed = runtime.block_on(async {
        let mut passed = 0usize;
        for _ in 0..count {
            let key = keys.next_key();
            let ok = match mode {
                "verify" => black_box(tenet.verify(key).await).is_ok(),
                "floor" => black_box(floor.lookup(key)).is_some(),
                _ => black_box(key).is_empty(),
            };
            passed += usize::from(ok);
        }
        passed
    });
    if mode != "none" && passed != count {
        eprintln!("only {passed} of {count} lookups passed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: warm_loop verify|floor|none COUNT [KEYS]");
    ExitCode::from(2)
}
