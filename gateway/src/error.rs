//! The one place where errors become HTTP: every crate's error enum converts into [`ApiError`], and
//! [`ApiError::status`] decides the status. Bodies are RFC 9457 `application/problem+json`; internal
//! detail (paths of files, SQL, panics) is logged, never sent.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize)]
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
    /// Seconds until a retry may succeed (mirrors `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the actor runtime.
    #[error(transparent)]
    Actors(#[from] troupe_actors::Error),
    /// No such route or resource.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No valid credentials (missing, invalid or expired token).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The operation is disabled on this node.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request did not complete within `http.request_timeout`.
    #[error("the request did not complete within {}ms", .0.as_millis())]
    RequestTimeout(Duration),
}

impl ApiError {
    /// The HTTP status for this error — the only such mapping in Troupe.
    pub fn status(&self) -> StatusCode {
        use troupe_actors::Error as A;
        match self {
            Self::Actors(e) => match e {
                A::Unavailable { .. } | A::Overloaded { .. } | A::Stopped { .. } => StatusCode::SERVICE_UNAVAILABLE,
                A::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                A::NotFound { .. } => StatusCode::NOT_FOUND,
                A::Ambiguous { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn kind(&self) -> &'static str {
        use troupe_actors::Error as A;
        match self {
            Self::Actors(A::Unavailable { .. }) => "unavailable",
            Self::Actors(A::Overloaded { .. }) => "overloaded",
            Self::Actors(A::Stopped { .. }) => "stopped",
            Self::Actors(A::Timeout { .. }) => "timeout",
            Self::Actors(A::NotFound { .. }) | Self::NotFound(_) => "not-found",
            Self::Actors(A::Ambiguous { .. }) => "ambiguous",
            Self::Actors(_) => "internal",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RequestTimeout(_) => "request-timeout",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Actors(troupe_actors::Error::Unavailable { retry_after, .. }) => Some(*retry_after),
            Self::Actors(troupe_actors::Error::Overloaded { .. } | troupe_actors::Error::Stopped { .. }) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The problem document for this error. 5xx errors other than the retryable kinds carry no detail.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let retryable = matches!(self, Self::RequestTimeout(_)) || matches!(self, Self::Actors(e) if e.is_retryable());
        let detail = if status.is_server_error() && !retryable { None } else { Some(self.to_string()) };
        Problem {
            kind: format!("urn:troupe:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            // Retry-After is whole seconds; round up so clients never retry early.
            retry_after: self.retry_after().map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::warn!(error = %self, status = problem.status, "request failed");
        }
        problem.into_response()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
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

/// Per-request deadline: a handler still running after `limit` is dropped and the client gets a 504
/// problem document.
pub(crate) async fn deadline(limit: Duration, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::RequestTimeout(limit).into_response(),
    }
}
