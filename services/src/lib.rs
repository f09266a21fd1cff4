//! `troupe-services`: the domain services of the multi-service reference system — users, auth,
//! content and notifications — each a supervised actor behind a `ServiceRef`.
//!
//! Collaborators: `troupe-actors` (supervision, `ServiceRef`), `troupe-storage` (state),
//! `troupe-cluster` (placement). Lands with the multi-service issue; empty until then.
