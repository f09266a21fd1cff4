//! [`Supervisor`]: OTP-style supervision over ractor's hooks. ractor gives a supervisor the exit
//! events of its linked children and nothing else (its default handler stops the supervisor when any
//! child exits); this module adds child specs with restart policies, the one-for-one, one-for-all and
//! rest-for-one strategies, restart intensity with escalation, exponential backoff with jitter,
//! startup failures handled like crashes, and ordered shutdown.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::breaker::BreakerConfig;
use crate::error::{Error, Result};
use crate::instrumented::Instrumented;
use crate::registry::{Registry, Slot, SlotInit, Status};

/// When a child is restarted (Erlang/OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only when it exits abnormally (fails or is killed).
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children are restarted when one exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child: the others are stopped (in reverse start order) and all are started again in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

/// Restart intensity: more than `max_restarts` restarts within `within` and the supervisor gives up,
/// stops its children and fails, so that its own supervisor deals with it (escalation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

/// Exponential backoff between restarts of the same child: `initial · 2^(n-1)` capped at `max`, then
/// spread by ±`jitter` (a fraction in `[0, 1]`; 0 gives exact delays, as tests want). The attempt
/// count `n` resets once a child has run longer than the intensity window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// Relative jitter in `[0, 1]`.
    pub jitter: f64,
}

impl Backoff {
    /// No delay at all.
    pub const NONE: Self = Self { initial: Duration::ZERO, max: Duration::ZERO, jitter: 0.0 };

    /// The delay before restart attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        let spread = self.jitter.min(1.0) * (2.0 * fastrand::f64() - 1.0);
        base.mul_f64((1.0 + spread).max(0.0)).min(self.max)
    }
}

/// Per-service call limits given to [`ServiceRef`](crate::ServiceRef)s of a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Default call deadline.
    pub timeout: Duration,
    /// Calls in flight before callers get `Overloaded`.
    pub max_in_flight: usize,
}

/// A supervisor's configuration and its ordered children.
#[derive(Clone)]
pub struct SupervisorSpec {
    /// Name (last path segment).
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Backoff between restarts.
    pub backoff: Backoff,
    /// Breaker settings for children that do not set their own.
    pub breaker: BreakerConfig,
    /// Call limits for children that do not set their own.
    pub calls: CallLimits,
    /// Children in start order (stopped in reverse).
    pub children: Vec<ChildSpec>,
}

impl fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("children", &self.children.iter().map(|c| c.name.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SupervisorSpec {
    /// A one-for-one supervisor allowing 5 restarts in 10 s, 100 ms..5 s backoff with 20 % jitter,
    /// breakers opening after 5 consecutive failures or a 50 % failure rate over 20+ calls in 30 s,
    /// 5 s cooldown, and 5 s / 1024 in-flight call limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 5, within: Duration::from_secs(10) },
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5), jitter: 0.2 },
            breaker: BreakerConfig::default(),
            calls: CallLimits { timeout: Duration::from_secs(5), max_in_flight: 1024 },
            children: Vec::new(),
        }
    }
    /// Set the strategy.
    pub fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = s;
        self
    }
    /// Set the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.intensity = Intensity { max_restarts, within };
        self
    }
    /// Set the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
    /// Set the default breaker settings of children.
    pub fn breaker(mut self, b: BreakerConfig) -> Self {
        self.breaker = b;
        self
    }
    /// Set the default call limits of children.
    pub fn calls(mut self, c: CallLimits) -> Self {
        self.calls = c;
        self
    }
    /// Append a child (started after the ones before it).
    pub fn child(mut self, c: ChildSpec) -> Self {
        self.children.push(c);
        self
    }
}

/// What a child's start function is given.
pub(crate) struct StartCtx {
    supervisor: ActorCell,
    slot: Arc<Slot>,
    registry: Registry,
}

type StartFn = Arc<dyn Fn(StartCtx) -> BoxFuture<'static, std::result::Result<ActorCell, String>> + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    kind: &'static str,
    restart: Restart,
    shutdown: Duration,
    is_supervisor: bool,
    breaker: Option<BreakerConfig>,
    calls: Option<CallLimits>,
    local: Option<crate::registry::LocalHandle>,
    start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A permanent child running `actor` (cloned for each incarnation) with arguments made by `args`
    /// (called for each incarnation). The actor is wrapped for per-message metrics and tracing.
    pub fn new<A, F>(name: impl Into<String>, actor: A, args: F) -> Self
    where
        A: Actor + Clone,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        let start: StartFn = Arc::new(move |ctx: StartCtx| {
            let actor = actor.clone();
            let arguments = args();
            Box::pin(async move {
                let wrapped = Instrumented { inner: actor, slot: Arc::clone(&ctx.slot) };
                Actor::spawn_linked(None, wrapped, arguments, ctx.supervisor)
                    .await
                    .map(|(r, _join)| r.get_cell())
                    .map_err(|e| e.to_string())
            })
        });
        Self {
            name: name.into(),
            kind: short_type_name::<A>(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            is_supervisor: false,
            breaker: None,
            calls: None,
            local: None,
            start,
        }
    }

    /// A nested supervisor as a child (its children live under its path).
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        let name = spec.name.clone();
        let start: StartFn = Arc::new(move |ctx: StartCtx| {
            let args =
                SupervisorArgs { spec: spec.clone(), registry: ctx.registry.clone(), path: ctx.slot.path().to_owned() };
            Box::pin(async move {
                Actor::spawn_linked(None, Supervisor, args, ctx.supervisor)
                    .await
                    .map(|(r, _join)| r.get_cell())
                    .map_err(|e| e.to_string())
            })
        });
        Self {
            name,
            kind: "Supervisor",
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(30),
            is_supervisor: true,
            breaker: None,
            calls: None,
            local: None,
            start,
        }
    }

    /// Set the restart policy.
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }
    /// Time allowed for a graceful stop before the child is killed.
    pub fn shutdown(mut self, d: Duration) -> Self {
        self.shutdown = d;
        self
    }
    /// Breaker settings for this child.
    pub fn breaker(mut self, b: BreakerConfig) -> Self {
        self.breaker = Some(b);
        self
    }
    /// Call limits for this child.
    pub fn calls(mut self, c: CallLimits) -> Self {
        self.calls = Some(c);
        self
    }
    /// The object this child's read-only requests run against on the caller's task
    /// ([`ServiceRef::query`](crate::ServiceRef::query)), typically the `Arc` of the service core the
    /// actor itself holds. Queries are answered only while the actor runs, under its breaker and
    /// admission limit.
    pub fn local<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.local = Some(value);
        self
    }
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Messages a supervisor handles (besides its children's supervision events).
pub enum SupervisorMsg {
    /// A backoff timer fired: start these children again if no newer restart superseded it.
    Restart {
        /// Children to start, in order.
        children: Vec<usize>,
        /// Restart round the timer belongs to.
        round: u64,
    },
}

// Local-only: ractor's `cluster` feature requires every message type to say whether it can be
// serialized; supervisors never take messages from other nodes.
impl ractor::Message for SupervisorMsg {}

/// Arguments of a supervisor actor.
pub struct SupervisorArgs {
    /// Its spec.
    pub spec: SupervisorSpec,
    /// The node's registry.
    pub registry: Registry,
    /// Its own path (children go under it).
    pub path: String,
}

struct Child {
    spec: ChildSpec,
    slot: Arc<Slot>,
    cell: Option<ActorCell>,
    /// The restart round this child waits for, if a restart is scheduled.
    pending: Option<u64>,
    /// Exited for good (temporary, or transient that ended normally): sibling restarts skip it.
    done: bool,
    /// Backoff attempt of the current run of crashes.
    attempt: u32,
    /// When the current incarnation started (`None` while it is not running).
    started_at: Option<Instant>,
}

/// What changes while a supervisor runs.
pub struct SupervisorState {
    path: String,
    registry: Registry,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    round: u64,
}

/// The supervisor actor. Start a tree with [`Supervisor::start_root`]; nest with
/// [`ChildSpec::supervisor`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Supervisor;

/// Whether an exit is a failure (for restart policies and breakers) and why.
fn classify(evt: &SupervisionEvent) -> Option<(&ActorCell, bool, String)> {
    match evt {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell, true, err.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            let abnormal = matches!(reason.as_deref(), Some("killed") | Some("actor_task_cancelled"));
            Some((cell, abnormal, reason.clone().unwrap_or_else(|| "normal".to_owned())))
        }
        _ => None,
    }
}

impl SupervisorState {
    async fn start_child(&mut self, myself: &ActorRef<SupervisorMsg>, idx: usize) -> std::result::Result<(), String> {
        let child = &mut self.children[idx];
        child.slot.set_status(Status::Starting);
        let ctx =
            StartCtx { supervisor: myself.get_cell(), slot: Arc::clone(&child.slot), registry: self.registry.clone() };
        match (child.spec.start)(ctx).await {
            Ok(cell) => {
                child.slot.set_running(cell.clone());
                child.cell = Some(cell);
                child.done = false;
                child.started_at = Some(Instant::now());
                Ok(())
            }
            Err(reason) => {
                child.started_at = None;
                child.slot.clear_cell(Status::Restarting);
                Err(reason)
            }
        }
    }

    /// Start children in order; a child that fails to start is handled like a crash.
    async fn start_children(&mut self, myself: &ActorRef<SupervisorMsg>, idxs: &[usize]) -> Result<()> {
        for &idx in idxs {
            if let Err(reason) = self.start_child(myself, idx).await {
                tracing::warn!(actor = self.children[idx].slot.path(), %reason, "child failed to start");
                self.on_exit(myself, idx, true, format!("start failed: {reason}")).await?;
                // The exit handling scheduled a restart that covers the rest of this round.
                if self.strategy != Strategy::OneForOne {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Stop a running child gracefully (killing it after its shutdown time) and mark it `status`.
    async fn stop_child(&mut self, idx: usize, status: Status, reason: &str) {
        let child = &mut self.children[idx];
        child.pending = None;
        child.started_at = None;
        if let Some(cell) = child.cell.take() {
            let graceful = cell.stop_and_wait(Some(reason.to_owned()), Some(child.spec.shutdown)).await;
            if graceful.is_err() {
                tracing::warn!(actor = child.slot.path(), "child did not stop in time; killing it");
                let _ = cell.kill_and_wait(Some(Duration::from_secs(1))).await;
            }
        }
        child.slot.clear_cell(status);
        if child.spec.is_supervisor {
            // A killed nested supervisor never ran its ordered shutdown: its descendants are gone too.
            self.registry.settle_subtree(child.slot.path(), status);
        }
    }

    /// Stop children `from..` in reverse start order.
    async fn stop_from(&mut self, from: usize, status: Status, reason: &str) {
        for idx in (from..self.children.len()).rev() {
            self.stop_child(idx, status, reason).await;
        }
    }

    /// A child exited (or failed to start): apply its restart policy and the strategy.
    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        abnormal: bool,
        reason: String,
    ) -> Result<()> {
        let now = Instant::now();
        let restart = {
            let child = &mut self.children[idx];
            child.cell = None;
            if abnormal {
                child.slot.set_last_error(reason.clone());
                child.slot.resolve_tell_probe(None);
                child.slot.breaker.record_crash(now);
                child.slot.publish_breaker();
            }
            match child.spec.restart {
                Restart::Permanent => true,
                Restart::Transient => abnormal,
                Restart::Temporary => false,
            }
        };
        if self.children[idx].spec.is_supervisor {
            // Its descendants died with it (ractor kills the children of an actor that fails).
            let status = if restart { Status::Restarting } else { Status::Stopped };
            self.registry.settle_subtree(self.children[idx].slot.path(), status);
        }
        if !restart {
            let child = &mut self.children[idx];
            child.done = true;
            child.started_at = None;
            child.slot.clear_cell(Status::Stopped);
            return Ok(());
        }

        // Restart intensity: more than max_restarts within the window → give up and escalate.
        self.restarts.push_back(now);
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > self.intensity.within) {
            self.restarts.pop_front();
        }
        let count = self.restarts.len() as u32;
        if count > self.intensity.max_restarts {
            tracing::error!(supervisor = %self.path, restarts = count, "restart intensity exceeded; escalating");
            self.stop_from(0, Status::Failed, "supervisor escalated").await;
            // Our own slot: the parent (or the root handle) takes it from here.
            if let Ok(own) = self.registry.slot(&self.path) {
                own.clear_cell(Status::Failed);
            }
            return Err(Error::Escalated { path: self.path.clone(), restarts: count, within: self.intensity.within });
        }

        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        };
        // Stop the running siblings in reverse start order; they restart with the failed child,
        // except temporary ones, which are never restarted.
        for &i in affected.iter().rev() {
            if i != idx && self.children[i].cell.is_some() {
                self.stop_child(i, Status::Restarting, "sibling restart").await;
                if self.children[i].spec.restart == Restart::Temporary {
                    self.children[i].done = true;
                    self.children[i].slot.clear_cell(Status::Stopped);
                }
            }
        }
        // Everything else in the affected range that has not exited for good starts again in this
        // round: stopped siblings, siblings waiting for an older round (superseded), and siblings a
        // failed start round never reached.
        let affected: Vec<usize> = affected.into_iter().filter(|&i| i == idx || !self.children[i].done).collect();

        let delay = {
            let within = self.intensity.within;
            let child = &mut self.children[idx];
            // The backoff resets once the crashed incarnation had run longer than the window.
            if child.started_at.is_some_and(|t| now.duration_since(t) > within) {
                child.attempt = 0;
            }
            child.started_at = None;
            child.attempt += 1;
            self.backoff.delay(child.attempt)
        };
        self.round += 1;
        let round = self.round;
        for &i in &affected {
            let child = &mut self.children[i];
            // A restart superseded by this round is still one restart.
            if child.pending.is_none() {
                child.slot.note_restart();
            }
            child.pending = Some(round);
            child.slot.clear_cell(Status::Restarting);
        }
        tracing::info!(supervisor = %self.path, child = self.children[idx].slot.path(), delay_ms = delay.as_millis() as u64, %reason, "restarting");
        let msg = SupervisorMsg::Restart { children: affected, round };
        if delay.is_zero() {
            let _ = myself.send_message(msg);
        } else {
            let _timer = myself.send_after(delay, move || msg);
        }
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let SupervisorArgs { spec, registry, path } = args;
        let mut children = Vec::with_capacity(spec.children.len());
        for c in spec.children {
            let init = SlotInit {
                path: format!("{}/{}", path, c.name),
                name: c.name.clone(),
                kind: c.kind,
                restart: c.restart,
                is_supervisor: c.is_supervisor,
                breaker: c.breaker.unwrap_or(spec.breaker),
                max_in_flight: c.calls.unwrap_or(spec.calls).max_in_flight.max(1),
                call_timeout: c.calls.unwrap_or(spec.calls).timeout,
            };
            let slot = registry.slot_for(init);
            slot.set_local(c.local.clone());
            children.push(Child {
                spec: c,
                slot,
                cell: None,
                pending: None,
                done: false,
                attempt: 0,
                started_at: None,
            });
        }
        let mut state = SupervisorState {
            path,
            registry,
            strategy: spec.strategy,
            intensity: spec.intensity,
            backoff: spec.backoff,
            children,
            restarts: VecDeque::new(),
            round: 0,
        };
        let all: Vec<usize> = (0..state.children.len()).collect();
        state.start_children(&myself, &all).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart { children, round } => {
                let due: Vec<usize> = children
                    .into_iter()
                    .filter(|&i| state.children.get(i).is_some_and(|c| c.pending == Some(round)))
                    .collect();
                for &i in &due {
                    state.children[i].pending = None;
                }
                state.start_children(&myself, &due).await?;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, abnormal, reason)) = classify(&evt) else {
            return Ok(());
        };
        let id = cell.get_id();
        // Exits of incarnations we no longer track (stopped on purpose, superseded) are ignored.
        let Some(idx) = state.children.iter().position(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == id)) else {
            return Ok(());
        };
        if abnormal {
            tracing::warn!(actor = state.children[idx].slot.path(), %reason, "child failed");
        }
        state.on_exit(&myself, idx, abnormal, reason).await?;
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        // Ordered shutdown: children stop in reverse start order, each within its shutdown time.
        state.stop_from(0, Status::Stopped, "shutdown").await;
        Ok(())
    }
}

/// A running supervision tree's root.
#[derive(Debug)]
pub struct RootHandle {
    actor: ActorRef<SupervisorMsg>,
    join: Option<JoinHandle<()>>,
    slot: Arc<Slot>,
    registry: Registry,
}

impl Supervisor {
    /// Start a tree: the root supervisor at path `/<spec.name>`, and its children in order.
    pub async fn start_root(spec: SupervisorSpec, registry: Registry) -> Result<RootHandle> {
        let path = format!("/{}", spec.name);
        let init = SlotInit {
            path: path.clone(),
            name: spec.name.clone(),
            kind: "Supervisor",
            restart: Restart::Permanent,
            is_supervisor: true,
            breaker: spec.breaker,
            max_in_flight: spec.calls.max_in_flight.max(1),
            call_timeout: spec.calls.timeout,
        };
        let slot = registry.slot_for(init);
        slot.set_status(Status::Starting);
        let args = SupervisorArgs { spec, registry: registry.clone(), path: path.clone() };
        match Actor::spawn(None, Supervisor, args).await {
            Ok((actor, join)) => {
                slot.set_running(actor.get_cell());
                Ok(RootHandle { actor, join: Some(join), slot, registry })
            }
            Err(e) => {
                slot.clear_cell(Status::Failed);
                Err(Error::Spawn { path, reason: e.to_string() })
            }
        }
    }
}

impl RootHandle {
    /// The registry the tree lives in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The root supervisor actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// Stop the tree in reverse start order; children still running after `grace` are killed.
    /// Returns whether the stop was graceful (false, doing nothing, if the root already escalated).
    pub async fn shutdown(self, grace: Duration) -> bool {
        if self.join.is_none() || self.slot.status() == Status::Failed {
            // The root already gave up (escalated): its children are stopped and its status stays Failed.
            return false;
        }
        let graceful = self.actor.stop_and_wait(Some("shutdown".to_owned()), Some(grace)).await.is_ok();
        if !graceful {
            let _ = self.actor.kill_and_wait(Some(Duration::from_secs(1))).await;
        }
        if let Some(join) = self.join {
            let _ = join.await;
        }
        self.slot.clear_cell(Status::Stopped);
        // After a kill the ordered shutdown did not finish: nothing under the root runs any more.
        self.registry.settle_subtree(self.slot.path(), Status::Stopped);
        graceful
    }

    /// Wait until the root exits by itself (it escalated: restart intensity exceeded at the top).
    /// Cancel-safe.
    pub async fn exited(&mut self) {
        // Awaited through `&mut` so that dropping this future (e.g. a `select!` that took another
        // branch) leaves the handle in place for `shutdown`.
        if let Some(join) = self.join.as_mut() {
            let _ = join.await;
            self.join = None;
            self.slot.clear_cell(Status::Failed);
            self.registry.settle_subtree(self.slot.path(), Status::Failed);
        }
    }
}

/// `troupe_actors::supervisor::Foo` → `Foo`; generic arguments are dropped.
pub(crate) fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
pub(crate) mod tests;
