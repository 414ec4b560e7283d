//! Positive verification results, bounded in size and age.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::principal::Principal;

/// A BLAKE3 hash of a presented key, keyed per cache.
type KeyHash = [u8; 32];

/// Principals of recently verified keys, keyed by a BLAKE3 hash of the key
/// so that the cache never contains a key in plain.
///
/// The hash is keyed with a random per-cache key, so a memory dump of the
/// cache cannot be matched against candidate keys offline. An entry is
/// served for at most `ttl` after its verification, and never after the
/// key's own expiry. The cache holds at
/// most `capacity` entries and evicts the oldest first; a capacity or TTL
/// of zero turns it off.
pub(crate) struct VerificationCache {
    ttl: Duration,
    capacity: usize,
    hash_key: [u8; 32],
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<KeyHash, Entry>,
    /// Insertion order with each insertion's expiry, oldest first. Every
    /// live entry has one item here. An item whose expiry differs from its
    /// entry's is left over from an earlier insertion of the same key.
    order: VecDeque<(KeyHash, Instant)>,
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    expires_at: Instant,
}

impl std::fmt::Debug for VerificationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl VerificationCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let mut hash_key = [0; 32];
        // Without OS randomness the cache still works, only without the
        // protection of a secret hash key.
        if getrandom::fill(&mut hash_key).is_err() {
            tracing::warn!("no OS randomness for the verification cache's hash key");
        }
        Self {
            ttl,
            capacity,
            hash_key,
            state: Mutex::new(State::default()),
        }
    }

    fn is_enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    fn hash(&self, key: &str) -> KeyHash {
        *blake3::keyed_hash(&self.hash_key, key.as_bytes()).as_bytes()
    }

    /// Returns the principal of `key` when it was verified within the TTL.
    pub(crate) fn get(&self, key: &str) -> Option<Principal> {
        if !self.is_enabled() {
            return None;
        }
        let hash = self.hash(key);
        let now = Instant::now();

        let mut state = self.lock();
        match state.entries.get(&hash) {
            Some(entry) if now < entry.expires_at => Some(entry.principal.clone()),
            Some(_) => {
                state.entries.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Stores the principal of a key the server just verified.
    pub(crate) fn insert(&self, key: &str, principal: Principal) {
        if !self.is_enabled() {
            return;
        }
        let hash = self.hash(key);
        let now = Instant::now();
        let lifetime = match principal.expires_at {
            Some(key_expiry) => self.ttl.min(remaining(key_expiry)),
            None => self.ttl,
        };
        if lifetime.is_zero() {
            return;
        }
        let expires_at = now + lifetime;

        let mut state = self.lock();
        while let Some(&(oldest, oldest_expiry)) = state.order.front() {
            let expired = oldest_expiry <= now;
            if !expired && state.order.len() < self.capacity {
                break;
            }
            state.order.pop_front();
            state.remove_if_current(&oldest, oldest_expiry);
        }

        state.order.push_back((hash, expires_at));
        state.entries.insert(
            hash,
            Entry {
                principal,
                expires_at,
            },
        );
    }

    /// Returns the number of entries, expired ones not yet removed
    /// included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the map in a state
        // that breaks the TTL or the bound, so the data stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns the time left until `expiry` by the wall clock, zero once past.
fn remaining(expiry: OffsetDateTime) -> Duration {
    let left = expiry - OffsetDateTime::now_utc();
    left.try_into().unwrap_or(Duration::ZERO)
}

impl State {
    /// Removes the entry of `hash` when the order item with `expires_at`
    /// belongs to it, not to a later insertion of the same key.
    fn remove_if_current(&mut self, hash: &KeyHash, expires_at: Instant) {
        if self
            .entries
            .get(hash)
            .is_some_and(|entry| entry.expires_at == expires_at)
        {
            self.entries.remove(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use tenet_core::{KeyId, TenantId};

    use super::*;

    fn principal() -> Principal {
        Principal {
            tenant_id: TenantId::generate(),
            key_id: KeyId::generate(),
            scopes: None,
            expires_at: None,
        }
    }

    #[test]
    fn key_expiry_shortens_the_entry() {
        let cache = VerificationCache::new(Duration::from_secs(60), 10);
        let expiring = Principal {
            expires_at: Some(OffsetDateTime::now_utc() + Duration::from_millis(50)),
            ..principal()
        };
        let expired = Principal {
            expires_at: Some(OffsetDateTime::now_utc() - Duration::from_secs(1)),
            ..principal()
        };

        cache.insert("tnt_expiring", expiring);
        cache.insert("tnt_expired", expired);
        let before = cache.get("tnt_expiring");
        std::thread::sleep(Duration::from_millis(60));

        assert!(before.is_some());
        assert_eq!(cache.get("tnt_expiring"), None);
        assert_eq!(cache.get("tnt_expired"), None);
    }

    #[test]
    fn returns_what_it_stored() {
        let cache = VerificationCache::new(Duration::from_secs(60), 10);
        let stored = principal();

        cache.insert("tnt_a", stored.clone());

        assert_eq!(cache.get("tnt_a"), Some(stored));
        assert_eq!(cache.get("tnt_b"), None);
    }

    #[test]
    fn evicts_the_oldest_beyond_capacity() {
        let cache = VerificationCache::new(Duration::from_secs(60), 2);

        cache.insert("tnt_a", principal());
        cache.insert("tnt_b", principal());
        cache.insert("tnt_c", principal());

        assert_eq!(cache.get("tnt_a"), None);
        assert!(cache.get("tnt_b").is_some());
        assert!(cache.get("tnt_c").is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn reinserting_one_key_stays_bounded() {
        let cache = VerificationCache::new(Duration::from_secs(60), 3);

        for _ in 0..100 {
            cache.insert("tnt_a", principal());
        }

        assert!(cache.get("tnt_a").is_some());
        assert!(cache.lock().order.len() <= 3);
    }

    #[test]
    fn zero_capacity_or_ttl_stores_nothing() {
        let caches = [
            VerificationCache::new(Duration::from_secs(60), 0),
            VerificationCache::new(Duration::ZERO, 10),
        ];

        for cache in caches {
            cache.insert("tnt_a", principal());

            assert_eq!(cache.get("tnt_a"), None);
        }
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = VerificationCache::new(Duration::from_millis(50), 10);
        cache.insert("tnt_a", principal());

        std::thread::sleep(Duration::from_millis(60));

        assert_eq!(cache.get("tnt_a"), None);
    }
}
