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
            format!(
                "is {chars} characters long after Unicode NFC normalization; the maximum is \
                 {MAX_NAME_CHARS}"
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    if let Some(found) = name.chars().find(|&c| is_line_or_bidi_control(c)) {
        return Err(Error::invalid(
            field,
            format!(
                "must not contain U+{:04X}, a line separator or bidirectional control \
                 character",
                u32::from(found)
            ),
        ));
    }
    if name.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(Error::invalid(
            field,
            "must contain a visible character, not only invisible ones such as zero-width spaces",
        ));
    }
    Ok(name)
}

/// Returns whether `c` breaks a line or reorders the text around it, which
/// lets a name look different in tables and logs from what it is.
fn is_line_or_bidi_control(c: char) -> bool {
    matches!(c,
        '\u{2028}' | '\u{2029}' // line and paragraph separators
        | '\u{202A}'..='\u{202E}' // bidirectional embeddings and overrides
        | '\u{2066}'..='\u{2069}' // bidirectional isolates
    )
}

/// Returns whether `c` has no visible glyph of its own. Such characters are
/// allowed inside a name (zero-width joiners are part of emoji and of some
/// scripts) but not as all of it.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
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
            ("line separator", "a\u{2028}b"),
            ("right-to-left override", "a\u{202E}b"),
            ("isolate", "a\u{2067}b"),
            ("only a zero-width space", "\u{200B}"),
            ("only zero-width joiners", "\u{200D}\u{200D} \u{FEFF}"),
            ("too long", too_long.as_str()),
        ];

        for (description, raw) in cases {
            assert!(TenantName::parse(raw).is_err(), "accepted {description}");
        }
    }

    #[test]
    fn name_keeps_joiners_inside_visible_text() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} team";
        let persian = "\u{645}\u{6CC}\u{200C}\u{62E}\u{648}\u{627}\u{647}\u{645}";

        assert_eq!(
            TenantName::parse(family).expect("valid name").as_str(),
            family
        );
        assert_eq!(
            TenantName::parse(persian).expect("valid name").as_str(),
            persian
        );
    }

    #[test]
    fn name_accepts_maximum_length() {
        let longest = "\u{e9}".repeat(MAX_NAME_CHARS);

        assert!(KeyName::parse(&longest).is_ok());
    }
}
