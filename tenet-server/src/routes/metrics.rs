//! `/metrics`: every metric in the Prometheus text format, without
//! authentication.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;

use super::health;
use crate::metrics::CONTENT_TYPE;
use crate::response::Response;
use crate::setup::State;

/// `GET /metrics`: 200 with the metrics. Runs the readiness check first,
/// so that `tenet_ready` is current.
pub async fn get(state: &State) -> Response {
    // A failed check is what `tenet_ready` reports; the scrape succeeds.
    let _ = health::check_ready(state).await;

    let mut response = http::Response::new(Full::new(Bytes::from(state.metrics.render())));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
