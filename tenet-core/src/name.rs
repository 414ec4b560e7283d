//! Display names for tenants and keys.

use std::fmt;

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// Maximum length of a name, in Unicode scalar values after normalisation.
pub const MAX_NAME_CHARS: usize = 200;

/// Trims, NFC-normalises and checks a name.
///
/// Control characters (NUL included) are rejected rather than stripped, so a
/// name is stored exactly as the caller will see it echoed back.
fn normalize(field: &'static str, raw: &str) -> Result<String> {
    let name: String = raw.trim().nfc().collect();

    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty or blank"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("is {chars} characters long; the maximum is {MAX_NAME_CHARS}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(name)
}

macro_rules! define_name {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates a name: trimmed, NFC-normalised, 1 to
            /// [`MAX_NAME_CHARS`] characters, no control characters.
            pub fn parse(raw: &str) -> Result<Self> {
                normalize($field, raw).map(Self)
            }

            /// Returns the name as stored.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

define_name!(
    /// A tenant's display name. Names need not be unique.
    TenantName,
    "name"
);

define_name!(
    /// A key's display name, such as "billing worker". Optional on a key.
    KeyName,
    "name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_trimmed_and_normalized() {
        let decomposed = "  Cafe\u{301}  ";

        let name = TenantName::parse(decomposed).expect("valid name");

        assert_eq!(name.as_str(), "Caf\u{e9}");
    }

    #[test]
    fn name_rejects_invalid_values() {
        let too_long = "x".repeat(MAX_NAME_CHARS + 1);
        let cases = [
            ("empty", ""),
            ("blank", " \t\n "),
            ("NUL", "a\0b"),
            ("escape", "a\u{1b}[31mb"),
            ("newline inside", "a\nb"),
            ("too long", too_long.as_str()),
        ];

        for (description, raw) in cases {
            assert!(TenantName::parse(raw).is_err(), "accepted {description}");
        }
    }

    #[test]
    fn name_accepts_maximum_length() {
        let longest = "\u{e9}".repeat(MAX_NAME_CHARS);

        assert!(KeyName::parse(&longest).is_ok());
    }
}
