//! The floor of key verification: the work no verifier can skip.
//!
//! A warm-cache [`tenet_core::Tenet::verify`] must decode the key (base64
//! and CRC-32), compute its keyed BLAKE3 digest and find the digest in a
//! map. [`Floor`] does exactly that with a plain `std` `HashMap`, so a
//! benchmark of both reads as the ratio of the cache's cost to the minimum.

use std::collections::HashMap;

use tenet_core::{KeyDigest, Pepper, Principal, Rejection};

/// Digests of issued keys in a plain `HashMap` (SipHash, no locks, no
/// expiry), with the pepper they were digested under.
#[derive(Debug)]
pub struct Floor {
    pepper: Pepper,
    principals: HashMap<KeyDigest, Principal>,
}

impl Floor {
    /// Indexes `keys` (plaintext keys and whom each acts for) by their keyed
    /// digest under `pepper`.
    ///
    /// # Panics
    ///
    /// Panics if a key is malformed, because the fixture issued them all.
    pub fn new<'a>(pepper: Pepper, keys: impl IntoIterator<Item = (&'a str, Principal)>) -> Self {
        Self::try_new(pepper, keys).expect("the fixture issued only well-formed keys")
    }

    /// Indexes `keys` like [`Floor::new`], or returns why a key is
    /// malformed.
    pub fn try_new<'a>(
        pepper: Pepper,
        keys: impl IntoIterator<Item = (&'a str, Principal)>,
    ) -> Result<Self, Rejection> {
        let keys = keys.into_iter();
        let mut principals = HashMap::with_capacity(keys.size_hint().0);
        for (key, principal) in keys {
            principals.insert(pepper.digest_presented(key)?, principal);
        }
        Ok(Self { pepper, principals })
    }

    /// Decodes `presented`, digests it and looks the digest up; `None` for a
    /// malformed or unknown key.
    pub fn lookup(&self, presented: &str) -> Option<Principal> {
        let digest = self.pepper.digest_presented(presented).ok()?;
        self.principals.get(&digest).copied()
    }

    /// Returns the number of indexed keys.
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// Returns whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }
}
