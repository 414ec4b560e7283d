//! Tenants.

use serde::Serialize;
use time::OffsetDateTime;

use crate::id::TenantId;
use crate::name::TenantName;

/// A customer of the SaaS backend; API keys belong to exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    /// Creation time, truncated to milliseconds so that it survives every
    /// store unchanged.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
