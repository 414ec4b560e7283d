//! The router: path segments to a route, per-route methods, and dispatch.
//!
//! Paths match segment by segment, without percent-decoding. Only the
//! listing routes (for `limit` and `cursor`) and the usage routes (for
//! `from`, `to` and `granularity`) read the query string. Every route that
//! serves GET serves HEAD too, as GET without the body. A known path with
//! another method gets 405 with `Allow`; an unknown path gets 404
//! `not_found`.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;
use tenet_core::TenantId;

use crate::error::Error;
use crate::response::{LogTenant, Response};
use crate::setup::State;

mod health;
mod keys;
mod limits;
mod metrics;
mod openapi;
mod page;
mod protected;
mod tenants;
mod usage;
mod verify;

/// A matched route, with the raw path segments it captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Tenants,
    Tenant { tenant: String },
    SuspendTenant { tenant: String },
    ResumeTenant { tenant: String },
    TenantAudit { tenant: String },
    TenantLimits { tenant: String },
    TenantKeys { tenant: String },
    TenantKey { tenant: String, key: String },
    RotateKey { tenant: String, key: String },
    KeyLimit { tenant: String, key: String },
    TenantUsage { tenant: String },
    TenantUsageExport { tenant: String },
    Protected,
    Verify,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

impl Route {
    /// Matches a request path; `None` when no route has this path.
    pub fn from_path(path: &str) -> Option<Self> {
        // The routes that clients call on every request, matched whole
        // before the path is split.
        match path {
            "/protected" => return Some(Route::Protected),
            "/verify" => return Some(Route::Verify),
            "/healthz" => return Some(Route::Healthz),
            _ => {}
        }
        let rest = path.strip_prefix('/')?;
        // The longest route has five segments. The segments go into an
        // array, because every request resolves its route and a `Vec` would
        // cost it an allocation.
        let mut segments = [""; 5];
        let mut count = 0;
        for segment in rest.split('/') {
            if segment.is_empty() || count == segments.len() {
                return None;
            }
            segments[count] = segment;
            count += 1;
        }

        let route = match &segments[..count] {
            ["tenants"] => Route::Tenants,
            ["tenants", tenant] => Route::Tenant {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "suspend"] => Route::SuspendTenant {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "resume"] => Route::ResumeTenant {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "limits"] => Route::TenantLimits {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "audit"] => Route::TenantAudit {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "keys"] => Route::TenantKeys {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "keys", key] => Route::TenantKey {
                tenant: (*tenant).to_owned(),
                key: (*key).to_owned(),
            },
            ["tenants", tenant, "keys", key, "rotate"] => Route::RotateKey {
                tenant: (*tenant).to_owned(),
                key: (*key).to_owned(),
            },
            ["tenants", tenant, "keys", key, "limit"] => Route::KeyLimit {
                tenant: (*tenant).to_owned(),
                key: (*key).to_owned(),
            },
            ["tenants", tenant, "usage"] => Route::TenantUsage {
                tenant: (*tenant).to_owned(),
            },
            ["tenants", tenant, "usage", "export"] => Route::TenantUsageExport {
                tenant: (*tenant).to_owned(),
            },
            ["protected"] => Route::Protected,
            ["verify"] => Route::Verify,
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["openapi.json"] => Route::OpenApi,
            _ => return None,
        };
        Some(route)
    }

    /// Returns the path template, which request logs show instead of the
    /// raw path.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Tenants => "/tenants",
            Route::Tenant { .. } => "/tenants/{id}",
            Route::SuspendTenant { .. } => "/tenants/{id}/suspend",
            Route::ResumeTenant { .. } => "/tenants/{id}/resume",
            Route::TenantAudit { .. } => "/tenants/{id}/audit",
            Route::TenantLimits { .. } => "/tenants/{id}/limits",
            Route::TenantKeys { .. } => "/tenants/{id}/keys",
            Route::TenantKey { .. } => "/tenants/{id}/keys/{key_id}",
            Route::RotateKey { .. } => "/tenants/{id}/keys/{key_id}/rotate",
            Route::KeyLimit { .. } => "/tenants/{id}/keys/{key_id}/limit",
            Route::TenantUsage { .. } => "/tenants/{id}/usage",
            Route::TenantUsageExport { .. } => "/tenants/{id}/usage/export",
            Route::Protected => "/protected",
            Route::Verify => "/verify",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
        }
    }

    /// Returns whether the route serves operators rather than API clients,
    /// which makes it available on the `--metrics-listen` address too.
    pub fn is_operational(&self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz | Route::Metrics)
    }

    /// Returns the methods this route serves and the matching `Allow` value.
    /// The methods leave out HEAD, which every GET route serves, but
    /// `Allow` lists it.
    fn methods(&self) -> (&'static [Method], &'static str) {
        match self {
            Route::Tenants | Route::TenantKeys { .. } => {
                (&[Method::GET, Method::POST], "GET, HEAD, POST")
            }
            Route::Tenant { .. } => (
                &[Method::GET, Method::PATCH, Method::DELETE],
                "GET, HEAD, PATCH, DELETE",
            ),
            Route::TenantKey { .. } => (&[Method::DELETE], "DELETE"),
            Route::TenantLimits { .. } => (&[Method::GET, Method::PUT], "GET, HEAD, PUT"),
            Route::KeyLimit { .. } => (&[Method::GET, Method::PUT], "GET, HEAD, PUT"),
            Route::Verify
            | Route::RotateKey { .. }
            | Route::SuspendTenant { .. }
            | Route::ResumeTenant { .. } => (&[Method::POST], "POST"),
            Route::TenantAudit { .. }
            | Route::TenantUsage { .. }
            | Route::TenantUsageExport { .. }
            | Route::Protected
            | Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::OpenApi => (&[Method::GET], "GET, HEAD"),
        }
    }

    /// Returns one route of each variant, with each captured segment set to
    /// its template placeholder, such as `{id}`.
    pub fn all() -> Vec<Route> {
        let tenant = || "{id}".to_owned();
        let key = || "{key_id}".to_owned();
        vec![
            Route::Tenants,
            Route::Tenant { tenant: tenant() },
            Route::SuspendTenant { tenant: tenant() },
            Route::ResumeTenant { tenant: tenant() },
            Route::TenantAudit { tenant: tenant() },
            Route::TenantLimits { tenant: tenant() },
            Route::TenantKeys { tenant: tenant() },
            Route::TenantKey {
                tenant: tenant(),
                key: key(),
            },
            Route::RotateKey {
                tenant: tenant(),
                key: key(),
            },
            Route::KeyLimit {
                tenant: tenant(),
                key: key(),
            },
            Route::TenantUsage { tenant: tenant() },
            Route::TenantUsageExport { tenant: tenant() },
            Route::Protected,
            Route::Verify,
            Route::Healthz,
            Route::Readyz,
            Route::Metrics,
            Route::OpenApi,
        ]
    }

    /// Returns the variant's position in [`Route::all`]. The match is
    /// exhaustive, so the tests fail to compile until a new variant gets a
    /// position, and a unit test then checks that `all` lists it.
    #[cfg(test)]
    fn position(&self) -> usize {
        match self {
            Route::Tenants => 0,
            Route::Tenant { .. } => 1,
            Route::SuspendTenant { .. } => 2,
            Route::ResumeTenant { .. } => 3,
            Route::TenantAudit { .. } => 4,
            Route::TenantLimits { .. } => 5,
            Route::TenantKeys { .. } => 6,
            Route::TenantKey { .. } => 7,
            Route::RotateKey { .. } => 8,
            Route::KeyLimit { .. } => 9,
            Route::TenantUsage { .. } => 10,
            Route::TenantUsageExport { .. } => 11,
            Route::Protected => 12,
            Route::Verify => 13,
            Route::Healthz => 14,
            Route::Readyz => 15,
            Route::Metrics => 16,
            Route::OpenApi => 17,
        }
    }

    /// Returns the tenant id segment, for routes under `/tenants/{id}`.
    fn tenant_segment(&self) -> Option<&str> {
        match self {
            Route::Tenant { tenant }
            | Route::SuspendTenant { tenant }
            | Route::ResumeTenant { tenant }
            | Route::TenantAudit { tenant }
            | Route::TenantLimits { tenant }
            | Route::TenantKeys { tenant }
            | Route::TenantKey { tenant, .. }
            | Route::RotateKey { tenant, .. }
            | Route::TenantUsage { tenant }
            | Route::TenantUsageExport { tenant }
            | Route::KeyLimit { tenant, .. } => Some(tenant),
            _ => None,
        }
    }
}

/// Returns the router's route table: each path template with the methods
/// it serves, in the order of [`Route::all`]. HEAD is left out, as in the
/// OpenAPI document, because it is GET without the body.
pub fn table() -> Vec<(&'static str, &'static [Method])> {
    Route::all()
        .iter()
        .map(|route| (route.template(), route.methods().0))
        .collect()
}

/// A handled request: its response, and the tenant it acted on when one is
/// known, for the request log.
#[derive(Debug)]
pub struct Handled {
    pub response: Response,
    pub tenant: Option<TenantId>,
}

impl From<Response> for Handled {
    fn from(response: Response) -> Self {
        Self {
            response,
            tenant: None,
        }
    }
}

/// Runs the handler of `route`, or returns 404 or 405, and converts any
/// error into its response.
///
/// The tenant for the log is a well-formed tenant id from the path,
/// whatever the outcome. Without one, it is the key's tenant of a
/// `/protected` request whose key is valid (accepted or over a limit), or
/// the [`LogTenant`] that a handler or
/// [`Error::TenantSuspended`] attached to the response.
///
/// It returns an `async move` block rather than being an `async fn`,
/// because an `async fn` keeps a second copy of its by-value arguments in
/// its future. That copy would take the future past the size that the
/// allocator serves from its per-thread cache when the caller boxes it.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its by-value arguments twice"
)]
pub fn dispatch(
    state: Arc<State>,
    route: Option<Route>,
    peer: IpAddr,
    request: Request<Incoming>,
) -> impl Future<Output = Handled> + Send + 'static {
    async move {
        let state = &*state;
        // A reference, because a moved `Route` would be a second copy in
        // this future.
        let Some(route) = &route else {
            return Error::RouteNotFound.into_response().into();
        };
        let (methods, allow) = route.methods();
        if !serves(methods, request.method()) {
            return Error::MethodNotAllowed { allow }.into_response().into();
        }

        let path_tenant = route
            .tenant_segment()
            .and_then(|segment| TenantId::parse(segment).ok());

        // HEAD reaches the GET handler through the arms that match any
        // method; the caller drops the body.
        let (result, key_tenant) = match route {
            Route::Protected => protected::get(state, &request, peer).await,
            Route::Healthz => (Ok(health::live()), None),
            // Boxed, because the other routes' futures take up to several
            // kilobytes, which the hot routes above would otherwise copy on
            // every request.
            route => (
                Box::pin(other_route(state, route.clone(), peer, request)).await,
                None,
            ),
        };

        let mut response = result.unwrap_or_else(Error::into_response);
        // An empty extension map costs nothing to search, and only the cold
        // routes fill it.
        let tenant = path_tenant.or(key_tenant).or_else(|| {
            response
                .extensions_mut()
                .remove::<LogTenant>()
                .map(|LogTenant(id)| id)
        });
        Handled { response, tenant }
    }
}

/// Serves the routes that [`dispatch`] does not serve itself.
async fn other_route(
    state: &State,
    route: Route,
    peer: IpAddr,
    request: Request<Incoming>,
) -> Result<Response, Error> {
    let method = request.method().clone();
    match (route, method) {
        (Route::Tenants, Method::POST) => tenants::create(state, request).await,
        (Route::Tenants, _) => tenants::list(state, &request).await,
        (Route::Tenant { tenant }, Method::PATCH) => tenants::rename(state, request, &tenant).await,
        (Route::Tenant { tenant }, Method::DELETE) => {
            tenants::delete(state, request.headers(), &tenant).await
        }
        (Route::Tenant { tenant }, _) => tenants::get(state, request.headers(), &tenant).await,
        (Route::SuspendTenant { tenant }, _) => tenants::suspend(state, request, &tenant).await,
        (Route::ResumeTenant { tenant }, _) => tenants::resume(state, request, &tenant).await,
        (Route::TenantAudit { tenant }, _) => tenants::audit(state, &request, &tenant).await,
        (Route::TenantKeys { tenant }, Method::POST) => keys::issue(state, request, &tenant).await,
        (Route::TenantKeys { tenant }, _) => keys::list(state, &request, &tenant).await,
        (Route::TenantKey { tenant, key }, _) => {
            keys::revoke(state, request.headers(), &tenant, &key).await
        }
        (Route::RotateKey { tenant, key }, _) => keys::rotate(state, request, &tenant, &key).await,
        (Route::TenantLimits { tenant }, Method::PUT) => limits::put(state, request, &tenant).await,
        (Route::TenantLimits { tenant }, _) => limits::get(state, request.headers(), &tenant).await,
        (Route::KeyLimit { tenant, key }, Method::PUT) => {
            limits::put_key(state, request, &tenant, &key).await
        }
        (Route::KeyLimit { tenant, key }, _) => {
            limits::get_key(state, request.headers(), &tenant, &key).await
        }
        (Route::TenantUsage { tenant }, _) => usage::get(state, &request, &tenant).await,
        (Route::TenantUsageExport { tenant }, _) => usage::export(state, &request, &tenant).await,
        // `dispatch` serves these two itself; the arms keep the match
        // complete.
        (Route::Protected, _) => protected::get(state, &request, peer).await.0,
        (Route::Healthz, _) => Ok(health::live()),
        (Route::Verify, _) => verify::post(state, request, peer).await,
        (Route::Readyz, _) => health::ready(state).await,
        (Route::Metrics, _) => Ok(metrics::get(state).await),
        (Route::OpenApi, _) => Ok(openapi::get()),
    }
}

/// Returns whether a route with `methods` serves `method`, counting HEAD
/// as served wherever GET is.
fn serves(methods: &[Method], method: &Method) -> bool {
    methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET))
}

/// Parses a tenant id from the path; a malformed one is a tenant that does
/// not exist.
fn parse_tenant_id(segment: &str) -> Result<TenantId, Error> {
    TenantId::parse(segment).map_err(|_| Error::TenantNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_routes() {
        let tenant = || "t".to_owned();
        let cases = [
            ("/tenants", Some(Route::Tenants)),
            ("/tenants/t", Some(Route::Tenant { tenant: tenant() })),
            (
                "/tenants/t/keys",
                Some(Route::TenantKeys { tenant: tenant() }),
            ),
            (
                "/tenants/t/keys/k",
                Some(Route::TenantKey {
                    tenant: tenant(),
                    key: "k".to_owned(),
                }),
            ),
            ("/protected", Some(Route::Protected)),
            ("/verify", Some(Route::Verify)),
            ("/healthz", Some(Route::Healthz)),
            ("/readyz", Some(Route::Readyz)),
            ("/metrics", Some(Route::Metrics)),
            ("/openapi.json", Some(Route::OpenApi)),
            ("/", None),
            ("", None),
            ("/tenants/", None),
            ("//tenants", None),
            (
                "/tenants/t/keys/k/rotate",
                Some(Route::RotateKey {
                    tenant: tenant(),
                    key: "k".to_owned(),
                }),
            ),
            ("/tenants/t/keys/k/x", None),
            (
                "/tenants/t/limits",
                Some(Route::TenantLimits { tenant: tenant() }),
            ),
            (
                "/tenants/t/keys/k/limit",
                Some(Route::KeyLimit {
                    tenant: tenant(),
                    key: "k".to_owned(),
                }),
            ),
            (
                "/tenants/t/usage",
                Some(Route::TenantUsage { tenant: tenant() }),
            ),
            (
                "/tenants/t/usage/export",
                Some(Route::TenantUsageExport { tenant: tenant() }),
            ),
            ("/tenants/t/usage/x", None),
            ("/tenants/t/other", None),
            (
                "/tenants/t/suspend",
                Some(Route::SuspendTenant { tenant: tenant() }),
            ),
            (
                "/tenants/t/resume",
                Some(Route::ResumeTenant { tenant: tenant() }),
            ),
            (
                "/tenants/t/audit",
                Some(Route::TenantAudit { tenant: tenant() }),
            ),
            ("/tenants/t/audit/x", None),
            ("/Tenants", None),
            ("/tenants/t/keys/k/rotate/x", None),
            ("/tenants/t/keys/k/rotate/x/y/z", None),
        ];

        for (path, expected) in cases {
            assert_eq!(Route::from_path(path), expected, "{path:?}");
        }
    }

    #[test]
    fn allow_lists_head_exactly_with_get() {
        for route in Route::all() {
            let (methods, allow) = route.methods();
            let listed: Vec<&str> = allow.split(", ").collect();

            let template = route.template();
            assert_eq!(
                listed.contains(&"HEAD"),
                methods.contains(&Method::GET),
                "{template}"
            );
            for method in methods {
                assert!(listed.contains(&method.as_str()), "{template} {method}");
            }
            assert_eq!(
                listed.len(),
                methods.len() + usize::from(listed.contains(&"HEAD"))
            );
        }
    }

    #[test]
    fn all_lists_every_variant_once() {
        let positions: Vec<usize> = Route::all().iter().map(Route::position).collect();

        let expected: Vec<usize> = (0..positions.len()).collect();
        assert_eq!(positions, expected);
    }

    #[test]
    fn templates_match_their_routes() {
        for route in Route::all() {
            let template = route.template();

            let matched = Route::from_path(template);

            assert_eq!(matched, Some(route), "{template}");
        }
    }
}
