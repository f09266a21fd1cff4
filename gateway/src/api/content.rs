//! `/api/v1/content` and `/api/v1/feed`: create, read, change and delete items (author or admin), search
//! by author, tag and words, and the caller's feed. Changing or deleting someone else's item is 403 (the
//! item's existence is not secret: any signed-in user may read it); an unknown id is 404.

use crate::api::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use troupe_services::{ContentItem, ContentPatch, ContentQuery, FeedQuery, NewContent, Page};

use super::{Body, PathParam, QueryParams, Trace};
use crate::{ApiError, Authenticated, GatewayState, Problem};

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/api/v1/content", get(list).post(create))
        .route("/api/v1/content/{id}", get(get_item).patch(update).delete(delete))
        .route("/api/v1/feed", get(feed))
}

/// Publish an item; the author's followers are notified.
#[utoipa::path(post, path = "/api/v1/content", tag = "content", security(("bearer" = [])),
    request_body = NewContent,
    responses((status = 201, body = ContentItem), (status = 400, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn create(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    Body(new): Body<NewContent>,
) -> Result<(StatusCode, Json<ContentItem>), ApiError> {
    let item = s.clients()?.content.create(trace.ctx(Some(p)), new).await?;
    s.written();
    Ok((StatusCode::CREATED, Json(item)))
}

/// One item.
#[utoipa::path(get, path = "/api/v1/content/{id}", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "Content id (UUID)")),
    responses((status = 200, body = ContentItem), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn get_item(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
) -> Result<Json<ContentItem>, ApiError> {
    Ok(Json(s.clients()?.content.get(trace.ctx(Some(p)), id).await?))
}

/// Change an item (author or admin).
#[utoipa::path(patch, path = "/api/v1/content/{id}", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "Content id (UUID)")), request_body = ContentPatch,
    responses((status = 200, body = ContentItem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn update(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
    Body(patch): Body<ContentPatch>,
) -> Result<Json<ContentItem>, ApiError> {
    let item = s.clients()?.content.update(trace.ctx(Some(p)), id, patch).await?;
    s.written();
    Ok(Json(item))
}

/// Delete an item (author or admin).
#[utoipa::path(delete, path = "/api/v1/content/{id}", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "Content id (UUID)")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    s.clients()?.content.delete(trace.ctx(Some(p)), id).await?;
    s.written();
    Ok(StatusCode::NO_CONTENT)
}

/// Search items by author, tag and words of the title or body, newest first.
#[utoipa::path(get, path = "/api/v1/content", tag = "content", security(("bearer" = [])),
    params(("author" = Option<String>, Query, description = "Author id"),
        ("tag" = Option<String>, Query, description = "Tag"),
        ("q" = Option<String>, Query, description = "Words in the title or body"),
        ("limit" = Option<usize>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = Page<ContentItem>), (status = 400, body = Problem)))]
pub(crate) async fn list(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    QueryParams(q): QueryParams<ContentQuery>,
) -> Result<Json<Page<ContentItem>>, ApiError> {
    Ok(Json(s.clients()?.content.list(trace.ctx(Some(p)), q).await?))
}

/// Items of the authors the caller follows, newest first.
#[utoipa::path(get, path = "/api/v1/feed", tag = "content", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = Page<ContentItem>), (status = 400, body = Problem)))]
pub(crate) async fn feed(
    State(s): State<GatewayState>,
    Authenticated(p): Authenticated,
    trace: Trace,
    QueryParams(q): QueryParams<FeedQuery>,
) -> Result<Json<Page<ContentItem>>, ApiError> {
    Ok(Json(s.clients()?.content.feed(trace.ctx(Some(p)), q).await?))
}
