//! `troupe-gateway`: the node's single HTTP entry point. It owns routing, the middleware stack
//! (request ids, tracing, timeouts, body limits) and the one place where errors from every crate become
//! HTTP statuses and `application/problem+json` bodies. Today it serves the operator endpoints —
//! liveness, readiness, Prometheus metrics and the live supervision tree — and, once the domain
//! services are attached ([`GatewayState::with_services`] and friends), the REST API under `/api/v1`
//! (`api`), bearer authentication (`auth`), rate limits (`limits`) and the OpenAPI document (`openapi`).
//!
//! Collaborators: axum + tower-http (HTTP), `troupe-actors` (the [`Registry`] it observes and the
//! `ServiceRef`s it calls), `troupe-services` (typed clients, token verification),
//! metrics-exporter-prometheus (rendering `/metrics`).

mod api;
mod auth;
mod error;
mod limits;
mod openapi;
mod system;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use troupe_actors::Registry;

pub use api::{HttpSettings, SettingsError, TRACEPARENT_HEADER};
pub use auth::{Authenticated, MaybeAuthenticated};
pub use error::{ApiError, Problem};
pub use limits::{Rate, RateLimitSettings};
pub use openapi::{DOCS_PATH, OPENAPI_PATH, openapi_json};

/// The header carrying each request's correlation id (generated when the client sends none).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the gateway needs from the node. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
    ws: Option<ws::WsState>,
    /// The domain-service handles and HTTP settings of the REST API (attached with the `with_*` builders).
    api: Arc<api::ApiState>,
    /// Cluster membership (`GET /api/v1/cluster/nodes`), when the node is clustered.
    cluster: Option<troupe_cluster::ClusterHandle>,
    /// Sharded entities (`/api/v1/cluster/presence/{user}`, owned shards), when the node is clustered.
    sharding: Option<troupe_cluster::Sharding>,
}

struct Inner {
    node_name: String,
    version: &'static str,
    started_at: SystemTime,
    registry: Registry,
    metrics: Option<PrometheusHandle>,
    allow_kill: bool,
    draining: AtomicBool,
}

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// This node's name (shown by readiness and the observer).
    pub node_name: String,
    /// Version string of the binary.
    pub version: &'static str,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Whether `POST /api/v1/system/actors/kill` is enabled.
    pub allow_kill: bool,
}

impl GatewayState {
    /// State over the node's registry and (optionally) its Prometheus handle.
    pub fn new(cfg: &GatewayConfig, registry: Registry, metrics: Option<PrometheusHandle>) -> Self {
        Self {
            inner: Arc::new(Inner {
                node_name: cfg.node_name.clone(),
                version: cfg.version,
                started_at: SystemTime::now(),
                registry,
                metrics,
                allow_kill: cfg.allow_kill,
                draining: AtomicBool::new(false),
            }),
            ws: None,
            api: Arc::new(api::ApiState::default()),
            cluster: None,
            sharding: None,
        }
    }

    /// Serve the presence endpoints and the owned shards through this node's sharding.
    #[must_use]
    pub fn with_sharding(mut self, sharding: troupe_cluster::Sharding) -> Self {
        self.sharding = Some(sharding);
        self
    }

    /// Serve `GET /api/v1/cluster/nodes` from this node's cluster view.
    #[must_use]
    pub fn with_cluster(mut self, cluster: troupe_cluster::ClusterHandle) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Serve `GET /ws` and the channel endpoints over `ws`.
    pub fn with_ws(mut self, ws: ws::WsState) -> Self {
        self.ws = Some(ws);
        self
    }

    /// Mark the node as draining: readiness answers 503 so load balancers stop sending traffic.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

/// A TCP listener on `addr` whose kernel accept queue holds `backlog` pending connections (Linux caps
/// it at `net.core.somaxconn`). `TcpListener::bind` asks for 128, which a burst of reconnecting
/// WebSocket clients overflows: SYNs are then dropped and retried after 1, 3, 7… seconds
/// (BENCHMARKS §5 measured 15,000 clients taking 112 s to connect with 128, seconds with 4096).
pub async fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and tokio do: a restarted node may bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The node's router with the full middleware stack.
pub fn router(cfg: &GatewayConfig, state: GatewayState) -> Router {
    let timeout = cfg.request_timeout;
    let max_body = cfg.max_body_bytes;
    let cors = api::cors_layer(&state);
    limits::start_pruning(&state);
    let mut routes = system::routes();
    if let Some(ws) = &state.ws {
        routes = routes.merge(ws::routes(ws.clone()));
    }
    routes
        .merge(api::routes(&state))
        .merge(openapi::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn(move |req, next| error::edge(timeout, max_body, req, next)))
}

#[cfg(test)]
mod tests;
