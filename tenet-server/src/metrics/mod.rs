//! Prometheus metrics, served by `GET /metrics` in the text format 0.0.4.
//!
//! Request and verification metrics are counted here as requests finish.
//! The cache, Redis invalidation and connection pool metrics are counted by
//! `tenet-core` in plain atomics, which [`collector`] reads at scrape time.
//!
//! Label values come from fixed sets only: route templates (never the raw
//! path), a fixed list of methods, status classes, outcomes and pool
//! names. No key, tenant name, id or path ever becomes a label value, which
//! also keeps the number of series bounded.

use std::sync::OnceLock;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tenet_core::{Rejection, Tenet};

mod collector;

/// `Content-Type` of the `/metrics` response.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the request duration histogram's buckets, in seconds.
const REQUEST_DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Route templates that get a pre-resolved request metric handle, with
/// `unmatched` last. A template missing here is still counted, through a
/// `Family` lookup per request.
const ROUTE_TEMPLATES: [&str; 16] = [
    "/tenants",
    "/tenants/{id}",
    "/tenants/{id}/suspend",
    "/tenants/{id}/resume",
    "/tenants/{id}/audit",
    "/tenants/{id}/limits",
    "/tenants/{id}/keys",
    "/tenants/{id}/keys/{key_id}",
    "/tenants/{id}/keys/{key_id}/rotate",
    "/tenants/{id}/keys/{key_id}/limit",
    "/protected",
    "/verify",
    "/healthz",
    "/readyz",
    "/metrics",
    "unmatched",
];

/// Method label values, in the order of [`method_index`].
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// Status class label values, in the order of [`status_class_index`].
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Number of request metric handle slots: one per route template, method
/// and status class.
const REQUEST_SLOTS: usize = ROUTE_TEMPLATES.len() * METHODS.len() * STATUS_CLASSES.len();

/// Labels of the request metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// The route template, such as `/tenants/{id}/keys`, or `unmatched`.
    route: &'static str,
    method: &'static str,
    /// `2xx`, `4xx` and so on.
    status_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The outcome of verifying one presented API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Valid,
    /// Not a Tenet key; rejected by parsing alone.
    Malformed,
    /// Well-formed, but never issued.
    Unknown,
    Revoked,
    /// The store could not be asked, so nothing was concluded.
    Unavailable,
    /// Issued with an expiry that has passed.
    Expired,
    /// Valid, but without a scope that the route requires.
    MissingScope,
    /// Valid, but its tenant is suspended.
    TenantSuspended,
}

impl Verification {
    const ALL: [Verification; 8] = [
        Verification::Valid,
        Verification::Malformed,
        Verification::Unknown,
        Verification::Revoked,
        Verification::Unavailable,
        Verification::Expired,
        Verification::MissingScope,
        Verification::TenantSuspended,
    ];

    /// Classifies the result of [`Tenet::verify`].
    pub fn of<T>(result: &tenet_core::Result<T>) -> Self {
        match result {
            Ok(_) => Verification::Valid,
            Err(tenet_core::Error::Rejected(Rejection::Malformed)) => Verification::Malformed,
            Err(tenet_core::Error::Rejected(Rejection::Revoked)) => Verification::Revoked,
            Err(tenet_core::Error::Rejected(Rejection::Expired)) => Verification::Expired,
            Err(tenet_core::Error::Rejected(Rejection::MissingScope)) => Verification::MissingScope,
            Err(tenet_core::Error::Rejected(Rejection::TenantSuspended { .. })) => {
                Verification::TenantSuspended
            }
            Err(tenet_core::Error::Rejected(_)) => Verification::Unknown,
            Err(_) => Verification::Unavailable,
        }
    }

    /// Returns the `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Valid => "valid",
            Verification::Malformed => "malformed",
            Verification::Unknown => "unknown",
            Verification::Revoked => "revoked",
            Verification::Unavailable => "unavailable",
            Verification::Expired => "expired",
            Verification::MissingScope => "missing_scope",
            Verification::TenantSuspended => "tenant_suspended",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of checking one request against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOutcome {
    /// Within every enforced limit and the quota.
    Allowed,
    /// Over an enforced rate limit, so rejected with 429 `rate_limited`.
    RateLimited,
    /// Over the monthly quota, so rejected with 429 `quota_exceeded`.
    QuotaExceeded,
    /// Allowed, but over a shadow limit, which only counts.
    ShadowRejected,
    /// A client address over its limit of failed authentications.
    AuthFailuresLimited,
}

impl LimitOutcome {
    const ALL: [LimitOutcome; 5] = [
        LimitOutcome::Allowed,
        LimitOutcome::RateLimited,
        LimitOutcome::QuotaExceeded,
        LimitOutcome::ShadowRejected,
        LimitOutcome::AuthFailuresLimited,
    ];

    /// Returns the `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitOutcome::Allowed => "allowed",
            LimitOutcome::RateLimited => "rate_limited",
            LimitOutcome::QuotaExceeded => "quota_exceeded",
            LimitOutcome::ShadowRejected => "shadow_rejected",
            LimitOutcome::AuthFailuresLimited => "auth_failures_limited",
        }
    }
}

/// Every metric of one server, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// The `requests` and `request_duration` series of each label set,
    /// taken from the families on first use. The handles share their
    /// values with the families, so a request counted through a handle
    /// skips the families' lock and hash, and a label set that no request
    /// has used yet still has no series.
    request_handles: Box<[OnceLock<RequestHandles>]>,
    /// One counter per [`Verification`], in [`Verification::ALL`] order,
    /// so that counting takes no lookup.
    verifications: [Counter; Verification::ALL.len()],
    /// One counter per [`LimitOutcome`], in [`LimitOutcome::ALL`] order.
    limit_outcomes: [Counter; 5],
    /// 1 while rate limits fall back to this process because Redis fails.
    limiter_fallback: Gauge<i64, AtomicI64>,
    ready: Gauge<i64, AtomicI64>,
}

impl Metrics {
    /// Registers every metric; the `tenet-core` ones read `tenet` at scrape
    /// time.
    pub fn new(tenet: Tenet) -> Self {
        let mut registry = Registry::default();

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tenet_http_requests",
            "HTTP requests served, by route template, method and status class",
            requests.clone(),
        );
        let request_duration: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_DURATION_BUCKETS));
        registry.register(
            "tenet_http_request_duration_seconds",
            "Time from reading a request head to building its response, in seconds",
            request_duration.clone(),
        );

        let outcomes = Family::<OutcomeLabels, Counter>::default();
        let verifications = Verification::ALL.map(|outcome| {
            outcomes
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        registry.register(
            "tenet_verifications",
            "Presented API keys verified, by outcome",
            outcomes,
        );

        let limit_family = Family::<OutcomeLabels, Counter>::default();
        let limit_outcomes = LimitOutcome::ALL.map(|outcome| {
            limit_family
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        registry.register(
            "tenet_rate_limit_decisions",
            "Requests checked against rate limits and quotas, by outcome; \
             shadow_rejected counts requests that a shadow limit would have rejected",
            limit_family,
        );
        let limiter_fallback = Gauge::default();
        registry.register(
            "tenet_rate_limit_fallback",
            "1 while rate limits are enforced per replica because Redis fails, else 0",
            limiter_fallback.clone(),
        );

        let ready = Gauge::default();
        registry.register(
            "tenet_ready",
            "1 while /readyz returns 200, 0 while it returns 503; set by each /readyz \
             and /metrics request",
            ready.clone(),
        );
        registry.register(
            "tenet_build",
            "The running tenet-server version, always 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(collector::CoreCollector::new(tenet)));

        Self {
            registry,
            requests,
            request_duration,
            request_handles: (0..REQUEST_SLOTS).map(|_| OnceLock::new()).collect(),
            verifications,
            limit_outcomes,
            limiter_fallback,
            ready,
        }
    }

    /// Counts one finished request. `route` is the route template or
    /// `unmatched`.
    pub fn observe_request(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = method_index(method);
        let status_class = status_class_index(status);
        let Some(route_index) = ROUTE_TEMPLATES.iter().position(|known| *known == route) else {
            let labels = RequestLabels {
                route,
                method: METHODS[method],
                status_class: STATUS_CLASSES[status_class],
            };
            self.requests.get_or_create(&labels).inc();
            self.request_duration
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
            return;
        };

        let slot = (route_index * METHODS.len() + method) * STATUS_CLASSES.len() + status_class;
        let handles = self.request_handles[slot].get_or_init(|| {
            let labels = RequestLabels {
                route: ROUTE_TEMPLATES[route_index],
                method: METHODS[method],
                status_class: STATUS_CLASSES[status_class],
            };
            RequestHandles {
                requests: self.requests.get_or_create(&labels).clone(),
                duration: self.request_duration.get_or_create(&labels).clone(),
            }
        });
        handles.requests.inc();
        handles.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one verification of a presented key.
    pub fn observe_verification(&self, outcome: Verification) {
        self.verifications[outcome.index()].inc();
    }

    /// Counts one limit decision.
    pub fn observe_limit(&self, outcome: LimitOutcome) {
        self.limit_outcomes[outcome as usize].inc();
    }

    /// Records whether rate limits currently fall back to this process.
    pub fn set_limiter_fallback(&self, fallback: bool) {
        self.limiter_fallback.set(i64::from(fallback));
    }

    /// Records whether `/readyz` returns 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            // Writing to a String cannot fail, so only an encoder that
            // reports an error of its own gets here.
            tracing::error!(error = %err, "failed to encode the metrics");
        }
        text
    }
}

/// The two request series of one label set.
#[derive(Debug)]
struct RequestHandles {
    requests: Counter,
    duration: Histogram,
}

/// Maps a method to an index into [`METHODS`], so that clients cannot
/// create series with made-up methods.
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Maps a status to an index into [`STATUS_CLASSES`].
fn status_class_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let method = Method::from_bytes(b"BREW").expect("valid method token");

        assert_eq!(METHODS[method_index(&method)], "other");
        assert_eq!(METHODS[method_index(&Method::DELETE)], "DELETE");
    }

    #[test]
    fn status_classes_cover_every_code() {
        let cases = [
            (100, "1xx"),
            (204, "2xx"),
            (308, "3xx"),
            (431, "4xx"),
            (503, "5xx"),
            (599, "5xx"),
        ];

        for (code, class) in cases {
            let status = StatusCode::from_u16(code).expect("valid status");
            assert_eq!(STATUS_CLASSES[status_class_index(status)], class, "{code}");
        }
    }

    #[test]
    fn every_route_template_has_handle_slots() {
        let paths = [
            "/tenants",
            "/tenants/t",
            "/tenants/t/suspend",
            "/tenants/t/resume",
            "/tenants/t/audit",
            "/tenants/t/keys",
            "/tenants/t/keys/k",
            "/tenants/t/keys/k/rotate",
            "/protected",
            "/verify",
            "/healthz",
            "/readyz",
            "/metrics",
        ];

        for path in paths {
            let route = crate::routes::Route::from_path(path).expect("known path");
            assert!(
                ROUTE_TEMPLATES.contains(&route.template()),
                "{}",
                route.template()
            );
        }
    }

    #[test]
    fn verification_results_map_to_outcomes() {
        let cases: [(tenet_core::Result<()>, &str); 5] = [
            (Ok(()), "valid"),
            (
                Err(tenet_core::Error::Rejected(Rejection::Malformed)),
                "malformed",
            ),
            (
                Err(tenet_core::Error::Rejected(Rejection::Unknown)),
                "unknown",
            ),
            (
                Err(tenet_core::Error::Rejected(Rejection::Revoked)),
                "revoked",
            ),
            (
                Err(tenet_core::Error::unavailable("timed out")),
                "unavailable",
            ),
        ];

        for (result, outcome) in cases {
            assert_eq!(Verification::of(&result).as_str(), outcome);
        }
    }
}
