//! `/protected`: an endpoint that only a valid API key may call, returning
//! whom the key acts for, within the key's and its tenant's limits.

use std::net::IpAddr;
use std::pin::pin;

use http::Request;
use hyper::body::Incoming;
use tenet_core::ratelimit::Mode;
use tenet_core::{Outcome, TenantId};

use crate::auth::{authenticate_metered, guard_failures};
use crate::error::Error;
use crate::response::{self, Response};
use crate::setup::State;

/// `GET /protected`: 200 with the key's tenant and key id and the
/// `RateLimit-*` headers; 401 for an invalid key; 429 over a rate limit,
/// the monthly quota, or the client's limit of failed authentications.
///
/// The request counts in the key's usage: accepted, rejected for a known
/// but invalid key, or rate limited. The response carries the
/// [`RequestLimit`](crate::limiting::RequestLimit) in its extensions, and
/// comes with the key's tenant for the request log, also when a limit
/// rejects the request.
pub async fn get(
    state: &State,
    request: &Request<Incoming>,
    peer: IpAddr,
) -> (Result<Response, Error>, Option<TenantId>) {
    // In a block, so that the attempt's future is not kept in this future
    // while the limits are checked.
    let authenticated = {
        let attempt = pin!(authenticate_metered(
            request.headers(),
            &state.tenet,
            &state.metrics
        ));
        guard_failures(state, request, peer, attempt).await
    };
    let principal = match authenticated {
        Ok(principal) => principal,
        Err(err) => return (Err(err), None),
    };

    let checked = state
        .limiter
        .check(&state.tenet, &state.metrics, principal, Mode::Consume)
        .await;
    let outcome = match checked {
        Ok(_) => Outcome::Accepted,
        Err(_) => Outcome::RateLimited,
    };
    state
        .tenet
        .record_usage(principal.tenant_id, principal.key_id, outcome);

    let response = checked.map_err(Error::from).map(|limit| {
        let mut response = response::principal(principal);
        limit.apply(&mut response);
        limit.attach(&mut response);
        response
    });
    (response, Some(principal.tenant_id))
}
