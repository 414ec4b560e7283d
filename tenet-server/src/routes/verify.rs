//! `/verify`: checks a key for another service and returns why it fails.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tenet_core::api::{InvalidKeyResponse, ValidKeyResponse, VerifyRequest, VerifyResponse};
use tenet_core::{Rejection, Scope};

use crate::auth::require_admin_or_scope;
use crate::body::read_json;
use crate::error::Error;
use crate::metrics::Verification;
use crate::response::{LogTenant, Response, json};
use crate::setup::State;

/// The scope that lets an API key call `/verify`.
pub const VERIFY_SCOPE: &str = "tenet:verify";

/// `POST /verify`: 200 with `{"valid": true, ...}` or `{"valid": false,
/// "code"}` for the key in the body. Only the admin token or a key with
/// [`VERIFY_SCOPE`] may call it, because unlike `/protected` it returns
/// why a key is rejected. The check counts in the usage of the key in the
/// body, not of the calling key.
pub async fn post(state: &State, request: Request<Incoming>) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    require_admin_or_scope(
        &parts.headers,
        &state.admin,
        &state.tenet,
        &state.metrics,
        VERIFY_SCOPE,
    )
    .await?;

    let request: VerifyRequest = read_json(&parts.headers, body, state.max_body_bytes).await?;
    let required = Scope::parse_list(&request.scopes)?;
    let required: Vec<&str> = required.iter().map(Scope::as_str).collect();

    let verified = state.tenet.verify_metered(&request.key, &required).await;
    state
        .metrics
        .observe_verification(Verification::of(&verified));

    let body = match verified {
        Ok(verified) => {
            let tenant = verified.principal.tenant_id;
            let mut response = json(
                StatusCode::OK,
                &VerifyResponse::Valid(ValidKeyResponse::from(&verified)),
            );
            response.extensions_mut().insert(LogTenant(tenant));
            return Ok(response);
        }
        Err(tenet_core::Error::Rejected(rejection)) => invalid(rejection),
        Err(other) => return Err(other.into()),
    };
    Ok(json(StatusCode::OK, &body))
}

fn invalid(rejection: Rejection) -> VerifyResponse {
    VerifyResponse::Invalid(InvalidKeyResponse {
        valid: false,
        code: rejection.code().to_owned(),
    })
}
