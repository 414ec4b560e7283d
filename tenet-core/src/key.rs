//! The API key format and key metadata.
//!
//! A key reads `tnt_<secret><checksum>`:
//! - `tnt_` marks it as a Tenet key for people and secret scanners;
//! - `<secret>` is 32 bytes from the OS CSPRNG in URL-safe base64 without
//!   padding (43 characters);
//! - `<checksum>` is the big-endian CRC-32 of those 32 bytes in the same
//!   encoding (6 characters).
//!
//! CRC-32 detects every error burst of up to 32 bits, and changing one
//! base64 character changes at most 6 adjacent bits, so any single-character
//! typo is rejected by [`decode`] alone, before storage is touched. The
//! decoder is strict: one fixed length and canonical base64 only.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Rejection;
use crate::id::{KeyId, TenantId};
use crate::metadata::KeyMetadata;
use crate::name::KeyName;
use crate::scope::Scope;
use crate::secret::KeyDigest;

/// The prefix every Tenet API key starts with.
pub const KEY_PREFIX: &str = "tnt_";

/// Bytes of secret randomness in a key.
pub const SECRET_LEN: usize = 32;

const SECRET_CHARS: usize = 43;
const CHECKSUM_CHARS: usize = 6;

/// Length of every Tenet API key, in bytes (all ASCII).
pub const KEY_LEN: usize = KEY_PREFIX.len() + SECRET_CHARS + CHECKSUM_CHARS;

/// Characters of the key, prefix included, kept for listings.
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

/// The secret bytes of a key, wiped from memory when dropped.
pub(crate) type SecretBytes = Zeroizing<[u8; SECRET_LEN]>;

/// A plaintext API key.
///
/// `Debug` and `Display` print only the display prefix; the whole key is
/// read through [`ApiKey::expose_secret`], and the memory is wiped on drop.
#[derive(Clone)]
pub struct ApiKey {
    text: Zeroizing<String>,
    secret: SecretBytes,
}

impl ApiKey {
    /// Generates a new key from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the OS has no random source, because no safe key can be
    /// made without one.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        getrandom::fill(secret.as_mut()).expect("the OS random number generator failed");
        Self::from_secret(secret)
    }

    /// Parses and checks a presented key.
    pub fn parse(presented: &str) -> Result<Self, Rejection> {
        decode(presented).map(Self::from_secret)
    }

    fn from_secret(secret: SecretBytes) -> Self {
        let mut text = Zeroizing::new(String::with_capacity(KEY_LEN));
        text.push_str(KEY_PREFIX);
        URL_SAFE_NO_PAD.encode_string(secret.as_ref(), &mut text);
        URL_SAFE_NO_PAD.encode_string(checksum(&secret).to_be_bytes(), &mut text);
        Self { text, secret }
    }

    /// Returns the whole key. Call this only to hand the key to its owner.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// Returns the first characters of the key, which identify it in
    /// listings without giving away enough to use it.
    pub fn display_prefix(&self) -> &str {
        &self.text[..DISPLAY_PREFIX_LEN]
    }

    pub(crate) fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.display_prefix())
    }
}

fn checksum(secret: &[u8; SECRET_LEN]) -> u32 {
    crc32fast::hash(secret)
}

/// Decodes a presented key into its secret bytes without allocating.
///
/// Checks, in order: length, prefix, canonical base64 of the secret and of
/// the checksum, and the checksum itself.
pub(crate) fn decode(presented: &str) -> Result<SecretBytes, Rejection> {
    let bytes = presented.as_bytes();
    if bytes.len() != KEY_LEN || !bytes.starts_with(KEY_PREFIX.as_bytes()) {
        return Err(Rejection::Malformed);
    }
    let body = &bytes[KEY_PREFIX.len()..];
    let (secret_text, checksum_text) = body.split_at(SECRET_CHARS);

    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    let written = URL_SAFE_NO_PAD
        .decode_slice(secret_text, secret.as_mut())
        .map_err(|_| Rejection::Malformed)?;

    // 6 base64 characters carry 36 bits; the 4 spare bits must be zero,
    // which `decode_slice` checks, so a 4-byte buffer is exactly enough.
    let mut sum = [0u8; 4];
    let sum_written = URL_SAFE_NO_PAD
        .decode_slice(checksum_text, &mut sum)
        .map_err(|_| Rejection::Malformed)?;

    if written != SECRET_LEN || sum_written != sum.len() {
        return Err(Rejection::Malformed);
    }
    if u32::from_be_bytes(sum) != checksum(&secret) {
        secret.zeroize();
        return Err(Rejection::Malformed);
    }
    Ok(secret)
}

/// A key as listed: everything but the secret and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub name: Option<KeyName>,
    /// The key's first characters, see [`ApiKey::display_prefix`].
    pub prefix: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key stops verifying, or `None` for a key without expiry.
    #[serde(with = "crate::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's scopes, sorted and without duplicates.
    pub scopes: Vec<Scope>,
    /// The issuer's JSON object, copied to the replacement on rotation.
    pub metadata: KeyMetadata,
    /// The last successful verification that reached the store, or `None`
    /// for a key never used. Written in batches, so it lags behind the
    /// last use by up to the key-use flush interval.
    #[serde(with = "crate::timestamp::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// The key that a rotation issued in this key's place, or `None` for a
    /// key never rotated. Set once, so that a key has at most one successor.
    pub replaced_by: Option<KeyId>,
}

/// The settings of a key to issue, besides its tenant; see
/// [`crate::Tenet::issue_key_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOptions {
    pub name: Option<KeyName>,
    /// When the key stops verifying; checked to lie in the future and
    /// within [`crate::expiry::MAX_KEY_LIFETIME`].
    pub expires_at: Option<OffsetDateTime>,
    /// The key's scopes; [`Scope::parse_list`] sorts and deduplicates them.
    pub scopes: Vec<Scope>,
    /// A rate limit of the key's own, applied together with its tenant's.
    pub limit: Option<crate::ratelimit::Limit>,
    /// The issuer's JSON object; see [`KeyMetadata::parse`].
    pub metadata: KeyMetadata,
}

/// A key as stored: its metadata and the keyed digest of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub info: KeyInfo,
    pub digest: KeyDigest,
}

/// A key just issued: the only value that ever carries the plaintext.
#[derive(Debug)]
pub struct IssuedKey {
    pub info: KeyInfo,
    pub api_key: ApiKey,
    /// The key's own rate limit, if it has one.
    pub limit: Option<crate::ratelimit::Limit>,
}

/// The outcome of a rotation: the new key and the old key as it ends.
#[derive(Debug)]
pub struct RotatedKey {
    pub issued: IssuedKey,
    /// The old key, revoked or with its shortened expiry.
    pub old: KeyInfo,
}

/// The tenant and key that a verified key acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
}

/// A key that passed verification: whom it acts for and what it may do.
///
/// Cloning it copies an `Arc`, never the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub principal: Principal,
    /// The key's scopes, sorted and without duplicates.
    pub scopes: Arc<[Scope]>,
    /// When the key stops verifying, or `None` for a key without expiry.
    pub expires_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_has_the_documented_shape() {
        let key = ApiKey::generate();
        let text = key.expose_secret();

        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with(KEY_PREFIX));
        assert!(
            text[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn debug_and_display_hide_the_secret() {
        let key = ApiKey::generate();
        let secret_part = &key.expose_secret()[DISPLAY_PREFIX_LEN..];

        let debug = format!("{key:?}");
        let display = key.to_string();

        assert!(!debug.contains(secret_part));
        assert!(!display.contains(secret_part));
        assert!(display.starts_with(key.display_prefix()));
    }

    #[test]
    fn decode_rejects_non_canonical_trailing_bits() {
        let key = ApiKey::generate();
        let mut text = key.expose_secret().to_owned();
        // The last checksum character carries 2 data bits and 4 zero bits;
        // '_' (63) sets all six.
        text.replace_range(KEY_LEN - 1.., "_");

        assert_eq!(decode(&text).err(), Some(Rejection::Malformed));
    }
}
