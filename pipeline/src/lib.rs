//! `troupe-pipeline`: the real-time data pipeline — sources, a durable partition log, partition actors
//! that validate, transform and aggregate in windows, sinks, DLQ and checkpoints.
//!
//! Collaborators: `troupe-actors` (partition actors under supervision), `troupe-storage` (log,
//! checkpoints), `troupe-cluster` (partition ownership). Lands with the pipeline issue; empty until then.
