//! The crate's one error enum.

use std::path::PathBuf;

/// Every way a [`crate::Store`] operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row, aggregate or lease does not exist (or has expired).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A condition did not hold (CAS, put-if-absent, expected event version). `current` is the
    /// version of the row the condition was checked against (0 = absent); for `append_events`, the
    /// aggregate's current version.
    #[error("conflict: current version is {current}")]
    Conflict {
        /// Current version (0 = absent).
        current: u64,
    },
    /// A lease is held by another owner and has not expired.
    #[error("lease {name:?} is held by {owner:?} until {expires_at_ms} ms")]
    LeaseHeld {
        /// Lease name.
        name: String,
        /// Current holder.
        owner: String,
        /// When it expires (clock milliseconds).
        expires_at_ms: u64,
    },
    /// The lease was taken over by someone else (its fencing token moved on) or released.
    #[error("lease {name:?} was lost (token {token} is no longer current)")]
    LeaseLost {
        /// Lease name.
        name: String,
        /// The stale token.
        token: u64,
    },
    /// The backend cannot serve now (I/O failure, writer stopped, server down). Retryable.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// Bytes in the store cannot be decoded.
    #[error("corrupt data in table {table:?} at key {key}: {reason}")]
    CorruptData {
        /// Table (internal tables start with `_troupe_`).
        table: String,
        /// Partition and clustering key, readable.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Misconfiguration or misuse: bad table name, bad URL, data dir of another format, dir locked.
    #[error("bad store configuration: {reason}")]
    BadConfig {
        /// Why.
        reason: String,
    },
    /// The data directory carries another format version.
    #[error("store at {} has format version {found}, this build reads version {expected}", path.display())]
    FormatVersion {
        /// The format file.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// What this build expects.
        expected: u32,
    },
    /// Another process (or another open in this process) holds the data directory.
    #[error("store at {} is in use by another process (or is already open)", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
}

impl StoreError {
    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable { reason: reason.to_string() }
    }

    pub(crate) fn bad_config(reason: impl Into<String>) -> Self {
        Self::BadConfig { reason: reason.into() }
    }
}

/// Why encoded key bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad key encoding: {0}")]
pub struct KeyDecodeError(pub &'static str);

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
