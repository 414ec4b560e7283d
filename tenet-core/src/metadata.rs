//! Key metadata: a small JSON object that the issuer attaches to a key.
//!
//! Tenet stores the object and returns it with the key, and never reads
//! it. Typical uses are an owner, a ticket or a deployment name.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Maximum size of a key's metadata, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A JSON object of at most [`MAX_METADATA_BYTES`] attached to a key; the
/// empty object when the issuer gave none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KeyMetadata(Map<String, Value>);

impl KeyMetadata {
    /// Checks that `value` is a JSON object of at most
    /// [`MAX_METADATA_BYTES`] when serialized as compact JSON.
    pub fn parse(value: Value) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(Error::invalid(
                "metadata",
                format!("must be a JSON object, not {}", kind_of(&value)),
            ));
        };
        if contains_nul(&map) {
            // Postgres `jsonb` cannot store U+0000, so no store accepts it.
            return Err(Error::invalid(
                "metadata",
                "must not contain the character U+0000 (\\u0000) in a key or string",
            ));
        }
        let metadata = Self(map);
        let size = metadata.to_json().len();
        if size > MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!("is {size} bytes as compact JSON; the maximum is {MAX_METADATA_BYTES}"),
            ));
        }
        Ok(metadata)
    }

    /// Parses metadata as a store wrote it with [`KeyMetadata::to_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|err| Error::invalid("metadata", format!("is not valid JSON: {err}")))?;
        Self::parse(value)
    }

    /// Serializes the object as compact JSON, the form that stores keep.
    pub fn to_json(&self) -> String {
        // Serializing a map with string keys to a string cannot fail.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Returns the object's fields.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Returns whether the object has no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn contains_nul(map: &Map<String, Value>) -> bool {
    map.iter()
        .any(|(key, value)| key.contains('\0') || value_contains_nul(value))
}

fn value_contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(value_contains_nul),
        Value::Object(map) => contains_nul(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_characters_are_rejected() {
        let cases = [
            json!({"a\u{0}b": 1}),
            json!({"a": "x\u{0}"}),
            json!({"a": ["ok", {"b": "\u{0}"}]}),
        ];

        for value in cases {
            let parsed = KeyMetadata::parse(value.clone());

            assert!(
                matches!(
                    parsed,
                    Err(Error::Invalid {
                        field: "metadata",
                        ..
                    })
                ),
                "{value}: {parsed:?}"
            );
        }
    }

    #[test]
    fn object_within_limit_is_accepted() {
        let metadata = KeyMetadata::parse(json!({"owner": "billing", "n": 1})).expect("valid");

        assert_eq!(metadata.to_json(), r#"{"n":1,"owner":"billing"}"#);
        assert_eq!(
            KeyMetadata::from_json(&metadata.to_json()).ok(),
            Some(metadata)
        );
    }

    #[test]
    fn non_objects_are_rejected() {
        let cases = [
            ("null", json!(null)),
            ("array", json!([1, 2])),
            ("string", json!("owner")),
            ("number", json!(4)),
        ];

        for (description, value) in cases {
            let err = KeyMetadata::parse(value).expect_err(description);
            assert!(
                err.to_string().contains("JSON object"),
                "{description}: {err}"
            );
        }
    }

    #[test]
    fn size_limit_is_exact() {
        // `{"a":"…"}` is 8 bytes around the string.
        let fits = json!({ "a": "x".repeat(MAX_METADATA_BYTES - 8) });
        let over = json!({ "a": "x".repeat(MAX_METADATA_BYTES - 7) });

        assert!(KeyMetadata::parse(fits).is_ok());
        let err = KeyMetadata::parse(over).expect_err("one byte over");
        assert!(err.to_string().contains("4097 bytes"), "{err}");
    }
}
