//! Shared pieces of Tenet's benchmarks: key fixtures, the floor that
//! verification is compared with, scratch Postgres schemas and Redis
//! prefixes, and the resident memory of this process.
//!
//! The criterion benches live in `benches/verify.rs`, the HTTP load
//! benchmark in `load.sh`, its baseline server in `src/bin/bare.rs`, and the
//! cache memory measurement in `src/bin/cache_rss.rs`.

pub mod fixture;
pub mod floor;
pub mod memory;
pub mod postgres;
pub mod redis;
