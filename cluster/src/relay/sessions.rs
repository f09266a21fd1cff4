//! Revoked sessions across the cluster: the revoked-session set of the token verifier is per process, so
//! a node that revokes a session (logout, refresh-token reuse) broadcasts a `session.revoked` envelope
//! on the [`SESSIONS_PORT`] link port and every other node applies it to its own set. A peer whose link
//! is full or that is not connected at that moment misses it (counted, warned) and learns it from the
//! store at its next auth-service start.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::link::Links;
use crate::mesh::{count_decode_failure, open, seal};

/// The link port revocations travel on.
pub const SESSIONS_PORT: &str = "sessions";
const KIND: &str = "session.revoked";

/// One revoked session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRevoked {
    pub sid: String,
    /// Seconds since the epoch.
    pub revoked_at: u64,
}

/// What a node calls for each session it revokes: `(session id, revoked at in seconds)`.
pub type RevocationHook = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// Applies the revocations peers broadcast with `apply`, and returns the hook that broadcasts this
/// node's own (install it where the node revokes sessions).
pub fn relay_revocations(links: &Links, apply: impl Fn(&str, u64) + Send + Sync + 'static) -> RevocationHook {
    links.register(SESSIONS_PORT, move |from, bytes| match open::<SessionRevoked>(KIND, &bytes) {
        Ok(m) => {
            metrics::counter!("troupe_cluster_sessions_revoked_received_total").increment(1);
            apply(&m.sid, m.revoked_at);
        }
        Err(e) => {
            count_decode_failure("session revoked", &e.to_string());
            tracing::debug!(peer = from, "undecodable session revocation");
        }
    });
    let links = links.clone();
    Arc::new(move |sid, revoked_at| match seal(KIND, sid, &SessionRevoked { sid: sid.to_owned(), revoked_at }) {
        Ok(bytes) => {
            let report = links.broadcast(SESSIONS_PORT, &Bytes::from(bytes));
            if !report.full.is_empty() {
                metrics::counter!("troupe_cluster_sessions_revoked_dropped_total").increment(report.full.len() as u64);
                tracing::warn!(peers = ?report.full, "cluster link full: a session revocation did not reach these peers");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode a session revocation"),
    })
}
