//! `/openapi.json`: the OpenAPI 3.1 document of this API, without
//! authentication.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;

use crate::response::Response;

/// The document, kept in the repository as `tenet-server/openapi.json`. A
/// test checks that it lists exactly the routes and methods of
/// [`super::table`].
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`: 200 with the document.
pub fn get() -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from_static(DOCUMENT.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
