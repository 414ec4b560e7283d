//! `/tenants` and `/tenants/{id}`: creating, listing, reading, renaming,
//! suspending, resuming and deleting tenants, and reading their audit trail.

use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use tenet_core::api::{
    AuditEntryResponse, AuditListResponse, CreateTenantRequest, RenameTenantRequest,
    TenantListResponse, TenantResponse,
};
use tenet_core::{AuditId, TenantId, TenantName};

use super::keys::authorize;
use super::page::{Listing, PageQuery, encode_cursor};
use super::parse_tenant_id;
use crate::auth::require_admin;
use crate::body::{read_json, read_optional_json};
use crate::error::Error;
use crate::response::{LogTenant, Response, empty, json};
use crate::setup::State;

/// `POST /tenants`: creates a tenant, returning 201 with a `Location`.
pub async fn create(state: &State, request: Request<Incoming>) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;

    let request: CreateTenantRequest = read_json(&parts.headers, body, state.body_limits).await?;
    let name = TenantName::parse(&request.name)?;
    let tenant = state.tenet.create_tenant(name).await?;

    let id = tenant.id;
    let mut response = json(StatusCode::CREATED, &TenantResponse::from(tenant));
    if let Ok(location) = HeaderValue::try_from(format!("/tenants/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.extensions_mut().insert(LogTenant(id));
    Ok(response)
}

/// `GET /tenants`: lists one page of tenants, oldest first, without the
/// deleted ones.
pub async fn list(state: &State, request: &Request<Incoming>) -> Result<Response, Error> {
    require_admin(request.headers(), &state.admin)?;
    let query = PageQuery::parse(request.uri().query(), Listing::Tenants)?;

    let after = query.after.map(TenantId::from_uuid);
    let page = state.tenet.list_tenants_page(after, query.limit).await?;

    let body = TenantListResponse {
        tenants: page.items.into_iter().map(TenantResponse::from).collect(),
        next_cursor: page
            .next_after
            .map(|last| encode_cursor(Listing::Tenants, last)),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `GET /tenants/{id}`: reads one tenant.
pub async fn get(state: &State, headers: &HeaderMap, tenant: &str) -> Result<Response, Error> {
    require_admin(headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;

    let tenant = state.tenet.tenant(tenant).await?;

    Ok(json(StatusCode::OK, &TenantResponse::from(tenant)))
}

/// `PATCH /tenants/{id}`: renames a tenant, returning it as renamed. The
/// name is validated like a new tenant's.
pub async fn rename(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;

    let request: RenameTenantRequest = read_json(&parts.headers, body, state.body_limits).await?;
    let name = TenantName::parse(&request.name)?;
    let tenant = state.tenet.rename_tenant(tenant, name).await?;

    Ok(json(StatusCode::OK, &TenantResponse::from(tenant)))
}

/// The body of a route that takes no fields: none, or the empty object.
/// Any field is rejected like an unknown field on other routes, so that a
/// client that expects one to take effect (such as a `reason`) learns that
/// it does not.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// `POST /tenants/{id}/suspend`: suspends a tenant, whose keys are then
/// rejected with 403 `tenant_suspended`. Returns the tenant; suspending a
/// suspended tenant changes nothing. Accepts an empty body or `{}`.
pub async fn suspend(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;
    let _: Option<NoFields> = read_optional_json(&parts.headers, body, state.body_limits).await?;

    let tenant = state.tenet.suspend_tenant(tenant).await?;

    Ok(json(StatusCode::OK, &TenantResponse::from(tenant)))
}

/// `POST /tenants/{id}/resume`: resumes a tenant, whose keys then verify
/// again. Returns the tenant; resuming an active tenant changes nothing.
/// Accepts an empty body or `{}`.
pub async fn resume(
    state: &State,
    request: Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;
    let _: Option<NoFields> = read_optional_json(&parts.headers, body, state.body_limits).await?;

    let tenant = state.tenet.resume_tenant(tenant).await?;

    Ok(json(StatusCode::OK, &TenantResponse::from(tenant)))
}

/// `DELETE /tenants/{id}`: revokes every key of a tenant and deletes it,
/// returning 204. Afterwards the tenant is 404 on every route except the
/// admin's audit read.
pub async fn delete(state: &State, headers: &HeaderMap, tenant: &str) -> Result<Response, Error> {
    require_admin(headers, &state.admin)?;
    let tenant = parse_tenant_id(tenant)?;

    state.tenet.delete_tenant(tenant).await?;

    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /tenants/{id}/audit`: lists one page of a tenant's audit trail,
/// oldest first. The admin token reads any tenant's trail, a deleted
/// tenant's included; a `tenet:admin` key reads its own tenant's.
pub async fn audit(
    state: &State,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (tenant, _) = authorize(state, request.headers(), tenant).await?;
    let listing = Listing::Audit(tenant);
    let query = PageQuery::parse(request.uri().query(), listing)?;

    let after = query.after.map(AuditId::from_uuid);
    let page = state.tenet.audit_page(tenant, after, query.limit).await?;

    let body = AuditListResponse {
        entries: page
            .items
            .into_iter()
            .map(AuditEntryResponse::from)
            .collect(),
        next_cursor: page.next_after.map(|last| encode_cursor(listing, last)),
    };
    Ok(json(StatusCode::OK, &body))
}
