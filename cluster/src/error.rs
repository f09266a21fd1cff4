//! The crate's one error enum.

/// Every way a cluster operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The shared store failed (unavailable, conflict that could not be resolved, corrupt row).
    #[error("membership store: {0}")]
    Store(#[from] troupe_storage::StoreError),
    /// A membership row or a mesh message could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A membership row could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The configuration cannot run a cluster (no address, no cookie, embedded store…).
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The node id file in the data dir cannot be read or written.
    #[error("node id file {path}: {reason}")]
    NodeId {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The mesh TLS files cannot be used.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// The mesh (ractor_cluster node server) could not start.
    #[error("cluster mesh: {0}")]
    Mesh(String),
    /// A conditional write kept losing to concurrent writers.
    #[error("{0}: too much contention")]
    Contention(&'static str),
    /// The link to a peer is full (the peer is slow, frozen or gone): the message was not queued.
    #[error("link to {peer} is full")]
    LinkFull {
        /// The peer's node id.
        peer: String,
    },
    /// No inbox of that peer is visible over the mesh (not connected, or this node itself).
    #[error("peer {peer} is unreachable")]
    Unreachable {
        /// The peer's node id.
        peer: String,
    },
    /// A call over the links got no answer before its deadline.
    #[error("call to {port} on {peer} timed out")]
    CallTimeout {
        /// The peer's node id.
        peer: String,
        /// The port called.
        port: String,
    },
    /// The callee answered a call with a failure.
    #[error("call to {peer} failed: {reason}")]
    CallFailed {
        /// The peer's node id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The cluster task has stopped.
    #[error("the cluster task has stopped")]
    Stopped,
    /// A sharded entity's shard has no owner able to take the message right now (moving, being
    /// acquired, owner unreachable). Retryable: the caller may send again.
    #[error("shard {shard} unavailable: {reason}")]
    ShardUnavailable {
        /// The shard.
        shard: u32,
        /// Why.
        reason: String,
    },
    /// No member has this id.
    #[error("no member {0}")]
    UnknownNode(String),
    /// The member is down or leaving: it cannot be drained.
    #[error("member {node_id} is {status}")]
    NotLive {
        /// The member.
        node_id: String,
        /// Its status.
        status: String,
    },
    /// The caller's deadline passed before the entity answered.
    #[error("no answer within the deadline (last: {0})")]
    Deadline(String),
    /// No entity kind of this name is registered on this node.
    #[error("unknown entity kind {0:?}")]
    UnknownKind(String),
    /// The entity refused or failed the message (not retried).
    #[error("entity: {0}")]
    Entity(String),
    /// A write carried a fencing token older than the stored state's: this node lost the shard.
    #[error(transparent)]
    Fenced(#[from] crate::placement::StaleToken),
}

impl ClusterError {
    /// Whether sending the same message again may succeed (the shard is moving or its owner is not
    /// reachable yet).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClusterError::ShardUnavailable { .. } | ClusterError::Mesh(_))
    }
}

/// Result with [`ClusterError`].
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
