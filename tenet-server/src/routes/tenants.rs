//! `/tenants` and `/tenants/{id}`: creating, listing and reading tenants.

use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use tenet_core::api::{CreateTenantRequest, TenantListResponse, TenantResponse};
use tenet_core::{TenantId, TenantName};

use super::page::{Listing, PageQuery, encode_cursor};
use super::parse_tenant_id;
use crate::auth::require_admin;
use crate::body::read_json;
use crate::error::Error;
use crate::response::{LogTenant, Response, json};
use crate::setup::State;

/// `POST /tenants`: creates a tenant, returning 201 with a `Location`.
pub async fn create(state: &State, request: Request<Incoming>) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin(&parts.headers, &state.admin)?;

    let request: CreateTenantRequest =
        read_json(&parts.headers, body, state.max_body_bytes).await?;
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

/// `GET /tenants`: lists one page of tenants, oldest first.
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
