//! `/verify`: checks a key for another service and returns why it fails.

use std::net::IpAddr;
use std::pin::pin;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tenet_core::api::{InvalidKeyResponse, ValidKeyResponse, VerifyRequest, VerifyResponse};
use tenet_core::ratelimit::Mode;
use tenet_core::{Outcome, Rejection, Scope, VerifiedKey};

use crate::auth::{guard_failures, require_admin_or_scope};
use crate::body::read_json;
use crate::error::Error;
use crate::limiting::{LimitExceeded, RequestLimit};
use crate::metrics::Verification;
use crate::response::{LogTenant, Response, json};
use crate::setup::State;

/// The scope that lets an API key call `/verify`.
pub const VERIFY_SCOPE: &str = "tenet:verify";

/// `POST /verify`: 200 with `{"valid": true, ...}` or `{"valid": false,
/// "code"}` for the key in the body. Only the admin token or a key with
/// [`VERIFY_SCOPE`] may call it, because unlike `/protected` it returns
/// why a key is rejected.
///
/// A valid key's request is checked against its limits and counted unless
/// the body has `"consume": false`. The outcome is in `rate_limit`, and a
/// key over a limit is still `valid`. A consuming check counts in the
/// usage of the key in the body, not of the calling key. A check with
/// `"consume": false` counts only when it rejects a known key.
pub async fn post(
    state: &State,
    request: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response, Error> {
    {
        let attempt = pin!(require_admin_or_scope(
            request.headers(),
            &state.admin,
            &state.tenet,
            &state.metrics,
            VERIFY_SCOPE,
        ));
        guard_failures(state, &request, peer, attempt).await?;
    }
    let (parts, body) = request.into_parts();

    let request: VerifyRequest = read_json(&parts.headers, body, state.body_limits).await?;
    let required = Scope::parse_list(&request.scopes)?;
    let required: Vec<&str> = required.iter().map(Scope::as_str).collect();

    let verified = state
        .tenet
        .verify_metered_before_limits(&request.key, &required)
        .await;
    state
        .metrics
        .observe_verification(Verification::of(&verified));

    let rejection = match verified {
        Ok(verified) => {
            let mode = if request.consume {
                Mode::Consume
            } else {
                Mode::Peek
            };
            let checked = state
                .limiter
                .check(&state.tenet, &state.metrics, verified.principal, mode)
                .await;
            if request.consume {
                let outcome = match checked {
                    Ok(_) => Outcome::Accepted,
                    Err(_) => Outcome::RateLimited,
                };
                let principal = verified.principal;
                state
                    .tenet
                    .record_usage(principal.tenant_id, principal.key_id, outcome);
            }
            return Ok(valid(&verified, checked));
        }
        Err(tenet_core::Error::Rejected(rejection)) => rejection,
        Err(other) => return Err(other.into()),
    };
    Ok(invalid(rejection))
}

/// Builds the response for a valid key, with its limit state in the body
/// and, in the extensions, the [`RequestLimit`] or the [`LimitExceeded`].
fn valid(verified: &VerifiedKey, checked: Result<RequestLimit, LimitExceeded>) -> Response {
    let mut body = ValidKeyResponse::from(verified);
    body.rate_limit = match &checked {
        Ok(limit) => limit.state(),
        Err(exceeded) => Some(exceeded.state()),
    };

    let mut response = json(StatusCode::OK, &VerifyResponse::Valid(body));
    response
        .extensions_mut()
        .insert(LogTenant(verified.principal.tenant_id));
    match checked {
        Ok(limit) => limit.attach(&mut response),
        Err(exceeded) => {
            response.extensions_mut().insert(exceeded);
        }
    }
    response
}

/// Builds the response for a rejected key. A key of a suspended tenant is
/// valid otherwise, so its tenant goes to the request log, as a valid
/// key's does.
fn invalid(rejection: Rejection) -> Response {
    let body = VerifyResponse::Invalid(InvalidKeyResponse {
        valid: false,
        code: rejection.code().to_owned(),
    });

    let mut response = json(StatusCode::OK, &body);
    if let Rejection::TenantSuspended { tenant } = rejection {
        response.extensions_mut().insert(LogTenant(tenant));
    }
    response
}
