//! The secret a client presents: the admin token or an API key.

use std::fmt;

use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

use crate::error::Error;

/// An admin token or API key, sent as `Authorization: Bearer`.
///
/// `Debug` never prints the value, and the memory is wiped on drop. The
/// header built from it is marked sensitive, so that HTTP/2 never puts it
/// in the HPACK dynamic table and header dumps hide it.
#[derive(Clone)]
pub struct Credential(Zeroizing<String>);

impl Credential {
    /// Wraps a token or key.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// Returns the secret, for code that must send it some other way.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Builds the `Authorization: Bearer` value.
    ///
    /// Fails when the secret contains bytes that a header cannot carry,
    /// such as a line break; the error never contains the secret.
    pub(crate) fn bearer_header(&self) -> Result<HeaderValue, Error> {
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.expose_secret()))
            .map_err(|_| Error::InvalidCredential)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl From<String> for Credential {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for Credential {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let credential = Credential::new("tnt_secret-value");

        let debug = format!("{credential:?}");

        assert!(!debug.contains("secret-value"), "{debug}");
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let header = Credential::new("abc")
            .bearer_header()
            .expect("valid header");

        assert!(header.is_sensitive());
        assert_eq!(header, "Bearer abc");
    }

    #[test]
    fn line_break_is_an_invalid_credential() {
        let result = Credential::new("a\nb").bearer_header();

        assert!(matches!(result, Err(Error::InvalidCredential)));
    }
}
