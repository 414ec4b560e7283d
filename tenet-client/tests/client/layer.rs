//! `VerifyLayer` in front of a real hyper service, verifying through a
//! real server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use reqwest::StatusCode;
use serde_json::Value;
use tenet_client::{Client, Principal, VerifyLayer};
use tenet_core::api::{IssueKeyRequest, KeyLimitBody, LimitBody};
use tokio::net::TcpListener;
use tower::{Layer as _, service_fn};

use crate::helpers::TestServer;

/// Serves `echo` behind `layer` on 127.0.0.1 and returns its URL.
async fn protected_service(layer: VerifyLayer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("free port");
    let addr: SocketAddr = listener.local_addr().expect("bound address");

    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(layer.layer(service_fn(echo)));
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

/// Returns the principal that the layer put into the extensions, as JSON.
async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.extensions().get::<Principal>() {
        Some(principal) => serde_json::json!({
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
            "scopes": principal.scopes,
        }),
        None => serde_json::json!({ "principal": null }),
    };
    Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
}

fn layer_for(server: &TestServer) -> VerifyLayer {
    let client = Client::builder(&server.url())
        .max_attempts(1)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("valid client");
    VerifyLayer::new(client)
}

async fn get(
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.expect("JSON body");
    (status, headers, body)
}

#[tokio::test]
async fn valid_key_reaches_the_service_with_its_principal() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    let url = protected_service(layer_for(&server)).await;
    let bearer = format!("Bearer {}", issued.api_key);

    let (by_header, _, header_body) = get(&url, &[("x-api-key", &issued.api_key)]).await;
    let (by_bearer, _, bearer_body) = get(&url, &[("authorization", &bearer)]).await;

    assert_eq!(by_header, StatusCode::OK);
    assert_eq!(header_body["tenant_id"], tenant.id.to_string());
    assert_eq!(header_body["key_id"], issued.id.to_string());
    assert_eq!(header_body["scopes"], Value::Null);
    assert_eq!(by_bearer, StatusCode::OK);
    assert_eq!(bearer_body, header_body);
}

#[tokio::test]
async fn revoked_key_gets_the_server_401() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");
    let url = protected_service(layer_for(&server)).await;

    let (status, headers, body) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["message"], "missing or invalid credentials");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"tenet\"");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn missing_or_ambiguous_key_gets_401() {
    let server = TestServer::start().await;
    let (_, issued) = server.tenant_with_key().await;
    let url = protected_service(layer_for(&server)).await;
    let bearer = format!("Bearer {}", issued.api_key);
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("no key", vec![]),
        (
            "both headers",
            vec![("x-api-key", &issued.api_key), ("authorization", &bearer)],
        ),
        (
            "basic scheme",
            vec![("authorization", "Basic dXNlcjpwYXNz")],
        ),
    ];

    for (description, headers) in cases {
        let (status, _, body) = get(&url, &headers).await;

        assert_eq!(status, StatusCode::UNAUTHORIZED, "{description}");
        assert_eq!(body["error"]["code"], "unauthorized", "{description}");
    }
}

#[tokio::test]
async fn cache_hit_skips_the_server() {
    let server = TestServer::start().await;
    let (_, cached) = server.tenant_with_key().await;
    let (_, uncached) = server.tenant_with_key().await;
    let url = protected_service(layer_for(&server).cache_ttl(Duration::from_secs(60))).await;
    let (first, _, _) = get(&url, &[("x-api-key", &cached.api_key)]).await;

    server.stop().await;
    let (hit, _, hit_body) = get(&url, &[("x-api-key", &cached.api_key)]).await;
    let (miss, _, miss_body) = get(&url, &[("x-api-key", &uncached.api_key)]).await;

    assert_eq!(first, StatusCode::OK);
    assert_eq!(hit, StatusCode::OK);
    assert_eq!(hit_body["key_id"], cached.id.to_string());
    assert_eq!(miss, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(miss_body["error"]["code"], "verification_unavailable");
}

#[tokio::test]
async fn revoked_key_is_rejected_once_its_entry_expires() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    let ttl = Duration::from_millis(300);
    let url = protected_service(layer_for(&server).cache_ttl(ttl)).await;
    let (before, _, _) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let (after, _, _) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    assert_eq!(before, StatusCode::OK);
    assert_eq!(after, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn zero_capacity_asks_the_server_every_time() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    let url = protected_service(layer_for(&server).cache_capacity(0)).await;
    let (before, _, _) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");
    let (after, _, _) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    assert_eq!(before, StatusCode::OK);
    assert_eq!(after, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn key_over_its_rate_limit_gets_the_server_429() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    let limit = KeyLimitBody {
        limit: Some(LimitBody {
            rate: 1,
            period_seconds: 60,
            burst: 1,
            shadow: false,
        }),
    };
    server
        .admin()
        .set_key_limit(tenant.id, issued.id, &limit)
        .await
        .expect("limit set");
    let url = protected_service(layer_for(&server).cache_capacity(0)).await;

    let (first, _, _) = get(&url, &[("x-api-key", &issued.api_key)]).await;
    let (second, headers, body) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    assert_eq!(first, StatusCode::OK);
    assert_rate_limited(second, &headers, &body);
}

#[tokio::test]
async fn verifier_layer_gives_429_over_a_limit() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (tenant, verifier) = server.tenant_with_scoped_key("tenet:verify").await;
    let caller = admin
        .issue_key(
            tenant.id,
            &IssueKeyRequest {
                limit: Some(LimitBody {
                    rate: 1,
                    period_seconds: 60,
                    burst: 1,
                    shadow: false,
                }),
                ..IssueKeyRequest::default()
            },
        )
        .await
        .expect("issued");
    let client = Client::new(&server.url(), verifier.api_key.as_str()).expect("valid client");
    let url = protected_service(VerifyLayer::new(client).cache_capacity(0)).await;

    let (first, _, _) = get(&url, &[("x-api-key", &caller.api_key)]).await;
    let (second, headers, body) = get(&url, &[("x-api-key", &caller.api_key)]).await;

    assert_eq!(first, StatusCode::OK);
    assert_rate_limited(second, &headers, &body);
}

/// Asserts a 429 `rate_limited` response with a `Retry-After` of 1 to 60
/// seconds.
fn assert_rate_limited(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let wait: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn verifier_key_adds_scopes_to_the_principal() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");
    let issue = |scopes: &[&str]| IssueKeyRequest {
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        ..IssueKeyRequest::default()
    };
    let verifier = admin
        .issue_key(tenant.id, &issue(&["tenet:verify"]))
        .await
        .expect("issued");
    let caller = admin
        .issue_key(tenant.id, &issue(&["billing:read"]))
        .await
        .expect("issued");
    let client = Client::new(&server.url(), verifier.api_key.as_str()).expect("valid client");
    let url = protected_service(VerifyLayer::new(client)).await;

    let (status, _, body) = get(&url, &[("x-api-key", &caller.api_key)]).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["key_id"], caller.id.to_string());
    assert_eq!(body["scopes"], serde_json::json!(["billing:read"]));
}

#[tokio::test]
async fn rejected_verifier_credential_is_503() {
    let server = TestServer::start().await;
    let (_, issued) = server.tenant_with_key().await;
    let client = Client::new(&server.url(), "wrong-verifier-token").expect("valid client");
    let url = protected_service(VerifyLayer::new(client)).await;

    let (status, _, body) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "verification_unavailable");
}

#[tokio::test]
async fn required_scopes_admit_only_keys_holding_them() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");
    let issue = |scopes: &[&str]| IssueKeyRequest {
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        ..IssueKeyRequest::default()
    };
    let reader = admin
        .issue_key(tenant.id, &issue(&["orders:read", "orders:write"]))
        .await
        .expect("issued");
    let other = admin
        .issue_key(tenant.id, &issue(&["billing:read"]))
        .await
        .expect("issued");
    let layer = VerifyLayer::new(admin)
        .require_scopes(["orders:read"])
        .expect("valid scopes");
    let url = protected_service(layer).await;

    let (admitted, _, admitted_body) = get(&url, &[("x-api-key", &reader.api_key)]).await;
    let (refused, headers, refused_body) = get(&url, &[("x-api-key", &other.api_key)]).await;

    assert_eq!(admitted, StatusCode::OK);
    assert_eq!(admitted_body["key_id"], reader.id.to_string());
    assert_eq!(refused, StatusCode::FORBIDDEN);
    assert_eq!(refused_body["error"]["code"], "missing_scope");
    assert!(!headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn required_scopes_keep_uniform_401() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");
    let layer = VerifyLayer::new(server.admin())
        .require_scopes(["orders:read"])
        .expect("valid scopes");
    let url = protected_service(layer).await;

    let (status, _, body) = get(&url, &[("x-api-key", &issued.api_key)]).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn required_scopes_need_a_credential_and_valid_scopes() {
    let server = TestServer::start().await;

    let anonymous = VerifyLayer::new(server.anonymous()).require_scopes(["orders:read"]);
    let invalid = VerifyLayer::new(server.admin()).require_scopes(["Orders Read"]);

    assert!(
        matches!(
            anonymous,
            Err(tenet_client::Error::MissingCredential { .. })
        ),
        "{anonymous:?}"
    );
    assert!(
        matches!(invalid, Err(tenet_client::Error::InvalidScope { ref scope, .. }) if scope == "Orders Read"),
        "{invalid:?}"
    );
}
