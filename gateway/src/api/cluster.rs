//! The cluster operator endpoints (admin when authentication is configured; 503 when the node is not
//! clustered):
//! - `GET /api/v1/cluster/nodes`: this node's view of the cluster — every member's id, incarnation,
//!   addresses, stored status, last heartbeat, the shards it owns, and this node's own judgement of
//!   and round trip to each peer;
//! - `POST /api/v1/cluster/nodes/{id}/drain`: asks member `id` (any node may receive it) to hand its
//!   shards over, close its WebSocket clients (1001, reconnect elsewhere), leave and exit (202);
//! - `GET`/`POST /api/v1/cluster/presence/{user}`: the `presence` sharded entity of a user (on which
//!   nodes they are connected), reached wherever it lives; the answer names the owner node, the shard
//!   and the fencing token.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use troupe_cluster::sharding::presence::{self, PresenceMsg, PresenceReply};
use troupe_cluster::{ClusterView, MemberView};
use troupe_services::{Action, authorize};

use super::{Body, PathParam};
use crate::auth::MaybeAuthenticated;
use crate::{ApiError, GatewayState, Problem};

/// How long a presence request waits for the entity (retrying while its shard moves).
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/api/v1/cluster/nodes", get(nodes))
        .route("/api/v1/cluster/nodes/{id}/drain", post(drain))
        .route("/api/v1/cluster/presence/{user}", get(get_presence).post(set_presence))
}

/// One member.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterMember {
    /// Stable node id.
    id: String,
    /// Node name (`node.name`).
    name: String,
    /// Grows every time the node (re)joins.
    incarnation: u64,
    /// Mesh address peers dial.
    cluster_addr: String,
    /// HTTP API address.
    http_addr: String,
    /// `joining`, `up`, `suspect`, `leaving` or `down` (as stored in the membership table).
    status: String,
    /// Who set the status and why.
    reason: String,
    /// The member's heartbeat counter.
    heartbeat: u64,
    /// Last heartbeat (ms since the Unix epoch, the member's clock).
    last_heartbeat_ms: u64,
    /// Whether this entry is the node answering.
    is_self: bool,
    /// This node's judgement: `alive`, `suspect` or `down` (absent for itself).
    local_health: Option<String>,
    /// Whether this node has a mesh session to the member.
    connected: bool,
    /// This node's last ping round trip to the member, in milliseconds.
    rtt_ms: Option<f64>,
    /// The shards the member holds (this node: now; others: as they last published it, for their
    /// current incarnation); absent when unknown.
    owned_shards: Option<Vec<u32>>,
}

/// The members as this node sees them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterNodes {
    /// The answering node's id.
    node_id: String,
    /// The answering node's incarnation.
    incarnation: u64,
    /// The answering node's status.
    status: Option<String>,
    /// This node first, then by id.
    members: Vec<ClusterMember>,
}

impl From<MemberView> for ClusterMember {
    fn from(m: MemberView) -> Self {
        Self {
            id: m.node_id,
            name: m.name,
            incarnation: m.incarnation,
            cluster_addr: m.cluster_addr,
            http_addr: m.http_addr,
            status: m.status.as_str().to_owned(),
            reason: m.reason,
            heartbeat: m.heartbeat,
            last_heartbeat_ms: m.last_heartbeat_ms,
            is_self: m.is_self,
            local_health: m.local_health.map(|h| h.as_str().to_owned()),
            connected: m.connected,
            rtt_ms: m.rtt_ms,
            owned_shards: None,
        }
    }
}

impl From<ClusterView> for ClusterNodes {
    fn from(v: ClusterView) -> Self {
        Self {
            node_id: v.node_id,
            incarnation: v.incarnation,
            status: v.status.map(|s| s.as_str().to_owned()),
            members: v.members.into_iter().map(ClusterMember::from).collect(),
        }
    }
}

/// The cluster's members as this node sees them.
#[utoipa::path(get, path = "/api/v1/cluster/nodes", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = ClusterNodes), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem, description = "this node is not clustered")))]
pub(crate) async fn nodes(
    State(s): State<GatewayState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
) -> Result<Json<ClusterNodes>, ApiError> {
    if s.api().tokens.is_some() {
        authorize(caller.as_ref(), Action::ViewCluster, None)?;
    }
    let cluster = s.cluster.as_ref().ok_or(ApiError::NotConfigured("cluster"))?;
    let mut out: ClusterNodes = cluster.view().into();
    if let Some(sharding) = &s.sharding {
        let published = sharding.published_owners().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the published shard owners");
            HashMap::new()
        });
        for m in &mut out.members {
            m.owned_shards = if m.is_self {
                Some(sharding.owned().into_iter().collect())
            } else {
                published.get(&m.id).filter(|o| o.incarnation == m.incarnation).map(|o| o.shards.clone())
            };
        }
    }
    Ok(Json(out))
}

/// A drain request's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DrainAccepted {
    /// The member asked to drain.
    node_id: String,
    /// Its incarnation (the one that drains; a restart of it does not).
    incarnation: u64,
}

/// Asks a member to drain: hand its shards over, close its WebSocket clients with 1001 (reconnect
/// elsewhere), leave the cluster and exit. Answers once the request is stored; the member acts on it
/// within a heartbeat.
#[utoipa::path(post, path = "/api/v1/cluster/nodes/{id}/drain", tag = "cluster", security(("bearer" = [])),
    params(("id" = String, Path, description = "member node id")),
    responses((status = 202, body = DrainAccepted), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "no such member"),
        (status = 409, body = Problem, description = "the member is down or leaving"),
        (status = 503, body = Problem, description = "this node is not clustered")))]
pub(crate) async fn drain(
    State(s): State<GatewayState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    PathParam(id): PathParam<String>,
) -> Result<(StatusCode, Json<DrainAccepted>), ApiError> {
    if s.api().tokens.is_some() {
        authorize(caller.as_ref(), Action::ViewCluster, None)?;
    }
    let cluster = s.cluster.as_ref().ok_or(ApiError::NotConfigured("cluster"))?;
    let incarnation = cluster.request_drain(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(DrainAccepted { node_id: id, incarnation })))
}

/// A user's presence entity, as its owner answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Presence {
    /// The user.
    user: String,
    /// Node id → open connections on it.
    nodes: std::collections::BTreeMap<String, u32>,
    /// The node hosting the entity (owner of its shard).
    owner: String,
    /// The user's shard.
    shard: u32,
    /// The fencing token of the owner's shard lease.
    token: u64,
}

impl From<PresenceReply> for Presence {
    fn from(r: PresenceReply) -> Self {
        Self { user: r.user, nodes: r.state.nodes, owner: r.owner, shard: r.shard, token: r.token }
    }
}

/// A connection opened or closed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceChange {
    /// The node the connection is on.
    node: String,
    /// `true`: opened; `false`: closed.
    connected: bool,
}

async fn presence_call(
    s: &GatewayState,
    caller: Option<&troupe_services::Principal>,
    user: &str,
    msg: PresenceMsg,
) -> Result<Json<Presence>, ApiError> {
    if s.api().tokens.is_some() {
        authorize(caller, Action::ViewCluster, None)?;
    }
    let sharding = s.sharding.as_ref().ok_or(ApiError::NotConfigured("cluster"))?;
    if user.is_empty() || user.len() > 255 {
        return Err(ApiError::BadRequest("user must be 1 to 255 bytes".to_owned()));
    }
    Ok(Json(presence::presence(sharding, user, &msg, PRESENCE_TIMEOUT).await?.into()))
}

/// Reads a user's presence from its entity, wherever it lives.
#[utoipa::path(get, path = "/api/v1/cluster/presence/{user}", tag = "cluster", security(("bearer" = [])),
    params(("user" = String, Path, description = "user id")),
    responses((status = 200, body = Presence), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem, description = "not clustered, or the shard had no owner in time")))]
pub(crate) async fn get_presence(
    State(s): State<GatewayState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    PathParam(user): PathParam<String>,
) -> Result<Json<Presence>, ApiError> {
    presence_call(&s, caller.as_ref(), &user, PresenceMsg::Get).await
}

/// Records a connection opened or closed; answered once the entity wrote it (fenced) to the store.
#[utoipa::path(post, path = "/api/v1/cluster/presence/{user}", tag = "cluster", security(("bearer" = [])),
    params(("user" = String, Path, description = "user id")), request_body = PresenceChange,
    responses((status = 200, body = Presence), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem, description = "not clustered, or the shard had no owner in time")))]
pub(crate) async fn set_presence(
    State(s): State<GatewayState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    PathParam(user): PathParam<String>,
    Body(change): Body<PresenceChange>,
) -> Result<Json<Presence>, ApiError> {
    let msg = if change.connected {
        PresenceMsg::Connected { node: change.node }
    } else {
        PresenceMsg::Disconnected { node: change.node }
    };
    presence_call(&s, caller.as_ref(), &user, msg).await
}
