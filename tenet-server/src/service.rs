//! The per-request service: routing, panic safety and the request log line.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;
use http::Request;
use hyper::body::Incoming;

use crate::error::{Error, panic_message};
use crate::response::{LogTenant, Response};
use crate::routes::{self, Route};
use crate::setup::State;

/// Template logged for a path that matches no route.
const UNMATCHED: &str = "unmatched";

/// Handles one request and logs one line for it.
///
/// A panic in a handler becomes a 500 with the generic body, so the
/// connection and the server keep serving. The log line has the method,
/// the route template (never the raw path, which may carry ids of any
/// shape), the status, the latency in microseconds and the tenant id when
/// one is known.
pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let route = Route::from_path(request.uri().path());
    let template = route.as_ref().map_or(UNMATCHED, Route::template);

    let dispatched = AssertUnwindSafe(routes::dispatch(&state, route, request))
        .catch_unwind()
        .await;
    let response = match dispatched {
        Ok(response) => response,
        Err(payload) => {
            let message = panic_message(payload.as_ref()).to_owned();
            Error::Internal(format!("request handler panicked: {message}").into()).into_response()
        }
    };

    let tenant_id = response
        .extensions()
        .get::<LogTenant>()
        .map(|LogTenant(id)| tracing::field::display(*id));
    tracing::info!(
        method = %method,
        route = template,
        status = response.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        tenant_id,
        "request"
    );
    Ok(response)
}
