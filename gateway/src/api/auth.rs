//! `/api/v1/auth`: register, login, refresh (rotation) and logout. Anonymous routes: the credentials
//! are in the body; their rate-limit class is `auth` (per client IP).

use crate::api::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use troupe_services::{LoginRequest, RefreshRequest, RegisterRequest, TokenPair, User};

use super::{Body, Trace};
use crate::{ApiError, GatewayState, Problem};

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
}

/// Create an account. Emails listed in `auth.admin_emails` get the `admin` role.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 400, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn register(
    State(s): State<GatewayState>,
    trace: Trace,
    Body(req): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = s.clients()?.auth.register(trace.ctx(None), req).await?;
    s.written();
    Ok((StatusCode::CREATED, Json(user)))
}

/// Exchange email and password for an access token and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn login(
    State(s): State<GatewayState>,
    trace: Trace,
    Body(req): Body<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(s.clients()?.auth.login(trace.ctx(None), req).await?))
}

/// Redeem a refresh token (single use) for a new token pair.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
pub(crate) async fn refresh(
    State(s): State<GatewayState>,
    trace: Trace,
    Body(req): Body<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(s.clients()?.auth.refresh(trace.ctx(None), req.refresh_token).await?))
}

/// Revoke a refresh token (and the login it descends from).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204), (status = 401, body = Problem)))]
pub(crate) async fn logout(
    State(s): State<GatewayState>,
    trace: Trace,
    Body(req): Body<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    s.clients()?.auth.logout(trace.ctx(None), req.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
