//! `troupe-services`: the domain services of the multi-service reference system — users, auth,
//! content and notifications — each a supervised actor behind a `ServiceRef`, keeping state in the
//! `Store` and emitting domain events through the store outbox in the same atomic write.
//!
//! Layout: `auth` (register, login, refresh rotation, logout), `users` (profiles, admin directory,
//! follows), `content` (items, word/tag/author indexes, feed), `policy` (the one RBAC check), `tokens`
//! (JWT access tokens, refresh-token material), `password` (argon2id on the blocking pool), `common`
//! (caller context, pages, cursors, event staging), `error` (`ServiceError`), `runtime` (the actors'
//! request dispatch, the supervisor spec and the typed clients), `events` and `schema` (contracts shared
//! with the notification service and the bus).
//!
//! The gateway uses: [`DomainServices`] (build, `supervisor_spec()`, `tokens()`), [`Clients`] (typed
//! clients found in the registry), [`Tokens::verify`] (bearer token → [`Principal`]), [`Ctx`], and
//! [`ServiceError::kind`] for problem types.
//!
//! Collaborators: `troupe-actors` (supervision, `ServiceRef`, the event bus and channels),
//! `troupe-storage` (state, outbox), `troupe-config`. The gateway is the only caller that speaks HTTP.

pub mod auth;
pub mod common;
pub mod content;
pub mod error;
pub mod events;
pub mod notifications;
pub mod password;
pub mod policy;
pub mod runtime;
pub mod schema;
pub mod tokens;
pub mod users;

pub use auth::{AuthClient, AuthSettings, LoginRequest, RefreshRequest, RegisterRequest, TokenPair};
pub use common::{Ctx, Page};
pub use content::{ContentClient, ContentItem, ContentPatch, ContentQuery, FeedQuery, NewContent};
pub use error::ServiceError;
pub use policy::{Action, Principal, Role, authorize};
pub use runtime::{Clients, DomainServices};
pub use tokens::{AuthError, JwtKey, TokenVerifier, Tokens};
pub use users::{User, UserPatch, UserQuery, UsersClient};

#[cfg(test)]
mod testkit;
