//! `troupe-cluster`: membership and failure detection for a Troupe cluster. Each node writes its own row
//! (id, incarnation, addresses, status, heartbeat) into a membership table in the shared store, keeps a
//! local view of every other row, dials every live member over ractor_cluster's mesh (cookie auth,
//! Isolated mode: we dial each member ourselves), pings each peer over that mesh with a deadline, and
//! marks a silent peer `suspect` then `down` within a configured bound. A node declared down that comes
//! back rejoins with a new, greater incarnation. Placement (rendezvous hashing, fenced shard leases) and
//! cross-node fan-out build on this view.
//!
//! Layout: [`membership`] (the stored rows and the table), [`detector`] (the pure failure-detector time
//! logic), `mesh` (ractor_cluster node server, the remotable pinger actor), `tls` (mutual TLS for every
//! mesh connection when certificates are configured),
//! [`placement`] (rendezvous hashing, shard leases, fenced writes), [`sharding`] (the shard manager,
//! sharded entities and the node router),
//! `runtime` (the one task that drives heartbeat, view, mesh and detector; [`ClusterHandle`]).
//!
//! Collaborators: `troupe-storage` (membership table), `troupe-config` (`[cluster]`), `troupe-actors`
//! (envelope, health probe), ractor_cluster (TCP mesh). Used by the binary and the gateway.

mod error;

pub mod detector;
pub mod link;
pub mod membership;
mod mesh;
pub mod placement;
pub mod relay;
mod runtime;
pub mod sharding;
mod tls;

pub use detector::{Detector, DetectorConfig, PeerHealth};
pub use error::{ClusterError, Result};
pub use link::{Broadcast, LinkConfig, Links, Request};
pub use membership::{Member, MembershipTable, NodeStatus};
pub use relay::ChannelRelay;
pub use relay::sessions::relay_revocations;
pub use runtime::{ClusterHandle, ClusterProbe, ClusterSettings, ClusterView, MemberView};
pub use sharding::{Entity, EntityContext, EntityFactory, EntityKinds, ShardSettings, Sharding, UpSet};
pub use tls::TlsFiles;
