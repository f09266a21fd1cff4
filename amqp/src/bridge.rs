//! The bridge as a node part: [`Bridge`] subscribes [`Outbound`] to the event bus (batched, strict
//! order, unlimited retries), gives the supervised [`BridgeActor`] that runs the publisher and one
//! consumer task per binding, and a non-critical [`BridgeHealth`] probe for `/health/ready`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;
use troupe_actors::bus::{DeliveryOrder, EventBus, RetryPolicy, Subscription};
use troupe_actors::health::{ComponentHealth, ComponentStatus, HealthProbe};
use troupe_actors::{Backoff, ChildSpec, Registry};

use crate::AmqpError;
use crate::config::BridgeConfig;
use crate::inbound::{self, ActorHandler, InboundHandler};
use crate::link::{DOWN, LinkStatus, NEVER, Status, UP};
use crate::outbound::Outbound;

/// Bus subscriber name of the bridge.
pub const SUBSCRIBER: &str = "rabbitmq";

/// The bridge: build it, [`subscribe`](Self::subscribe) it before the bus starts, put
/// [`child_spec`](Self::child_spec) under a supervisor and register [`probe`](Self::probe).
#[derive(Clone)]
pub struct Bridge {
    config: Arc<BridgeConfig>,
    outbound: Outbound,
    registry: Registry,
    handlers: HashMap<String, Arc<dyn InboundHandler>>,
    out_status: Status,
    in_status: Vec<Status>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("exchange", &self.config.exchange).finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge with `config` (checked); actor handlers are looked up in `registry`.
    pub fn new(config: BridgeConfig, registry: Registry) -> Result<Self, AmqpError> {
        config.validate()?;
        let config = Arc::new(config);
        let out_status: Status = Arc::new(LinkStatus::default());
        let in_status = config.bindings.iter().map(|_| Arc::new(LinkStatus::default())).collect();
        Ok(Self {
            outbound: Outbound::new(Arc::clone(&config), Arc::clone(&out_status)),
            config,
            registry,
            handlers: HashMap::new(),
            out_status,
            in_status,
        })
    }

    /// Binds handler name `name` (as in a binding's `handler`) to `handler` instead of an actor.
    #[must_use]
    pub fn with_handler(mut self, name: &str, handler: Arc<dyn InboundHandler>) -> Self {
        self.handlers.insert(name.to_owned(), handler);
        self
    }

    /// The outbound subscriber (also usable without a bus, e.g. in benchmarks).
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// Subscribes the outbound side to `bus`: batched (the confirm window split over a few calls in
    /// flight), strict order, retried without limit (backoff from the reconnect settings).
    pub fn subscribe(&self, bus: &EventBus) -> Result<(), AmqpError> {
        let (max_batch, pipeline) = self.config.batching();
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        let retry = RetryPolicy {
            backoff: Backoff { initial: self.config.reconnect_initial, max: self.config.reconnect_max, jitter: 0.2 },
            max_attempts: u32::MAX,
        };
        let sub = Subscription::batched(SUBSCRIBER, &topics, Arc::new(self.outbound.clone()), max_batch, pipeline)?
            .order(DeliveryOrder::Strict)
            .retry(retry);
        bus.subscribe_with(sub)?;
        Ok(())
    }

    /// The supervised actor running the publisher and the consumers (permanent, 5 s shutdown).
    pub fn child_spec(&self, name: impl Into<String>) -> ChildSpec {
        ChildSpec::new(name, BridgeActor { bridge: self.clone() }, || ()).shutdown(Duration::from_secs(5))
    }

    /// The health probe (`rabbitmq`, non-critical: events wait in the outbox while the broker is down).
    pub fn probe(&self) -> Arc<dyn HealthProbe> {
        Arc::new(BridgeHealth { out: Arc::clone(&self.out_status), inbound: self.in_status.clone() })
    }

    fn handler_for(&self, name: &str) -> Arc<dyn InboundHandler> {
        match self.handlers.get(name) {
            Some(h) => Arc::clone(h),
            None => Arc::new(ActorHandler {
                registry: self.registry.clone(),
                service: name.to_owned(),
                timeout: Duration::from_secs(30),
            }),
        }
    }
}

/// Health of the broker links.
pub struct BridgeHealth {
    out: Status,
    inbound: Vec<Status>,
}

impl HealthProbe for BridgeHealth {
    fn health(&self) -> ComponentHealth {
        let mut states = vec![self.out.get()];
        states.extend(self.inbound.iter().map(|s| s.get()));
        let up = states.iter().filter(|(s, _)| *s == UP).count();
        let (status, detail) = if up == states.len() {
            (ComponentStatus::Up, "connected".to_owned())
        } else if states.iter().all(|(s, _)| *s == NEVER) {
            (ComponentStatus::Down, "not connected yet".to_owned())
        } else if up == 0 && states.iter().all(|(s, _)| *s == DOWN || *s == NEVER) {
            let detail = states.iter().find(|(s, _)| *s == DOWN).map(|(_, d)| d.clone()).unwrap_or_default();
            (ComponentStatus::Down, detail)
        } else {
            let detail = states.iter().find(|(s, _)| *s != UP).map(|(_, d)| d.clone()).unwrap_or_default();
            (ComponentStatus::Degraded, detail)
        };
        ComponentHealth { name: "rabbitmq".to_owned(), status, critical: false, detail }
    }
}

/// The bridge's supervised actor: owns the publisher task and the consumer tasks; fails (and is
/// restarted) if one of them ends.
#[derive(Clone)]
pub struct BridgeActor {
    bridge: Bridge,
}

/// Messages of [`BridgeActor`].
#[derive(Debug)]
pub enum BridgeMsg {
    /// A task ended (they never do on their own).
    TaskExited(String),
}

// Local only.
impl ractor::Message for BridgeMsg {}

/// What a running [`BridgeActor`] holds.
pub struct BridgeState {
    /// Owns the tasks: aborting it drops (and so aborts) them.
    monitor: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for BridgeActor {
    type Msg = BridgeMsg;
    type State = BridgeState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<BridgeMsg>, _: ()) -> Result<BridgeState, ActorProcessingErr> {
        let b = &self.bridge;
        let mut tasks = JoinSet::new();
        tasks.spawn(b.outbound.run());
        for (binding, status) in b.config.bindings.iter().zip(&b.in_status) {
            let handler = b.handler_for(&binding.handler);
            tasks.spawn(inbound::run(Arc::clone(&b.config), binding.clone(), handler, Arc::clone(status)));
        }
        let monitor = tokio::spawn(async move {
            if let Some(exit) = tasks.join_next().await {
                let _ = myself.send_message(BridgeMsg::TaskExited(format!("{exit:?}")));
            }
            // Dropping the set aborts the rest.
        });
        Ok(BridgeState { monitor: Some(monitor) })
    }

    async fn handle(
        &self,
        _: ActorRef<BridgeMsg>,
        msg: BridgeMsg,
        _: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BridgeMsg::TaskExited(reason) => Err(format!("rabbitmq bridge task ended: {reason}").into()),
        }
    }

    async fn post_stop(&self, _: ActorRef<BridgeMsg>, state: &mut BridgeState) -> Result<(), ActorProcessingErr> {
        if let Some(monitor) = state.monitor.take() {
            monitor.abort();
        }
        Ok(())
    }
}
