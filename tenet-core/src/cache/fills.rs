//! Coalescing of concurrent cache fills of one key.
//!
//! When a busy key's entry expires or is dropped, every request for it
//! misses at once. Without coalescing, each of them reads Redis or the
//! store, and a slow store then runs out of connections exactly when the
//! key is in demand. Here the first miss of a digest fills the cache, and
//! the misses that arrive meanwhile wait for it and read the cache again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::secret::KeyDigest;

/// The fills in flight, by digest.
#[derive(Debug, Default)]
pub(crate) struct Fills {
    in_flight: Mutex<HashMap<KeyDigest, Arc<Notify>>>,
}

/// A miss's part in the fill of its digest.
pub(crate) enum Fill<'a> {
    /// This miss fills the cache. Dropping the guard, when the fill ends or
    /// is cancelled, wakes the misses that wait for it.
    Lead(FillGuard<'a>),
    /// Another miss is filling the cache. The future completes when that
    /// fill ends, whatever its outcome.
    Wait(Pin<Box<OwnedNotified>>),
}

impl Fills {
    /// Makes this miss the filler of `digest`, or returns the fill in
    /// flight to wait for.
    pub(crate) fn begin(&self, digest: KeyDigest) -> Fill<'_> {
        let mut in_flight = self.lock();
        if let Some(notify) = in_flight.get(&digest) {
            let mut waiting = Box::pin(Arc::clone(notify).notified_owned());
            // Registered before the lock is released, so the leader's
            // `notify_waiters`, which follows its removal under the same
            // lock, cannot be missed.
            waiting.as_mut().enable();
            return Fill::Wait(waiting);
        }
        in_flight.insert(digest, Arc::new(Notify::new()));
        Fill::Lead(FillGuard {
            fills: self,
            digest,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyDigest, Arc<Notify>>> {
        // The map is only inserted into and removed from, so a panic
        // cannot leave it inconsistent.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ends a fill when dropped.
pub(crate) struct FillGuard<'a> {
    fills: &'a Fills,
    digest: KeyDigest,
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        let notify = self.fills.lock().remove(&self.digest);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn digest(seed: u8) -> KeyDigest {
        KeyDigest::from_bytes(*blake3::hash(&[seed]).as_bytes())
    }

    #[tokio::test]
    async fn second_miss_waits_for_the_first() {
        let fills = Fills::default();

        let lead = fills.begin(digest(1));
        let wait = fills.begin(digest(1));
        let other = fills.begin(digest(2));

        assert!(matches!(lead, Fill::Lead(_)));
        assert!(matches!(other, Fill::Lead(_)), "other digests do not wait");
        let Fill::Wait(waiting) = wait else {
            panic!("a second miss of one digest waits");
        };
        drop(lead);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the end of the fill wakes the waiter");
        assert!(
            matches!(fills.begin(digest(1)), Fill::Lead(_)),
            "a miss after the fill leads a new one"
        );
    }
}
