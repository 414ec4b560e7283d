//! [`Client`], its builder, and the request path shared by every route:
//! URL, credential, timeout, retries and response decoding.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::credential::Credential;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Time a request may take, connecting included, unless the builder sets
/// another: 10 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one Tenet server.
///
/// Cloning is cheap: clones share the connection pool. Build one with
/// [`Client::new`] or [`Client::builder`]; the route methods are in
/// [`crate::routes`].
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// Sent as `Authorization: Bearer`; `None` sends no credential.
    pub(crate) credential: Option<Credential>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    http: reqwest::Client,
    /// The base URL, ending in `/` so that joining keeps its path.
    base: Url,
    timeout: Duration,
    retry: RetryPolicy,
}

/// Options of a [`Client`]; see [`Client::builder`].
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    credential: Option<Credential>,
    timeout: Duration,
    retry: RetryPolicy,
}

impl Client {
    /// Builds a client with the default timeout and retries.
    ///
    /// `base_url` is the server's root, such as `http://127.0.0.1:8080`; a
    /// path in it is kept as a prefix of every route.
    pub fn new(base_url: &str, credential: impl Into<Credential>) -> Result<Self> {
        Self::builder(base_url).credential(credential).build()
    }

    /// Starts a builder for a client without a credential.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            credential: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Returns a client that shares this one's connections and options but
    /// presents another credential, such as an API key to verify.
    pub fn with_credential(&self, credential: impl Into<Credential>) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            credential: Some(credential.into()),
        }
    }

    /// Returns whether requests carry a credential.
    pub fn has_credential(&self) -> bool {
        self.credential.is_some()
    }

    /// Returns the base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Starts a request to `path`, relative to the base URL and without a
    /// leading `/`.
    pub(crate) fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            client: self,
            method,
            path: path.to_owned(),
            body: None,
        }
    }
}

impl ClientBuilder {
    /// Sets the admin token or API key sent with every request.
    pub fn credential(mut self, credential: impl Into<Credential>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// Sets the time limit of one attempt, from connecting to the end of
    /// the response body; [`DEFAULT_TIMEOUT`] unless set.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the attempts per idempotent request, the first included; 3
    /// unless set, and 0 counts as 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts.max(1);
        self
    }

    /// Sets the whole retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            max_attempts: policy.max_attempts.max(1),
            ..policy
        };
        self
    }

    /// Builds the client; fails on a base URL that is not absolute `http`
    /// or `https`.
    pub fn build(self) -> Result<Client> {
        let base = parse_base_url(&self.base_url)?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(concat!("tenet-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Build)?;

        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                timeout: self.timeout,
                retry: self.retry,
            }),
            credential: self.credential,
        })
    }
}

/// Parses the base URL and makes its path end in `/`.
///
/// The URL in an error has its user info redacted (see
/// [`redact_user_info`]), because that part may contain a password.
fn parse_base_url(text: &str) -> Result<Url> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: redact_user_info(text),
        reason: reason.to_owned(),
    };

    let mut url = Url::parse(text).map_err(|err| invalid(&err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected an http or https URL"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("expected a URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("expected a URL without query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "expected a URL without user info; pass the credential separately",
        ));
    }

    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Returns `text` with the user info of its authority, such as
/// `user:password` in `http://user:password@host/`, replaced by `***`.
///
/// It works on the text, not on a parsed URL, because it must also cover
/// text that failed to parse. The authority starts after the scheme and
/// any slashes or backslashes, and the user info is taken to end at the
/// last `@` of the text. So a password with an unencoded `/`, `?` or `#`
/// stays hidden too, at the cost of also hiding the host of a URL whose
/// path or query contains `@`.
fn redact_user_info(text: &str) -> String {
    let after_scheme = match text.split_once(':') {
        Some((scheme, _)) if is_scheme(scheme) => scheme.len() + 1,
        _ => 0,
    };
    let rest = &text[after_scheme..];
    let authority = after_scheme + (rest.len() - rest.trim_start_matches(['/', '\\']).len());

    match text[authority..].rfind('@') {
        Some(at) => format!("{}***{}", &text[..authority], &text[authority + at..]),
        None => text.to_owned(),
    }
}

/// Returns whether `text` is a URL scheme: a letter, then letters, digits,
/// `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '.'))
}

/// One request on its way: method, path, optional JSON body.
pub(crate) struct Call<'a> {
    client: &'a Client,
    method: Method,
    path: String,
    /// The serialized JSON body, or why serializing failed.
    body: Option<Result<Vec<u8>, String>>,
}

impl Call<'_> {
    /// Sets a JSON body.
    pub(crate) fn json(mut self, body: &impl Serialize) -> Self {
        self.body = Some(serde_json::to_vec(body).map_err(|err| err.to_string()));
        self
    }

    /// Sends the request and decodes a JSON success body.
    pub(crate) async fn send<T: DeserializeOwned>(self) -> Result<T> {
        let request = self.describe();
        let (status, body) = self.send_raw().await?;
        serde_json::from_slice(&body).map_err(|err| Error::UnexpectedResponse {
            request,
            status,
            error: None,
            detail: format!("invalid JSON body: {err}"),
        })
    }

    /// Sends the request and expects a success without a body to decode.
    pub(crate) async fn send_empty(self) -> Result<()> {
        self.send_raw().await.map(|_| ())
    }

    /// Sends the request and returns a success body as text.
    pub(crate) async fn send_text(self) -> Result<String> {
        let request = self.describe();
        let (status, body) = self.send_raw().await?;
        String::from_utf8(body).map_err(|err| Error::UnexpectedResponse {
            request,
            status,
            error: None,
            detail: format!("body is not UTF-8: {err}"),
        })
    }

    /// Sends the request, retrying when the policy allows, and returns the
    /// status and body of a 2xx response.
    async fn send_raw(self) -> Result<(StatusCode, Vec<u8>)> {
        let inner = &self.client.inner;
        let policy = inner.retry;
        let attempts = if RetryPolicy::is_idempotent(&self.method) {
            policy.max_attempts
        } else {
            1
        };

        let mut attempt = 1;
        loop {
            let result = self.attempt().await;
            match result {
                Err(err) if err.is_retryable() && attempt < attempts => {
                    let delay = policy.backoff(attempt);
                    tracing::debug!(
                        method = %self.method,
                        path = %self.path,
                        attempt,
                        max_attempts = attempts,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        reason = %retry_reason(&err),
                        "retrying request"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends the request once.
    async fn attempt(&self) -> Result<(StatusCode, Vec<u8>)> {
        let inner = &self.client.inner;
        let url = self.url()?;
        let describe = || self.describe();

        let mut request = inner.http.request(self.method.clone(), url);
        if let Some(credential) = &self.client.credential {
            request = request.header(header::AUTHORIZATION, credential.bearer_header()?);
        }
        if let Some(body) = &self.body {
            let body = body.as_ref().map_err(|reason| Error::InvalidBody {
                request: describe(),
                reason: reason.clone(),
            })?;
            request = request
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(body.clone());
        }

        let response = request
            .send()
            .await
            .map_err(|err| Error::from_reqwest(describe(), inner.timeout, err))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|err| Error::from_reqwest(describe(), inner.timeout, err))?;

        if status.is_success() {
            Ok((status, body.to_vec()))
        } else {
            Err(Error::from_status(describe(), status, &body, retry_after))
        }
    }

    fn url(&self) -> Result<Url> {
        self.client
            .inner
            .base
            .join(&self.path)
            .map_err(|err| Error::InvalidUrl {
                url: format!("{}{}", self.client.inner.base, self.path),
                reason: err.to_string(),
            })
    }

    /// Returns the method and URL that error messages name.
    fn describe(&self) -> String {
        format!("{} {}{}", self.method, self.client.inner.base, self.path)
    }
}

/// Returns why a request is retried, without the request line that the
/// log's own fields carry.
fn retry_reason(err: &Error) -> String {
    match err {
        Error::Unavailable { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_keeps_its_path_as_prefix() {
        let cases = [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/tenants"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/tenants"),
            ("https://h/api", "https://h/api/tenants"),
            ("https://h/api/", "https://h/api/tenants"),
        ];

        for (base, expected) in cases {
            let url = parse_base_url(base).expect("valid base URL");

            assert_eq!(url.join("tenants").expect("joins").as_str(), expected);
        }
    }

    #[test]
    fn invalid_url_hides_user_info() {
        let cases = [
            ("http://user:secret@h/", "http://***@h/"),
            ("http://secret@h:8080", "http://***@h:8080"),
            ("http://user:secret@h:99999/", "http://***@h:99999/"),
            ("http://user:se/cret@h/", "http://***@h/"),
            ("http://user:p@ss@h/", "http://***@h/"),
            ("http:user:secret@h/", "http:***@h/"),
            ("http:\\\\user:secret@h/", "http:\\\\***@h/"),
            ("http://user:se#cret@h/", "http://***@h/"),
            ("user:secret@h:8080", "user:***@h:8080"),
            ("secret@h", "***@h"),
            ("ftp://user:secret@h/", "ftp://***@h/"),
            ("http://h/?to=a@b", "http://***@b"),
        ];

        for (base, redacted) in cases {
            let result = parse_base_url(base);

            let Err(Error::InvalidUrl { url, reason }) = result else {
                panic!("{base:?} is not rejected as invalid: {result:?}");
            };
            assert_eq!(url, redacted, "{base:?}");
            assert!(!reason.contains("secret"), "{base:?}: {reason}");
        }
    }

    #[test]
    fn redaction_keeps_urls_without_user_info() {
        for text in ["http://h:8080/a", "nope", "", "ftp://h/"] {
            assert_eq!(redact_user_info(text), text);
        }
    }

    #[test]
    fn base_url_rejects_other_forms() {
        let cases = [
            "127.0.0.1:8080",
            "ftp://h/",
            "http://h/?a=1",
            "http://user:pass@h/",
            "mailto:a@b",
            "",
        ];

        for base in cases {
            let result = parse_base_url(base);

            assert!(
                matches!(result, Err(Error::InvalidUrl { .. })),
                "{base:?}: {result:?}"
            );
        }
    }
}
