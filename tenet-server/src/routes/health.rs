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

/// `GET /readyz`: 200 when the store responds to a ping; 503
/// `shutting_down` once shutdown has started, and 503 `store_unavailable`
/// while the store does not respond.
pub async fn ready(state: &State) -> Result<Response, Error> {
    check_ready(state).await?;
    Ok(ok())
}

/// Checks readiness like `/readyz` and records the result in the
/// `tenet_ready` metric.
pub async fn check_ready(state: &State) -> Result<(), Error> {
    let result = if state.lifecycle.is_draining() {
        Err(Error::ShuttingDown)
    } else {
        state
            .tenet
            .store()
            .ping()
            .await
            .map_err(Error::StoreUnavailable)
    };
    state.metrics.set_ready(result.is_ok());
    result
}

fn ok() -> Response {
    let body = HealthResponse {
        status: "ok".to_owned(),
    };
    json(StatusCode::OK, &body)
}
