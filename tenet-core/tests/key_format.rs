//! Property tests of the API key format: what parses, what verifies, and
//! that damaged keys are rejected by parsing alone.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use tenet_core::key::{KEY_LEN, KEY_PREFIX};
use tenet_core::{
    ApiKey, Error, KeyName, MemoryStore, Pepper, Principal, Rejection, TenantId, TenantName, Tenet,
};
use tokio::runtime::Runtime;

/// The characters of URL-safe base64, which a key's body is written in.
const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A service over a memory store with one tenant, shared by all cases.
struct Service {
    runtime: Runtime,
    tenet: Tenet,
    tenant: TenantId,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime builds");
        let (tenet, tenant) = runtime.block_on(async {
            let pepper = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
            let tenet = Tenet::open(Arc::new(MemoryStore::new()), pepper)
                .await
                .expect("service opens");
            let tenant = tenet
                .create_tenant(TenantName::parse("Acme").expect("valid name"))
                .await
                .expect("tenant is created");
            (tenet, tenant.id)
        });
        Service {
            runtime,
            tenet,
            tenant,
        }
    })
}

impl Service {
    fn verify(&self, presented: &str) -> Result<Principal, Error> {
        self.runtime.block_on(self.tenet.verify(presented))
    }
}

/// Writes a key for `secret` by the documented format, independently of
/// the crate's encoder: the prefix, the secret in URL-safe base64 without
/// padding, then the big-endian CRC-32 of the secret in the same encoding.
fn key_text(secret: &[u8; 32]) -> String {
    let checksum = crc32fast::hash(secret).to_be_bytes();
    format!(
        "{KEY_PREFIX}{}{}",
        URL_SAFE_NO_PAD.encode(secret),
        URL_SAFE_NO_PAD.encode(checksum)
    )
}

/// Characters to substitute: mostly from the key alphabet, where only the
/// checksum can catch a change, and otherwise any character at all.
fn substitute() -> impl Strategy<Value = char> {
    let in_alphabet: Vec<char> = ALPHABET.chars().collect();
    prop_oneof![
        3 => proptest::sample::select(in_alphabet),
        1 => any::<char>(),
    ]
}

proptest! {
    #[test]
    fn documented_format_parses(secret in any::<[u8; 32]>()) {
        let text = key_text(&secret);

        let parsed = ApiKey::parse(&text);

        prop_assert!(parsed.is_ok(), "rejected: {:?}", parsed.err());
        let parsed = parsed.expect("checked above");
        prop_assert_eq!(parsed.expose_secret(), text.as_str());
    }

    #[test]
    fn issued_keys_parse_and_verify(name in proptest::option::of("[A-Za-z0-9][A-Za-z0-9 ]{0,39}")) {
        let service = service();
        let name = name.map(|name| KeyName::parse(&name).expect("valid key name"));
        let issued = service
            .runtime
            .block_on(service.tenet.issue_key(service.tenant, name))
            .expect("key is issued");
        let text = issued.api_key.expose_secret();

        let parsed = ApiKey::parse(text);
        let verified = service.verify(text);

        prop_assert!(parsed.is_ok(), "issued key rejected: {:?}", parsed.err());
        let expected = Principal { tenant_id: service.tenant, key_id: issued.info.id };
        prop_assert_eq!(verified.ok(), Some(expected));
    }

    #[test]
    fn one_character_change_is_malformed(
        secret in any::<[u8; 32]>(),
        position in 0..KEY_LEN,
        replacement in substitute(),
    ) {
        let text = key_text(&secret);
        let original = text[position..].chars().next().expect("position is inside the key");
        prop_assume!(replacement != original);
        let mut changed = text.clone();
        changed.replace_range(position..position + 1, replacement.encode_utf8(&mut [0; 4]));

        let parsed = ApiKey::parse(&changed);

        prop_assert_eq!(parsed.err(), Some(Rejection::Malformed));
    }

    #[test]
    fn every_alphabet_substitution_is_malformed(
        secret in any::<[u8; 32]>(),
        position in KEY_PREFIX.len()..KEY_LEN,
    ) {
        let text = key_text(&secret);

        let original = text[position..].chars().next().expect("position is inside the key");
        for replacement in ALPHABET.chars().filter(|&c| c != original) {
            let mut changed = text.clone();
            changed.replace_range(position..position + 1, replacement.encode_utf8(&mut [0; 4]));

            let parsed = ApiKey::parse(&changed);

            prop_assert_eq!(parsed.err(), Some(Rejection::Malformed), "replacement {:?}", replacement);
        }
    }

    #[test]
    fn truncated_key_is_malformed(secret in any::<[u8; 32]>(), removed in 1..=KEY_LEN) {
        let text = key_text(&secret);
        let kept = KEY_LEN - removed;

        let head = ApiKey::parse(&text[..kept]);
        let tail = ApiKey::parse(&text[removed..]);

        prop_assert_eq!(head.err(), Some(Rejection::Malformed));
        prop_assert_eq!(tail.err(), Some(Rejection::Malformed));
    }

    #[test]
    fn extended_key_is_malformed(
        secret in any::<[u8; 32]>(),
        position in 0..=KEY_LEN,
        extra in ".{1,16}",
    ) {
        let mut extended = key_text(&secret);
        extended.insert_str(position, &extra);

        let parsed = ApiKey::parse(&extended);

        prop_assert_eq!(parsed.err(), Some(Rejection::Malformed));
    }

    #[test]
    fn arbitrary_string_never_verifies(presented in any::<String>()) {
        let _ = ApiKey::parse(&presented);

        let verified = service().verify(&presented);

        prop_assert!(matches!(verified, Err(Error::Rejected(_))), "{:?}", verified);
    }

    #[test]
    fn prefixed_alphabet_string_never_verifies(body in "[A-Za-z0-9_-]{49}") {
        let presented = format!("{KEY_PREFIX}{body}");
        prop_assert_eq!(presented.len(), KEY_LEN);
        let _ = ApiKey::parse(&presented);

        let verified = service().verify(&presented);

        prop_assert!(
            matches!(verified, Err(Error::Rejected(Rejection::Malformed | Rejection::Unknown))),
            "{:?}",
            verified
        );
    }

    #[test]
    fn prefixed_arbitrary_string_never_verifies(body in ".{49}") {
        let presented = format!("{KEY_PREFIX}{body}");
        let _ = ApiKey::parse(&presented);

        let verified = service().verify(&presented);

        prop_assert!(
            matches!(verified, Err(Error::Rejected(Rejection::Malformed | Rejection::Unknown))),
            "{:?}",
            verified
        );
    }
}
