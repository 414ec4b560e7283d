//! Response building: the body type and JSON responses.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use tenet_core::Principal;
use uuid::Uuid;

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

/// Builds the 200 response of `/protected`: the JSON of
/// [`PrincipalResponse`](tenet_core::api::PrincipalResponse), written
/// directly. Every request to `/protected` returns it, and its two ids
/// never need escaping, so serde_json's escaping scan is skipped.
pub fn principal(principal: Principal) -> Response {
    let mut tenant = Uuid::encode_buffer();
    let mut key = Uuid::encode_buffer();
    let tenant = principal
        .tenant_id
        .as_uuid()
        .hyphenated()
        .encode_lower(&mut tenant);
    let key = principal
        .key_id
        .as_uuid()
        .hyphenated()
        .encode_lower(&mut key);

    let mut body = Vec::with_capacity(PRINCIPAL_JSON_LEN);
    body.extend_from_slice(b"{\"tenant_id\":\"");
    body.extend_from_slice(tenant.as_bytes());
    body.extend_from_slice(b"\",\"key_id\":\"");
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(b"\"}");

    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The length of the body that [`principal`] writes.
const PRINCIPAL_JSON_LEN: usize = r#"{"tenant_id":"","key_id":""}"#.len() + 2 * 36;

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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use tenet_core::api::PrincipalResponse;
    use tenet_core::{KeyId, TenantId};

    use super::*;

    #[tokio::test]
    async fn principal_body_is_the_serde_json_of_principal_response() {
        let caller = Principal {
            tenant_id: TenantId::generate(),
            key_id: KeyId::generate(),
        };

        let response = principal(caller);

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.len(), PRINCIPAL_JSON_LEN);
        let expected = serde_json::to_vec(&PrincipalResponse::from(caller)).expect("JSON");
        assert_eq!(body, expected);
    }
}
