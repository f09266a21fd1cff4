//! The live supervision tree: one [`Slot`] per supervised actor, shared by its supervisor (which
//! writes lifecycle facts), its [`ServiceRef`](crate::ServiceRef)s (which read the current actor, the
//! breaker and the admission gate) and the observer endpoints (which read snapshots).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{ActorCell, ActorRef, Message};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
use crate::error::{Error, Result};
use crate::service::ServiceRef;
use crate::supervisor::Restart;

/// Lifecycle status of a supervised actor, as the observer shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Status {
    /// Being started (its `pre_start` runs).
    Starting = 0,
    /// Handling messages.
    Running = 1,
    /// Exited; its supervisor will start it again after a backoff.
    Restarting = 2,
    /// Stopped on purpose (shutdown, or a temporary/transient child that ended normally).
    Stopped = 3,
    /// Given up on: its supervisor exceeded its restart intensity.
    Failed = 4,
}

impl Status {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Restarting,
            3 => Self::Stopped,
            _ => Self::Failed,
        }
    }
}

/// Per-actor metric handles, resolved once when the slot is created (the global recorder must be
/// installed before the tree starts, or the handles are no-ops).
#[derive(Debug)]
pub(crate) struct SlotMetrics {
    pub(crate) messages: metrics::Counter,
    pub(crate) handler_seconds: metrics::Histogram,
    pub(crate) mailbox: metrics::Gauge,
    pub(crate) restarts: metrics::Counter,
    pub(crate) breaker_state: metrics::Gauge,
}

impl SlotMetrics {
    fn new(path: &str, kind: &'static str) -> Self {
        Self {
            messages: metrics::counter!("troupe_actor_messages_total", "kind" => kind),
            handler_seconds: metrics::histogram!("troupe_actor_handler_seconds", "kind" => kind),
            mailbox: metrics::gauge!("troupe_actor_mailbox_depth", "kind" => kind),
            restarts: metrics::counter!("troupe_actor_restarts_total", "kind" => kind, "path" => path.to_owned()),
            breaker_state: metrics::gauge!("troupe_actor_breaker_state", "path" => path.to_owned()),
        }
    }
}

/// One supervised actor's shared record. Cheap to read from any thread; no lock is held across `.await`.
#[derive(Debug)]
pub struct Slot {
    path: String,
    name: String,
    kind: &'static str,
    restart: Restart,
    is_supervisor: bool,
    status: AtomicU8,
    restarts: AtomicU64,
    /// Approximate mailbox depth: messages sent through a `ServiceRef` minus messages handled.
    mailbox: AtomicI64,
    started_at_ms: AtomicI64,
    cell: RwLock<Option<ActorCell>>,
    last_error: RwLock<Option<String>>,
    pub(crate) breaker: CircuitBreaker,
    /// A half-open probe admitted by `tell`: resolved by the next message the actor finishes handling
    /// (success) or by its crash (failure). `tell_probe_armed` keeps the per-message check to one load.
    tell_probe: Mutex<Option<Permit>>,
    tell_probe_armed: AtomicBool,
    pub(crate) gate: Semaphore,
    pub(crate) max_in_flight: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) metrics: SlotMetrics,
}

/// Settings a slot is created with (from its child spec and its supervisor's defaults).
#[derive(Clone, Debug)]
pub(crate) struct SlotInit {
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) restart: Restart,
    pub(crate) is_supervisor: bool,
    pub(crate) breaker: BreakerConfig,
    pub(crate) max_in_flight: usize,
    pub(crate) call_timeout: Duration,
}

impl Slot {
    pub(crate) fn new(init: SlotInit) -> Self {
        let metrics = SlotMetrics::new(&init.path, init.kind);
        Self {
            metrics,
            status: AtomicU8::new(Status::Starting as u8),
            restarts: AtomicU64::new(0),
            mailbox: AtomicI64::new(0),
            started_at_ms: AtomicI64::new(0),
            cell: RwLock::new(None),
            last_error: RwLock::new(None),
            breaker: CircuitBreaker::new(init.breaker),
            tell_probe: Mutex::new(None),
            tell_probe_armed: AtomicBool::new(false),
            gate: Semaphore::new(init.max_in_flight),
            max_in_flight: init.max_in_flight,
            call_timeout: init.call_timeout,
            path: init.path,
            name: init.name,
            kind: init.kind,
            restart: init.restart,
            is_supervisor: init.is_supervisor,
        }
    }

    /// Full path in the tree, e.g. `/troupe/system/node`.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The child's name (last path segment).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Short type name of the actor.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
    /// Current lifecycle status.
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Acquire))
    }
    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    /// Breaker state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
    /// The running actor, if any.
    pub fn cell(&self) -> Option<ActorCell> {
        self.cell.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_status(&self, s: Status) {
        self.status.store(s as u8, Ordering::Release);
    }
    pub(crate) fn set_running(&self, cell: ActorCell) {
        *self.cell.write().unwrap_or_else(PoisonError::into_inner) = Some(cell);
        self.started_at_ms.store(now_ms(), Ordering::Relaxed);
        self.mailbox.store(0, Ordering::Relaxed);
        self.set_status(Status::Running);
    }
    pub(crate) fn clear_cell(&self, s: Status) {
        *self.cell.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.set_status(s);
    }
    pub(crate) fn note_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics.restarts.increment(1);
    }
    pub(crate) fn set_last_error(&self, e: impl Into<String>) {
        *self.last_error.write().unwrap_or_else(PoisonError::into_inner) = Some(e.into());
    }
    pub(crate) fn publish_breaker(&self) {
        let v = match self.breaker.state() {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        self.metrics.breaker_state.set(v);
    }
    #[inline]
    pub(crate) fn mailbox_enqueued(&self) {
        self.mailbox.fetch_add(1, Ordering::Relaxed);
        self.metrics.mailbox.increment(1.0);
    }
    /// Hold a half-open probe admitted by `tell` until the actor shows whether it copes.
    pub(crate) fn arm_tell_probe(&self, permit: Permit) {
        // A stale probe still held (its verdict never came) is released here.
        let _stale = self.tell_probe.lock().unwrap_or_else(PoisonError::into_inner).replace(permit);
        self.tell_probe_armed.store(true, Ordering::Release);
    }

    /// Resolve a pending `tell` probe: `Some(true)` after a handled message, `Some(false)` after a
    /// handler error, `None` to release it without a verdict (the crash itself is recorded).
    #[inline]
    pub(crate) fn resolve_tell_probe(&self, verdict: Option<bool>) {
        if !self.tell_probe_armed.load(Ordering::Acquire) {
            return;
        }
        let permit = self.tell_probe.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.tell_probe_armed.store(false, Ordering::Release);
        if let Some(permit) = permit {
            let now = tokio::time::Instant::now();
            match verdict {
                Some(true) => self.breaker.record_success(permit, now),
                Some(false) => self.breaker.record_failure(permit, now),
                None => drop(permit),
            }
            self.publish_breaker();
        }
    }

    #[inline]
    pub(crate) fn mailbox_handled(&self) {
        // Saturating at zero: messages sent around the ServiceRef are handled but were never counted.
        let prev = self.mailbox.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| (v > 0).then(|| v - 1));
        if prev.is_ok() {
            self.metrics.mailbox.decrement(1.0);
        }
    }

    /// A serializable snapshot for the observer endpoint.
    pub fn info(&self) -> ActorInfo {
        let cell = self.cell();
        let parent = self.path.rsplit_once('/').map(|(p, _)| p).filter(|p| !p.is_empty()).map(str::to_owned);
        let started = self.started_at_ms.load(Ordering::Relaxed);
        ActorInfo {
            path: self.path.clone(),
            parent,
            name: self.name.clone(),
            kind: self.kind,
            supervisor: self.is_supervisor,
            restart: self.restart,
            status: self.status(),
            restarts: self.restarts(),
            breaker: self.breaker.state(),
            mailbox_depth: self.mailbox.load(Ordering::Relaxed).max(0) as u64,
            in_flight: self.max_in_flight - self.gate.available_permits().min(self.max_in_flight),
            actor_id: cell.map(|c| c.get_id().to_string()),
            uptime_ms: (self.status() == Status::Running && started > 0).then(|| (now_ms() - started).max(0) as u64),
            last_error: self.last_error.read().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

/// What `/api/v1/system/actors` shows for each supervised actor (like Erlang's observer).
#[derive(Clone, Debug, Serialize)]
pub struct ActorInfo {
    /// Full path.
    pub path: String,
    /// Parent path (`None` for the root).
    pub parent: Option<String>,
    /// Name.
    pub name: String,
    /// Actor type.
    pub kind: &'static str,
    /// Whether this actor supervises others.
    pub supervisor: bool,
    /// Restart policy.
    pub restart: Restart,
    /// Lifecycle status.
    pub status: Status,
    /// Restarts so far.
    pub restarts: u64,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Approximate mailbox depth.
    pub mailbox_depth: u64,
    /// Calls in flight through `ServiceRef`s.
    pub in_flight: usize,
    /// ractor actor id of the current incarnation.
    pub actor_id: Option<String>,
    /// Milliseconds since the current incarnation started.
    pub uptime_ms: Option<u64>,
    /// The last failure reason seen by the supervisor.
    pub last_error: Option<String>,
}

/// The node's registry of supervised actors, by path. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    slots: Arc<RwLock<BTreeMap<String, Arc<Slot>>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot at `init.path`, created if new. A restarted supervisor finds its children's slots
    /// again, so restart counts and breaker state survive the restart.
    pub(crate) fn slot_for(&self, init: SlotInit) -> Arc<Slot> {
        let mut map = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(init.path.clone()).or_insert_with(|| Arc::new(Slot::new(init))))
    }

    /// The slot at `path`, or the one slot named `name`.
    pub fn slot(&self, name_or_path: &str) -> Result<Arc<Slot>> {
        let map = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if name_or_path.starts_with('/') {
            return map.get(name_or_path).cloned().ok_or_else(|| Error::NotFound { name: name_or_path.to_owned() });
        }
        let mut found = map.values().filter(|s| s.name() == name_or_path);
        match (found.next(), found.next()) {
            (Some(s), None) => Ok(Arc::clone(s)),
            (Some(_), Some(_)) => Err(Error::Ambiguous { name: name_or_path.to_owned() }),
            (None, _) => Err(Error::NotFound { name: name_or_path.to_owned() }),
        }
    }

    /// A typed handle to the supervised actor at `path` or named `name`. The handle survives restarts:
    /// each call goes to the current incarnation.
    pub fn service<M: Message>(&self, name_or_path: &str) -> Result<ServiceRef<M>> {
        let slot = self.slot(name_or_path)?;
        if let Some(cell) = slot.cell()
            && cell.is_message_type_of::<M>() == Some(false)
        {
            return Err(Error::WrongMessageType {
                name: name_or_path.to_owned(),
                expected: std::any::type_name::<M>(),
            });
        }
        Ok(ServiceRef::new(slot))
    }

    /// The current `ActorRef` at a path (for code that needs ractor directly).
    pub fn actor_ref<M: Message>(&self, name_or_path: &str) -> Result<ActorRef<M>> {
        let slot = self.slot(name_or_path)?;
        let cell = slot.cell().ok_or_else(|| Error::Unavailable {
            service: slot.path().to_owned(),
            retry_after: Duration::from_millis(100),
        })?;
        Ok(cell.into())
    }

    /// Snapshots of every supervised actor, sorted by path.
    pub fn snapshot(&self) -> Vec<ActorInfo> {
        let slots: Vec<Arc<Slot>> =
            self.slots.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        slots.iter().map(|s| s.info()).collect()
    }

    /// Mark every actor below `path` that is still recorded as live (starting, running or waiting for a
    /// restart) as `status` and forget its cell. Used when a supervisor exits without running its
    /// ordered shutdown (killed, failed): ractor kills its descendants, which nobody else records.
    pub(crate) fn settle_subtree(&self, path: &str, status: Status) {
        let prefix = format!("{path}/");
        let slots: Vec<Arc<Slot>> = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(_, s)| Arc::clone(s))
            .collect();
        for s in slots {
            if matches!(s.status(), Status::Starting | Status::Running | Status::Restarting) {
                s.clear_cell(status);
            }
        }
    }

    /// Refresh derived gauges (breaker state) for every slot; called by a periodic sampler.
    pub fn publish_gauges(&self) {
        let slots: Vec<Arc<Slot>> =
            self.slots.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for s in slots {
            s.publish_breaker();
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
