//! `troupe-storage`: the one `Store` API through which services, sessions, pipeline checkpoints and
//! cluster leases keep their state — a sorted map of partitions `(table, partition key, clustering key) →
//! bytes` over three backends: fjall (embedded, default), PostgreSQL (shared, small clusters) and
//! ScyllaDB (scale-out, cargo feature `scylla`).
//!
//! Collaborators: `troupe-config` (which backend, where). Used by `troupe-actors` and everything above it.
//! The API and backends land with the storage issue; until then this crate only reserves its place in
//! the dependency order.
