//! Server-side secrets: the key pepper, key digests and the admin token.
//!
//! None of these types print their value, and the secret ones wipe their
//! memory on drop.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Rejection, Result};
use crate::key::{self, SECRET_LEN};

/// Shortest pepper or admin token accepted from configuration, in bytes.
pub const MIN_SECRET_CONFIG_LEN: usize = 32;

const PEPPER_CONTEXT: &str = "tenet 2026-12-04 key pepper";
const PEPPER_CHECK_CONTEXT: &str = "tenet 2026-12-04 pepper fingerprint";
const ADMIN_TOKEN_CONTEXT: &str = "tenet 2026-12-04 admin token digest";

/// The keyed BLAKE3 digest of a key's secret: what the store keeps and
/// looks keys up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Wraps 32 bytes read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Returns the digest bytes, for storage and cache keys.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares two digests in constant time.
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but printing it gains nothing.
        f.write_str("KeyDigest(..)")
    }
}

/// The server-side secret that keys the digest of every API key.
///
/// Without it, a stolen copy of the store cannot be used to test guesses
/// offline. Every replica sharing a store must use the same pepper.
#[derive(Clone)]
pub struct Pepper(Zeroizing<[u8; 32]>);

impl Pepper {
    /// Derives the pepper from its configured text form.
    ///
    /// Any text of at least [`MIN_SECRET_CONFIG_LEN`] bytes works; it is
    /// stretched into a BLAKE3 key with `derive_key`, so the text need not
    /// be a particular encoding.
    pub fn from_config(text: &str) -> Result<Self> {
        if text.len() < MIN_SECRET_CONFIG_LEN {
            return Err(Error::Config(format!(
                "the key pepper is {}; use at least {MIN_SECRET_CONFIG_LEN} random bytes \
                 (for example `openssl rand -base64 32`)",
                length_of(text.len(), "byte")
            )));
        }
        Ok(Self(Zeroizing::new(blake3::derive_key(
            PEPPER_CONTEXT,
            text.as_bytes(),
        ))))
    }

    /// Generates the text form of a new random pepper.
    pub fn generate_config() -> Zeroizing<String> {
        random_text()
    }

    /// Computes the keyed digest of a key's secret bytes.
    pub fn digest(&self, secret: &[u8; SECRET_LEN]) -> KeyDigest {
        KeyDigest(*blake3::keyed_hash(&self.0, secret).as_bytes())
    }

    /// Decodes a presented key and computes its keyed digest: the work
    /// [`crate::Tenet::verify`] does before any lookup, so that callers and
    /// benchmarks can index keys the same way without allocating.
    ///
    /// Fails with [`Rejection::Malformed`] for every key that
    /// [`crate::ApiKey::parse`] rejects.
    pub fn digest_presented(&self, presented: &str) -> Result<KeyDigest, Rejection> {
        let secret = key::decode(presented)?;
        Ok(self.digest(&secret))
    }

    /// Returns a value that identifies this pepper without revealing it.
    ///
    /// Stores keep it so that starting with a different pepper, which would
    /// make every issued key fail, is caught at start instead.
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, PEPPER_CHECK_CONTEXT.as_bytes()).as_bytes()
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(..)")
    }
}

/// The bearer token of the management API.
#[derive(Clone)]
pub struct AdminToken(Zeroizing<String>);

impl AdminToken {
    /// Accepts a configured token of at least [`MIN_SECRET_CONFIG_LEN`]
    /// bytes.
    pub fn from_config(text: &str) -> Result<Self> {
        if text.len() < MIN_SECRET_CONFIG_LEN {
            return Err(Error::Config(format!(
                "the admin token is {}; use at least {MIN_SECRET_CONFIG_LEN} visible \
                 ASCII characters without spaces (for example `openssl rand -base64 32`)",
                length_of(text.chars().count(), "character")
            )));
        }
        // HTTP trims header values and allows few other bytes, so a token
        // with spaces or non-ASCII characters could never be presented.
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(Error::Config(
                "the admin token must consist of visible ASCII characters only, \
                 without spaces (for example `openssl rand -base64 32`)"
                    .to_owned(),
            ));
        }
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// Generates a new random token.
    pub fn generate() -> Self {
        Self(random_text())
    }

    /// Returns the token text. Call this only to hand it to the operator.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Returns the digest under which the token is stored and compared.
    pub fn digest(&self) -> AdminTokenDigest {
        AdminTokenDigest::of(&self.0)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The digest of an admin token: all the server keeps of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AdminTokenDigest([u8; 32]);

impl AdminTokenDigest {
    /// Computes the digest of a presented token.
    pub fn of(presented: &str) -> Self {
        Self(blake3::derive_key(
            ADMIN_TOKEN_CONTEXT,
            presented.as_bytes(),
        ))
    }

    /// Wraps 32 bytes read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Returns the digest bytes, for storage.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks a presented token against this digest in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.ct_eq(&Self::of(presented).0).into()
    }
}

impl fmt::Debug for AdminTokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminTokenDigest(..)")
    }
}

/// Formats a short secret's length for its error message, as "1 byte
/// long" or "2 bytes long": the unit is singular only for a count of 1.
fn length_of(count: usize, unit: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} long")
}

fn random_text() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).expect("the OS random number generator failed");
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_rejected() {
        let short = "x".repeat(MIN_SECRET_CONFIG_LEN - 1);

        assert!(Pepper::from_config(&short).is_err());
        assert!(AdminToken::from_config(&short).is_err());
    }

    #[test]
    fn short_secret_messages_give_the_length() {
        let cases = [
            (
                "",
                "the key pepper is 0 bytes long;",
                "the admin token is 0 characters long;",
            ),
            (
                "x",
                "the key pepper is 1 byte long;",
                "the admin token is 1 character long;",
            ),
            (
                "xy",
                "the key pepper is 2 bytes long;",
                "the admin token is 2 characters long;",
            ),
            // Two characters of two bytes each: the pepper counts bytes
            // and the token, which must be ASCII, counts characters.
            (
                "éé",
                "the key pepper is 4 bytes long;",
                "the admin token is 2 characters long;",
            ),
        ];

        for (text, pepper_message, token_message) in cases {
            let pepper = Pepper::from_config(text)
                .expect_err("short pepper")
                .to_string();
            let token = AdminToken::from_config(text)
                .expect_err("short token")
                .to_string();

            assert!(pepper.contains(pepper_message), "{text:?}: {pepper}");
            assert!(token.contains(token_message), "{text:?}: {token}");
        }
    }

    #[test]
    fn different_peppers_give_different_digests() {
        let first = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
        let second = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
        let secret = [7u8; SECRET_LEN];

        assert_ne!(first.digest(&secret), second.digest(&secret));
        assert_ne!(first.fingerprint(), second.fingerprint());
    }

    #[test]
    fn presented_key_digest_matches_its_secret() {
        let pepper = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
        let key = crate::ApiKey::generate();

        let digest = pepper.digest_presented(key.expose_secret());

        assert_eq!(digest, Ok(pepper.digest(key.secret())));
    }

    #[test]
    fn presented_digest_rejects_malformed_key() {
        let pepper = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
        let key = crate::ApiKey::generate();
        let truncated = &key.expose_secret()[1..];

        assert_eq!(
            pepper.digest_presented(truncated),
            Err(Rejection::Malformed)
        );
    }

    #[test]
    fn admin_token_rejects_unsendable_characters() {
        let long = |text: &str| text.repeat(MIN_SECRET_CONFIG_LEN);

        assert!(AdminToken::from_config(&long(" ")).is_err());
        assert!(AdminToken::from_config(&long("a b")).is_err());
        assert!(AdminToken::from_config(&long("\u{e9}")).is_err());
        assert!(AdminToken::from_config(&long("a\t")).is_err());
        assert!(AdminToken::from_config(&long("aZ9+/=_-")).is_ok());
    }

    #[test]
    fn admin_token_digest_matches_only_its_token() {
        let token = AdminToken::generate();
        let digest = token.digest();

        assert!(digest.matches(token.expose_secret()));
        assert!(!digest.matches(""));
        assert!(!digest.matches(&token.expose_secret()[1..]));
    }

    #[test]
    fn debug_hides_secrets() {
        let token = AdminToken::generate();
        let pepper_text = Pepper::generate_config();
        let pepper = Pepper::from_config(&pepper_text).expect("valid pepper");

        assert!(!format!("{token:?}").contains(token.expose_secret()));
        assert_eq!(format!("{pepper:?}"), "Pepper(..)");
    }
}
