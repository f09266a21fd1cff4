//! Health of the node's parts that are not supervised actors (a broker connection, cluster
//! membership): each registers a [`HealthProbe`] with the [`Registry`](crate::Registry), and the
//! gateway's readiness endpoint lists every probe's [`ComponentHealth`]. A probe answers from state
//! it already holds (an atomic, a snapshot): it is called on every readiness request and must not
//! block or do I/O.

use serde::Serialize;

/// How a component is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Working.
    Up,
    /// Working with reduced service (e.g. reconnecting while work waits durably).
    Degraded,
    /// Not working.
    Down,
}

/// One component's health as readiness shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    /// Stable name, e.g. `rabbitmq` or `cluster`.
    pub name: String,
    /// Current status.
    pub status: ComponentStatus,
    /// Whether the node is not ready while this component is [`ComponentStatus::Down`].
    pub critical: bool,
    /// A short human-readable detail (never a secret or a connection string with credentials).
    pub detail: String,
}

impl ComponentHealth {
    /// Whether this component keeps the node from being ready.
    pub fn blocks_readiness(&self) -> bool {
        self.critical && self.status == ComponentStatus::Down
    }
}

/// Something whose health readiness shows. Called on every readiness request: answer from held state.
pub trait HealthProbe: Send + Sync + 'static {
    /// The component's current health.
    fn health(&self) -> ComponentHealth;
}
