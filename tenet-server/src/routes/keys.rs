//! `/tenants/{id}/keys`: issuing, listing, rotating and revoking a tenant's
//! API keys.
//!
//! The admin token may manage every tenant's keys. An API key with the
//! scope [`ADMIN_SCOPE`] may manage the keys of its own tenant, and gets
//! 404 for any other tenant, as if that tenant did not exist.

use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tenet_core::api::{
    IssueKeyRequest, IssuedKeyResponse, KeyListResponse, KeyResponse, LimitBody, RotateKeyRequest,
    RotateKeyResponse,
};
use tenet_core::expiry::{MAX_KEY_LIFETIME, resolve_expiry};
use tenet_core::{KeyId, KeyMetadata, KeyName, KeyOptions, Scope, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::page::{Listing, PageQuery, encode_cursor};
use super::parse_tenant_id;
use crate::auth::{Caller, require_admin_or_scope};
use crate::body::{read_optional_json, read_optional_json_explained};
use crate::error::Error;
use crate::response::{Response, empty, json};
use crate::setup::State;

/// The scope that lets an API key manage the keys of its own tenant.
pub const ADMIN_SCOPE: &str = "tenet:admin";

/// Accepts the admin token for any tenant, or an API key with
/// [`ADMIN_SCOPE`] for its own tenant only.
///
/// Credentials are checked before the tenant id, so a request without
/// valid credentials learns nothing about which tenants exist.
pub(super) async fn authorize(
    state: &State,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<(TenantId, Caller), Error> {
    let caller = require_admin_or_scope(
        headers,
        &state.admin,
        &state.tenet,
        &state.metrics,
        ADMIN_SCOPE,
    )
    .await?;
    let tenant = parse_tenant_id(tenant)?;

    if let Caller::Key(verified) = &caller
        && verified.principal.tenant_id != tenant
    {
        tracing::debug!(
            key_id = %verified.principal.key_id,
            tenant_id = %tenant,
            "API key denied access to another tenant's keys"
        );
        return Err(Error::TenantNotFound);
    }
    Ok((tenant, caller))
}

/// `POST /tenants/{id}/keys`: issues a key with an optional name, expiry,
/// scopes, rate limit and metadata, returning 201 with the plaintext key. This is the only
/// response that ever carries it, so it is marked `Cache-Control: no-store`.
pub async fn issue(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let (tenant, caller) = authorize(state, &parts.headers, tenant).await?;

    let request: IssueKeyRequest = read_optional_json_explained(
        &parts.headers,
        body,
        state.body_limits,
        explain_malformed_expiry,
    )
    .await?
    .unwrap_or_default();
    let options = KeyOptions {
        name: request.name.as_deref().map(KeyName::parse).transpose()?,
        expires_at: resolve_expiry(
            request.expires_at,
            request.ttl_seconds,
            OffsetDateTime::now_utc(),
        )?,
        scopes: Scope::parse_list(&request.scopes)?,
        limit: request
            .limit
            .as_ref()
            .map(LimitBody::to_limit)
            .transpose()?,
        metadata: request
            .metadata
            .map(KeyMetadata::parse)
            .transpose()?
            .unwrap_or_default(),
    };
    caller.require_grantable(&options.scopes)?;
    let options = KeyOptions {
        expires_at: bound_expiry(&caller, options.expires_at)?,
        ..options
    };
    let issued = state
        .tenet
        .acting_as(caller.actor())
        .issue_key_with(tenant, options)
        .await?;

    let mut response = json(StatusCode::CREATED, &IssuedKeyResponse::from(&issued));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Maximum number of characters of a malformed `expires_at` that its error
/// message quotes.
const MAX_QUOTED_EXPIRY_CHARS: usize = 64;

/// Reports an issue-key body whose `expires_at` is not an RFC 3339 time as
/// `invalid_expiry`, showing the value and the expected form. Returns
/// `None` when `expires_at` is absent, null or well-formed, so that the
/// parse error itself is reported.
fn explain_malformed_expiry(bytes: &[u8]) -> Option<Error> {
    #[derive(Deserialize)]
    struct ExpiresAt {
        #[serde(default)]
        expires_at: Option<Value>,
    }

    let ExpiresAt { expires_at } = serde_json::from_slice(bytes).ok()?;
    let value = expires_at?;
    let well_formed = value
        .as_str()
        .is_some_and(|text| OffsetDateTime::parse(text, &Rfc3339).is_ok());
    if well_formed {
        return None;
    }

    let mut quoted: String = value.to_string();
    if let Some((cut, _)) = quoted.char_indices().nth(MAX_QUOTED_EXPIRY_CHARS) {
        quoted.truncate(cut);
        quoted.push_str("...");
    }
    Some(Error::InvalidExpiry(format!(
        "invalid expires_at: {quoted} is not an RFC 3339 time; give a UTC time \
         such as \"2030-01-01T00:00:00Z\" or one with an offset such as \
         \"2030-01-01T09:00:00+09:00\""
    )))
}

/// `GET /tenants/{id}/keys`: lists one page of a tenant's keys, oldest
/// first, without their secrets.
pub async fn list(
    state: &State,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (tenant, _) = authorize(state, request.headers(), tenant).await?;
    let listing = Listing::Keys(tenant);
    let query = PageQuery::parse(request.uri().query(), listing)?;

    let after = query.after.map(KeyId::from_uuid);
    let page = state
        .tenet
        .list_keys_page(tenant, after, query.limit)
        .await?;

    let body = KeyListResponse {
        keys: page.items.into_iter().map(KeyResponse::from).collect(),
        next_cursor: page.next_after.map(|last| encode_cursor(listing, last)),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `DELETE /tenants/{id}/keys/{key_id}`: revokes a key, returning 204 also
/// when it was revoked before. A key of another tenant is 404 and stays
/// valid.
pub async fn revoke(
    state: &State,
    headers: &HeaderMap,
    tenant: &str,
    key: &str,
) -> Result<Response, Error> {
    let (tenant, caller) = authorize(state, headers, tenant).await?;
    let key = parse_key_id(state, tenant, key).await?;

    state
        .tenet
        .acting_as(caller.actor())
        .revoke_key(tenant, key)
        .await?;

    Ok(empty(StatusCode::NO_CONTENT))
}

/// Grace period of a rotation without `grace_seconds`: one day.
const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// `POST /tenants/{id}/keys/{key_id}/rotate`: issues a key with the old
/// key's name, scopes and metadata and ends the old key after the grace period,
/// returning 201 with the new plaintext key. A revoked key, or a key of
/// another tenant, is 404. A key rotated before is 409 `key_rotated`, and
/// an expired key is 409 `key_expired`.
///
/// The new key keeps the old key's expiry. When a `tenet:admin` key calls,
/// the new key expires no later than the calling key.
pub async fn rotate(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
    key: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let (tenant, caller) = authorize(state, &parts.headers, tenant).await?;
    let key = parse_key_id(state, tenant, key).await?;

    let request: RotateKeyRequest = read_optional_json(&parts.headers, body, state.body_limits)
        .await?
        .unwrap_or_default();
    let grace = match request.grace_seconds {
        None => DEFAULT_GRACE,
        Some(seconds) if seconds <= MAX_KEY_LIFETIME.as_secs() => Duration::from_secs(seconds),
        Some(seconds) => {
            return Err(Error::InvalidExpiry(format!(
                "invalid grace_seconds: is {seconds}; it must be 0 to {}",
                MAX_KEY_LIFETIME.as_secs()
            )));
        }
    };
    if let Caller::Key(_) = caller {
        // The new key inherits the old key's scopes, so rotating is granting
        // them again.
        let old = state
            .tenet
            .list_keys(tenant)
            .await?
            .into_iter()
            .find(|info| info.id == key)
            .ok_or(Error::KeyNotFound)?;
        caller.require_grantable(&old.scopes)?;
    }
    let rotated = state
        .tenet
        .acting_as(caller.actor())
        .rotate_key_expiring_by(tenant, key, grace, caller.expires_at())
        .await?;

    let body = RotateKeyResponse {
        new_key: IssuedKeyResponse::from(&rotated.issued),
        old_key: KeyResponse::from(rotated.old),
    };
    let mut response = json(StatusCode::CREATED, &body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Parses a key id from the path. A malformed id is 404 `key_not_found`,
/// but only once the tenant is known to exist, so that an unknown tenant
/// is `tenant_not_found` whatever the key id, as for issuing and listing.
async fn parse_key_id(state: &State, tenant: TenantId, key: &str) -> Result<KeyId, Error> {
    match KeyId::parse(key) {
        Ok(key) => Ok(key),
        Err(_) => {
            state.tenet.tenant(tenant).await?;
            Err(Error::KeyNotFound)
        }
    }
}

/// Returns the expiry of a key that `caller` issues. An API key may not
/// issue a key that outlives itself, so without a requested expiry the new
/// key gets the caller's, and a later requested expiry is rejected.
fn bound_expiry(
    caller: &Caller,
    requested: Option<OffsetDateTime>,
) -> Result<Option<OffsetDateTime>, Error> {
    let Caller::Key(verified) = caller else {
        return Ok(requested);
    };
    let Some(limit) = verified.expires_at else {
        return Ok(requested);
    };
    match requested {
        None => Ok(Some(limit)),
        Some(at) if at <= limit => Ok(Some(at)),
        Some(at) => {
            tracing::debug!(
                key_id = %verified.principal.key_id,
                "API key cannot issue a key that outlives it"
            );
            Err(Error::InvalidExpiry(format!(
                "invalid expires_at: {} is after {}, when the issuing API key expires; \
                 a key may not outlive the key that issues it, so give an earlier \
                 expiry, or none to get the issuing key's expiry",
                rfc3339(at),
                rfc3339(limit)
            )))
        }
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    tenet_core::timestamp::format(time)
}
