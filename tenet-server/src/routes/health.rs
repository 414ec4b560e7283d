//! `/healthz` and `/readyz`: liveness and readiness probes, without
//! authentication.

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::Full;

use crate::error::Error;
use crate::response::Response;
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

/// The body of a healthy probe: the JSON of a
/// [`HealthResponse`](tenet_core::api::HealthResponse) with status `ok`,
/// fixed, so probes cost no serialization.
const OK_BODY: &[u8] = br#"{"status":"ok"}"#;

fn ok() -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from_static(OK_BODY)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use tenet_core::api::HealthResponse;

    use super::*;

    #[test]
    fn ok_body_is_a_health_response() {
        let body: HealthResponse = serde_json::from_slice(OK_BODY).expect("JSON");

        assert_eq!(body.status, "ok");
        assert_eq!(live().status(), http::StatusCode::OK);
        assert_eq!(live().headers()[header::CONTENT_TYPE], "application/json");
    }
}
