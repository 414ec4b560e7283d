//! The audit trail: who changed which tenant or key, and when.
//!
//! [`crate::Tenet`] builds one [`AuditEntry`] per change and hands it to
//! the store with the change, and every store writes both in one
//! transaction, so an entry exists exactly when its change does.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::id::{AuditId, KeyId, TenantId};

/// The author of a change: the admin token, or an API key with the
/// `tenet:admin` scope acting on its own tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    Admin,
    Key(KeyId),
}

impl Actor {
    /// Parses the stored form written by `Display`: `admin` or a key id.
    pub fn parse(text: &str) -> Result<Self> {
        if text == "admin" {
            return Ok(Actor::Admin);
        }
        KeyId::parse(text).map(Actor::Key).map_err(|_| {
            Error::invalid("actor", format!("expected admin or a key id, got {text:?}"))
        })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Key(id) => fmt::Display::fmt(id, f),
        }
    }
}

/// The kind of change an audit entry records; one per mutating operation
/// of [`crate::Tenet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditAction {
    CreateTenant,
    RenameTenant,
    SuspendTenant,
    ResumeTenant,
    DeleteTenant,
    IssueKey,
    RotateKey,
    RevokeKey,
    /// A tenant's rate limit or monthly quota was replaced.
    SetTenantLimits,
    /// A key's own limit was set or removed.
    SetKeyLimit,
}

impl AuditAction {
    const ALL: [AuditAction; 10] = [
        AuditAction::CreateTenant,
        AuditAction::RenameTenant,
        AuditAction::SuspendTenant,
        AuditAction::ResumeTenant,
        AuditAction::DeleteTenant,
        AuditAction::IssueKey,
        AuditAction::RotateKey,
        AuditAction::RevokeKey,
        AuditAction::SetTenantLimits,
        AuditAction::SetKeyLimit,
    ];

    /// Returns the stable snake_case name, as stored and sent in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::CreateTenant => "create_tenant",
            AuditAction::RenameTenant => "rename_tenant",
            AuditAction::SuspendTenant => "suspend_tenant",
            AuditAction::ResumeTenant => "resume_tenant",
            AuditAction::DeleteTenant => "delete_tenant",
            AuditAction::IssueKey => "issue_key",
            AuditAction::RotateKey => "rotate_key",
            AuditAction::RevokeKey => "revoke_key",
            AuditAction::SetTenantLimits => "set_tenant_limits",
            AuditAction::SetKeyLimit => "set_key_limit",
        }
    }

    /// Parses the name written by [`AuditAction::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| Error::invalid("audit action", format!("unknown action {text:?}")))
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenant or key that a change applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditTarget {
    Tenant(TenantId),
    Key(KeyId),
}

impl AuditTarget {
    /// Returns `tenant` or `key`, as stored and sent in JSON.
    pub fn kind(self) -> &'static str {
        match self {
            AuditTarget::Tenant(_) => "tenant",
            AuditTarget::Key(_) => "key",
        }
    }

    /// Returns the target's id as a UUID, for storage drivers.
    pub fn as_uuid(self) -> Uuid {
        match self {
            AuditTarget::Tenant(id) => id.as_uuid(),
            AuditTarget::Key(id) => id.as_uuid(),
        }
    }

    /// Rebuilds a target from its stored kind and id.
    pub fn from_parts(kind: &str, id: Uuid) -> Result<Self> {
        match kind {
            "tenant" => Ok(AuditTarget::Tenant(TenantId::from_uuid(id))),
            "key" => Ok(AuditTarget::Key(KeyId::from_uuid(id))),
            other => Err(Error::invalid(
                "audit target",
                format!("expected tenant or key, got {other:?}"),
            )),
        }
    }
}

/// One recorded change to a tenant or one of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: AuditId,
    /// The tenant whose trail lists the entry.
    pub tenant_id: TenantId,
    pub actor: Actor,
    pub action: AuditAction,
    pub target: AuditTarget,
    /// The time of the change, truncated to milliseconds like every stored
    /// time.
    pub at: OffsetDateTime,
}

impl AuditEntry {
    /// Creates an entry with a new id.
    pub fn new(
        tenant_id: TenantId,
        actor: Actor,
        action: AuditAction,
        target: AuditTarget,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: AuditId::generate(),
            tenant_id,
            actor,
            action,
            target,
            at,
        }
    }
}
