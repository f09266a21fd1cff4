//! The live supervision tree: one [`Slot`] per supervised actor, shared by its supervisor (which
//! writes lifecycle facts), its [`ServiceRef`](crate::ServiceRef)s (which read the current actor, the
//! breaker and the admission gate) and the observer endpoints (which read snapshots).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{ActorCell, ActorRef, Message};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
use crate::error::{Error, Result};
use crate::health::{ComponentHealth, HealthProbe};
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
    pub(crate) handler_seconds: metrics::Histogram,
    pub(crate) restarts: metrics::Counter,
    pub(crate) breaker_state: metrics::Gauge,
}

impl SlotMetrics {
    fn new(path: &str, kind: &'static str) -> Self {
        Self {
            handler_seconds: metrics::histogram!("troupe_actor_handler_seconds", "kind" => kind),
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
    /// Messages sent through a `ServiceRef` (written by senders).
    enqueued: CachePadded<AtomicU64>,
    /// Messages handled (written only by the actor's own task, so never contended). Approximate mailbox
    /// depth is `enqueued - handled`.
    handled: CachePadded<AtomicU64>,
    started_at_ms: AtomicI64,
    cell: RwLock<Option<ActorCell>>,
    /// The service's shared read-side object (see [`ServiceRef::query`]), set from the child spec.
    local: RwLock<Option<LocalHandle>>,
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

/// A service's shared read-side object, type-erased (see [`ServiceRef::query`]).
pub(crate) type LocalHandle = Arc<dyn std::any::Any + Send + Sync>;

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
            enqueued: CachePadded(AtomicU64::new(0)),
            handled: CachePadded(AtomicU64::new(0)),
            started_at_ms: AtomicI64::new(0),
            cell: RwLock::new(None),
            local: RwLock::new(None),
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

    /// Run `f` on the running actor without cloning its handle (the read lock is held only for `f`,
    /// which must not block).
    #[inline]
    pub(crate) fn with_cell<R>(&self, f: impl FnOnce(&ActorCell) -> R) -> Option<R> {
        self.cell.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(f)
    }

    /// Sets the object [`ServiceRef::query`] runs against (from the child spec; kept across restarts).
    pub(crate) fn set_local(&self, local: Option<LocalHandle>) {
        *self.local.write().unwrap_or_else(PoisonError::into_inner) = local;
    }

    /// The shared read-side object as a `T`, while the actor runs (`None` between incarnations, when
    /// none was given, or when it is not a `T`).
    pub(crate) fn local<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        // Checked first: a service between incarnations answers no queries either.
        self.with_cell(|_| ())?;
        let local = self.local.read().unwrap_or_else(PoisonError::into_inner).clone()?;
        local.downcast::<T>().ok()
    }

    pub(crate) fn set_status(&self, s: Status) {
        self.status.store(s as u8, Ordering::Release);
    }
    pub(crate) fn set_running(&self, cell: ActorCell) {
        *self.cell.write().unwrap_or_else(PoisonError::into_inner) = Some(cell);
        self.started_at_ms.store(now_ms(), Ordering::Relaxed);
        // The new incarnation's mailbox is empty.
        self.enqueued.0.store(self.handled.0.load(Ordering::Relaxed), Ordering::Relaxed);
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
        self.enqueued.0.fetch_add(1, Ordering::Relaxed);
    }
    /// A counted message never reached the mailbox (the send failed).
    #[inline]
    pub(crate) fn mailbox_unenqueued(&self) {
        self.enqueued.0.fetch_sub(1, Ordering::Relaxed);
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

    /// Count one handled message; returns the count before it. Called only from the actor's own
    /// task (one incarnation at a time), so a plain load and store suffice: no contended RMW on the
    /// per-message path.
    #[inline]
    pub(crate) fn note_handled(&self) -> u64 {
        let n = self.handled.0.load(Ordering::Relaxed);
        self.handled.0.store(n.wrapping_add(1), Ordering::Relaxed);
        n
    }

    /// Messages handled by all incarnations so far.
    pub fn messages(&self) -> u64 {
        self.handled.0.load(Ordering::Relaxed)
    }

    fn mailbox_depth(&self) -> u64 {
        // Saturating: messages sent around the ServiceRef (a raw ActorRef) are handled but not counted.
        self.enqueued.0.load(Ordering::Relaxed).saturating_sub(self.handled.0.load(Ordering::Relaxed))
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
            messages: self.messages(),
            mailbox_depth: self.mailbox_depth(),
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
    /// Messages handled by all incarnations.
    pub messages: u64,
    /// Approximate mailbox depth (messages sent through a `ServiceRef` and not yet handled).
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
    probes: Probes,
}

/// The registered health probes (a newtype so `Registry` stays `Debug`).
#[derive(Clone, Default)]
struct Probes(Arc<RwLock<Vec<Arc<dyn HealthProbe>>>>);

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Probes").field("len", &n).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a component whose health readiness shows (see [`crate::health`]).
    pub fn register_probe(&self, probe: Arc<dyn HealthProbe>) {
        self.probes.0.write().unwrap_or_else(PoisonError::into_inner).push(probe);
    }

    /// Every registered component's current health, in registration order.
    pub fn components(&self) -> Vec<ComponentHealth> {
        let probes: Vec<Arc<dyn HealthProbe>> = self.probes.0.read().unwrap_or_else(PoisonError::into_inner).clone();
        probes.iter().map(|p| p.health()).collect()
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

    /// Refresh the metrics derived from slots — breaker state per path, messages handled and mailbox depth
    /// per kind. Called by the node's sampler and on every `/metrics` scrape.
    pub fn publish_gauges(&self) {
        let slots: Vec<Arc<Slot>> =
            self.slots.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        // Per-kind totals are summed here, at sampling time, rather than updated by every message:
        // a shared per-kind atomic on the message path would make actors of one kind contend.
        let mut per_kind: HashMap<&'static str, (u64, u64)> = HashMap::new();
        for s in &slots {
            s.publish_breaker();
            let e = per_kind.entry(s.kind()).or_default();
            e.0 += s.messages();
            e.1 += s.mailbox_depth();
        }
        for (kind, (messages, depth)) in per_kind {
            metrics::counter!("troupe_actor_messages_total", "kind" => kind).absolute(messages);
            metrics::gauge!("troupe_actor_mailbox_depth", "kind" => kind).set(depth as f64);
        }
    }
}

/// Keeps a hot atomic on its own cache line, so writers of neighbouring fields do not contend for it.
#[derive(Debug, Default)]
#[repr(align(128))]
struct CachePadded<T>(T);

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
