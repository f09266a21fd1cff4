//! The REST API under `/api/v1`: one submodule per area (`auth`, `users`, `content`, `notifications`,
//! `dead_letters`) whose handlers turn HTTP into typed-client calls, plus what they share — the domain
//! handles attached to [`GatewayState`] ([`ApiState`], set with the `with_*` builders), the HTTP settings
//! ([`HttpSettings`]: CORS origins, trusted proxies, rate limits), W3C `traceparent` propagation, and the
//! body/path/query extractors whose rejections become problem documents.
//!
//! Every handler builds a [`Ctx`] from the caller ([`Authenticated`](crate::Authenticated)) and the
//! request's trace context ([`Trace`]) and calls the service's typed client; after a successful write that
//! appended to the store outbox it wakes the event bus (`bus.notify()`), because the services commit but do
//! not know the bus.
//!
//! Collaborators: `troupe-services` (clients, `Ctx`, `authorize`), `troupe-actors` (`EventBus` for dead
//! letters), `crate::auth` (bearer tokens), `crate::limits` (rate limits, applied to every route here),
//! `crate::error` (problem documents).

pub(crate) mod auth;
pub(crate) mod cluster;
pub(crate) mod content;
pub(crate) mod dead_letters;
pub(crate) mod notifications;
pub(crate) mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};
use troupe_actors::bus::EventBus;
use troupe_services::notifications::NotificationClient;
use troupe_services::{Clients, Ctx, Principal, Tokens};

use crate::limits::{IpCidr, RateLimitSettings, RateLimits};
use crate::{ApiError, GatewayState};

/// The W3C trace-context header, read from requests and echoed on every response.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Settings of the HTTP layer beyond [`GatewayConfig`](crate::GatewayConfig) (the node maps its config
/// onto them). `Default`: no cross-origin access, no trusted proxies, default rate limits.
#[derive(Clone, Debug, Default)]
pub struct HttpSettings {
    /// Origins allowed to call the API from a browser (`https://app.example.com`; `*` for any). Empty:
    /// same-origin only (no CORS headers are sent).
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (IP addresses or CIDR blocks, `10.0.0.0/8`). The client
    /// IP is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy; requests from any
    /// other peer are keyed by the socket's address.
    pub trusted_proxies: Vec<String>,
    /// Rate limits per route class.
    pub rate_limits: RateLimitSettings,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A CORS origin is not a valid header value.
    #[error("bad CORS origin {0:?}")]
    BadOrigin(String),
    /// A trusted proxy is not an IP address or CIDR block.
    #[error("bad trusted proxy {0:?}: use an IP address or CIDR block")]
    BadProxy(String),
    /// A rate is zero.
    #[error("bad rate limit for {0}: per_second and burst must be at least 1")]
    BadRate(&'static str),
}

/// What the REST API needs beyond the operator endpoints. Every handle is optional so a node without
/// the domain services still serves the operator endpoints; a route whose handle is missing answers 503.
#[derive(Clone, Default)]
pub(crate) struct ApiState {
    pub clients: Option<Clients>,
    pub notifications: Option<NotificationClient>,
    pub bus: Option<EventBus>,
    pub tokens: Option<Tokens>,
    pub cors_origins: Vec<HeaderValue>,
    pub cors_any: bool,
    pub trusted_proxies: Vec<IpCidr>,
    pub limits: Arc<RateLimits>,
}

impl GatewayState {
    /// Attaches the domain services' typed clients and the bearer-token verifier (enables `/api/v1/auth`,
    /// `/users`, `/content`, `/feed`).
    #[must_use]
    pub fn with_services(mut self, clients: Clients, tokens: Tokens) -> Self {
        let api = Arc::make_mut(&mut self.api);
        api.clients = Some(clients);
        api.tokens = Some(tokens);
        self
    }

    /// Attaches the bearer-token verifier alone (for routes that only authenticate).
    #[must_use]
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        Arc::make_mut(&mut self.api).tokens = Some(tokens);
        self
    }

    /// Attaches the notification service's client (enables `/api/v1/notifications`).
    #[must_use]
    pub fn with_notifications(mut self, client: NotificationClient) -> Self {
        Arc::make_mut(&mut self.api).notifications = Some(client);
        self
    }

    /// Attaches the event bus: woken after every successful write, and behind
    /// `/api/v1/system/dead-letters`.
    #[must_use]
    pub fn with_bus(mut self, bus: EventBus) -> Self {
        Arc::make_mut(&mut self.api).bus = Some(bus);
        self
    }

    /// Applies CORS, trusted-proxy and rate-limit settings (call before [`router`](crate::router)).
    pub fn with_http(mut self, settings: &HttpSettings) -> Result<Self, SettingsError> {
        let mut origins = Vec::new();
        let mut any = false;
        for o in &settings.cors_origins {
            if o.trim() == "*" {
                any = true;
            } else {
                origins.push(HeaderValue::from_str(o.trim()).map_err(|_| SettingsError::BadOrigin(o.clone()))?);
            }
        }
        let proxies = settings
            .trusted_proxies
            .iter()
            .map(|p| p.parse::<IpCidr>().map_err(|_| SettingsError::BadProxy(p.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let limits = RateLimits::new(&settings.rate_limits)?;
        let api = Arc::make_mut(&mut self.api);
        api.cors_origins = origins;
        api.cors_any = any;
        api.trusted_proxies = proxies;
        api.limits = Arc::new(limits);
        Ok(self)
    }

    pub(crate) fn api(&self) -> &ApiState {
        &self.api
    }

    pub(crate) fn clients(&self) -> Result<&Clients, ApiError> {
        self.api.clients.as_ref().ok_or(ApiError::NotConfigured("domain services"))
    }

    pub(crate) fn notification_client(&self) -> Result<&NotificationClient, ApiError> {
        self.api.notifications.as_ref().ok_or(ApiError::NotConfigured("notification service"))
    }

    pub(crate) fn bus(&self) -> Result<&EventBus, ApiError> {
        self.api.bus.as_ref().ok_or(ApiError::NotConfigured("event bus"))
    }

    /// Wakes the bus after a write that appended to the outbox (the services do not hold the bus).
    pub(crate) fn written(&self) {
        if let Some(bus) = &self.api.bus {
            bus.notify();
        }
    }
}

/// All `/api/v1` domain routes, with bearer authentication and rate limits on each.
pub(crate) fn routes(state: &GatewayState) -> Router<GatewayState> {
    Router::new()
        .merge(auth::routes())
        .merge(users::routes())
        .merge(content::routes())
        .merge(notifications::routes())
        .merge(dead_letters::routes())
        .merge(cluster::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::limits::middleware))
}

/// The CORS layer for the configured origins; `None` (same-origin only) when there are none.
pub(crate) fn cors_layer(state: &GatewayState) -> Option<CorsLayer> {
    let api = state.api();
    if api.cors_origins.is_empty() && !api.cors_any {
        return None;
    }
    let origin = if api.cors_any { AllowOrigin::any() } else { AllowOrigin::list(api.cors_origins.clone()) };
    let h = |s: &'static str| HeaderName::from_static(s);
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                h(crate::REQUEST_ID_HEADER),
                h(TRACEPARENT_HEADER),
            ])
            .expose_headers([
                h(crate::REQUEST_ID_HEADER),
                h(TRACEPARENT_HEADER),
                h("ratelimit"),
                h("ratelimit-policy"),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// This request's W3C trace context: the caller's trace id (or a new one) with the gateway's own span
/// id, as sent on to the services (copied into domain events) and echoed in the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext(pub String);

/// Parses a version-00 `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase,
/// ids not all zero); returns the trace id and flags.
pub(crate) fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let ok = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && nonzero(trace)
        && nonzero(parent);
    ok.then_some((trace, flags))
}

/// Appends `bytes` random bytes as lowercase hex, never all zero (ids, not secrets: a fast thread-local
/// PRNG). Runs on every request: a table lookup per nibble, no formatting machinery.
fn push_random_hex(out: &mut String, bytes: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..bytes {
        // The first byte is never zero, so the id is never all zero.
        let b = if i == 0 { fastrand::u8(1..) } else { fastrand::u8(..) };
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Continues the caller's trace (or starts one) with the gateway's own span id: records the trace id on
/// the request span, hands handlers a [`TraceContext`], and returns the `traceparent` to echo.
pub(crate) fn begin_trace(req: &mut Request) -> Option<HeaderValue> {
    let incoming = req.headers().get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
    // `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`: 55 bytes.
    let mut value = String::with_capacity(55);
    value.push_str("00-");
    match incoming {
        Some((trace, flags)) => {
            value.push_str(trace);
            value.push('-');
            push_random_hex(&mut value, 8);
            value.push('-');
            value.push_str(flags);
        }
        None => {
            push_random_hex(&mut value, 16);
            value.push('-');
            push_random_hex(&mut value, 8);
            value.push_str("-01");
        }
    }
    if let Some(trace_id) = value.get(3..35) {
        tracing::Span::current().record("trace_id", trace_id);
    }
    let header = HeaderValue::from_str(&value).ok();
    req.extensions_mut().insert(TraceContext(value));
    header
}

/// A JSON response body (`application/json`), serialized into one buffer sized for a typical API
/// document (axum's `Json` starts at 128 bytes and grows a few times for a content item).
pub(crate) struct Json<T>(pub T);

/// Initial capacity of a JSON response buffer.
const JSON_BODY_CAPACITY: usize = 1024;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut buf = Vec::with_capacity(JSON_BODY_CAPACITY);
        match serde_json::to_writer(&mut buf, &self.0) {
            Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], buf).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "response serialization failed");
                ApiError::Input(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".to_owned())
                    .into_response()
            }
        }
    }
}

/// Extractor of the request's [`TraceContext`] (`None` when the traceparent middleware did not run).
pub(crate) struct Trace(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<TraceContext>().map(|t| t.0.clone())))
    }
}

impl Trace {
    /// The call context for `principal` within this trace.
    pub(crate) fn ctx(self, principal: Option<Principal>) -> Ctx {
        Ctx { principal, traceparent: self.0 }
    }
}

/// A JSON body whose rejections (malformed JSON, unknown fields, wrong types, wrong content type, too
/// large) are problem documents.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

/// Path parameters whose rejections are problem documents.
pub(crate) struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(v) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

/// A query string whose rejections (unknown parameters, wrong types) are problem documents.
pub(crate) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

#[cfg(test)]
mod tests;
