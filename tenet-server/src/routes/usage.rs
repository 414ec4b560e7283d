//! `/tenants/{id}/usage`: a tenant's request counts, summed per period and
//! key, and exported per key and hour for billing.
//!
//! Both routes accept the admin token, or an API key of this tenant with
//! the scope `tenet:admin`, like the key routes. Counts reach the store at
//! each usage flush, so the current interval's requests are not included
//! yet.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tenet_core::api::{UsageRecord, UsageResponse};
use tenet_core::usage::{MAX_USAGE_RANGE, summarize};
use tenet_core::{Granularity, UsageRange};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::keys::authorize;
use crate::error::Error;
use crate::response::{Response, json};
use crate::setup::State;

/// `GET /tenants/{id}/usage?from=&to=&granularity=hour|day`: totals over
/// the range, and per period and key. `granularity` defaults to `hour`.
pub async fn get(
    state: &State,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (tenant, _) = authorize(state, request.headers(), tenant).await?;
    let query = UsageQuery::parse(request.uri().query())?;

    let counts = state.tenet.usage(tenant, query.range).await?;
    let (totals, periods) = summarize(&counts, query.granularity);

    let body = UsageResponse {
        tenant_id: tenant,
        from: query.range.from,
        to: query.range.to,
        granularity: query.granularity.as_str().to_owned(),
        totals,
        periods,
    };
    Ok(json(StatusCode::OK, &body))
}

/// `GET /tenants/{id}/usage/export?from=&to=`: JSON lines, one
/// [`UsageRecord`] per key and hour with requests, oldest hour first.
///
/// Each record's `event_id` depends on the tenant, key and hour only. An
/// hour that is still counting is exported again later with the same id
/// and a higher count, so importers should keep the latest record per id.
pub async fn export(
    state: &State,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Response, Error> {
    let (tenant, _) = authorize(state, request.headers(), tenant).await?;
    let query = UsageQuery::parse(request.uri().query())?;

    let counts = state.tenet.usage(tenant, query.range).await?;

    let mut lines = Vec::new();
    for count in &counts {
        serde_json::to_writer(&mut lines, &UsageRecord::from(count))
            .map_err(|err| Error::Internal(err.into()))?;
        lines.push(b'\n');
    }
    let mut response = http::Response::new(Full::new(Bytes::from(lines)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The `from`, `to` and `granularity` query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UsageQuery {
    range: UsageRange,
    granularity: Granularity,
}

impl UsageQuery {
    /// Parses the parameters from a raw query string, percent-decoding the
    /// values and ignoring other parameters. A parameter given twice is
    /// invalid, because the two values could disagree.
    fn parse(query: Option<&str>) -> Result<Self, Error> {
        let mut from = None;
        let mut to = None;
        let mut granularity = None;
        for pair in query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "from" => &mut from,
                "to" => &mut to,
                "granularity" => &mut granularity,
                _ => continue,
            };
            if slot.is_some() {
                return Err(repeated(name));
            }
            *slot = Some(percent_decode(name, value)?);
        }

        let from = parse_time("from", from)?;
        let to = parse_time("to", to)?;
        let granularity = match granularity {
            Some(text) => Granularity::parse(&text)?,
            None => Granularity::Hour,
        };
        Ok(Self {
            range: UsageRange::new(from, to)?,
            granularity,
        })
    }
}

fn repeated(name: &str) -> Error {
    let message = format!("invalid {name}: given more than once; give it once");
    if name == "granularity" {
        Error::InvalidGranularity(message)
    } else {
        Error::InvalidRange(message)
    }
}

fn parse_time(name: &str, value: Option<String>) -> Result<OffsetDateTime, Error> {
    let days = MAX_USAGE_RANGE.as_secs() / 86_400;
    let Some(value) = value else {
        return Err(Error::InvalidRange(format!(
            "missing {name}: give an RFC 3339 time such as 2026-12-01T00:00:00Z; \
             from and to may be at most {days} days apart"
        )));
    };
    OffsetDateTime::parse(&value, &Rfc3339).map_err(|_| {
        Error::InvalidRange(format!(
            "invalid {name} {value:?}: expected an RFC 3339 time such as \
             2026-12-01T00:00:00Z (percent-encode a + offset as %2B)"
        ))
    })
}

/// Decodes `%XX` escapes; a `+` stays a plus sign, as in an RFC 3339
/// offset.
fn percent_decode(name: &str, value: &str) -> Result<String, Error> {
    let invalid = || {
        let message = format!("invalid {name}: {value:?} is not valid percent-encoded UTF-8");
        if name == "granularity" {
            Error::InvalidGranularity(message)
        } else {
            Error::InvalidRange(message)
        }
    };
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = value.get(index + 1..index + 3).ok_or_else(invalid)?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn query_parses_encoded_times() {
        let query =
            "from=2026-12-01T00%3A00%3A00%2B01%3A00&to=2026-12-02T00:00:00Z&granularity=day";

        let parsed = UsageQuery::parse(Some(query)).expect("valid query");

        assert_eq!(parsed.range.from, datetime!(2026-11-30 23:00 UTC));
        assert_eq!(parsed.range.to, datetime!(2026-12-02 00:00 UTC));
        assert_eq!(parsed.granularity, Granularity::Day);
    }

    #[test]
    fn invalid_queries_are_rejected() {
        let cases = [
            ("missing to", "from=2026-12-01T00:00:00Z", "invalid_range"),
            ("missing both", "", "invalid_range"),
            (
                "not RFC 3339",
                "from=yesterday&to=2026-12-02T00:00:00Z",
                "invalid_range",
            ),
            (
                "from after to",
                "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
                "invalid_range",
            ),
            (
                "over 31 days",
                "from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z",
                "invalid_range",
            ),
            (
                "repeated from",
                "from=2026-12-01T00:00:00Z&from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z",
                "invalid_range",
            ),
            (
                "bad escape",
                "from=2026-12-01T00%3&to=2026-12-02T00:00:00Z",
                "invalid_range",
            ),
            (
                "week granularity",
                "from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z&granularity=week",
                "invalid_granularity",
            ),
        ];

        for (description, query, code) in cases {
            let err = UsageQuery::parse(Some(query)).expect_err(description);
            assert_eq!(err.parts().1, code, "{description}");
        }
    }
}
