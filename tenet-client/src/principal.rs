//! Whom a verified API key acts for.

use tenet_core::api::PrincipalResponse;
use tenet_core::{KeyId, TenantId};
use time::OffsetDateTime;

/// The tenant and key behind a verified API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    /// The key's scopes, or `None` when the server does not report scopes.
    pub scopes: Option<Vec<String>>,
    /// When the key stops verifying; `None` for a key without expiry or
    /// when the server does not report it.
    pub expires_at: Option<OffsetDateTime>,
}

impl From<PrincipalResponse> for Principal {
    fn from(response: PrincipalResponse) -> Self {
        Self {
            tenant_id: response.tenant_id,
            key_id: response.key_id,
            scopes: None,
            expires_at: None,
        }
    }
}
