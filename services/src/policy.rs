//! Role-based access control in one place: who ([`Principal`]) may do what ([`Action`]) to a resource
//! owned by whom. Every operation of the auth, users and content services calls [`authorize`] before it
//! touches state; the gateway may call it too (channels, dead letters) so no rule lives anywhere else.
//!
//! Collaborators: `tokens` (a verified access token becomes a `Principal`), every service module.

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

/// A role carried in access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every registered user.
    User,
    /// Operators: may act on any user's resources and list users.
    Admin,
}

impl Role {
    /// The role's name in tokens and JSON (`user`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

/// The authenticated caller: a verified token's subject and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The user id (UUIDv7 string).
    pub user_id: String,
    /// Granted roles.
    pub roles: Vec<Role>,
}

impl Principal {
    /// A principal with these roles.
    pub fn new(user_id: impl Into<String>, roles: Vec<Role>) -> Self {
        Self { user_id: user_id.into(), roles }
    }

    /// True when the principal has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// True when the principal is an admin.
    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }
}

/// Everything a caller can ask to do. `resource_owner` in [`authorize`] is the user the resource belongs
/// to (the user itself for user actions, the author for content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create an account (anonymous).
    Register,
    /// Exchange credentials or a refresh token for tokens (anonymous).
    Login,
    /// Revoke a refresh token (anonymous: holding the token is the credential).
    Logout,
    /// Read a user's profile (any signed-in user; email only for self or admin, see `users`).
    ReadUser,
    /// Change a user's profile (self or admin).
    UpdateUser,
    /// Delete a user (self or admin).
    DeleteUser,
    /// List and search users (admin).
    ListUsers,
    /// Follow or unfollow someone, as oneself (any signed-in user).
    Follow,
    /// Create content (any signed-in user).
    CreateContent,
    /// Read and search content (any signed-in user).
    ReadContent,
    /// Change content (author or admin).
    UpdateContent,
    /// Delete content (author or admin).
    DeleteContent,
    /// Read one's own feed (any signed-in user).
    ReadFeed,
    /// Publish to a channel (admin).
    PublishChannel,
    /// See and replay dead-lettered deliveries (admin).
    ManageDeadLetters,
    /// Kill a supervised actor through the operator endpoint (admin).
    KillActor,
    /// See the cluster's members through the operator endpoint (admin).
    ViewCluster,
}

/// Who may do an action.
enum Rule {
    Anyone,
    SignedIn,
    OwnerOrAdmin,
    Admin,
}

fn rule(action: Action) -> Rule {
    match action {
        Action::Register | Action::Login | Action::Logout => Rule::Anyone,
        Action::ReadUser | Action::Follow | Action::CreateContent | Action::ReadContent | Action::ReadFeed => {
            Rule::SignedIn
        }
        Action::UpdateUser | Action::DeleteUser | Action::UpdateContent | Action::DeleteContent => Rule::OwnerOrAdmin,
        Action::ListUsers | Action::PublishChannel | Action::ManageDeadLetters | Action::KillActor => Rule::Admin,
        Action::ViewCluster => Rule::Admin,
    }
}

/// The one access check. `principal` is `None` for anonymous callers. `resource_owner` is the owning
/// user id for owner-scoped actions (ignored otherwise; an owner-scoped action without an owner is only
/// allowed to admins).
///
/// Errors: `Unauthorized` when a signed-in principal is needed and missing; `Forbidden` when the
/// principal lacks the role or ownership.
pub fn authorize(principal: Option<&Principal>, action: Action, resource_owner: Option<&str>) -> Result<()> {
    let rule = rule(action);
    if matches!(rule, Rule::Anyone) {
        return Ok(());
    }
    let Some(p) = principal else {
        return Err(ServiceError::Unauthorized { reason: "sign-in required" });
    };
    // A token without any role grants nothing.
    if !p.has(Role::User) && !p.is_admin() {
        return Err(ServiceError::Forbidden);
    }
    let allowed = match rule {
        Rule::Anyone | Rule::SignedIn => true,
        Rule::OwnerOrAdmin => p.is_admin() || resource_owner.is_some_and(|owner| owner == p.user_id),
        Rule::Admin => p.is_admin(),
    };
    if allowed { Ok(()) } else { Err(ServiceError::Forbidden) }
}

/// The signed-in principal, or `Unauthorized` (for operations that act as the caller).
pub fn require(principal: Option<&Principal>) -> Result<&Principal> {
    principal.ok_or(ServiceError::Unauthorized { reason: "sign-in required" })
}

#[cfg(test)]
mod tests;
