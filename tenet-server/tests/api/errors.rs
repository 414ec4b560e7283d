//! Every client error status, table-driven: each row checks the status,
//! the stable code, the JSON content type, and that nothing was created.

use reqwest::header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tenet_core::{KeyId, TenantId};

use crate::helpers::{ADMIN_TOKEN, TestServer};

/// Credentials a row sends.
#[derive(Clone, Copy)]
enum Credentials {
    Admin,
    None,
    WrongAdmin,
}

struct Case {
    description: &'static str,
    method: Method,
    /// `{tenant}` and `{key}` stand for the existing tenant and its key,
    /// `{unknown}` for a well-formed id that does not exist.
    path: &'static str,
    credentials: Credentials,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    allow: Option<&'static str>,
}

impl Case {
    fn new(description: &'static str, method: Method, path: &'static str) -> Self {
        Self {
            description,
            method,
            path,
            credentials: Credentials::Admin,
            content_type: None,
            body: Vec::new(),
            status: StatusCode::OK,
            code: "",
            allow: None,
        }
    }

    fn json(mut self, body: &str) -> Self {
        self.content_type = Some("application/json");
        self.body = body.as_bytes().to_vec();
        self
    }

    fn body(mut self, content_type: Option<&'static str>, body: Vec<u8>) -> Self {
        self.content_type = content_type;
        self.body = body;
        self
    }

    fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    fn expect(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    fn allow(mut self, allow: &'static str) -> Self {
        self.allow = Some(allow);
        self
    }
}

fn cases() -> Vec<Case> {
    use StatusCode as S;
    let post = || Method::POST;
    let long_name = format!(r#"{{"name":"{}"}}"#, "x".repeat(201));
    let huge_name = format!(r#"{{"name":"{}"}}"#, "x".repeat(70_000));

    vec![
        Case::new("malformed JSON", post(), "/tenants")
            .json(r#"{"name":"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("trailing bytes", post(), "/tenants")
            .json(r#"{"name":"a"} x"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("second document", post(), "/tenants")
            .json(r#"{"name":"a"}{"name":"b"}"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("duplicate field", post(), "/tenants")
            .json(r#"{"name":"a","name":"b"}"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("unknown field", post(), "/tenants")
            .json(r#"{"name":"a","plan":"pro"}"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("name of wrong type", post(), "/tenants")
            .json(r#"{"name":5}"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("null name", post(), "/tenants")
            .json(r#"{"name":null}"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("array instead of object", post(), "/tenants")
            .json(r#"["a"]"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("invalid UTF-8", post(), "/tenants")
            .body(Some("application/json"), b"{\"name\":\"\xff\"}".to_vec())
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("byte order mark before the body", post(), "/tenants")
            .body(
                Some("application/json"),
                b"\xEF\xBB\xBF{\"name\":\"a\"}".to_vec(),
            )
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new(
            "field in a suspend body",
            post(),
            "/tenants/{tenant}/suspend",
        )
        .json(r#"{"reason":"unpaid"}"#)
        .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("field in a resume body", post(), "/tenants/{tenant}/resume")
            .json(r#"{"reason":"paid"}"#)
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new(
            "array as a suspend body",
            post(),
            "/tenants/{tenant}/suspend",
        )
        .json("[]")
        .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new(
            "text/plain suspend body",
            post(),
            "/tenants/{tenant}/suspend",
        )
        .body(Some("text/plain"), b"{}".to_vec())
        .expect(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Case::new("empty tenant body", post(), "/tenants")
            .json("")
            .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("missing name", post(), "/tenants")
            .json("{}")
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new("empty name", post(), "/tenants")
            .json(r#"{"name":""}"#)
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new("blank name", post(), "/tenants")
            .json(r#"{"name":" \t\n "}"#)
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new("name over 200 characters", post(), "/tenants")
            .body(Some("application/json"), long_name.into_bytes())
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new("NUL in name", post(), "/tenants")
            .json(r#"{"name":"a\u0000b"}"#)
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new("escape sequence in name", post(), "/tenants")
            .json(r#"{"name":"a\u001b[31mb"}"#)
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new(
            "unknown field in key body",
            post(),
            "/tenants/{tenant}/keys",
        )
        .json(r#"{"label":"a"}"#)
        .expect(S::BAD_REQUEST, "invalid_json"),
        Case::new("blank key name", post(), "/tenants/{tenant}/keys")
            .json(r#"{"name":"  "}"#)
            .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new(
            "control character in key name",
            post(),
            "/tenants/{tenant}/keys",
        )
        .json(r#"{"name":"a\u0007"}"#)
        .expect(S::BAD_REQUEST, "invalid_name"),
        Case::new("text/plain tenant body", post(), "/tenants")
            .body(Some("text/plain"), br#"{"name":"a"}"#.to_vec())
            .expect(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Case::new("tenant body without content type", post(), "/tenants")
            .body(None, br#"{"name":"a"}"#.to_vec())
            .expect(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Case::new("latin1 charset", post(), "/tenants")
            .body(
                Some("application/json; charset=latin1"),
                br#"{"name":"a"}"#.to_vec(),
            )
            .expect(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Case::new("form body for a key", post(), "/tenants/{tenant}/keys")
            .body(
                Some("application/x-www-form-urlencoded"),
                b"name=a".to_vec(),
            )
            .expect(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Case::new("tenant body over 64 KiB", post(), "/tenants")
            .body(Some("application/json"), huge_name.clone().into_bytes())
            .expect(S::PAYLOAD_TOO_LARGE, "body_too_large"),
        Case::new("key body over 64 KiB", post(), "/tenants/{tenant}/keys")
            .body(Some("application/json"), huge_name.into_bytes())
            .expect(S::PAYLOAD_TOO_LARGE, "body_too_large"),
        Case::new("PUT on /tenants", Method::PUT, "/tenants")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("GET, HEAD, POST"),
        Case::new("PUT on a tenant", Method::PUT, "/tenants/{tenant}")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("GET, HEAD, PATCH, DELETE"),
        Case::new("GET on suspend", Method::GET, "/tenants/{tenant}/suspend")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("POST"),
        Case::new("POST on the audit", Method::POST, "/tenants/{tenant}/audit")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("GET, HEAD"),
        Case::new("PATCH on keys", Method::PATCH, "/tenants/{tenant}/keys")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("GET, HEAD, POST"),
        Case::new("GET on a key", Method::GET, "/tenants/{tenant}/keys/{key}")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("DELETE"),
        Case::new("POST on /protected", post(), "/protected")
            .expect(S::METHOD_NOT_ALLOWED, "method_not_allowed")
            .allow("GET, HEAD"),
        Case::new("unknown path", Method::GET, "/nope").expect(S::NOT_FOUND, "not_found"),
        Case::new("trailing slash", Method::GET, "/tenants/").expect(S::NOT_FOUND, "not_found"),
        Case::new(
            "too many segments",
            Method::GET,
            "/tenants/{tenant}/keys/{key}/x",
        )
        .expect(S::NOT_FOUND, "not_found"),
        Case::new("malformed tenant id", Method::GET, "/tenants/not-a-uuid")
            .expect(S::NOT_FOUND, "tenant_not_found"),
        Case::new("unknown tenant id", Method::GET, "/tenants/{unknown}")
            .expect(S::NOT_FOUND, "tenant_not_found"),
        Case::new(
            "keys of unknown tenant",
            Method::GET,
            "/tenants/{unknown}/keys",
        )
        .expect(S::NOT_FOUND, "tenant_not_found"),
        Case::new("key for unknown tenant", post(), "/tenants/{unknown}/keys")
            .expect(S::NOT_FOUND, "tenant_not_found"),
        Case::new("key for malformed tenant", post(), "/tenants/x/keys")
            .json(r#"{"name":"a"}"#)
            .expect(S::NOT_FOUND, "tenant_not_found"),
        Case::new(
            "revoke malformed key id",
            Method::DELETE,
            "/tenants/{tenant}/keys/x",
        )
        .expect(S::NOT_FOUND, "key_not_found"),
        Case::new(
            "revoke unknown key id",
            Method::DELETE,
            "/tenants/{tenant}/keys/{unknown}",
        )
        .expect(S::NOT_FOUND, "key_not_found"),
        Case::new("create without token", post(), "/tenants")
            .json(r#"{"name":"a"}"#)
            .credentials(Credentials::None)
            .expect(S::UNAUTHORIZED, "unauthorized"),
        Case::new("create with wrong token", post(), "/tenants")
            .json(r#"{"name":"a"}"#)
            .credentials(Credentials::WrongAdmin)
            .expect(S::UNAUTHORIZED, "unauthorized"),
        Case::new("issue with wrong token", post(), "/tenants/{tenant}/keys")
            .credentials(Credentials::WrongAdmin)
            .expect(S::UNAUTHORIZED, "unauthorized"),
        Case::new(
            "revoke without token",
            Method::DELETE,
            "/tenants/{tenant}/keys/{key}",
        )
        .credentials(Credentials::None)
        .expect(S::UNAUTHORIZED, "unauthorized"),
        Case::new("bad body without token", post(), "/tenants")
            .json("{")
            .credentials(Credentials::None)
            .expect(S::UNAUTHORIZED, "unauthorized"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_json_and_change_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Existing").await;
    let key = admin.issue_key(&tenant).await;
    let unknown = TenantId::generate().to_string();
    let unknown_key = KeyId::generate().to_string();

    for case in cases() {
        let path = case
            .path
            .replace("{tenant}", &tenant.id.to_string())
            .replace("{key}", &key.id.to_string())
            .replace("keys/{unknown}", &format!("keys/{unknown_key}"))
            .replace("{unknown}", &unknown);
        let mut request = server
            .client
            .request(case.method.clone(), server.url(&path))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request = match case.credentials {
            Credentials::Admin => request.bearer_auth(ADMIN_TOKEN),
            Credentials::WrongAdmin => request.bearer_auth(format!("{ADMIN_TOKEN}x")),
            Credentials::None => request,
        };

        let response = request.send().await.expect("request sent");

        let description = case.description;
        assert_eq!(response.status(), case.status, "{description}: status");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/json",
            "{description}: content type"
        );
        assert_eq!(
            response.headers().get(ALLOW).map(|v| v.to_str().unwrap()),
            case.allow,
            "{description}: Allow"
        );
        let body: Value = response.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], case.code, "{description}: code");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{description}: message"
        );

        let tenants = admin.tenants().await;
        assert_eq!(tenants.len(), 1, "{description}: tenants created");
        let keys = admin.keys(&tenant).await;
        assert_eq!(keys.len(), 1, "{description}: keys created");
        assert!(keys[0].revoked_at.is_none(), "{description}: key revoked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_order_mark_is_named() {
    let server = TestServer::start().await;

    let response = server
        .client
        .post(server.url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header(CONTENT_TYPE, "application/json")
        .body(b"\xEF\xBB\xBF{\"name\":\"bom\"}".to_vec())
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "invalid_json");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("byte order mark"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_body_must_have_no_fields() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let suspend = |body: Option<&'static str>| {
        let mut request = server
            .client
            .post(server.url(&format!("/tenants/{}/suspend", tenant.id)))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        request.send()
    };

    let with_field = suspend(Some(r#"{"reason":"unpaid"}"#))
        .await
        .expect("request sent");
    let status_after_field = server.admin().tenants().await[0].status.clone();
    let empty_object = suspend(Some("{}")).await.expect("request sent");
    let no_body = suspend(None).await.expect("request sent");

    assert_eq!(with_field.status(), StatusCode::BAD_REQUEST);
    let body: Value = with_field.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "invalid_json");
    assert_eq!(status_after_field, "active");
    assert_eq!(empty_object.status(), StatusCode::OK);
    assert_eq!(no_body.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_body_is_rejected_naming_the_encoding() {
    let server = TestServer::start().await;
    let create = |encoding: &'static str| {
        server
            .client
            .post(server.url("/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, encoding)
            .body(r#"{"name":"encoded"}"#)
            .send()
    };

    for encoding in ["gzip", "br", "identity, deflate"] {
        let response = create(encoding).await.expect("request sent");

        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{encoding}"
        );
        assert_eq!(
            response.headers()[ACCEPT_ENCODING],
            "identity",
            "{encoding}"
        );
        let body: Value = response.json().await.expect("JSON error body");
        assert_eq!(
            body["error"]["code"], "unsupported_media_type",
            "{encoding}"
        );
        let message = body["error"]["message"].as_str().expect("message");
        let named = encoding.rsplit(", ").next().expect("a coding");
        assert!(message.contains(named), "{encoding}: {message}");
        assert!(message.contains("unencoded"), "{encoding}: {message}");
    }
    assert!(server.admin().tenants().await.is_empty());

    let identity = create("identity").await.expect("request sent");

    assert_eq!(identity.status(), StatusCode::CREATED);
}

/// Sends `body` as a JSON `POST /tenants` and returns the status, code
/// and message of the response.
async fn create_with_body(server: &TestServer, body: &[u8]) -> (StatusCode, String, String) {
    let response = server
        .client
        .post(server.url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_object_body_message_names_cause() {
    let server = TestServer::start().await;
    let cases: [(&[u8], &str); 7] = [
        (
            b"hello",
            "the request body is not valid JSON: expected value at line 1 column 1",
        ),
        (
            b"x",
            "the request body is not valid JSON: expected value at line 1 column 1",
        ),
        (
            b"\xff\xfe",
            "the request body is not valid JSON: expected value at line 1 column 1",
        ),
        (
            b"{\"name\":\"\xff\"}",
            "the request body is not valid JSON: invalid unicode code point",
        ),
        (b"1", "the request body must be a JSON object, not a number"),
        (
            b"\" \"",
            "the request body must be a JSON object, not a string",
        ),
        (
            b"[\"a\"]",
            "the request body must be a JSON object, not an array",
        ),
    ];

    for (body, expected) in cases {
        let (status, code, message) = create_with_body(&server, body).await;

        let body = String::from_utf8_lossy(body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(code, "invalid_json", "{body:?}");
        assert!(message.starts_with(expected), "{body:?}: {message}");
    }
    assert!(server.admin().tenants().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_body_counts_as_empty() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;

    let (_, empty_code, empty_message) = create_with_body(&server, b"").await;
    for body in [" ", "\r\n", " \t\n "] {
        let (status, code, message) = create_with_body(&server, body.as_bytes()).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(code, empty_code, "{body:?}");
        assert_eq!(message, empty_message, "{body:?}");
    }
    assert!(empty_message.contains("empty"), "{empty_message}");

    // Like an empty body, a blank one needs no content type where the body
    // is optional.
    let suspended = server
        .client
        .post(server.url(&format!("/tenants/{}/suspend", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .body(" \n")
        .send()
        .await
        .expect("request sent");

    assert_eq!(suspended.status(), StatusCode::OK);
    assert_eq!(server.admin().tenants().await.len(), 1);
}
