//! `troupe-cluster`: membership, placement and failure detection for a Troupe cluster — nodes join through
//! seeds over ractor_cluster's mesh, heartbeat through the shared store, and own partitions and sharded
//! entities by rendezvous hashing and fenced leases.
//!
//! Collaborators: `troupe-actors` (supervision), `troupe-storage` (membership table, leases),
//! ractor_cluster (TCP mesh). Lands with the cluster issue; empty until then.
