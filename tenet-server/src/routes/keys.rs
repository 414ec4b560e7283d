//! `/tenants/{id}/keys`: issuing, listing and revoking a tenant's API keys.

use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use std::time::Duration;

use tenet_core::api::{
    IssueKeyRequest, IssuedKeyResponse, KeyListResponse, KeyResponse, RotateKeyRequest,
    RotateKeyResponse,
};
use tenet_core::expiry::{MAX_KEY_LIFETIME, resolve_expiry};
use tenet_core::{KeyId, KeyName, KeyOptions, Scope};
use time::OffsetDateTime;

use super::page::{PageQuery, encode_cursor};
use super::parse_tenant_id;
use crate::auth::require_admin;
use crate::body::read_optional_json;
use crate::error::Error;
use crate::response::{Response, empty, json};
use crate::setup::State;

/// `POST /tenants/{id}/keys`: issues a key with an optional name, expiry
/// and scopes, returning 201 with the plaintext key. This is the only
/// response that ever carries it, so it is marked `Cache-Control: no-store`.
pub async fn issue(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;

    let request: IssueKeyRequest = read_optional_json(&parts.headers, body, state.max_body_bytes)
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
    };
    let issued = state.tenet.issue_key_with(tenant, options).await?;

    let mut response = json(StatusCode::CREATED, &IssuedKeyResponse::from(&issued));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /tenants/{id}/keys`: lists one page of a tenant's keys, oldest
/// first, without their secrets.
pub async fn list(
    state: &State,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    require_admin(request.headers(), &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;
    let query = PageQuery::parse(request.uri().query())?;

    let after = query.after.map(KeyId::from_uuid);
    let page = state
        .tenet
        .list_keys_page(tenant, after, query.limit)
        .await?;

    let body = KeyListResponse {
        keys: page.items.into_iter().map(KeyResponse::from).collect(),
        next_cursor: page.next_after.map(encode_cursor),
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
    require_admin(headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;
    let key = KeyId::parse(key).map_err(|_| Error::KeyNotFound)?;

    state.tenet.revoke_key(tenant, key).await?;

    Ok(empty(StatusCode::NO_CONTENT))
}

/// Grace period of a rotation without `grace_seconds`: one day.
const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// `POST /tenants/{id}/keys/{key_id}/rotate`: issues a key with the old
/// key's name and scopes and ends the old key after the grace period,
/// returning 201 with the new plaintext key. A revoked key, or a key of
/// another tenant, is 404.
pub async fn rotate(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
    key: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;
    let key = KeyId::parse(key).map_err(|_| Error::KeyNotFound)?;

    let request: RotateKeyRequest = read_optional_json(&parts.headers, body, state.max_body_bytes)
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
    let rotated = state.tenet.rotate_key(tenant, key, grace).await?;

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
