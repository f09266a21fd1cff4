//! The one error enum of `troupe-actors`: everything a caller of a supervised actor can be told.

use std::time::Duration;

/// Errors from calls, lookups and supervision. Callers match on the kind; the gateway maps each kind
/// to one HTTP status (`Unavailable` → 503 + `Retry-After`, `Overloaded` → 503/429, `Timeout` → 504).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service's circuit is open or the service is restarting: fail fast, retry later.
    #[error("service {service} is unavailable; retry after {}ms", retry_after.as_millis())]
    Unavailable {
        /// Service name.
        service: String,
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// Too many calls are already in flight to this service.
    #[error("service {service} is overloaded ({limit} calls in flight)")]
    Overloaded {
        /// Service name.
        service: String,
        /// The admission limit that was reached.
        limit: usize,
    },
    /// The service did not answer before the deadline.
    #[error("call to {service} timed out after {}ms", timeout.as_millis())]
    Timeout {
        /// Service name.
        service: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The actor stopped (or crashed) before it replied.
    #[error("service {service} stopped before replying")]
    Stopped {
        /// Service name.
        service: String,
    },
    /// No supervised actor has this name or path.
    #[error("no actor named {name}")]
    NotFound {
        /// The name or path looked up.
        name: String,
    },
    /// More than one supervised actor has this name; look it up by path.
    #[error("actor name {name} is ambiguous; use its path")]
    Ambiguous {
        /// The name looked up.
        name: String,
    },
    /// The actor exists but takes another message type.
    #[error("actor {name} does not accept {expected}")]
    WrongMessageType {
        /// The actor looked up.
        name: String,
        /// The requested message type.
        expected: &'static str,
    },
    /// A supervisor or actor could not be started.
    #[error("could not start {path}: {reason}")]
    Spawn {
        /// Path of the actor.
        path: String,
        /// Why.
        reason: String,
    },
    /// A supervisor exceeded its restart intensity and gave up (escalated to its parent).
    #[error("supervisor {path} gave up: {restarts} restarts within {}ms", within.as_millis())]
    Escalated {
        /// Path of the supervisor.
        path: String,
        /// Restarts counted in the window.
        restarts: u32,
        /// The window.
        within: Duration,
    },
    /// An envelope could not be encoded or decoded.
    #[error(transparent)]
    Envelope(#[from] crate::envelope::EnvelopeError),
}

impl Error {
    /// True when retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Overloaded { .. } | Self::Timeout { .. } | Self::Stopped { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
