//! Display names for tenants and keys.

use std::fmt;

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

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
    if !name.chars().any(is_visible) {
        return Err(Error::invalid(
            field,
            "must contain a visible character (a letter, digit, punctuation mark or symbol), \
             not only spaces, combining marks, fillers or invisible characters such as \
             zero-width spaces",
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

/// Returns whether `c` draws a visible glyph of its own: a letter, number,
/// punctuation mark or symbol by Unicode general category, except the
/// letters and symbols that render blank.
///
/// Separators (spaces), marks (combining accents) and other characters
/// (format characters such as the soft hyphen and zero-width joiners) are
/// not visible on their own. They are allowed inside a name, because emoji
/// sequences and some scripts need them, but not as all of it.
fn is_visible(c: char) -> bool {
    let visible_category = matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    );
    visible_category && !is_blank_glyph(c)
}

/// Returns whether `c` is a letter or symbol that renders as blank space:
/// the Hangul fillers (category Lo, and Default_Ignorable_Code_Point) and
/// the blank Braille pattern (category So).
fn is_blank_glyph(c: char) -> bool {
    matches!(
        c,
        '\u{115F}' // HANGUL CHOSEONG FILLER
        | '\u{1160}' // HANGUL JUNGSEONG FILLER
        | '\u{2800}' // BRAILLE PATTERN BLANK
        | '\u{3164}' // HANGUL FILLER
        | '\u{FFA0}' // HALFWIDTH HANGUL FILLER
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
            /// [`MAX_NAME_CHARS`] characters, no control, line separator
            /// or bidirectional control characters, and at least one
            /// visible character.
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
            ("only a soft hyphen", "\u{AD}"),
            ("only a Hangul filler", "\u{3164}"),
            ("only halfwidth Hangul fillers", "\u{FFA0}\u{FFA0}"),
            (
                "only Hangul choseong and jungseong fillers",
                "\u{115F}\u{1160}",
            ),
            ("only a blank Braille pattern", "\u{2800}"),
            ("only combining marks", "\u{301}\u{301}\u{301}"),
            ("only variation selectors", "\u{FE0F}\u{E0100}"),
            ("only an ideographic space", "\u{3000}"),
            ("only a Mongolian vowel separator", "\u{180E}"),
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
    fn name_accepts_one_visible_character_among_invisible_ones() {
        for (description, raw) in [
            ("letter after a soft hyphen", "\u{AD}a"),
            ("digit among Hangul fillers", "\u{3164}7\u{3164}"),
            ("accented letter", "e\u{301}"),
            ("punctuation", "-"),
            ("symbol", "\u{2605}"),
            ("Braille dot", "\u{2801}"),
            ("Hangul syllable", "\u{D55C}"),
        ] {
            assert!(TenantName::parse(raw).is_ok(), "rejected {description}");
        }
    }

    #[test]
    fn name_accepts_maximum_length() {
        let longest = "\u{e9}".repeat(MAX_NAME_CHARS);

        assert!(KeyName::parse(&longest).is_ok());
    }

    /// Characters that draw nothing on their own: spaces, combining marks,
    /// format characters and the blank letters and symbols.
    fn invisible_char() -> impl proptest::strategy::Strategy<Value = char> {
        proptest::sample::select(vec![
            ' ',
            '\u{A0}',
            '\u{AD}',
            '\u{115F}',
            '\u{1160}',
            '\u{180E}',
            '\u{2000}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{2060}',
            '\u{2800}',
            '\u{3000}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFA0}',
            '\u{300}',
            '\u{301}',
            '\u{20DD}',
            '\u{E0001}',
            '\u{E0100}',
        ])
    }

    proptest::proptest! {
        #[test]
        fn invisible_only_name_is_rejected(
            chars in proptest::collection::vec(invisible_char(), 1..40)
        ) {
            let raw: String = chars.into_iter().collect();

            proptest::prop_assert!(TenantName::parse(&raw).is_err(), "accepted {raw:?}");
        }

        #[test]
        fn accepted_name_has_visible_character(raw in proptest::prelude::any::<String>()) {
            if let Ok(name) = TenantName::parse(&raw) {
                proptest::prop_assert!(name.as_str().chars().any(is_visible), "accepted {raw:?}");
            }
        }

        #[test]
        fn visible_character_makes_name_valid(
            prefix in proptest::collection::vec(invisible_char(), 0..10),
            visible in "[\\p{L}\\p{N}\\p{P}\\p{S}]",
            suffix in proptest::collection::vec(invisible_char(), 0..10),
        ) {
            let mut raw: String = prefix.into_iter().collect();
            raw.push_str(&visible);
            raw.extend(suffix);

            let accepted = TenantName::parse(&raw).is_ok();

            let blank = visible.chars().all(is_blank_glyph);
            proptest::prop_assert_eq!(accepted, !blank, "{:?}", raw);
        }
    }
}
