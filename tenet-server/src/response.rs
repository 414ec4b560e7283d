//! Response building: the body type and JSON responses.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

const SERIALIZE_FAILED: &[u8] =
    br#"{"error":{"code":"internal","message":"internal server error"}}"#;

/// The response type of every route: a body that is complete in memory.
pub type Response = http::Response<Full<Bytes>>;

/// Builds a response with a JSON body and `Content-Type: application/json`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, Bytes::from(bytes)),
        Err(err) => {
            // Only an RFC 3339 time outside years 0 to 9999 can fail here.
            tracing::error!(error = %err, "failed to serialize a response body");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(SERIALIZE_FAILED),
            )
        }
    };

    let mut response = http::Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Builds a response with no body, such as 204 No Content.
pub fn empty(status: StatusCode) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The tenant a request acted on, attached to the response for the request
/// log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTenant(pub tenet_core::TenantId);
