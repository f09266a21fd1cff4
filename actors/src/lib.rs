//! `troupe-actors`: the runtime layer actor developers build on — what ractor leaves to its users.
//! ractor gives actors, links and supervision *events*; this crate adds the policies: a
//! [`Supervisor`] with OTP child specs, strategies, restart intensity and backoff; a
//! [`CircuitBreaker`](breaker::CircuitBreaker) per supervised child; [`ServiceRef`], a typed handle
//! with call deadlines and an admission limit that survives restarts; the versioned wire
//! [`Envelope`](envelope::Envelope) for anything that crosses a node; and per-actor metrics and
//! tracing spans. It knows no domain and no HTTP.
//!
//! Collaborators: ractor (actor core), tokio (time, tasks), metrics (the node installs the Prometheus
//! recorder), tracing, postcard (envelope bytes). Used by `troupe-cluster`, `troupe-services`,
//! `troupe-pipeline` and the gateway.
//!
//! ```no_run
//! # async fn demo() -> troupe_actors::Result<()> {
//! use troupe_actors::{ChildSpec, Registry, Supervisor, SupervisorSpec};
//! # #[derive(Clone)] struct Echo;
//! # impl ractor::Actor for Echo { type Msg = (); type State = (); type Arguments = ();
//! #   async fn pre_start(&self, _: ractor::ActorRef<()>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) } }
//! let registry = Registry::new();
//! let root = Supervisor::start_root(
//!     SupervisorSpec::new("app").child(ChildSpec::new("echo", Echo, || ())),
//!     registry.clone(),
//! ).await?;
//! let echo = registry.service::<()>("echo")?;
//! echo.tell(())?;
//! root.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

pub mod breaker;
pub mod bus;
pub mod channels;
pub mod envelope;
mod error;
pub mod health;
mod instrumented;
mod registry;
mod service;
mod supervisor;

pub use breaker::BreakerState;
pub use error::{Error, Result};
pub use health::{ComponentHealth, ComponentStatus, HealthProbe};
pub use registry::{ActorInfo, Registry, Slot, Status};
pub use service::ServiceRef;
pub use supervisor::{
    Backoff, CallLimits, ChildSpec, Intensity, Restart, RootHandle, Strategy, Supervisor, SupervisorArgs,
    SupervisorMsg, SupervisorSpec,
};

/// Re-exported so actor developers use the same ractor as Troupe.
pub use ractor;
