//! `/api/v1/notifications`: the caller's notifications (newest first, optionally unread only), marking one
//! or all read. Always the caller's own: another user's notification id is 404.

use crate::api::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use troupe_services::notifications::NotificationPage;
use troupe_services::{Action, authorize};

use super::{PathParam, QueryParams};
use crate::{ApiError, Authenticated, GatewayState, Problem};

/// Default page size of the notification list.
const DEFAULT_LIMIT: usize = 20;

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .route("/api/v1/notifications/read-all", post(read_all))
        .route("/api/v1/notifications/{id}/read", post(mark_read))
}

/// Query of `GET /notifications`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    unread: Option<bool>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// Answer of `POST /notifications/read-all`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReadAll {
    /// How many notifications were unread.
    marked: u64,
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(("unread" = Option<bool>, Query, description = "Only unread ones"),
        ("limit" = Option<usize>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = NotificationPage), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub(crate) async fn list(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    // Reading one's own notifications needs what reading one's feed needs: a signed-in user.
    authorize(Some(&p), Action::ReadFeed, None)?;
    let client = s.notification_client()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    Ok(Json(client.list(&p.user_id, q.unread.unwrap_or(false), limit, q.cursor.as_deref()).await?))
}

/// Mark one notification read (idempotent).
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "Notification id")),
    responses((status = 204), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn mark_read(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    authorize(Some(&p), Action::ReadFeed, None)?;
    s.notification_client()?.mark_read(&p.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mark all the caller's notifications read.
#[utoipa::path(post, path = "/api/v1/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = ReadAll), (status = 503, body = Problem)))]
pub(crate) async fn read_all(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
) -> Result<Json<ReadAll>, ApiError> {
    authorize(Some(&p), Action::ReadFeed, None)?;
    let marked = s.notification_client()?.read_all(&p.user_id).await?;
    Ok(Json(ReadAll { marked }))
}
