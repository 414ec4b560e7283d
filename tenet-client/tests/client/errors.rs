//! Each error kind, caused for real.

use std::time::Duration;

use tenet_client::{Client, Error};
use tenet_core::{KeyId, TenantId};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use crate::helpers::{TestServer, closed_port};

#[tokio::test]
async fn wrong_admin_token_is_unauthorized() {
    let server = TestServer::start().await;
    let client = Client::new(&server.url(), "wrong-token").expect("valid client");

    let error = client.list_tenants().await.expect_err("wrong token");

    assert!(error.is_unauthorized(), "{error}");
    assert_eq!(error.code(), Some("unauthorized"));
    assert_eq!(error.status().map(|status| status.as_u16()), Some(401));
    assert!(!error.to_string().contains("wrong-token"), "{error}");
}

#[tokio::test]
async fn revoked_key_is_unauthorized() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");

    let error = server
        .anonymous()
        .with_credential(issued.api_key.as_str())
        .whoami()
        .await
        .expect_err("revoked key");

    assert!(error.is_unauthorized(), "{error}");
    assert!(!error.to_string().contains(&issued.api_key), "{error}");
    assert!(!format!("{error:?}").contains(&issued.api_key));
}

#[tokio::test]
async fn verify_key_without_credential_reports_rejection() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");

    let error = server
        .anonymous()
        .verify_key(&tenet_client::Credential::new(issued.api_key.as_str()))
        .await
        .expect_err("revoked key");

    assert!(error.is_key_rejected(), "{error}");
    assert_eq!(error.code(), Some("unauthorized"));
}

#[tokio::test]
async fn unknown_tenant_and_key_are_not_found() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");

    let no_tenant = admin
        .tenant(TenantId::generate())
        .await
        .expect_err("unknown tenant");
    let no_key = admin
        .revoke_key(tenant.id, KeyId::generate())
        .await
        .expect_err("unknown key");

    assert!(no_tenant.is_not_found(), "{no_tenant}");
    assert_eq!(no_tenant.code(), Some("tenant_not_found"));
    assert!(no_key.is_not_found(), "{no_key}");
    assert_eq!(no_key.code(), Some("key_not_found"));
    assert!(no_key.to_string().starts_with("DELETE http://"), "{no_key}");
}

#[tokio::test]
async fn blank_name_is_invalid_input() {
    let server = TestServer::start().await;

    let error = server
        .admin()
        .create_tenant("   ")
        .await
        .expect_err("blank name");

    assert!(error.is_invalid_input(), "{error}");
    assert_eq!(error.code(), Some("invalid_name"));
    assert_eq!(error.status().map(|status| status.as_u16()), Some(400));
}

#[tokio::test]
async fn oversized_body_is_invalid_input() {
    let server = TestServer::start_with(&["--max-body-bytes", "32"]).await;

    let error = server
        .admin()
        .create_tenant("A tenant name long enough to pass the limit")
        .await
        .expect_err("body over the limit");

    assert!(error.is_invalid_input(), "{error}");
    assert_eq!(error.code(), Some("body_too_large"));
    assert_eq!(error.status().map(|status| status.as_u16()), Some(413));
}

#[tokio::test]
async fn stopped_server_is_unavailable() {
    let server = TestServer::start().await;
    let client = Client::builder(&server.url())
        .max_attempts(1)
        .build()
        .expect("valid client");
    client.health().await.expect("up before the stop");

    server.stop().await;
    let error = client.health().await.expect_err("server stopped");

    assert!(error.is_unavailable(), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(error.status(), None);
}

#[tokio::test]
async fn closed_port_is_unavailable() {
    let addr = closed_port().await;
    let client = Client::builder(&format!("http://{addr}"))
        .max_attempts(1)
        .build()
        .expect("valid client");

    let error = client.health().await.expect_err("nothing listens");

    assert!(error.is_unavailable(), "{error:?}");
    assert!(error.to_string().contains("refused"), "{error}");
}

#[tokio::test]
async fn tls_to_a_plain_server_is_transport() {
    let server = TestServer::start().await;
    let client = Client::builder(&format!("https://{}", server.addr))
        .max_attempts(1)
        .build()
        .expect("valid client");

    let error = client.health().await.expect_err("no TLS on the server");

    assert!(error.is_transport(), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn connection_closed_without_response_is_transport() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("free port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0; 1024];
            let _ = stream.read(&mut buffer).await;
        }
    });
    let client = Client::builder(&format!("http://{addr}"))
        .max_attempts(1)
        .build()
        .expect("valid client");

    let error = client.health().await.expect_err("closed without response");

    assert!(error.is_transport(), "{error:?}");
}

#[tokio::test]
async fn silent_listener_times_out() {
    // The kernel completes the handshake from its backlog, but nothing
    // ever reads the request or sends a response.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("free port");
    let addr = listener.local_addr().expect("bound address");
    let client = Client::builder(&format!("http://{addr}"))
        .timeout(Duration::from_millis(300))
        .build()
        .expect("valid client");

    let error = client.health().await.expect_err("no answer");

    assert!(error.is_timeout(), "{error:?}");
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("timed out after 300ms"),
        "{error}"
    );
    drop(listener);
}

#[tokio::test]
async fn invalid_base_url_fails_at_build() {
    let result = Client::builder("localhost:8080").build();

    assert!(
        matches!(result, Err(Error::InvalidUrl { .. })),
        "{result:?}"
    );
}
