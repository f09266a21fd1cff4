//! The one place where errors become HTTP: every crate's error enum converts into [`ApiError`], and
//! [`ApiError::status`] decides the status. Bodies are RFC 9457 `application/problem+json` with a stable
//! `type` (`urn:troupe:problem:<kind>`), `title`, `status`, a client-safe `detail`, the `instance` (the
//! request path) and the `request_id`. Internal detail (paths of files, SQL, panics, handler errors) is
//! logged, never sent; bad input is always 4xx.
//!
//! Statuses: domain `invalid`/malformed path or query → 400, bad token or no token → 401 (with
//! `WWW-Authenticate: Bearer`), `forbidden` → 403, `not-found` → 404, `conflict` → 409, oversized body →
//! 413, wrong content type → 415, well-formed JSON of the wrong shape (unknown field, wrong type, missing
//! field) → 422, rate limited → 429 + `Retry-After`, a failed dead-letter replay → 502, a service that is
//! down, restarting, overloaded or whose breaker is open → 503 + `Retry-After`, timeouts → 504.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use troupe_actors::bus::BusError;
use troupe_services::ServiceError;
use troupe_services::notifications::NotificationError;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`about:blank` or `urn:troupe:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What happened in this occurrence, safe to show clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path this occurrence belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request's `x-request-id`, for correlating with logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Seconds until a retry may succeed (mirrors `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401.
    #[serde(skip)]
    #[schema(ignore)]
    pub challenge: Option<&'static str>,
}

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the actor runtime.
    #[error(transparent)]
    Actors(#[from] troupe_actors::Error),
    /// From a domain service (auth, users, content).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// From the notification service.
    #[error(transparent)]
    Notifications(#[from] NotificationError),
    /// From the event bus (dead letters).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// From the cluster (membership, sharded entities).
    #[error(transparent)]
    Cluster(#[from] troupe_cluster::ClusterError),
    /// No such route or resource.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body, path or query cannot be used (status, kind, client-safe detail).
    #[error("{2}")]
    Input(StatusCode, &'static str, String),
    /// No credentials were sent where they are required.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The bearer token was refused.
    #[error("unauthorized: {0}")]
    InvalidToken(&'static str),
    /// The operation is disabled on this node.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The caller used up its rate limit.
    #[error("rate limit exceeded; retry later")]
    RateLimited {
        /// When a token is available again.
        retry_after: Duration,
    },
    /// The route's backing service is not part of this node.
    #[error("{0} is not configured on this node")]
    NotConfigured(&'static str),
    /// The request did not complete within `http.request_timeout`.
    #[error("the request did not complete within {}ms", .0.as_millis())]
    RequestTimeout(Duration),
}

/// A client-safe status, kind and detail for a bus error (`None` detail: do not show).
fn bus_error(e: &BusError) -> (StatusCode, &'static str, Option<String>) {
    match e {
        BusError::BadRequest(_) | BusError::BadId(_) => (StatusCode::BAD_REQUEST, "bad-request", Some(e.to_string())),
        BusError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found", Some(e.to_string())),
        BusError::UnknownSubscriber { .. } => (StatusCode::CONFLICT, "conflict", Some(e.to_string())),
        BusError::ReplayFailed(_) => (
            StatusCode::BAD_GATEWAY,
            "replay-failed",
            Some("the subscriber failed again; the dead letter was kept".to_owned()),
        ),
        BusError::Store(s) if s.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
    }
}

/// Status, kind and whether a retry may succeed, for a cluster error.
fn cluster_error(e: &troupe_cluster::ClusterError) -> (StatusCode, &'static str, bool) {
    use troupe_cluster::ClusterError as C;
    match e {
        C::UnknownNode(_) | C::UnknownKind(_) => (StatusCode::NOT_FOUND, "not-found", false),
        C::NotLive { .. } => (StatusCode::CONFLICT, "conflict", false),
        C::ShardUnavailable { .. } | C::Deadline(_) | C::Mesh(_) | C::Stopped | C::Fenced(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", true)
        }
        C::Store(s) if s.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", true),
        C::Entity(_) => (StatusCode::UNPROCESSABLE_ENTITY, "entity-refused", false),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", false),
    }
}

fn actor_status(e: &troupe_actors::Error) -> StatusCode {
    use troupe_actors::Error as A;
    match e {
        A::Unavailable { .. } | A::Overloaded { .. } | A::Stopped { .. } => StatusCode::SERVICE_UNAVAILABLE,
        A::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        A::NotFound { .. } => StatusCode::NOT_FOUND,
        A::Ambiguous { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn actor_kind(e: &troupe_actors::Error) -> &'static str {
    use troupe_actors::Error as A;
    match e {
        A::Unavailable { .. } => "unavailable",
        A::Overloaded { .. } => "overloaded",
        A::Stopped { .. } => "stopped",
        A::Timeout { .. } => "timeout",
        A::NotFound { .. } => "not-found",
        A::Ambiguous { .. } => "ambiguous",
        _ => "internal",
    }
}

fn actor_retry_after(e: &troupe_actors::Error) -> Option<Duration> {
    use troupe_actors::Error as A;
    match e {
        A::Unavailable { retry_after, .. } => Some(*retry_after),
        A::Overloaded { .. } | A::Stopped { .. } => Some(Duration::from_secs(1)),
        _ => None,
    }
}

impl ApiError {
    /// The HTTP status for this error — the only such mapping in Troupe.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Actors(e) => actor_status(e),
            Self::Service(e) => match e {
                ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
                ServiceError::Conflict { .. } => StatusCode::CONFLICT,
                ServiceError::Forbidden => StatusCode::FORBIDDEN,
                ServiceError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
                ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
                ServiceError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::Unavailable { .. } | ServiceError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Notifications(e) => match e {
                NotificationError::NotFound { .. } => StatusCode::NOT_FOUND,
                NotificationError::BadRequest(_) => StatusCode::BAD_REQUEST,
                NotificationError::Service(a) => actor_status(a),
                NotificationError::Store(s) if s.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Bus(e) => bus_error(e).0,
            Self::Cluster(e) => cluster_error(e).0,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Input(status, ..) => *status,
            Self::Unauthorized(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Actors(a) => actor_kind(a),
            Self::NotFound(_) => "not-found",
            Self::Service(e) => match e.kind() {
                "not_found" => "not-found",
                "rate_limited" => "rate-limited",
                other => other,
            },
            Self::Notifications(e) => match e {
                NotificationError::NotFound { .. } => "not-found",
                NotificationError::BadRequest(_) => "bad-request",
                NotificationError::Service(a) => actor_kind(a),
                NotificationError::Store(s) if s.is_retryable() => "unavailable",
                _ => "internal",
            },
            Self::Bus(e) => bus_error(e).1,
            Self::Cluster(e) => cluster_error(e).1,
            Self::BadRequest(_) => "bad-request",
            Self::Input(_, kind, _) => kind,
            Self::Unauthorized(_) => "unauthorized",
            Self::InvalidToken(_) => "invalid-token",
            Self::Forbidden(_) => "forbidden",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RateLimited { .. } => "rate-limited",
            Self::NotConfigured(_) => "not-configured",
            Self::RequestTimeout(_) => "request-timeout",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Actors(a) | Self::Notifications(NotificationError::Service(a)) => actor_retry_after(a),
            Self::Service(ServiceError::Overloaded) => Some(Duration::from_secs(1)),
            Self::Service(e) => e.retry_after(),
            Self::Notifications(NotificationError::Store(s)) | Self::Bus(BusError::Store(s)) if s.is_retryable() => {
                Some(Duration::from_secs(1))
            }
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::Cluster(e) if cluster_error(e).2 => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// What a client may be told. 5xx errors other than the retryable kinds carry no detail.
    fn detail(&self, status: StatusCode) -> Option<String> {
        let retryable = match self {
            Self::RequestTimeout(_) | Self::NotConfigured(_) => true,
            Self::Cluster(e) => cluster_error(e).2,
            Self::Actors(e) | Self::Notifications(NotificationError::Service(e)) => e.is_retryable(),
            Self::Service(e) => {
                e.retry_after().is_some() || matches!(e, ServiceError::Overloaded | ServiceError::Timeout)
            }
            _ => false,
        };
        match self {
            Self::Bus(e) => bus_error(e).2,
            // The actor path is internal; say which kind of failure only.
            Self::Actors(_) | Self::Notifications(NotificationError::Service(_)) if status.is_server_error() => {
                retryable.then(|| "the service is temporarily unavailable; retry later".to_owned())
            }
            _ if status.is_server_error() && !retryable => None,
            _ => Some(self.to_string()),
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let challenge = match self {
            Self::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            _ if status == StatusCode::UNAUTHORIZED => Some("Bearer"),
            _ => None,
        };
        Problem {
            kind: format!("urn:troupe:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(status),
            instance: None,
            request_id: None,
            // Retry-After is whole seconds; round up so clients never retry early.
            retry_after: self.retry_after().map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            challenge,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, kind) = match &r {
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-body"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed-json"),
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            _ => (StatusCode::BAD_REQUEST, "bad-body"),
        };
        Self::Input(status, kind, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => {
                Self::Input(StatusCode::BAD_REQUEST, "invalid-path", e.body_text())
            }
            // A route declared without the parameters its handler extracts: a bug, not bad input.
            other => {
                tracing::error!(error = %other.body_text(), "path extraction misconfigured");
                Self::Input(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".to_owned())
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::Input(StatusCode::BAD_REQUEST, "invalid-query", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            let internal = match &self {
                Self::Service(e) => e.internal_detail(),
                _ => None,
            };
            tracing::warn!(error = %self, internal = ?internal, status = problem.status, "request failed");
        }
        problem.into_response()
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.request_id.is_none() && self.instance.is_none() {
            let _ = REQUEST.try_with(|r| {
                self.request_id.clone_from(&r.id);
                self.instance = Some(r.path.clone());
            });
        }
        let retry = self.retry_after;
        let challenge = self.challenge;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(c) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

/// Fallback for unknown routes.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// Fallback for known routes called with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

tokio::task_local! {
    /// The request being served on this task (set by [`edge`]).
    static REQUEST: RequestInfo;
}

/// What a problem document needs to know about the request it answers.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    id: Option<String>,
    path: String,
}

/// The gateway's edge middleware, one layer for speed (each tower/`from_fn` layer is cloned per request
/// and boxes or moves the whole future below it, so request id, tracing span, problem context, body limit,
/// trace context and deadline share this one):
/// - takes the client's `x-request-id` or makes one (UUIDv7), and echoes it on the response;
/// - runs the request in an `http` span (method, path, request id, trace id) and logs its end (debug,
///   or error for a 5xx, as tower-http's `TraceLayer` did);
/// - makes the request id and path available to every problem document built while it is served;
/// - refuses a declared `Content-Length` above `max_body` with a 413 problem before the body is read
///   (bodies without a length are cut off by `DefaultBodyLimit` in the extractors, also 413);
/// - continues or starts the W3C trace (`crate::api::begin_trace`, echoed as `traceparent`);
/// - applies the per-request deadline (504 problem).
pub(crate) async fn edge(
    timeout: Duration,
    max_body: usize,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let request_id = match req.headers().get(crate::REQUEST_ID_HEADER) {
        Some(v) => v.clone(),
        None => {
            let v = new_request_id();
            req.headers_mut().insert(crate::REQUEST_ID_HEADER, v.clone());
            v
        }
    };
    let id = request_id.to_str().ok().map(str::to_owned);
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = id.as_deref().unwrap_or("-"),
        trace_id = tracing::field::Empty
    );
    let info = RequestInfo { id, path: req.uri().path().to_owned() };
    let served = REQUEST.scope(info, async move {
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return ApiError::Input(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                format!("the request body exceeds {max_body} bytes"),
            )
            .into_response();
        }
        let traceparent = crate::api::begin_trace(&mut req);
        let mut resp = match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError::RequestTimeout(timeout).into_response(),
        };
        if let Some(tp) = traceparent {
            resp.headers_mut().insert(crate::api::TRACEPARENT_HEADER, tp);
        }
        resp
    });
    let mut resp = served.instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    span.in_scope(|| {
        if resp.status().is_server_error() {
            tracing::error!(status, latency_ms, "response failed");
        } else {
            tracing::debug!(status, latency_ms, "finished processing request");
        }
    });
    resp.headers_mut().entry(crate::REQUEST_ID_HEADER).or_insert(request_id);
    resp
}

/// A new request id: a UUIDv7, formatted without an intermediate `String`.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}
