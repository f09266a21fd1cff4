//! `troupe-storage`: the one `Store` API through which services, sessions, pipeline checkpoints and
//! cluster leases keep their state — a sorted map of partitions `(table, partition key, clustering key) →
//! bytes` with conditional writes, TTL ("expires at"), event logs, snapshots, leases with fencing tokens
//! and a transactional outbox.
//!
//! Layout: [`Store`] (`store.rs`) is the handle callers use; it builds events, snapshots, leases and the
//! outbox on the three primitives of the object-safe [`Backend`] trait (`get`, `scan`, atomic `commit` of
//! a [`WriteBatch`]). Backends: fjall (`fjall_backend.rs`, embedded, default, group commit), PostgreSQL
//! (`postgres_backend.rs`, shared), ScyllaDB (`scylla_backend.rs`, cargo feature `scylla`, scale-out). Keys are tuples
//! ([`Key`]) in an order-preserving byte encoding (`key.rs`); time comes from an injectable [`Clock`]. `conformance.rs` (cargo feature
//! `conformance`, always in this crate's tests) is the suite every backend must pass.
//!
//! Why a trait object and not an enum of backends: backends live behind cargo features (`scylla`) and in
//! their own modules, tests can wrap a backend (fault injection), and one boxed future per operation is
//! noise next to an fsync or a network round trip.
//!
//! Collaborators: `troupe-config` (which backend, where). Used by `troupe-actors` and everything above it.

mod backend;
mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod fjall_backend;
mod key;
mod model;
mod postgres_backend;
#[cfg(feature = "scylla")]
mod scylla_backend;
mod store;
pub mod typed;

pub use backend::Backend;
pub use clock::{Clock, ManualClock, SystemClock, duration_ms};
pub use error::{KeyDecodeError, Result, StoreError};
pub use fjall_backend::{FORMAT_VERSION as FJALL_FORMAT_VERSION, FjallBackend, GroupCommitStats};
pub use key::{Key, KeyPart};
pub use model::{
    Condition, Cursor, Direction, EVENTS_TABLE, Expected, LEASES_TABLE, OUTBOX_TABLE, Op, Page, Row, SNAPSHOTS_TABLE,
    Scan, WriteBatch,
};
pub use postgres_backend::{PostgresBackend, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION};
#[cfg(feature = "scylla")]
pub use scylla_backend::{
    BatchShape as ScyllaBatchShape, DEFAULT_KEYSPACE as SCYLLA_DEFAULT_KEYSPACE,
    SCHEMA_VERSION as SCYLLA_SCHEMA_VERSION, ScyllaBackend, ScyllaTarget, classify as scylla_batch_shape,
    parse_uri as parse_scylla_uri,
};
pub use store::{Event, Lease, OutboxEntry, Snapshot, Store, check_table};

#[cfg(test)]
mod tests;
