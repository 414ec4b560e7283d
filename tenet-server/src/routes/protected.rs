//! `/protected`: an endpoint that only a valid API key may call, returning
//! whom the key acts for.

use http::{HeaderMap, StatusCode};
use tenet_core::api::PrincipalResponse;

use crate::auth::authenticate_metered;
use crate::error::Error;
use crate::response::{LogTenant, Response, json};
use crate::setup::State;

/// `GET /protected`: 200 with the key's tenant and key id, or 401. The
/// request counts in the key's usage.
pub async fn get(state: &State, headers: &HeaderMap) -> Result<Response, Error> {
    let principal = authenticate_metered(headers, &state.tenet, &state.metrics).await?;

    let mut response = json(StatusCode::OK, &PrincipalResponse::from(principal));
    response
        .extensions_mut()
        .insert(LogTenant(principal.tenant_id));
    Ok(response)
}
