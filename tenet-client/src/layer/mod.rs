//! [`VerifyLayer`]: a tower layer that admits only requests with a valid
//! API key and hands the inner service the key's [`Principal`].
//!
//! ```no_run
//! # fn build(client: tenet_client::Client) {
//! use std::time::Duration;
//! use tenet_client::VerifyLayer;
//!
//! let layer = VerifyLayer::new(client)
//!     .cache_ttl(Duration::from_secs(5))
//!     .cache_capacity(1_000);
//! # let _ = layer;
//! # }
//! ```
//!
//! The layer reads the key from `X-API-Key` or `Authorization: Bearer`,
//! verifies it through the Tenet server, and on success inserts the
//! [`Principal`] into the request's extensions. A missing, ambiguous or
//! rejected key gets the server's 401 JSON error, whatever the reason,
//! except that a valid key without a scope the layer requires
//! ([`VerifyLayer::require_scopes`]) gets 403 `missing_scope` and a key of
//! a suspended tenant gets 403 `tenant_suspended`. A key that the server
//! refuses over a rate limit or its tenant's monthly quota gets the
//! server's 429, with its code and `Retry-After`. A failed verification
//! (server down, timeout, the layer's own credential rejected) gets 503
//! `verification_unavailable`. The inner service never receives an unverified
//! request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tenet_core::api::{ErrorDetail, ErrorResponse};
use tower::{Layer, Service};

use crate::client::Client;
use crate::credential::Credential;
use crate::error::Error;
use crate::principal::Principal;

mod cache;
mod extract;

pub use extract::API_KEY_HEADER;

use cache::VerificationCache;

/// Time a verified key is trusted without asking the server again, unless
/// set otherwise: 10 seconds. A key revoked at the server keeps passing
/// this layer for up to this long.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);

/// Verified keys remembered at once, unless set otherwise: 10,000.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Wraps a service in [`VerifyService`]; clones share one cache.
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifier: Arc<Verifier>,
}

impl VerifyLayer {
    /// Builds a layer that verifies keys through `client`.
    ///
    /// With a credential (the admin token, or better a key with the
    /// `tenet:verify` scope), the client asks `POST /verify`, and the
    /// principal carries the key's scopes. Without one, it sends each key
    /// to `GET /protected`, and the principal's scopes are `None`.
    pub fn new(client: Client) -> Self {
        Self::with_cache(
            client,
            DEFAULT_CACHE_TTL,
            DEFAULT_CACHE_CAPACITY,
            Vec::new(),
        )
    }

    /// Sets how long a verified key is trusted without asking the server;
    /// zero turns the cache off. This also empties the cache.
    pub fn cache_ttl(self, ttl: Duration) -> Self {
        let capacity = self.verifier.cache_capacity;
        let required_scopes = self.verifier.required_scopes.clone();
        self.rebuild(ttl, capacity, required_scopes)
    }

    /// Sets how many verified keys are remembered at once; zero turns the
    /// cache off. This also empties the cache.
    pub fn cache_capacity(self, capacity: usize) -> Self {
        let ttl = self.verifier.cache_ttl;
        let required_scopes = self.verifier.required_scopes.clone();
        self.rebuild(ttl, capacity, required_scopes)
    }

    /// Requires every request's key to hold all of `scopes`; a valid key
    /// without one gets 403 `missing_scope`. This also empties the cache.
    ///
    /// Only `POST /verify` checks scopes, so this fails with
    /// [`Error::MissingCredential`] when the client has no credential, and
    /// with [`Error::InvalidScope`] for a scope that no key can hold.
    pub fn require_scopes<I, S>(self, scopes: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if !self.verifier.client.has_credential() {
            return Err(Error::MissingCredential {
                request: format!("POST {}verify", self.verifier.client.base_url()),
            });
        }

        let mut required = Vec::new();
        for scope in scopes {
            let scope = scope.into();
            if let Err(err) = tenet_core::Scope::parse(&scope) {
                return Err(Error::InvalidScope {
                    reason: err.to_string(),
                    scope,
                });
            }
            required.push(scope);
        }

        let (ttl, capacity) = (self.verifier.cache_ttl, self.verifier.cache_capacity);
        Ok(self.rebuild(ttl, capacity, required))
    }

    fn with_cache(
        client: Client,
        ttl: Duration,
        capacity: usize,
        required_scopes: Vec<String>,
    ) -> Self {
        Self {
            verifier: Arc::new(Verifier {
                client,
                cache: VerificationCache::new(ttl, capacity),
                cache_ttl: ttl,
                cache_capacity: capacity,
                required_scopes,
            }),
        }
    }

    fn rebuild(&self, ttl: Duration, capacity: usize, required_scopes: Vec<String>) -> Self {
        let client = self.verifier.client.clone();
        Self::with_cache(client, ttl, capacity, required_scopes)
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// A service that verifies each request's API key before calling `S`.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for VerifyService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
    ResponseBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        // The clone that was driven to readiness serves this request; the
        // fresh clone stays for the next `poll_ready`.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let verifier = Arc::clone(&self.verifier);

        Box::pin(async move {
            match verifier.authenticate(request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

/// The client and cache that a layer's services share.
#[derive(Debug)]
struct Verifier {
    client: Client,
    cache: VerificationCache,
    cache_ttl: Duration,
    cache_capacity: usize,
    /// Scopes that every key must contain; the cache only stores keys
    /// that contain them.
    required_scopes: Vec<String>,
}

impl Verifier {
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, Rejection> {
        let Some(key) = extract::api_key(headers) else {
            tracing::debug!("rejected request without exactly one API key");
            return Err(Rejection::unauthorized());
        };

        if let Some(principal) = self.cache.get(key) {
            return Ok(principal);
        }

        let key_credential = Credential::new(key);
        let verified = if self.required_scopes.is_empty() {
            self.client.verify_key(&key_credential).await
        } else {
            let scopes = &self.required_scopes;
            self.client.verify_key_with(&key_credential, scopes).await
        };

        match verified {
            Ok(principal) => {
                self.cache.insert(key, principal.clone());
                Ok(principal)
            }
            Err(Error::KeyRejected { code, .. })
                if code == "missing_scope" || code == "tenant_suspended" =>
            {
                // The key is valid, so telling its holder why it may not
                // pass reveals nothing about other keys.
                tracing::debug!(code = %code, "rejected an API key with 403");
                Err(Rejection::forbidden(code))
            }
            Err(Error::KeyRejected { code, .. }) => {
                // The caller gets the server's uniform 401, which does not
                // reveal why the key failed.
                tracing::debug!(code = %code, "the server rejected an API key");
                Err(Rejection::unauthorized())
            }
            Err(Error::Limited {
                error, retry_after, ..
            }) => {
                // The key is valid and over one of its limits; its holder
                // gets the server's 429, with the wait before a retry.
                tracing::debug!(code = %error.code, "the server refused an API key over a limit");
                Err(Rejection::limited(error.code, error.message, retry_after))
            }
            Err(err @ Error::Unauthorized { .. }) => {
                tracing::error!(
                    error = %err,
                    "the server rejected the layer's own credential; set an admin token \
                     or a key with the tenet:verify scope"
                );
                Err(Rejection::unavailable())
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to verify an API key");
                Err(Rejection::unavailable())
            }
        }
    }
}

/// The error response the layer sends instead of calling the service.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<Duration>,
}

impl Rejection {
    /// Builds the server's response to a missing or invalid key.
    fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized".to_owned(),
            message: "missing or invalid credentials".to_owned(),
            retry_after: None,
        }
    }

    /// Builds the response to a valid key that may not pass: `code` is
    /// `missing_scope` or `tenant_suspended`.
    fn forbidden(code: String) -> Self {
        let message = if code == "missing_scope" {
            "the API key lacks a scope this service requires"
        } else {
            "the API key's tenant is suspended"
        };
        Self {
            status: StatusCode::FORBIDDEN,
            code,
            message: message.to_owned(),
            retry_after: None,
        }
    }

    /// Builds the response for a key that the server could not verify.
    fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "verification_unavailable".to_owned(),
            message: "the API key could not be verified; retry later".to_owned(),
            retry_after: None,
        }
    }

    /// Builds the server's 429 for a key over a rate limit or its tenant's
    /// quota, with the server's code and message.
    fn limited(code: String, message: String, retry_after: Option<Duration>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code,
            message,
            retry_after,
        }
    }

    fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = ErrorResponse {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        // Two strings always serialize.
        let json = serde_json::to_vec(&body).unwrap_or_default();

        let mut response = Response::new(B::from(Bytes::from(json)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tenet\""),
            );
        }
        response
    }
}
