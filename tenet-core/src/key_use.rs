//! `last_used_at`: when each key last verified, kept in memory and written
//! to the store in batches.
//!
//! A verification must not wait for a store write, so it only records the
//! time in memory: in the key's entry of the in-process cache, or, without
//! a cache, in the sharded map of `KeyUseRecorder`.
//! [`crate::Tenet::flush_key_uses`] takes what was recorded and writes it
//! in one store call. Called once per interval,
//! it writes each key at most once per interval, however often the key
//! verified. Stores only move `last_used_at` forward, so a replica whose
//! flush carries an older time cannot undo a newer one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
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

/// Latest use per key since the last flush, in Unix milliseconds, for
/// keys verified without a cache and for uses the cache hands over at a
/// flush.
///
/// Recording locks one shard for a map update, and no lock is held across
/// an await. A flush drains the maps, which keeps their capacity, so
/// recording allocates only when a map grows past its largest size so far.
#[derive(Debug)]
pub(crate) struct KeyUseRecorder {
    shards: Box<[Mutex<HashMap<KeyId, i64>>]>,
}

impl Default for KeyUseRecorder {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl KeyUseRecorder {
    /// Records that `key` verified now.
    pub(crate) fn record(&self, key: KeyId) {
        self.record_at(key, unix_millis_now());
    }

    /// Records that `key` verified at `millis` (Unix milliseconds), unless
    /// a later use of it is already recorded.
    pub(crate) fn record_at(&self, key: KeyId, millis: i64) {
        let mut shard = self.shard(key);
        let latest = shard.entry(key).or_insert(millis);
        *latest = (*latest).max(millis);
    }

    /// Removes and returns every recorded use, one per key.
    pub(crate) fn take(&self) -> Vec<KeyUse> {
        // Each key lives in one shard only, so the shards' entries need no
        // merging.
        let mut uses = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            uses.extend(shard.drain().filter_map(|(key_id, millis)| {
                let used_at = from_unix_millis(millis)?;
                Some(KeyUse { key_id, used_at })
            }));
        }
        uses
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
