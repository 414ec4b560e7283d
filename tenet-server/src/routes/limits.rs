//! `/tenants/{id}/limits` and `/tenants/{id}/keys/{key_id}/limit`: reading
//! and changing the rate limits and the monthly quota.
//!
//! A tenant's limits are for the admin token only. A key's own limit may
//! also be set by a `tenet:admin` key of the same tenant, because it can
//! only narrow what the tenant's limit already allows.

use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use tenet_core::KeyId;
use tenet_core::api::{KeyLimitBody, LimitBody, TenantLimitsBody};

use super::keys::authorize;
use super::parse_tenant_id;
use crate::auth::require_admin;
use crate::body::read_json;
use crate::error::Error;
use crate::response::{Response, json};
use crate::setup::State;

/// `GET /tenants/{id}/limits`: the tenant's rate limit and monthly quota,
/// each `null` when unset.
pub async fn get(state: &State, headers: &HeaderMap, tenant: &str) -> Result<Response, Error> {
    require_admin(headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;

    let limits = state.tenet.tenant_limits(tenant).await?;

    Ok(json(StatusCode::OK, &TenantLimitsBody::from(&limits)))
}

/// `PUT /tenants/{id}/limits`: replaces the tenant's rate limit and
/// monthly quota, returning them. This replica applies them at once, and
/// the others within the limit refresh interval.
pub async fn put(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;

    let request: TenantLimitsBody = read_json(&parts.headers, body, state.body_limits).await?;
    let limits = request.to_limits()?;
    let limits = state.tenet.set_tenant_limits(tenant, limits).await?;
    state.limiter.cache.forget_tenant(tenant);
    state.limiter.reseed_quota(tenant);
    tracing::info!(tenant_id = %tenant, "changed tenant limits");

    Ok(json(StatusCode::OK, &TenantLimitsBody::from(&limits)))
}

/// `GET /tenants/{id}/keys/{key_id}/limit`: returns the key's own limit,
/// `null` when only its tenant's applies. The admin token reads any key's;
/// a `tenet:admin` key reads those of its own tenant.
pub async fn get_key(
    state: &State,
    headers: &HeaderMap,
    tenant: &str,
    key: &str,
) -> Result<Response, Error> {
    let (tenant, _) = authorize(state, headers, tenant).await?;
    let key = KeyId::parse(key).map_err(|_| Error::KeyNotFound)?;

    let limit = state.tenet.key_limit(tenant, key).await?;

    let body = KeyLimitBody {
        limit: limit.as_ref().map(LimitBody::from),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `PUT /tenants/{id}/keys/{key_id}/limit`: sets the key's own limit, or
/// removes it with `{"limit": null}`, returning the result. A key of
/// another tenant is 404.
pub async fn put_key(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
    key: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let (tenant, caller) = authorize(state, &parts.headers, tenant).await?;
    let key = KeyId::parse(key).map_err(|_| Error::KeyNotFound)?;

    let request: KeyLimitBody = read_json(&parts.headers, body, state.body_limits).await?;
    let limit = request
        .limit
        .as_ref()
        .map(LimitBody::to_limit)
        .transpose()?;
    let limit = state
        .tenet
        .acting_as(caller.actor())
        .set_key_limit(tenant, key, limit)
        .await?;
    state.limiter.cache.forget_key(key);
    tracing::info!(tenant_id = %tenant, key_id = %key, "changed key limit");

    let body = KeyLimitBody {
        limit: limit.as_ref().map(LimitBody::from),
    };
    Ok(json(StatusCode::OK, &body))
}
