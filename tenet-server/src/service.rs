//! The per-request service: routing, the request id, panic
//! safety, request metrics and the request log line.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{self, Either};
use http::{HeaderValue, Method, Request, Version, header};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};

use crate::error::{Error, panic_message};
use crate::logging::{self, Access};
use crate::request_id::{self, REQUEST_ID_HEADER};
use crate::response::Response;
use crate::routes::{self, Handled, Route};
use crate::setup::State;

/// Template logged for a path that matches no route.
const UNMATCHED: &str = "unmatched";

/// The listener a request arrived on, which decides the routes it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `--listen`: every route.
    Main,
    /// `--metrics-listen`: `/metrics`, `/healthz` and `/readyz` only.
    Metrics,
}

impl Surface {
    fn serves(self, route: &Route) -> bool {
        match self {
            Surface::Main => true,
            Surface::Metrics => route.is_operational(),
        }
    }
}

/// Handles one request with its request id set for the task (see
/// [`request_id::scope`]), and logs one line for it.
///
/// The request id is the client's valid `X-Request-Id` or a new UUIDv7 (see
/// [`request_id::resolve`]), and the response echoes it. A panic in a
/// handler becomes a 500 with the generic body, so the connection and the
/// server keep serving. The log line has the method, the route template
/// (never the raw path, which may carry ids of any shape), the status, the
/// latency in microseconds and the tenant id when one is known. Over
/// HTTP/1, a response closes the connection when the request had a body
/// that may stay unread: an error response, or any response to a method
/// whose routes read no body.
///
/// The route's future is polled once here, before hyper gets the future
/// this returns. A request that needs no I/O, such as `/protected` with a
/// cached key, then gets its response and is dropped before hyper reads
/// the connection again. hyper's parsed request shares hyper's read buffer,
/// and while it lives, that read reallocates the buffer: about 400
/// instructions per request, as much as the limits check. A route that
/// waits for I/O goes on in the returned future, whose first poll
/// registers the connection task's waker in place of the no-op one used
/// here.
pub fn handle(
    state: &Arc<State>,
    surface: Surface,
    peer: IpAddr,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
    let request_id = request_id::resolve(request.headers(), &state.admin);
    let started = Instant::now();
    let route = Route::from_path(request.uri().path()).filter(|route| surface.serves(route));
    let is_http1 = request.version() < Version::HTTP_2;
    let finish = Finish {
        started,
        method: request.method().clone(),
        template: route.as_ref().map_or(UNMATCHED, Route::template),
        is_http1,
        may_leave_body_unread: is_http1 && !request.body().is_end_stream(),
    };

    // Boxed, so that the future that hyper keeps for each connection stays
    // small, also while the connection is idle. The routes' future takes
    // about 900 bytes and exists only while a request is served. It stays
    // below glibc's per-thread cache limit of 1,032 bytes, so the box costs
    // about 100 instructions per request in a callgrind count of a release
    // build. Above the limit it cost 600.
    let mut routed = Box::pin(routes::dispatch(Arc::clone(state), route, peer, request));
    let first = request_id::sync_scope(request_id.clone(), || {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            routed
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        }))
    });
    let ready = match first {
        Ok(Poll::Ready(handled)) => Some(handled),
        Ok(Poll::Pending) => None,
        Err(payload) => Some(panic_response(payload.as_ref())),
    };
    match ready {
        Some(handled) => {
            drop(routed);
            Either::Left(future::ready(Ok(finish.run(state, request_id, handled))))
        }
        None => {
            let state = Arc::clone(state);
            Either::Right(request_id::scope(request_id.clone(), async move {
                let handled = catch_panic(routed).await;
                Ok(finish.run(&state, request_id, handled))
            }))
        }
    }
}

/// The parts of a request that [`handle`] keeps to complete its response
/// and log it once the route has returned.
struct Finish {
    started: Instant,
    method: Method,
    template: &'static str,
    is_http1: bool,
    may_leave_body_unread: bool,
}

impl Finish {
    /// Adds the request id and the connection headers to the route's
    /// response, counts it in the metrics and logs its access line.
    fn run(self, state: &State, request_id: HeaderValue, handled: Handled) -> Response {
        let Handled {
            mut response,
            tenant,
        } = handled;
        if self.method == Method::HEAD {
            response = without_body(response);
        }

        // An error response, or any response to a method whose routes read
        // no body, may be sent before the request body is read to its end.
        // hyper then closes the connection unless it can drain the rest, and
        // a client that did not see `Connection: close` may send its next
        // request into the closed socket.
        let failed = response.status().is_client_error() || response.status().is_server_error();
        let body_ignored = !matches!(self.method, Method::POST | Method::PUT | Method::PATCH);
        // While draining, HTTP/1 responses close their connection, so clients
        // reconnect through the load balancer instead of reusing a connection
        // that the end of the drain would close under their next request.
        let draining = self.is_http1 && state.lifecycle.is_draining();
        if (self.may_leave_body_unread && (failed || body_ignored)) || draining {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }

        let elapsed = self.started.elapsed();
        state
            .metrics
            .observe_request(self.template, &self.method, response.status(), elapsed);

        if state.access_log.includes(response.status()) {
            let access = Access {
                method: &self.method,
                route: self.template,
                status: response.status(),
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                tenant_id: tenant,
            };
            logging::log_access(&access, &request_id);
        }
        response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
        response
    }
}

/// Drops the body of a response to HEAD and keeps its headers, with the
/// `Content-Length` that the body would have had.
///
/// hyper 1.13 omits the body of an HTTP/1 response to HEAD by itself, but
/// its HTTP/2 server does not, so the body is dropped here for both.
fn without_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Samples the access log: one line in `every` requests, and every server
/// error. Formatting a line costs more than serving a warm `/protected`,
/// so busy deployments may log a sample.
#[derive(Debug)]
pub struct AccessLog {
    every: u64,
    seen: AtomicU64,
}

impl AccessLog {
    /// Logs one request in `every` (0 counts as 1).
    pub fn new(every: u64) -> Self {
        Self {
            every: every.max(1),
            seen: AtomicU64::new(0),
        }
    }

    fn includes(&self, status: http::StatusCode) -> bool {
        if self.every == 1 || status.is_server_error() {
            return true;
        }
        self.seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.every)
    }
}

/// Runs a handler future, turning a panic into a 500 with the generic body
/// and an error log line with the panic message.
async fn catch_panic(handler: impl Future<Output = Handled>) -> Handled {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(handled) => handled,
        Err(payload) => panic_response(payload.as_ref()),
    }
}

/// Builds the 500 with the generic body for a handler that panicked with
/// `payload`, and logs the panic message.
fn panic_response(payload: &(dyn Any + Send)) -> Handled {
    let message = panic_message(payload);
    Error::Internal(format!("request handler panicked: {message}").into())
        .into_response()
        .into()
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::response::empty;

    #[test]
    fn access_log_samples_successes_and_keeps_server_errors() {
        let log = AccessLog::new(4);

        let logged = (0..8)
            .filter(|_| log.includes(http::StatusCode::OK))
            .count();

        assert_eq!(logged, 2);
        assert!(log.includes(http::StatusCode::SERVICE_UNAVAILABLE));
        assert!(AccessLog::new(1).includes(http::StatusCode::OK));
    }

    #[tokio::test]
    async fn panic_becomes_generic_500() {
        let Handled { response, tenant } = catch_panic(async {
            panic!("secret detail");
        })
        .await;

        assert_eq!(tenant, None);

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret detail"));
    }

    #[tokio::test]
    async fn response_without_panic_passes_through() {
        let tenant = tenet_core::TenantId::generate();
        let handled = catch_panic(async move {
            Handled {
                response: empty(StatusCode::NO_CONTENT),
                tenant: Some(tenant),
            }
        })
        .await;

        assert_eq!(handled.response.status(), StatusCode::NO_CONTENT);
        assert_eq!(handled.tenant, Some(tenant));
    }
}
