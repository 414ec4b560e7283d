//! Key scopes: the permissions a key carries, such as `billing:read`.

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

/// Maximum length of one scope, in bytes (all ASCII).
pub const MAX_SCOPE_LEN: usize = 64;

/// Maximum number of scopes on one key, after duplicates are removed.
pub const MAX_SCOPES: usize = 64;

/// One permission of a key: 1 to [`MAX_SCOPE_LEN`] characters of
/// `a-z`, `0-9`, `:`, `.`, `_` and `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Scope(Box<str>);

impl Scope {
    /// Checks a scope; no normalisation, so `Billing` is rejected rather
    /// than lowercased.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.is_empty() || raw.len() > MAX_SCOPE_LEN {
            return Err(Error::invalid(
                "scopes",
                format!("scope {raw:?} must be 1 to {MAX_SCOPE_LEN} characters long"),
            ));
        }
        let allowed = |byte: u8| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b":._-".contains(&byte)
        };
        if !raw.bytes().all(allowed) {
            return Err(Error::invalid(
                "scopes",
                format!("scope {raw:?} may contain only a-z, 0-9, ':', '.', '_' and '-'"),
            ));
        }
        Ok(Self(raw.into()))
    }

    /// Returns the scope as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a list of scopes, then sorts it and removes duplicates.
    /// Fails when more than [`MAX_SCOPES`] distinct scopes remain.
    pub fn parse_list<S: AsRef<str>>(raw: &[S]) -> Result<Vec<Scope>> {
        let mut scopes = raw
            .iter()
            .map(|scope| Scope::parse(scope.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        scopes.sort_unstable();
        scopes.dedup();
        if scopes.len() > MAX_SCOPES {
            return Err(Error::invalid(
                "scopes",
                format!(
                    "{} distinct scopes given; a key may have at most {MAX_SCOPES}",
                    scopes.len()
                ),
            ));
        }
        Ok(scopes)
    }
}

/// Returns whether `held` contains every scope in `required`, without
/// allocating.
pub(crate) fn covers(held: &[Scope], required: &[&str]) -> bool {
    required
        .iter()
        .all(|needed| held.iter().any(|scope| scope.as_str() == *needed))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_accepts_the_documented_alphabet() {
        let longest = "a".repeat(MAX_SCOPE_LEN);
        for raw in ["billing:read", "a", "x.y_z-0:9", longest.as_str()] {
            assert!(Scope::parse(raw).is_ok(), "rejected {raw:?}");
        }
    }

    #[test]
    fn scope_rejects_invalid_values() {
        let too_long = "a".repeat(MAX_SCOPE_LEN + 1);
        for raw in ["", "Billing", "a b", "a/b", "é", "a*", too_long.as_str()] {
            assert!(Scope::parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    #[test]
    fn scope_list_is_sorted_and_deduplicated() {
        let scopes = Scope::parse_list(&["b", "a", "b"]).expect("valid scopes");

        let names: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn scope_list_is_bounded_after_deduplication() {
        let distinct: Vec<String> = (0..=MAX_SCOPES).map(|n| format!("s{n}")).collect();
        let repeated: Vec<String> = (0..200).map(|n| format!("s{}", n % MAX_SCOPES)).collect();

        assert!(Scope::parse_list(&distinct).is_err());
        assert_eq!(
            Scope::parse_list(&repeated).expect("valid").len(),
            MAX_SCOPES
        );
    }

    #[test]
    fn covers_needs_every_required_scope() {
        let held = Scope::parse_list(&["a", "b"]).expect("valid scopes");

        assert!(covers(&held, &[]));
        assert!(covers(&held, &["a", "b"]));
        assert!(!covers(&held, &["a", "c"]));
    }
}
