//! Operator endpoints: liveness, readiness, Prometheus metrics and the live supervision tree.

use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use troupe_actors::{ActorInfo, BreakerState, ComponentHealth, Restart, Status};

use crate::auth::MaybeAuthenticated;
use crate::{ApiError, GatewayState};

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/system/actors", get(actors))
        .route("/api/v1/system/actors/kill", post(kill))
}

#[derive(Serialize)]
struct Live {
    status: &'static str,
    node: String,
    version: &'static str,
    uptime_ms: u128,
}

async fn live(State(s): State<GatewayState>) -> Json<Live> {
    let uptime = SystemTime::now().duration_since(s.inner.started_at).unwrap_or_default();
    Json(Live {
        status: "live",
        node: s.inner.node_name.clone(),
        version: s.inner.version,
        uptime_ms: uptime.as_millis(),
    })
}

#[derive(Serialize)]
struct ServiceHealth {
    path: String,
    status: Status,
    breaker: BreakerState,
    ready: bool,
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    node: String,
    draining: bool,
    services: Vec<ServiceHealth>,
    /// Non-actor parts (broker connection, cluster membership); a critical one that is down makes the
    /// node not ready.
    components: Vec<ComponentHealth>,
}

/// A supervised actor is ready when it runs with a closed (or probing) breaker. Temporary and
/// transient children that ended normally are not required.
fn is_ready(a: &ActorInfo) -> bool {
    match a.status {
        Status::Running => a.breaker != BreakerState::Open,
        Status::Stopped => a.restart != Restart::Permanent,
        Status::Starting | Status::Restarting | Status::Failed => false,
    }
}

async fn ready(State(s): State<GatewayState>) -> Response {
    let services: Vec<ServiceHealth> = s
        .inner
        .registry
        .snapshot()
        .into_iter()
        .map(|a| ServiceHealth { ready: is_ready(&a), path: a.path, status: a.status, breaker: a.breaker })
        .collect();
    let components = s.inner.registry.components();
    let draining = s.draining();
    let ok = !draining
        && !services.is_empty()
        && services.iter().all(|h| h.ready)
        && !components.iter().any(ComponentHealth::blocks_readiness);
    let body = Ready {
        status: if ok { "ready" } else { "not_ready" },
        node: s.inner.node_name.clone(),
        draining,
        services,
        components,
    };
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<GatewayState>) -> Response {
    s.inner.registry.publish_gauges();
    let text = s.inner.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

#[derive(Serialize)]
struct Tree {
    node: String,
    actors: Vec<ActorInfo>,
}

async fn actors(State(s): State<GatewayState>) -> Json<Tree> {
    Json(Tree { node: s.inner.node_name.clone(), actors: s.inner.registry.snapshot() })
}

#[derive(Deserialize)]
struct KillQuery {
    path: String,
}

#[derive(Serialize)]
struct Killed {
    path: String,
    killed: bool,
}

/// Kill one supervised actor, as Erlang's observer can: its supervisor restarts it per its policy.
/// Off unless `admin.allow_kill`; on a node with authentication configured, also admin-only.
async fn kill(
    State(s): State<GatewayState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    Query(q): Query<KillQuery>,
) -> Result<Json<Killed>, ApiError> {
    if !s.inner.allow_kill {
        return Err(ApiError::Forbidden("killing actors is disabled (set admin.allow_kill = true)".into()));
    }
    if s.api().tokens.is_some() {
        troupe_services::authorize(caller.as_ref(), troupe_services::Action::KillActor, None)?;
    }
    if !q.path.starts_with('/') {
        return Err(ApiError::BadRequest("path must be an absolute actor path such as /troupe/system/sampler".into()));
    }
    let slot = s.inner.registry.slot(&q.path)?;
    let cell = slot.cell();
    let killed = cell.is_some();
    if let Some(cell) = cell {
        tracing::warn!(actor = %q.path, "killed by operator");
        let id = cell.get_id();
        cell.kill();
        // Answer once the supervisor has seen the exit (bounded), so a request sent after this answer
        // never reaches the killed incarnation.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while slot.cell().is_some_and(|c| c.get_id() == id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    Ok(Json(Killed { path: q.path, killed }))
}
