//! `/api/v1/system/dead-letters` (admin): event deliveries that failed every attempt, with replay and
//! discard. Non-admins get 403 (the route is documented, so its existence is no secret).

use crate::api::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::Deserialize;
use troupe_actors::bus::DeadLetterPage;
use troupe_services::{Action, authorize};

use super::{PathParam, QueryParams};
use crate::openapi::DeadLetterPageDoc;
use crate::{ApiError, Authenticated, GatewayState, Problem};

/// Default page size of the dead-letter list.
const DEFAULT_LIMIT: usize = 50;

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/api/v1/system/dead-letters", get(list))
        .route("/api/v1/system/dead-letters/{id}/replay", post(replay))
        .route("/api/v1/system/dead-letters/{id}", delete(discard))
}

/// Query of `GET /system/dead-letters`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// Dead letters, oldest first.
#[utoipa::path(get, path = "/api/v1/system/dead-letters", tag = "system", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query, description = "1..=1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = DeadLetterPageDoc), (status = 403, body = Problem)))]
pub(crate) async fn list(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    authorize(Some(&p), Action::ManageDeadLetters, None)?;
    let page = s.bus()?.dead_letters(q.limit.unwrap_or(DEFAULT_LIMIT), q.cursor.as_deref()).await?;
    Ok(Json(page))
}

/// Deliver a dead letter once more; removed on success, kept (502) when the subscriber fails again.
#[utoipa::path(post, path = "/api/v1/system/dead-letters/{id}/replay", tag = "system", security(("bearer" = [])),
    params(("id" = String, Path, description = "`{outbox_id}-{subscriber}`")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 502, body = Problem)))]
pub(crate) async fn replay(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    authorize(Some(&p), Action::ManageDeadLetters, None)?;
    s.bus()?.replay(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a dead letter without delivering it.
#[utoipa::path(delete, path = "/api/v1/system/dead-letters/{id}", tag = "system", security(("bearer" = [])),
    params(("id" = String, Path, description = "`{outbox_id}-{subscriber}`")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn discard(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    authorize(Some(&p), Action::ManageDeadLetters, None)?;
    s.bus()?.discard(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
