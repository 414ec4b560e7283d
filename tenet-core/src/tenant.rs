//! Tenants.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::id::TenantId;
use crate::name::TenantName;

/// A customer of the SaaS backend; API keys belong to exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    /// Creation time, truncated to milliseconds so that it survives every
    /// store unchanged.
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    /// Whether the tenant's keys verify.
    pub status: TenantStatus,
    /// When the tenant was deleted. A deleted tenant keeps its row, so that
    /// its audit trail stays readable, but every other operation treats it
    /// as missing.
    #[serde(with = "crate::timestamp::option")]
    pub deleted_at: Option<OffsetDateTime>,
}

impl Tenant {
    /// Creates an active tenant that has not been deleted.
    pub fn new(id: TenantId, name: TenantName, created_at: OffsetDateTime) -> Self {
        Self {
            id,
            name,
            created_at,
            status: TenantStatus::Active,
            deleted_at: None,
        }
    }
}

/// Whether a tenant's keys verify: a suspended tenant's keys are rejected
/// with [`Rejection::TenantSuspended`](crate::Rejection::TenantSuspended)
/// until the tenant is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    /// Returns the stored and JSON form: `active` or `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    /// Parses the stored form written by [`TenantStatus::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            other => Err(Error::invalid(
                "tenant status",
                format!("expected active or suspended, got {other:?}"),
            )),
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
