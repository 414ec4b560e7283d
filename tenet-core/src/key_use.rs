//! `last_used_at`: when each key last verified, kept in memory and written
//! to the store in batches.
//!
//! A verification must not wait for a store write, so it only records the
//! time in memory: in the [`KeyUseCell`] of the key's cache entry, or,
//! without a cache, in a sharded map. [`crate::Tenet::flush_key_uses`]
//! takes what was recorded and writes it in one store call. Called once per interval,
//! it writes each key at most once per interval, however often the key
//! verified. Stores only move `last_used_at` forward, so a replica whose
//! flush carries an older time cannot undo a newer one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::id::KeyId;

/// Shards of the map; a power of two, so the shard is a mask of the id.
const SHARDS: usize = 16;

/// The latest use of one key, as handed to [`crate::Store::record_key_uses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUse {
    pub key_id: KeyId,
    /// Truncated to milliseconds, which every store keeps exactly.
    pub used_at: OffsetDateTime,
}

/// The latest use of one key, kept in its cache entry so that a warm
/// verification records it with atomic operations only.
#[derive(Debug)]
pub(crate) struct KeyUseCell {
    key_id: KeyId,
    /// Unix milliseconds of the latest use, or 0 before the first.
    used_at: AtomicI64,
    /// Whether the cell is in the recorder's list of cells to flush.
    queued: AtomicBool,
}

impl KeyUseCell {
    pub(crate) fn new(key_id: KeyId) -> Self {
        Self {
            key_id,
            used_at: AtomicI64::new(0),
            queued: AtomicBool::new(false),
        }
    }
}

/// Cells are compared by key, so that two cache entries of one key are
/// equal whatever their recorded uses.
impl PartialEq for KeyUseCell {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id
    }
}

impl Eq for KeyUseCell {}

/// Latest use per key since the last flush, in Unix milliseconds.
///
/// Cells with a new use wait in `queued`, each at most once per flush. Keys
/// verified without a cache go to the sharded maps instead, and recording
/// locks one shard for a map update. No lock is held across an await. A
/// flush drains the list and the maps, which keeps their capacity, so
/// recording allocates only when one of them grows past its largest size
/// so far.
#[derive(Debug)]
pub(crate) struct KeyUseRecorder {
    queued: Mutex<Vec<Arc<KeyUseCell>>>,
    shards: Box<[Mutex<HashMap<KeyId, i64>>]>,
}

impl Default for KeyUseRecorder {
    fn default() -> Self {
        Self {
            queued: Mutex::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl KeyUseRecorder {
    /// Records a use at `millis` (Unix milliseconds) in a cache entry's
    /// cell, and queues the cell for the next flush unless it is queued.
    pub(crate) fn record_cell(&self, cell: &Arc<KeyUseCell>, millis: i64) {
        // Sequentially consistent, so that either this call reads the flag
        // that `take` cleared and queues the cell again, or `take` reads
        // this use.
        if cell.used_at.load(Ordering::SeqCst) < millis {
            cell.used_at.fetch_max(millis, Ordering::SeqCst);
        }
        if !cell.queued.load(Ordering::SeqCst) && !cell.queued.swap(true, Ordering::SeqCst) {
            self.queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(cell));
        }
    }

    /// Records that `key` verified now.
    pub(crate) fn record(&self, key: KeyId) {
        self.record_at(key, unix_millis_now());
    }

    fn record_at(&self, key: KeyId, millis: i64) {
        let mut shard = self.shard(key);
        let latest = shard.entry(key).or_insert(millis);
        *latest = (*latest).max(millis);
    }

    /// Removes and returns every recorded use, one per key.
    pub(crate) fn take(&self) -> Vec<KeyUse> {
        let mut latest: HashMap<KeyId, i64> = HashMap::new();
        let mut keep_latest = |key_id: KeyId, millis: i64| {
            let entry = latest.entry(key_id).or_insert(millis);
            *entry = (*entry).max(millis);
        };

        let cells: Vec<Arc<KeyUseCell>> = self
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for cell in cells {
            // The flag is cleared first, so a use after the read below
            // queues the cell again.
            cell.queued.store(false, Ordering::SeqCst);
            keep_latest(cell.key_id, cell.used_at.load(Ordering::SeqCst));
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (key_id, millis) in shard.drain() {
                keep_latest(key_id, millis);
            }
        }

        latest
            .into_iter()
            .filter_map(|(key_id, millis)| {
                let used_at = from_unix_millis(millis)?;
                Some(KeyUse { key_id, used_at })
            })
            .collect()
    }

    /// Puts back uses that a failed flush took, keeping any later use
    /// recorded since.
    pub(crate) fn restore(&self, uses: &[KeyUse]) {
        for used in uses {
            self.record_at(used.key_id, unix_millis(used.used_at));
        }
    }

    fn shard(&self, key: KeyId) -> std::sync::MutexGuard<'_, HashMap<KeyId, i64>> {
        // The last byte of a UUIDv7 is random, so shards fill evenly.
        let index = usize::from(key.as_uuid().as_bytes()[15]) & (SHARDS - 1);
        // A panic cannot leave a map half-updated, so a poisoned lock is
        // still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn unix_millis_now() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn unix_millis(at: OffsetDateTime) -> i64 {
    // i64 milliseconds cover every time `OffsetDateTime` can hold.
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_unix_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_uses_collapse_to_the_latest() {
        let recorder = KeyUseRecorder::default();
        let key = KeyId::generate();

        recorder.record_at(key, 2_000);
        recorder.record_at(key, 5_000);
        recorder.record_at(key, 3_000);
        let uses = recorder.take();

        assert_eq!(uses.len(), 1);
        assert_eq!(unix_millis(uses[0].used_at), 5_000);
        assert!(recorder.take().is_empty(), "take empties the recorder");
    }

    #[test]
    fn cell_is_queued_once_per_flush() {
        let recorder = KeyUseRecorder::default();
        let cell = Arc::new(KeyUseCell::new(KeyId::generate()));

        recorder.record_cell(&cell, 4_000);
        recorder.record_cell(&cell, 7_000);
        recorder.record_cell(&cell, 6_000);
        let queued = recorder.queued.lock().map(|list| list.len()).unwrap_or(0);
        let first = recorder.take();
        recorder.record_cell(&cell, 8_000);
        let second = recorder.take();

        assert_eq!(queued, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(unix_millis(first[0].used_at), 7_000);
        assert_eq!(second.len(), 1, "a use after a flush queues the cell again");
        assert_eq!(unix_millis(second[0].used_at), 8_000);
    }

    #[test]
    fn restore_keeps_a_later_use() {
        let recorder = KeyUseRecorder::default();
        let key = KeyId::generate();
        recorder.record_at(key, 1_000);
        let failed = recorder.take();

        recorder.record_at(key, 9_000);
        recorder.restore(&failed);
        let uses = recorder.take();

        assert_eq!(uses.len(), 1);
        assert_eq!(unix_millis(uses[0].used_at), 9_000);
    }
}
