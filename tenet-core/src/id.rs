//! Opaque identifiers for tenants and keys.
//!
//! Ids are UUIDv7: unique without coordination between replicas, and sorted
//! by creation time, which keeps index inserts local and listings ordered.
//! Clients must treat them as opaque strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::Error;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Creates a new, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical text form (lowercase, hyphenated).
            ///
            /// Other UUID spellings are rejected so that one id has exactly
            /// one text form in URLs, logs and storage.
            pub fn parse(text: &str) -> Result<Self, Error> {
                let uuid = Uuid::try_parse(text).map_err(|_| {
                    Error::invalid($kind, "expected a lowercase hyphenated UUID")
                })?;
                let mut buffer = Uuid::encode_buffer();
                if uuid.hyphenated().encode_lower(&mut buffer) != text {
                    return Err(Error::invalid(
                        $kind,
                        "expected a lowercase hyphenated UUID",
                    ));
                }
                Ok(Self(uuid))
            }

            /// Returns the id as a UUID, for storage drivers.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Wraps a UUID read back from storage.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Writes the id's text form, the same as its `Display`, into
            /// `buffer` and returns it. Unlike `to_string`, this neither
            /// allocates nor goes through `core::fmt`, for request logs.
            pub fn encode<'b>(&self, buffer: &'b mut [u8; 36]) -> &'b str {
                self.0.hyphenated().encode_lower(buffer)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buffer = Uuid::encode_buffer();
                f.pad(self.0.hyphenated().encode_lower(&mut buffer))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(text: &str) -> Result<Self, Error> {
                Self::parse(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                // One string, instead of `collect_str`, which escapes the
                // formatted text piece by piece: ids are in every
                // `/protected` response.
                let mut buffer = Uuid::encode_buffer();
                serializer.serialize_str(self.0.hyphenated().encode_lower(&mut buffer))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// Identifies a tenant.
    TenantId,
    "tenant id"
);

define_id!(
    /// Identifies an API key. Safe to log, because it reveals nothing about the secret.
    KeyId,
    "key id"
);

define_id!(
    /// Identifies an audit entry; entries sort by this id, oldest first.
    AuditId,
    "audit entry id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_text() {
        let id = TenantId::generate();

        let parsed = TenantId::parse(&id.to_string()).expect("canonical text parses");

        assert_eq!(parsed, id);
    }

    #[test]
    fn encoded_id_matches_display() {
        let tenant = TenantId::generate();
        let key = KeyId::generate();
        let mut buffer = [0; 36];

        assert_eq!(tenant.encode(&mut buffer), tenant.to_string());
        assert_eq!(key.encode(&mut buffer), key.to_string());
    }

    #[test]
    fn id_rejects_other_spellings() {
        let id = KeyId::generate();
        let text = id.to_string();

        for variant in [
            text.to_uppercase(),
            text.replace('-', ""),
            format!("{{{text}}}"),
            format!("urn:uuid:{text}"),
            String::new(),
            "not-an-id".to_owned(),
        ] {
            assert!(KeyId::parse(&variant).is_err(), "accepted {variant:?}");
        }
    }
}
