//! `troupe-services`: the domain services of the multi-service reference system — users, auth,
//! content and notifications — each a supervised actor behind a `ServiceRef`, keeping state in the
//! `Store` and emitting domain events through the store outbox in the same atomic write.
//!
//! Collaborators: `troupe-actors` (supervision, `ServiceRef`, the event bus and channels),
//! `troupe-storage` (state, outbox), `troupe-config`. The gateway is the only caller that speaks HTTP.

pub mod events;
pub mod notifications;
pub mod schema;
