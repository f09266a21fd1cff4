//! [`ServiceError`]: the one error enum of the domain services (auth, users, content). Each variant has a
//! stable machine-readable [`kind`](ServiceError::kind) the gateway turns into a problem `type`, and a
//! client-safe `Display` (internal detail is kept apart, for logs only).
//!
//! Collaborators: `troupe-storage` (`StoreError` → `Internal`/`Unavailable`), `troupe-actors` (call
//! failures keep their `retry_after`), the gateway (`gateway/src/error.rs` maps kinds to statuses).

use std::time::Duration;

use troupe_storage::StoreError;

/// How long a client is told to wait when the store is unavailable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Every way a domain operation can fail. `Display` is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The thing does not exist (or the caller may not know it exists).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`user`, `content`, …).
        what: &'static str,
    },
    /// The request conflicts with current state (duplicate email, concurrent update).
    #[error("conflict: {reason}")]
    Conflict {
        /// Why (client-safe).
        reason: &'static str,
    },
    /// Authenticated, but not allowed to do this.
    #[error("forbidden")]
    Forbidden,
    /// Not authenticated: missing, bad or expired credentials or token.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why (client-safe, never says which part of a credential was wrong).
        reason: &'static str,
    },
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field (`email`, `cursor`, …).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Too many requests; retry after the given time.
    #[error("rate limited")]
    RateLimited {
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// The service (or its store) cannot serve now; retry after the given time.
    #[error("service unavailable")]
    Unavailable {
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// Too many calls in flight to the service.
    #[error("service overloaded")]
    Overloaded,
    /// The service did not answer in time.
    #[error("service timed out")]
    Timeout,
    /// A bug or corrupt data. `detail` is for logs only and never part of `Display`.
    #[error("internal error")]
    Internal {
        /// What went wrong (log it; do not send it to clients).
        detail: String,
    },
}

impl ServiceError {
    /// Stable machine-readable kind (`not_found`, `conflict`, `forbidden`, `unauthorized`, `invalid`,
    /// `rate_limited`, `unavailable`, `overloaded`, `timeout`, `internal`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Forbidden => "forbidden",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Invalid { .. } => "invalid",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Internal { .. } => "internal",
        }
    }

    /// When a retry may succeed (`RateLimited`, `Unavailable`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Internal detail for logs (`Internal` only).
    pub fn internal_detail(&self) -> Option<&str> {
        match self {
            Self::Internal { detail } => Some(detail),
            _ => None,
        }
    }

    /// An `Invalid` error.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }

    /// An `Internal` error with log detail.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal { detail: detail.to_string() }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } => Self::Unavailable { retry_after: STORE_RETRY_AFTER },
            StoreError::Conflict { .. } => Self::Conflict { reason: "concurrent update; retry" },
            other => Self::internal(other),
        }
    }
}

impl From<troupe_actors::Error> for ServiceError {
    fn from(e: troupe_actors::Error) -> Self {
        use troupe_actors::Error as E;
        match e {
            E::Unavailable { retry_after, .. } => Self::Unavailable { retry_after },
            E::Overloaded { .. } => Self::Overloaded,
            E::Timeout { .. } => Self::Timeout,
            // The actor stopped or crashed before replying: the supervisor restarts it.
            E::Stopped { .. } => Self::Unavailable { retry_after: Duration::from_millis(100) },
            other => Self::internal(other),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
