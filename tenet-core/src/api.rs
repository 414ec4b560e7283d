//! Request and response bodies of the HTTP API.
//!
//! `tenet-server` reads and writes these types, and a typed client can share
//! them, so every type derives both `Serialize` and `Deserialize`. Requests
//! reject unknown fields, so a misspelt field is an error instead of being
//! ignored. Responses accept unknown fields, so older clients keep working
//! when a response gains a field. Times are RFC 3339 strings in UTC.
//!
//! Names travel as plain strings here: the server validates them with
//! [`TenantName::parse`](crate::TenantName::parse) and
//! [`KeyName::parse`](crate::KeyName::parse).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::audit::AuditEntry;
use crate::id::{AuditId, KeyId, TenantId};
use crate::key::{IssuedKey, KeyInfo, Principal, VerifiedKey};
use crate::ratelimit::{Limit, TenantLimits};
use crate::scope::Scope;
use crate::tenant::Tenant;
use crate::usage::UsageCount;

/// Body of `POST /tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// The tenant's display name. A missing field reads as the empty
    /// string, so a missing and a blank name are rejected the same way.
    #[serde(default)]
    pub name: String,
}

/// Body of `PATCH /tenants/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameTenantRequest {
    /// The tenant's new display name, validated like a new tenant's. A
    /// missing field reads as the empty string, which is rejected.
    #[serde(default)]
    pub name: String,
}

/// Body of `POST /tenants/{id}/keys`; the whole body is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueKeyRequest {
    /// The key's display name, such as "billing worker".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the key stops verifying: in the future and at most
    /// [`MAX_KEY_LIFETIME`](crate::expiry::MAX_KEY_LIFETIME) ahead. At
    /// most one of `expires_at` and `ttl_seconds` may be given.
    #[serde(
        default,
        with = "crate::timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's lifetime from now, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// The key's scopes; see [`Scope::parse`](crate::Scope::parse). A
    /// `null` reads as no scopes, like the other optional fields' `null`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub scopes: Vec<String>,
    /// A rate limit of the key's own, applied together with the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitBody>,
    /// A JSON object stored with the key; see
    /// [`KeyMetadata::parse`](crate::KeyMetadata::parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Reads a JSON `null` as an empty list, and any other value as a list.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Option::<Vec<T>>::deserialize(deserializer)?;
    Ok(list.unwrap_or_default())
}

/// A rate limit in a request or response body: `rate` requests per
/// `period_seconds`, of which up to `burst` may arrive at once.
///
/// It is read only from a JSON object: serde's derive would also take the
/// fields as an array (`[1, 2, 3]`), which no client means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct LimitBody {
    pub rate: u32,
    pub period_seconds: u64,
    pub burst: u32,
    /// When `true`, requests over the limit are counted and reported but
    /// not rejected.
    pub shadow: bool,
}

/// The fields of a [`LimitBody`] object, as a request gives them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFields {
    rate: u32,
    period_seconds: u64,
    burst: u32,
    #[serde(default)]
    shadow: bool,
}

impl TryFrom<Map<String, Value>> for LimitBody {
    type Error = serde_json::Error;

    fn try_from(object: Map<String, Value>) -> Result<Self, Self::Error> {
        let fields: LimitFields = serde_json::from_value(Value::Object(object))?;
        Ok(Self {
            rate: fields.rate,
            period_seconds: fields.period_seconds,
            burst: fields.burst,
            shadow: fields.shadow,
        })
    }
}

impl LimitBody {
    /// Builds the limit, failing with [`Error::Invalid`](crate::Error::Invalid)
    /// on the values that [`Limit::new`] rejects.
    pub fn to_limit(&self) -> crate::Result<Limit> {
        let limit = Limit::new(
            self.rate,
            std::time::Duration::from_secs(self.period_seconds),
            self.burst,
        )?;
        Ok(if self.shadow { limit.shadow() } else { limit })
    }
}

impl From<&Limit> for LimitBody {
    fn from(limit: &Limit) -> Self {
        Self {
            rate: limit.rate(),
            period_seconds: limit.period().as_secs(),
            burst: limit.burst(),
            shadow: limit.is_shadow(),
        }
    }
}

/// Body of `PUT /tenants/{id}/limits` and of its response and of
/// `GET /tenants/{id}/limits`. A `PUT` replaces both fields, and a missing
/// field reads as `null`: no limit or no quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsBody {
    /// The rate limit that all the tenant's keys draw on together.
    #[serde(default)]
    pub limit: Option<LimitBody>,
    /// The maximum number of requests the tenant's keys may make in one
    /// calendar month (UTC).
    #[serde(default)]
    pub monthly_quota: Option<u64>,
}

impl TenantLimitsBody {
    /// Builds the stored form, checking the rate limit and the quota.
    pub fn to_limits(&self) -> crate::Result<TenantLimits> {
        let limits = TenantLimits {
            limit: self.limit.as_ref().map(LimitBody::to_limit).transpose()?,
            monthly_quota: self.monthly_quota,
        };
        limits.validate()?;
        Ok(limits)
    }
}

impl From<&TenantLimits> for TenantLimitsBody {
    fn from(limits: &TenantLimits) -> Self {
        Self {
            limit: limits.limit.as_ref().map(LimitBody::from),
            monthly_quota: limits.monthly_quota,
        }
    }
}

/// Body of `PUT /tenants/{id}/keys/{key_id}/limit` and of its response:
/// the key's own limit, or `null` to remove it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitBody {
    #[serde(default)]
    pub limit: Option<LimitBody>,
}

/// The limit state of one request, as `POST /verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStateResponse {
    /// Whether the request fits the key's and the tenant's limits and the
    /// tenant's quota.
    pub allowed: bool,
    /// `rate_limited` or `quota_exceeded` when not allowed, else `null`.
    #[serde(default)]
    pub code: Option<String>,
    /// The `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
    /// values, or `null` when no rate limit applies.
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub remaining: Option<u32>,
    #[serde(default)]
    pub reset_seconds: Option<u64>,
    /// Seconds until a request may succeed again, when not allowed.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// Whether a shadow limit would have rejected the request.
    #[serde(default)]
    pub shadow_rejected: bool,
    /// Requests left in the tenant's monthly quota, or `null` without one.
    #[serde(default)]
    pub quota_remaining: Option<u64>,
    /// When the monthly quota resets, or `null` without one.
    #[serde(default, with = "crate::timestamp::option")]
    pub quota_resets_at: Option<OffsetDateTime>,
}

/// A tenant, as returned by `POST /tenants`, `GET /tenants/{id}` and the
/// routes that change a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantResponse {
    pub id: TenantId,
    pub name: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    /// `active`, or `suspended` while the tenant's keys are rejected.
    /// Bodies from servers that predate suspension read as `active`.
    #[serde(default = "active")]
    pub status: String,
}

fn active() -> String {
    "active".to_owned()
}

impl From<Tenant> for TenantResponse {
    fn from(tenant: Tenant) -> Self {
        Self {
            id: tenant.id,
            name: tenant.name.as_str().to_owned(),
            created_at: tenant.created_at,
            status: tenant.status.as_str().to_owned(),
        }
    }
}

/// Body of `GET /tenants`: one page of tenants, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantListResponse {
    pub tenants: Vec<TenantResponse>,
    /// The `cursor` of the next page, or `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A key just issued: the only response that carries the plaintext key.
///
/// `Debug` prints the key's display prefix only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKeyResponse {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    /// The whole API key. The server keeps only its keyed digest, so this
    /// is the one time anybody can read it.
    pub api_key: String,
    /// The key's first characters, which identify it in listings.
    pub prefix: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    /// When the key stops verifying, or `null` for a key without expiry.
    #[serde(default, with = "crate::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's scopes, sorted and without duplicates.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The key's own rate limit, or `null` when only the tenant's applies.
    #[serde(default)]
    pub limit: Option<LimitBody>,
    /// The JSON object stored with the key; `{}` when none was given.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl From<&IssuedKey> for IssuedKeyResponse {
    fn from(issued: &IssuedKey) -> Self {
        Self {
            id: issued.info.id,
            tenant_id: issued.info.tenant_id,
            name: issued
                .info
                .name
                .as_ref()
                .map(|name| name.as_str().to_owned()),
            api_key: issued.api_key.expose_secret().to_owned(),
            prefix: issued.info.prefix.clone(),
            created_at: issued.info.created_at,
            expires_at: issued.info.expires_at,
            scopes: scope_names(&issued.info.scopes),
            limit: issued.limit.as_ref().map(LimitBody::from),
            metadata: issued.info.metadata.as_map().clone(),
        }
    }
}

impl fmt::Debug for IssuedKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKeyResponse")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("api_key", &format_args!("{}…", self.prefix))
            .field("prefix", &self.prefix)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("limit", &self.limit)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// A key's metadata, as listed by `GET /tenants/{id}/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResponse {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub prefix: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    /// When the key was revoked, or `null` while it is valid.
    #[serde(with = "crate::timestamp::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key stops verifying, or `null` for a key without expiry.
    #[serde(default, with = "crate::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's scopes, sorted and without duplicates.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The JSON object stored with the key; `{}` when none was given.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The last successful verification written to the store, or `null`
    /// for a key not used yet. It lags behind by up to the server's
    /// key-use flush interval.
    #[serde(default, with = "crate::timestamp::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// The id of the key that a rotation issued in this key's place, or
    /// `null` for a key never rotated.
    #[serde(default)]
    pub replaced_by: Option<KeyId>,
}

impl From<KeyInfo> for KeyResponse {
    fn from(info: KeyInfo) -> Self {
        Self {
            id: info.id,
            tenant_id: info.tenant_id,
            name: info.name.map(|name| name.as_str().to_owned()),
            prefix: info.prefix,
            created_at: info.created_at,
            revoked_at: info.revoked_at,
            expires_at: info.expires_at,
            scopes: scope_names(&info.scopes),
            metadata: info.metadata.as_map().clone(),
            last_used_at: info.last_used_at,
            replaced_by: info.replaced_by,
        }
    }
}

fn scope_names(scopes: &[Scope]) -> Vec<String> {
    scopes
        .iter()
        .map(|scope| scope.as_str().to_owned())
        .collect()
}

/// Body of `GET /tenants/{id}/keys`: one page of the tenant's keys, oldest
/// first, revoked ones included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyListResponse {
    pub keys: Vec<KeyResponse>,
    /// The `cursor` of the next page, or `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One entry of a tenant's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryResponse {
    pub id: AuditId,
    pub tenant_id: TenantId,
    /// `admin` for the admin token, or the id of the `tenet:admin` key
    /// that made the change.
    pub actor: String,
    /// The kind of change: `create_tenant`, `rename_tenant`, `suspend_tenant`,
    /// `resume_tenant`, `delete_tenant`, `issue_key`, `rotate_key`,
    /// `revoke_key`, `set_tenant_limits` or `set_key_limit`.
    pub action: String,
    /// `tenant` or `key`.
    pub target_type: String,
    /// The id of the tenant or key that changed; for `rotate_key`, the old
    /// key.
    pub target_id: String,
    #[serde(with = "crate::timestamp")]
    pub at: OffsetDateTime,
}

impl From<AuditEntry> for AuditEntryResponse {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            tenant_id: entry.tenant_id,
            actor: entry.actor.to_string(),
            action: entry.action.as_str().to_owned(),
            target_type: entry.target.kind().to_owned(),
            target_id: entry.target.as_uuid().hyphenated().to_string(),
            at: entry.at,
        }
    }
}

/// Body of `GET /tenants/{id}/audit`: one page of the tenant's audit
/// trail, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditListResponse {
    pub entries: Vec<AuditEntryResponse>,
    /// The `cursor` of the next page, or `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Body of a request authenticated by an API key: whom the key acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalResponse {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
}

impl From<Principal> for PrincipalResponse {
    fn from(principal: Principal) -> Self {
        Self {
            tenant_id: principal.tenant_id,
            key_id: principal.key_id,
        }
    }
}

/// Body of `POST /tenants/{id}/keys/{key_id}/rotate`; the whole body is
/// optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old key keeps working, in seconds: 86,400 (one day)
    /// when absent, 0 to revoke it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// Response of a rotation: the new key, with its plaintext, and the old
/// key as it now ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyResponse {
    pub new_key: IssuedKeyResponse,
    pub old_key: KeyResponse,
}

/// Body of `POST /verify`: a presented key and the scopes it must hold.
///
/// `Debug` prints neither the key nor any part of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The API key to check. The field is required, so a body without it
    /// is rejected as invalid JSON. An empty string is a malformed key.
    pub key: String,
    /// Scopes the key must hold, each valid by
    /// [`Scope::parse`](crate::Scope::parse); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Whether a valid key's request counts against its limits and quota:
    /// `true` by default, `false` to check them without counting.
    #[serde(default = "consume_by_default", skip_serializing_if = "is_true")]
    pub consume: bool,
}

fn consume_by_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &"…")
            .field("scopes", &self.scopes)
            .field("consume", &self.consume)
            .finish()
    }
}

/// Body of a `200` response to `POST /verify`: `{"valid": true, ...}` with
/// whom the key acts for, or `{"valid": false, "code": "..."}` with the
/// [`Rejection::code`](crate::Rejection::code) of why it was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyResponse {
    Valid(ValidKeyResponse),
    Invalid(InvalidKeyResponse),
}

/// A key that passed `POST /verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidKeyResponse {
    /// Always `true`.
    pub valid: bool,
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    /// Every scope the key holds, not only the required ones.
    pub scopes: Vec<String>,
    /// When the key stops verifying, or `null` for a key without expiry.
    #[serde(with = "crate::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's limit state for this request, or `null` when neither the
    /// key nor its tenant has a limit or a quota.
    #[serde(default)]
    pub rate_limit: Option<LimitStateResponse>,
}

impl From<&VerifiedKey> for ValidKeyResponse {
    fn from(verified: &VerifiedKey) -> Self {
        Self {
            valid: true,
            tenant_id: verified.principal.tenant_id,
            key_id: verified.principal.key_id,
            scopes: scope_names(&verified.scopes),
            expires_at: verified.expires_at,
            rate_limit: None,
        }
    }
}

/// A key that `POST /verify` rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidKeyResponse {
    /// Always `false`.
    pub valid: bool,
    /// `key_malformed`, `key_unknown`, `key_revoked`, `key_expired`,
    /// `missing_scope` or `tenant_suspended`.
    pub code: String,
}

/// Body of `GET /tenants/{id}/usage`: request counts of a tenant's keys
/// in a range, summed per period and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageResponse {
    pub tenant_id: TenantId,
    #[serde(with = "crate::timestamp")]
    pub from: OffsetDateTime,
    #[serde(with = "crate::timestamp")]
    pub to: OffsetDateTime,
    /// `hour` or `day`, both in UTC.
    pub granularity: String,
    /// Sums over the whole range.
    pub totals: UsageTotals,
    /// Periods with at least one request, oldest first.
    pub periods: Vec<UsagePeriod>,
}

/// Accepted and rejected requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub accepted: u64,
    pub rejected: u64,
}

/// The requests of one hour or day, in total and per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePeriod {
    /// Start of the period, in UTC.
    #[serde(with = "crate::timestamp")]
    pub start: OffsetDateTime,
    pub accepted: u64,
    pub rejected: u64,
    /// Keys with at least one request in the period, ordered by id.
    pub keys: Vec<KeyUsage>,
}

/// The requests of one key in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    pub key_id: KeyId,
    pub accepted: u64,
    pub rejected: u64,
}

/// One line of `GET /tenants/{id}/usage/export`: the requests of one key in
/// one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Derived from the tenant, the key and the hour, so that importing
    /// the same hour twice can be detected.
    pub event_id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    /// Start of the hour, in UTC.
    #[serde(with = "crate::timestamp")]
    pub hour: OffsetDateTime,
    pub accepted: u64,
    pub rejected: u64,
}

impl From<&UsageCount> for UsageRecord {
    fn from(count: &UsageCount) -> Self {
        Self {
            event_id: count.event_id(),
            tenant_id: count.tenant_id,
            key_id: count.key_id,
            hour: count.hour,
            accepted: count.accepted,
            rejected: count.rejected,
        }
    }
}

/// Body of `GET /healthz` and of a successful `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `"ok"`.
    pub status: String,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

/// An error's stable code for programs and its message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable snake_case code, such as `tenant_not_found`.
    pub code: String,
    /// A sentence for people; its wording may change between releases.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::audit::{Actor, AuditAction, AuditTarget};
    use crate::key::ApiKey;
    use crate::name::{KeyName, TenantName};

    fn round_trip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let json = serde_json::to_string(value).expect("serializes");

        let back: T = serde_json::from_str(&json).expect("deserializes its own output");

        assert_eq!(&back, value, "round trip through {json}");
    }

    fn time() -> OffsetDateTime {
        time::macros::datetime!(2026-12-04 15:57:47.123 UTC)
    }

    fn key_info(revoked_at: Option<OffsetDateTime>) -> KeyInfo {
        KeyInfo {
            id: KeyId::generate(),
            tenant_id: TenantId::generate(),
            name: Some(KeyName::parse("billing worker").expect("valid name")),
            prefix: "tnt_abcdefgh".to_owned(),
            created_at: time(),
            revoked_at,
            expires_at: None,
            scopes: Vec::new(),
            metadata: crate::KeyMetadata::default(),
            last_used_at: revoked_at,
            replaced_by: None,
        }
    }

    #[test]
    fn limit_body_reads_only_objects() {
        let object = serde_json::json!({"rate": 1, "period_seconds": 2, "burst": 3});
        let array = serde_json::json!([1, 2, 3]);
        let unknown = serde_json::json!({"rate": 1, "period_seconds": 2, "burst": 3, "x": 0});

        let parsed: LimitBody = serde_json::from_value(object).expect("an object is read");
        let from_array = serde_json::from_value::<LimitBody>(array);
        let with_unknown = serde_json::from_value::<LimitBody>(unknown);

        assert_eq!(
            parsed,
            LimitBody {
                rate: 1,
                period_seconds: 2,
                burst: 3,
                shadow: false
            }
        );
        assert!(from_array.is_err(), "{from_array:?}");
        assert!(with_unknown.is_err(), "{with_unknown:?}");
    }

    #[test]
    fn requests_round_trip() {
        round_trip(&CreateTenantRequest {
            name: "Acme \"Ltd\" \u{e9}".to_owned(),
        });
        round_trip(&IssueKeyRequest {
            name: Some("billing worker".to_owned()),
            ..IssueKeyRequest::default()
        });
        round_trip(&IssueKeyRequest::default());
        round_trip(&IssueKeyRequest {
            name: None,
            expires_at: Some(time()),
            ttl_seconds: Some(60),
            scopes: vec!["billing:read".to_owned()],
            limit: Some(LimitBody {
                rate: 10,
                period_seconds: 60,
                burst: 5,
                shadow: true,
            }),
            metadata: Some(serde_json::json!({"owner": "billing"})),
        });
        round_trip(&VerifyRequest {
            key: "tnt_x".to_owned(),
            scopes: vec!["tenet:verify".to_owned()],
            consume: true,
        });
        round_trip(&VerifyRequest {
            key: "tnt_x".to_owned(),
            scopes: Vec::new(),
            consume: false,
        });
        round_trip(&TenantLimitsBody {
            limit: None,
            monthly_quota: Some(1000),
        });
        round_trip(&RenameTenantRequest {
            name: "Acme Europe".to_owned(),
        });
    }

    #[test]
    fn responses_round_trip() {
        let mut tenant = Tenant::new(
            TenantId::generate(),
            TenantName::parse("Acme").expect("valid name"),
            time(),
        );
        round_trip(&TenantResponse::from(tenant.clone()));
        tenant.status = crate::tenant::TenantStatus::Suspended;
        let tenant = TenantResponse::from(tenant);
        assert_eq!(tenant.status, "suspended");
        round_trip(&tenant);
        round_trip(&TenantListResponse {
            tenants: vec![tenant.clone(), tenant],
            next_cursor: Some("AZpC0QiIcUimCRi1OZv9ww".to_owned()),
        });

        let issued = IssuedKey {
            info: key_info(None),
            api_key: ApiKey::generate(),
            limit: Some(Limit::new(5, std::time::Duration::from_secs(1), 10).expect("valid")),
        };
        round_trip(&IssuedKeyResponse::from(&issued));

        let valid = KeyResponse::from(key_info(None));
        let revoked = KeyResponse::from(key_info(Some(time())));
        round_trip(&valid);
        round_trip(&revoked);
        round_trip(&KeyListResponse {
            keys: vec![valid, revoked],
            next_cursor: None,
        });

        round_trip(&PrincipalResponse {
            tenant_id: TenantId::generate(),
            key_id: KeyId::generate(),
        });
        round_trip(&VerifyResponse::Valid(ValidKeyResponse {
            valid: true,
            tenant_id: TenantId::generate(),
            key_id: KeyId::generate(),
            scopes: vec!["billing:read".to_owned()],
            expires_at: Some(time()),
            rate_limit: Some(LimitStateResponse {
                allowed: false,
                code: Some("quota_exceeded".to_owned()),
                limit: Some(10),
                remaining: Some(0),
                reset_seconds: Some(3),
                retry_after_seconds: Some(86_400),
                shadow_rejected: false,
                quota_remaining: Some(0),
                quota_resets_at: Some(time()),
            }),
        }));
        round_trip(&VerifyResponse::Invalid(InvalidKeyResponse {
            valid: false,
            code: "key_expired".to_owned(),
        }));
        let tenant_id = TenantId::generate();
        let created = AuditEntryResponse::from(AuditEntry::new(
            tenant_id,
            Actor::Admin,
            AuditAction::CreateTenant,
            AuditTarget::Tenant(tenant_id),
            time(),
        ));
        let issued = AuditEntryResponse::from(AuditEntry::new(
            tenant_id,
            Actor::Key(KeyId::generate()),
            AuditAction::IssueKey,
            AuditTarget::Key(KeyId::generate()),
            time(),
        ));
        round_trip(&created);
        round_trip(&AuditListResponse {
            entries: vec![created, issued],
            next_cursor: Some("AZpC0QiIcUimCRi1OZv9ww".to_owned()),
        });
        round_trip(&UsageResponse {
            tenant_id: TenantId::generate(),
            from: time(),
            to: time(),
            granularity: "day".to_owned(),
            totals: UsageTotals {
                accepted: 3,
                rejected: 1,
            },
            periods: vec![UsagePeriod {
                start: time(),
                accepted: 3,
                rejected: 1,
                keys: vec![KeyUsage {
                    key_id: KeyId::generate(),
                    accepted: 3,
                    rejected: 1,
                }],
            }],
        });
        round_trip(&UsageRecord::from(&UsageCount {
            tenant_id: TenantId::generate(),
            key_id: KeyId::generate(),
            hour: time(),
            accepted: 2,
            rejected: 0,
        }));
        round_trip(&HealthResponse {
            status: "ok".to_owned(),
        });
        round_trip(&ErrorResponse {
            error: ErrorDetail {
                code: "tenant_not_found".to_owned(),
                message: "tenant not found".to_owned(),
            },
        });
    }

    #[test]
    fn null_scopes_read_as_none() {
        let request: IssueKeyRequest =
            serde_json::from_str(r#"{"scopes": null}"#).expect("null scopes");

        assert_eq!(request, IssueKeyRequest::default());
    }

    #[test]
    fn requests_reject_unknown_and_duplicate_fields() {
        let unknown = serde_json::from_str::<CreateTenantRequest>(r#"{"name":"a","x":1}"#);
        let duplicate = serde_json::from_str::<CreateTenantRequest>(r#"{"name":"a","name":"b"}"#);
        let unknown_key = serde_json::from_str::<IssueKeyRequest>(r#"{"nam":"a"}"#);

        assert!(unknown.is_err());
        assert!(duplicate.is_err());
        assert!(unknown_key.is_err());
    }

    #[test]
    fn tenant_without_status_reads_as_active() {
        let json = r#"{"id":"01a241d1-0888-7148-a609-18b5399bfdc3","name":"Acme",
            "created_at":"2026-12-04T15:57:47.123Z"}"#;

        let tenant: TenantResponse = serde_json::from_str(json).expect("an older body parses");

        assert_eq!(tenant.status, "active");
    }

    #[test]
    fn missing_tenant_name_reads_as_empty() {
        let request: CreateTenantRequest = serde_json::from_str("{}").expect("valid JSON");

        assert_eq!(request.name, "");
    }

    #[test]
    fn times_are_rfc3339() {
        let json =
            serde_json::to_value(KeyResponse::from(key_info(Some(time())))).expect("serializes");

        assert_eq!(json["created_at"], "2026-12-04T15:57:47.123Z");
        assert_eq!(json["revoked_at"], "2026-12-04T15:57:47.123Z");
    }

    #[test]
    fn responses_without_new_fields_still_parse() {
        let json = r#"{"id":"01a241d1-08ee-71df-8289-4a7ec2c882f0",
            "tenant_id":"01a241d1-0888-7148-a609-18b5399bfdc3","name":null,
            "prefix":"tnt_abcdefgh","created_at":"2026-12-04T15:57:47.123Z","revoked_at":null}"#;

        let key: KeyResponse = serde_json::from_str(json).expect("an older body parses");

        assert_eq!(key.expires_at, None);
        assert!(key.scopes.is_empty());
    }

    #[test]
    fn verify_request_debug_hides_the_key() {
        let key = ApiKey::generate();
        let request = VerifyRequest {
            key: key.expose_secret().to_owned(),
            scopes: Vec::new(),
            consume: true,
        };

        assert!(!format!("{request:?}").contains(key.display_prefix()));
    }

    #[test]
    fn issued_key_debug_hides_the_key() {
        let issued = IssuedKey {
            info: key_info(None),
            api_key: ApiKey::generate(),
            limit: None,
        };
        let response = IssuedKeyResponse::from(&issued);

        let debug = format!("{response:?}");

        assert!(!debug.contains(issued.api_key.expose_secret()));
        assert!(debug.contains(&response.prefix));
    }
}
