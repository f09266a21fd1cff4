//! `/api/v1/users`: the caller's profile, profiles by id, changes and deletion (self or admin), the admin
//! directory, follows. Access rules live in `troupe_services::authorize`; a non-admin listing users
//! gets 403, changing someone else's profile 403, an unknown id 404.

use crate::api::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use troupe_services::{Page, User, UserPatch, UserQuery};

use super::{Body, PathParam, QueryParams, Trace};
use crate::{ApiError, Authenticated, GatewayState, Problem};

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/api/v1/users", get(list))
        .route("/api/v1/users/me", get(me))
        .route("/api/v1/users/{id}", get(get_user).patch(update).delete(delete))
        .route("/api/v1/users/{id}/follow", post(follow).delete(unfollow))
}

/// The signed-in user's profile (with email).
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = Problem)))]
pub(crate) async fn me(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
) -> Result<Json<User>, ApiError> {
    Ok(Json(s.clients()?.users.me(trace.ctx(Some(p))).await?))
}

/// A user's profile (email only for self or admin).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 200, body = User), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_user(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(s.clients()?.users.get(trace.ctx(Some(p)), id).await?))
}

/// Change a profile (self or admin).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")), request_body = UserPatch,
    responses((status = 200, body = User), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn update(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
    Body(patch): Body<UserPatch>,
) -> Result<Json<User>, ApiError> {
    let user = s.clients()?.users.update(trace.ctx(Some(p)), id, patch).await?;
    s.written();
    Ok(Json(user))
}

/// Delete a user (self or admin).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    s.clients()?.users.delete(trace.ctx(Some(p)), id).await?;
    s.written();
    Ok(StatusCode::NO_CONTENT)
}

/// List and search users (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "Email or name prefix"),
        ("limit" = Option<usize>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = Page<User>), (status = 403, body = Problem)))]
pub(crate) async fn list(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    QueryParams(q): QueryParams<UserQuery>,
) -> Result<Json<Page<User>>, ApiError> {
    Ok(Json(s.clients()?.users.list(trace.ctx(Some(p)), q).await?))
}

/// Follow a user (as the caller).
#[utoipa::path(post, path = "/api/v1/users/{id}/follow", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 204), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn follow(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    s.clients()?.users.follow(trace.ctx(Some(p)), id).await?;
    s.written();
    Ok(StatusCode::NO_CONTENT)
}

/// Stop following a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}/follow", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn unfollow(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    s.clients()?.users.unfollow(trace.ctx(Some(p)), id).await?;
    s.written();
    Ok(StatusCode::NO_CONTENT)
}
