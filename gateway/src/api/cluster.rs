//! `GET /api/v1/cluster/nodes` (admin when authentication is configured): this node's view of the
//! cluster — every member's id, incarnation, addresses, stored status, last heartbeat, and this node's
//! own judgement of and round trip to each peer. 503 when the node is not clustered.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use troupe_cluster::{ClusterView, MemberView};
use troupe_services::{Action, authorize};

use crate::auth::MaybeAuthenticated;
use crate::{ApiError, GatewayState, Problem};

pub(crate) fn routes() -> Router<GatewayState> {
    Router::new().route("/api/v1/cluster/nodes", get(nodes))
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
    Ok(Json(cluster.view().into()))
}
