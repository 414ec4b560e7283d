//! One method per route of the Tenet HTTP API.
//!
//! Each method names its route in its documentation; the request and
//! response bodies are the `tenet_core::api` types that the server uses.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tenet_core::api::{
    AuditListResponse, CreateTenantRequest, HealthResponse, IssueKeyRequest, IssuedKeyResponse,
    KeyLimitBody, KeyListResponse, LimitStateResponse, PrincipalResponse, RenameTenantRequest,
    RotateKeyRequest, RotateKeyResponse, TenantLimitsBody, TenantListResponse, TenantResponse,
    UsageRecord, UsageResponse, ValidKeyResponse, VerifyRequest, VerifyResponse,
};
use tenet_core::{Granularity, KeyId, TenantId};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use zeroize::Zeroize;

use crate::client::Client;
use crate::credential::Credential;
use crate::error::{Error, Result, ServerError};
use crate::principal::Principal;

impl Client {
    /// `POST /tenants`: creates a tenant; needs the admin token.
    pub async fn create_tenant(&self, name: &str) -> Result<TenantResponse> {
        let body = CreateTenantRequest {
            name: name.to_owned(),
        };
        self.call(Method::POST, "tenants").json(&body).send().await
    }

    /// `GET /tenants`: lists every tenant, oldest first, following
    /// `next_cursor` page by page; needs the admin token. The result's
    /// `next_cursor` is `None`.
    pub async fn list_tenants(&self) -> Result<TenantListResponse> {
        let mut all = self.list_tenants_page(None).await?;
        while let Some(cursor) = all.next_cursor.take() {
            let page = self.list_tenants_page(Some(&cursor)).await?;
            all.tenants.extend(page.tenants);
            all.next_cursor = page.next_cursor;
        }
        Ok(all)
    }

    /// `GET /tenants?limit=100&cursor=...`: lists one page of up to 100
    /// tenants, the first page for a `cursor` of `None`; needs the admin
    /// token.
    pub async fn list_tenants_page(&self, cursor: Option<&str>) -> Result<TenantListResponse> {
        self.call(Method::GET, &page_path("tenants", cursor))
            .send()
            .await
    }

    /// `GET /tenants/{id}`: reads one tenant; needs the admin token.
    pub async fn tenant(&self, tenant: TenantId) -> Result<TenantResponse> {
        self.call(Method::GET, &format!("tenants/{tenant}"))
            .send()
            .await
    }

    /// `PATCH /tenants/{id}`: renames a tenant and returns it; needs the
    /// admin token. The server validates the name like a new tenant's.
    pub async fn rename_tenant(&self, tenant: TenantId, name: &str) -> Result<TenantResponse> {
        let body = RenameTenantRequest {
            name: name.to_owned(),
        };
        self.call(Method::PATCH, &format!("tenants/{tenant}"))
            .json(&body)
            .send()
            .await
    }

    /// `POST /tenants/{id}/suspend`: suspends a tenant, whose keys are then
    /// rejected with the code `tenant_suspended`, and returns it; succeeds
    /// also when it is suspended already. Needs the admin token.
    pub async fn suspend_tenant(&self, tenant: TenantId) -> Result<TenantResponse> {
        self.call(Method::POST, &format!("tenants/{tenant}/suspend"))
            .send()
            .await
    }

    /// `POST /tenants/{id}/resume`: resumes a suspended tenant and returns
    /// it; succeeds also when it is active already. Needs the admin token.
    pub async fn resume_tenant(&self, tenant: TenantId) -> Result<TenantResponse> {
        self.call(Method::POST, &format!("tenants/{tenant}/resume"))
            .send()
            .await
    }

    /// `DELETE /tenants/{id}`: revokes every key of a tenant and deletes
    /// it; needs the admin token. A deleted tenant is
    /// [`Error::NotFound`] afterwards, except for [`Client::list_audit`].
    ///
    /// NOTE: the request is retried like every `DELETE`, so a retry after
    /// a lost response returns [`Error::NotFound`] for a tenant that this
    /// call deleted.
    pub async fn delete_tenant(&self, tenant: TenantId) -> Result<()> {
        self.call(Method::DELETE, &format!("tenants/{tenant}"))
            .send_empty()
            .await
    }

    /// `GET /tenants/{id}/audit`: lists a tenant's audit trail, oldest
    /// first, following `next_cursor` page by page; needs the admin token,
    /// or a `tenet:admin` key of that tenant. The admin may read a deleted
    /// tenant's trail. The result's `next_cursor` is `None`.
    pub async fn list_audit(&self, tenant: TenantId) -> Result<AuditListResponse> {
        let mut all = self.list_audit_page(tenant, None).await?;
        while let Some(cursor) = all.next_cursor.take() {
            let page = self.list_audit_page(tenant, Some(&cursor)).await?;
            all.entries.extend(page.entries);
            all.next_cursor = page.next_cursor;
        }
        Ok(all)
    }

    /// `GET /tenants/{id}/audit?limit=100&cursor=...`: lists one page of up
    /// to 100 audit entries, the first page for a `cursor` of `None`.
    pub async fn list_audit_page(
        &self,
        tenant: TenantId,
        cursor: Option<&str>,
    ) -> Result<AuditListResponse> {
        self.call(
            Method::GET,
            &page_path(&format!("tenants/{tenant}/audit"), cursor),
        )
        .send()
        .await
    }

    /// `POST /tenants/{id}/keys`: issues a key; needs the admin token or a
    /// `tenet:admin` key of the tenant. The response is the only one that
    /// carries the plaintext key.
    pub async fn issue_key(
        &self,
        tenant: TenantId,
        request: &IssueKeyRequest,
    ) -> Result<IssuedKeyResponse> {
        self.call(Method::POST, &format!("tenants/{tenant}/keys"))
            .json(request)
            .send()
            .await
    }

    /// `GET /tenants/{id}/keys`: lists a tenant's keys, revoked ones
    /// included, without secrets, following `next_cursor` page by page;
    /// needs the admin token or a `tenet:admin` key of the tenant. The
    /// result's `next_cursor` is `None`.
    pub async fn list_keys(&self, tenant: TenantId) -> Result<KeyListResponse> {
        let mut all = self.list_keys_page(tenant, None).await?;
        while let Some(cursor) = all.next_cursor.take() {
            let page = self.list_keys_page(tenant, Some(&cursor)).await?;
            all.keys.extend(page.keys);
            all.next_cursor = page.next_cursor;
        }
        Ok(all)
    }

    /// `GET /tenants/{id}/keys?limit=100&cursor=...`: lists one page of up
    /// to 100 of a tenant's keys, the first page for a `cursor` of `None`;
    /// needs the admin token or a `tenet:admin` key of the tenant.
    pub async fn list_keys_page(
        &self,
        tenant: TenantId,
        cursor: Option<&str>,
    ) -> Result<KeyListResponse> {
        self.call(
            Method::GET,
            &page_path(&format!("tenants/{tenant}/keys"), cursor),
        )
        .send()
        .await
    }

    /// `DELETE /tenants/{id}/keys/{key_id}`: revokes a key; succeeds also
    /// when it was revoked before. Needs the admin token or a
    /// `tenet:admin` key of the tenant.
    pub async fn revoke_key(&self, tenant: TenantId, key: KeyId) -> Result<()> {
        self.call(Method::DELETE, &format!("tenants/{tenant}/keys/{key}"))
            .send_empty()
            .await
    }

    /// `POST /tenants/{id}/keys/{key_id}/rotate`: issues a key with the old
    /// key's name and scopes, and ends the old key after the grace period
    /// (one day unless `request` sets one). Needs the admin token or a
    /// `tenet:admin` key of the tenant. The
    /// response is the only one that carries the new plaintext key.
    pub async fn rotate_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        request: &RotateKeyRequest,
    ) -> Result<RotateKeyResponse> {
        self.call(Method::POST, &format!("tenants/{tenant}/keys/{key}/rotate"))
            .json(request)
            .send()
            .await
    }

    /// `GET /tenants/{id}/limits`: reads a tenant's rate limit and monthly
    /// quota; needs the admin token.
    pub async fn get_limits(&self, tenant: TenantId) -> Result<TenantLimitsBody> {
        self.call(Method::GET, &format!("tenants/{tenant}/limits"))
            .send()
            .await
    }

    /// `PUT /tenants/{id}/limits`: replaces a tenant's rate limit and
    /// monthly quota (a `None` field removes it) and returns them as
    /// stored; needs the admin token.
    pub async fn set_limits(
        &self,
        tenant: TenantId,
        limits: &TenantLimitsBody,
    ) -> Result<TenantLimitsBody> {
        self.call(Method::PUT, &format!("tenants/{tenant}/limits"))
            .json(limits)
            .send()
            .await
    }

    /// `GET /tenants/{id}/keys/{key_id}/limit`: reads a key's own rate
    /// limit, `None` inside when only the tenant's applies.
    pub async fn get_key_limit(&self, tenant: TenantId, key: KeyId) -> Result<KeyLimitBody> {
        self.call(Method::GET, &format!("tenants/{tenant}/keys/{key}/limit"))
            .send()
            .await
    }

    /// `PUT /tenants/{id}/keys/{key_id}/limit`: sets a key's own rate
    /// limit, or removes it when `limit.limit` is `None`; needs the admin
    /// token or a `tenet:admin` key of the tenant.
    pub async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: &KeyLimitBody,
    ) -> Result<KeyLimitBody> {
        self.call(Method::PUT, &format!("tenants/{tenant}/keys/{key}/limit"))
            .json(limit)
            .send()
            .await
    }

    /// `GET /protected`: returns whom this client's API key acts for.
    pub async fn whoami(&self) -> Result<PrincipalResponse> {
        self.call(Method::GET, "protected").send().await
    }

    /// `POST /verify`: checks a key and the scopes it must hold; needs the
    /// admin token or a key with the `tenet:verify` scope. A rejected key
    /// is a success with [`VerifyResponse::Invalid`].
    pub async fn verify(&self, request: &VerifyRequest) -> Result<VerifyResponse> {
        self.call(Method::POST, "verify").json(request).send().await
    }

    /// Verifies an API key presented to your service, counting the call as
    /// a request of that key, and returns its principal. A rejected key is
    /// [`Error::KeyRejected`], and a valid key over its own or its tenant's
    /// rate limit or monthly quota is [`Error::Limited`], with the wait in
    /// [`Error::retry_after`].
    ///
    /// A client with a credential calls `POST /verify`, which reports the
    /// key's scopes and why a key is rejected; [`Error::Unauthorized`] then
    /// means that the client's own credential was rejected. A client
    /// without one sends the key to `GET /protected`, which reports
    /// neither.
    pub async fn verify_key(&self, key: &Credential) -> Result<Principal> {
        if self.has_credential() {
            return self.verify_key_with(key, &[]).await;
        }

        match self.with_credential(key.clone()).whoami().await {
            Ok(principal) => Ok(Principal::from(principal)),
            Err(Error::Unauthorized { request, error }) => Err(Error::KeyRejected {
                request,
                code: error.code,
            }),
            Err(other) => Err(other),
        }
    }

    /// Verifies an API key like [`Client::verify_key`] and requires it to
    /// hold every scope in `scopes`; a key without one is
    /// [`Error::KeyRejected`] with code `missing_scope`.
    ///
    /// Only `POST /verify` checks scopes, so this needs a client with a
    /// credential (the admin token or a key with the `tenet:verify` scope)
    /// and fails with [`Error::MissingCredential`] without one.
    pub async fn verify_key_with(&self, key: &Credential, scopes: &[String]) -> Result<Principal> {
        let valid = self.check_key(key, scopes, true).await?;
        // `POST /verify` reports a key over a limit as valid, with the
        // decision in `rate_limit`, where `GET /protected` returns 429.
        // Both paths of `verify_key` return the same error for it.
        if let Some(state) = valid.rate_limit.as_ref().filter(|state| !state.allowed) {
            return Err(self.limited_error(state));
        }
        Ok(Principal {
            tenant_id: valid.tenant_id,
            key_id: valid.key_id,
            scopes: Some(valid.scopes),
            expires_at: valid.expires_at,
        })
    }

    /// Builds the [`Error::Limited`] of a verified key that a rate limit or
    /// the quota rejected, with the code of the server's 429 from
    /// `GET /protected` and a message like its own.
    fn limited_error(&self, state: &LimitStateResponse) -> Error {
        let code = state
            .code
            .clone()
            .unwrap_or_else(|| "rate_limited".to_owned());
        let retry = state.retry_after_seconds;
        let quota_reset = state.quota_resets_at.filter(|_| code == "quota_exceeded");
        let message = if let Some(resets_at) = quota_reset {
            format!(
                "the monthly quota is used up; it resets at {}",
                tenet_core::timestamp::format(resets_at)
            )
        } else if let Some(seconds) = retry {
            let plural = if seconds == 1 { "" } else { "s" };
            format!("rate limit exceeded; retry after {seconds} second{plural}")
        } else {
            "rate limit exceeded".to_owned()
        };
        Error::Limited {
            request: format!("POST {}verify", self.base_url()),
            error: ServerError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code,
                message,
            },
            retry_after: retry.map(Duration::from_secs),
        }
    }

    /// `POST /verify`: verifies an API key like [`Client::verify_key_with`]
    /// and returns the whole response, with the key's limit state. With
    /// `consume` set to `false` the server checks the limits and quota
    /// without counting this request against them.
    ///
    /// Needs a client with a credential, like [`Client::verify_key_with`];
    /// a rejected key is [`Error::KeyRejected`]. A key over a limit is a
    /// success here, with `allowed` false in `rate_limit`.
    pub async fn check_key(
        &self,
        key: &Credential,
        scopes: &[String],
        consume: bool,
    ) -> Result<ValidKeyResponse> {
        if !self.has_credential() {
            return Err(Error::MissingCredential {
                request: format!("POST {}verify", self.base_url()),
            });
        }

        let request = WipedVerifyRequest(VerifyRequest {
            key: key.expose_secret().to_owned(),
            scopes: scopes.to_vec(),
            consume,
        });
        match self.verify(&request.0).await? {
            VerifyResponse::Valid(valid) => Ok(valid),
            VerifyResponse::Invalid(invalid) => Err(Error::KeyRejected {
                request: format!("POST {}verify", self.base_url()),
                code: invalid.code,
            }),
        }
    }

    /// `GET /tenants/{id}/usage`: sums a tenant's accepted and rejected
    /// requests in the hours that start in `from..to`, per period and key;
    /// needs the admin token or a `tenet:admin` key of the tenant.
    ///
    /// The range may cover at most 31 days. Counts reach the server's
    /// store at each usage flush, so the latest seconds are missing.
    ///
    /// ```no_run
    /// # async fn run(client: tenet_client::Client, tenant: tenet_core::TenantId)
    /// # -> tenet_client::Result<()> {
    /// use time::macros::datetime;
    ///
    /// let from = datetime!(2026-12-01 00:00 UTC);
    /// let to = datetime!(2026-12-02 00:00 UTC);
    /// let usage = client
    ///     .usage(tenant, from, to, tenet_core::Granularity::Hour)
    ///     .await?;
    /// println!("{} accepted", usage.totals.accepted);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn usage(
        &self,
        tenant: TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
        granularity: Granularity,
    ) -> Result<UsageResponse> {
        let path = format!(
            "tenants/{tenant}/usage?{}&granularity={}",
            self.range_query("usage", tenant, from, to)?,
            granularity.as_str()
        );
        self.call(Method::GET, &path).send().await
    }

    /// `GET /tenants/{id}/usage/export`: returns one record per key and
    /// hour with requests in `from..to`, oldest first; needs the admin
    /// token or a `tenet:admin` key of the tenant.
    ///
    /// A record's `event_id` depends on the tenant, key and hour only, so
    /// an hour exported twice has the same id both times.
    pub async fn export_usage(
        &self,
        tenant: TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<UsageRecord>> {
        let query = self.range_query("usage/export", tenant, from, to)?;
        let path = format!("tenants/{tenant}/usage/export?{query}");
        let call = self.call(Method::GET, &path);
        let request = format!("GET {}{path}", self.base_url());
        let text = call.send_text().await?;
        text.lines()
            .map(|line| {
                serde_json::from_str(line).map_err(|err| Error::UnexpectedResponse {
                    request: request.clone(),
                    status: reqwest::StatusCode::OK,
                    error: None,
                    detail: format!("invalid usage record: {err}"),
                })
            })
            .collect()
    }

    /// `GET /healthz`: succeeds while the server process serves requests.
    pub async fn health(&self) -> Result<HealthResponse> {
        self.call(Method::GET, "healthz").send().await
    }

    /// `GET /readyz`: succeeds when the server's store responds; a server
    /// that is not ready is [`Error::Unavailable`].
    ///
    /// [`Error::Unavailable`]: crate::Error::Unavailable
    pub async fn ready(&self) -> Result<HealthResponse> {
        self.call(Method::GET, "readyz").send().await
    }

    /// `GET /metrics`: the server's metrics in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        self.call(Method::GET, "metrics").send_text().await
    }
}

impl Client {
    /// Formats `from` and `to` as query parameters of a usage route, in
    /// UTC so that no `+` offset needs percent-encoding.
    fn range_query(
        &self,
        route: &str,
        tenant: TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<String> {
        let format = |name: &str, at: OffsetDateTime| {
            at.to_offset(UtcOffset::UTC)
                .format(&Rfc3339)
                .map_err(|err| Error::InvalidQuery {
                    request: format!("GET {}tenants/{tenant}/{route}", self.base_url()),
                    reason: format!("{name} {at} has no RFC 3339 form: {err}"),
                })
        };
        Ok(format!(
            "from={}&to={}",
            format("from", from)?,
            format("to", to)?
        ))
    }
}

/// Page size of the listing methods: the server's maximum.
const PAGE_LIMIT: usize = 100;

/// Appends `limit` and `cursor` to a listing path. The cursor goes in as
/// the server sent it, because the server's cursors contain only URL-safe
/// characters and the server does not percent-decode them.
fn page_path(path: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(cursor) => format!("{path}?limit={PAGE_LIMIT}&cursor={cursor}"),
        None => format!("{path}?limit={PAGE_LIMIT}"),
    }
}

/// A verification request whose copy of the key is wiped on drop, also
/// when the request future is cancelled.
///
/// NOTE: reqwest serializes the body into a buffer of its own, which is not
/// wiped; only this copy is.
struct WipedVerifyRequest(VerifyRequest);

impl Drop for WipedVerifyRequest {
    fn drop(&mut self) {
        self.0.key.zeroize();
    }
}
