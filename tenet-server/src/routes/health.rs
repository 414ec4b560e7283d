//! `/healthz` and `/readyz`: liveness and readiness probes, without
//! authentication.

use http::StatusCode;
use tenet_core::api::HealthResponse;

use crate::error::Error;
use crate::response::{Response, json};
use crate::setup::State;

/// `GET /healthz`: 200 while the process serves requests.
pub fn live() -> Response {
    ok()
}

/// `GET /readyz`: 200 when the store responds to a ping, else 503
/// `store_unavailable`.
pub async fn ready(state: &State) -> Result<Response, Error> {
    state
        .tenet
        .store()
        .ping()
        .await
        .map_err(Error::StoreUnavailable)?;
    Ok(ok())
}

fn ok() -> Response {
    let body = HealthResponse {
        status: "ok".to_owned(),
    };
    json(StatusCode::OK, &body)
}
