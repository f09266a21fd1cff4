//! The OpenAPI 3 document of the REST API (utoipa, from the `#[utoipa::path]` attributes on the handlers in
//! `crate::api`) served at `/api/docs/openapi.json`, and the Swagger UI at `/api/docs` from assets
//! compiled into the binary (`utoipa-swagger-ui` with the `vendored` feature: nothing is downloaded at
//! build or run time).
//!
//! Collaborators: `crate::api` (the handlers), `troupe-services` (request/response schemas).

use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::GatewayState;
use crate::api::{auth, cluster, content, dead_letters, notifications, users};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/docs/openapi.json";
/// Where the docs UI is served.
pub const DOCS_PATH: &str = "/api/docs";

/// One dead letter (schema only; the bus's `DeadLetter` is serialized).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeadLetterDoc {
    /// `{outbox_id}-{subscriber}`.
    id: String,
    /// The outbox entry's id.
    outbox_id: u64,
    /// The subscriber that failed.
    subscriber: String,
    /// The entry's topic (event type).
    topic: String,
    /// The payload: embedded JSON when it is JSON.
    payload: serde_json::Value,
    /// Attempts made.
    attempts: u32,
    /// The last attempt's error.
    last_error: String,
    /// First failure (ms since the Unix epoch).
    first_failure_ms: u64,
    /// Last failure (ms since the Unix epoch).
    last_failure_ms: u64,
}

/// A page of dead letters (schema only).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeadLetterPageDoc {
    /// Oldest first.
    items: Vec<DeadLetterDoc>,
    /// Cursor of the next page.
    next: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Troupe API", description = "Users, auth, content and notifications. Every error is \
        application/problem+json with a stable `type` (urn:troupe:problem:<kind>)."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout,
        users::me, users::get_user, users::update, users::delete, users::list, users::follow, users::unfollow,
        content::create, content::get_item, content::update, content::delete, content::list, content::feed,
        notifications::list, notifications::mark_read, notifications::read_all,
        dead_letters::list, dead_letters::replay, dead_letters::discard,
        cluster::nodes, cluster::drain, cluster::get_presence, cluster::set_presence,
    ),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "users"), (name = "content"), (name = "notifications"), (name = "system"),
        (name = "cluster"))
)]
pub(crate) struct ApiDoc;

/// The document as JSON (what `/api/docs/openapi.json` serves).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_default()
}

/// `/api/docs` (UI, vendored assets) and `/api/docs/openapi.json`.
pub(crate) fn routes() -> Router<GatewayState> {
    Router::from(SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, ApiDoc::openapi()))
}
