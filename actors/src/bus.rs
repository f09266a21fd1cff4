//! The event bus: the one drainer of the store outbox. It reads outbox entries in id order (in pages,
//! woken by [`EventBus::notify`] after a writer commits, or by a poll interval), hands each entry to
//! every subscriber whose topic filter matches, and acknowledges the entry (`Store::ack_outbox`) only
//! once every matching subscriber has either succeeded or had the entry written to the dead-letter
//! table. Delivery is therefore at least once: a crash between a handler's success and the ack
//! delivers the entry again after the restart, so handlers must be idempotent (by event id).
//!
//! How it runs: [`EventBus::child_spec`] gives a supervised actor ([`BusActor`]) that drives one
//! drainer task; the drainer runs one worker task per subscriber, so a slow or failing subscriber
//! never holds up the others. If the drainer dies the actor fails and its supervisor restarts it;
//! the new drainer starts again from the oldest unacknowledged entry.
//!
//! Bounded memory: at most [`BusConfig::max_in_flight`] entries are held (read, not yet acked). A
//! subscriber that keeps failing holds its entries until they are dead-lettered after
//! [`RetryPolicy::max_attempts`]; while the window is full of such entries no new entries are read
//! (the others wait, but not forever).
//!
//! Ordering, per subscriber: entries that succeed on their first attempt are delivered in outbox-id
//! order. With [`DeliveryOrder::FirstAttempt`] (the default) a failed entry waits for its retry while
//! later entries go ahead, so a retried entry arrives after entries with greater ids. With
//! [`DeliveryOrder::Strict`] a failed entry blocks the subscriber's later entries until it succeeds or
//! is dead-lettered (head-of-line), so the subscriber sees ids in increasing order except after a
//! restart (redelivery starts again at the oldest unacknowledged entry) and for dead letters replayed
//! later.
//!
//! Batches: a subscription made with [`Subscription::batched`] gets a [`BatchHandler`] that takes up
//! to `max_batch` consecutive events per call and may keep `pipeline` calls in flight; results are
//! taken in call order, so per-subscriber ordering is the same as above. In strict order a failed
//! event sends it and every later event already handed over back to the handler, from the failed one
//! on and in order, after the backoff (later events may then repeat, never reorder): what a publisher
//! with confirms needs after a broker outage.
//!
//! In a cluster every node's bus shares one outbox: a drain gate ([`EventBus::set_drain_gate`]) lets
//! only the node holding the outbox lease drain it; the others wait, and one of them takes over when
//! the holder dies or leaves.
//!
//! Collaborators: `troupe_storage::Store` (outbox, dead-letter table), the [`Supervisor`](crate::Supervisor)
//! (restarts), the `metrics` facade. The bus knows no domain: topics and payloads are opaque.

mod dead;
mod drain;
mod gate;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinHandle};
use troupe_storage::{Store, StoreError};

use crate::supervisor::{Backoff, ChildSpec};

pub use dead::{DeadLetter, DeadLetterPage};

/// One outbox entry as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEvent {
    /// The outbox id (increasing in commit order); stable across redeliveries.
    pub id: u64,
    /// The topic (for domain events: the event type, e.g. `content.created`).
    pub topic: String,
    /// The opaque payload.
    pub payload: Bytes,
}

/// Why a handler did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure (dependency down, timeout): retried with backoff, dead-lettered after the
    /// subscriber's last attempt.
    #[error("{0}")]
    Retry(String),
    /// The event can never be handled (undecodable payload): dead-lettered at once, no retries.
    #[error("rejected: {0}")]
    Reject(String),
}

impl HandlerError {
    /// A transient failure.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }
    /// A permanent failure.
    pub fn reject(reason: impl fmt::Display) -> Self {
        Self::Reject(reason.to_string())
    }
}

/// A subscriber's handler. Object-safe; called by one task at a time per subscriber (never
/// concurrently by the bus itself; [`EventBus::replay`] may run alongside). Must be idempotent by
/// [`BusEvent::id`] or by an id inside the payload: deliveries repeat after crashes.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event. `Ok` means its effect is durable: the entry may be acknowledged.
    fn handle<'a>(&'a self, event: &'a BusEvent) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// What a [`BatchHandler`] call resolves with: one result per event, in the events' order.
pub type BatchResults = Vec<Result<(), HandlerError>>;

/// A subscriber's handler taking consecutive events in batches, with several batches in flight (see
/// [`Subscription::batched`]). Object-safe. Called in outbox-id order by one task per subscriber; up to
/// `pipeline` returned futures are pending at once and their results are taken in call order. The
/// handler must fix the order of a batch when it is called (before returning the future; e.g. by
/// handing the batch to one ordered task), so that batch `n` is processed before batch `n + 1`.
/// Results: one per event (missing ones count as retryable failures); `Ok` means the event's effect
/// is durable. Must be idempotent by event id, like [`Handler`].
pub trait BatchHandler: Send + Sync + 'static {
    /// Takes `events` (consecutive for this subscriber, in id order, non-empty).
    fn handle_batch(&self, events: Vec<Arc<BusEvent>>) -> BoxFuture<'static, BatchResults>;
}

/// How a subscriber's events reach its code.
#[derive(Clone)]
pub(crate) enum Dispatch {
    /// One event per call.
    One(Arc<dyn Handler>),
    /// Batches, pipelined.
    Batch {
        handler: Arc<dyn BatchHandler>,
        /// Most events per call; at least 1.
        max_batch: usize,
        /// Most calls in flight; at least 1.
        pipeline: usize,
    },
}

/// Which topics a subscription takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicFilter {
    /// `*`: every topic.
    All,
    /// `content.created`: exactly this topic.
    Exact(String),
    /// `content.*`: topics starting with `content.` (stored with the trailing dot).
    Prefix(String),
}

impl TopicFilter {
    /// Parses `*`, `prefix.*` or an exact topic. Topics are non-empty, at most 255 bytes, without
    /// whitespace; `*` may appear only as the whole filter or as the last segment.
    pub fn parse(filter: &str) -> Result<Self, BusError> {
        let bad = |reason: &str| BusError::BadFilter { filter: filter.to_owned(), reason: reason.to_owned() };
        if filter == "*" {
            return Ok(Self::All);
        }
        if filter.is_empty() || filter.len() > 255 {
            return Err(bad("must be 1 to 255 bytes"));
        }
        if filter.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain whitespace"));
        }
        match filter.strip_suffix(".*") {
            Some(prefix) if !prefix.is_empty() && !prefix.contains('*') => Ok(Self::Prefix(format!("{prefix}."))),
            Some(_) => Err(bad("`*` may only be the last segment")),
            None if filter.contains('*') => Err(bad("`*` may only be the whole filter or the last segment")),
            None => Ok(Self::Exact(filter.to_owned())),
        }
    }

    /// Whether `topic` passes this filter.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::All => true,
            Self::Exact(t) => t == topic,
            Self::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

impl FromStr for TopicFilter {
    type Err = BusError;
    fn from_str(s: &str) -> Result<Self, BusError> {
        Self::parse(s)
    }
}

/// Per-subscriber delivery order while entries are retried (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// First attempts go in id order; a failed entry is retried later while later entries proceed.
    #[default]
    FirstAttempt,
    /// A failed entry blocks later entries of this subscriber until it succeeds or is dead-lettered.
    Strict,
}

/// Retries of one failed delivery: delays `backoff.delay(n)` after the n-th failed attempt (exponential,
/// capped, jittered), dead letter after `max_attempts` attempts in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay schedule between attempts.
    pub backoff: Backoff,
    /// Attempts (the first included) before the delivery is dead-lettered; at least 1.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 100 ms doubling to 30 s with ±20 % jitter, 12 attempts (about 110 s of retrying).
    fn default() -> Self {
        Self {
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(30), jitter: 0.2 },
            max_attempts: 12,
        }
    }
}

/// Settings of one bus.
#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    /// Fallback wake-up when nobody calls [`EventBus::notify`].
    pub poll_interval: Duration,
    /// Outbox entries read per page.
    pub page_size: usize,
    /// Most entries held at once (read, not yet acknowledged): bounds memory.
    pub max_in_flight: usize,
    /// Default retry policy of subscriptions.
    pub retry: RetryPolicy,
    /// A handler call running longer than this counts as a failed attempt.
    pub handler_timeout: Duration,
    /// Table of dead letters (services use `troupe_services::schema::DEAD_LETTERS`).
    pub dead_letter_table: String,
}

impl Default for BusConfig {
    /// 100 ms poll, pages of 256, 1024 entries in flight, [`RetryPolicy::default`], 60 s handler
    /// timeout, table `dead_letters`.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            page_size: 256,
            max_in_flight: 1024,
            retry: RetryPolicy::default(),
            handler_timeout: Duration::from_secs(60),
            dead_letter_table: "dead_letters".to_owned(),
        }
    }
}

/// One subscription: a name (unique on the bus; it keys dead letters and metrics), topic filters
/// (an entry is delivered when any matches) and a handler.
#[derive(Clone)]
pub struct Subscription {
    name: String,
    topics: Vec<TopicFilter>,
    handler: Dispatch,
    order: DeliveryOrder,
    retry: Option<RetryPolicy>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription named `name` (`[a-z0-9][a-z0-9_.-]{0,63}`) to the topics matching any of
    /// `topics` (see [`TopicFilter::parse`]; at least one).
    pub fn new(name: &str, topics: &[&str], handler: Arc<dyn Handler>) -> Result<Self, BusError> {
        Self::with_dispatch(name, topics, Dispatch::One(handler))
    }

    /// A subscription whose handler takes up to `max_batch` consecutive events per call, with up to
    /// `pipeline` calls in flight (both at least 1; see [`BatchHandler`]).
    pub fn batched(
        name: &str,
        topics: &[&str],
        handler: Arc<dyn BatchHandler>,
        max_batch: usize,
        pipeline: usize,
    ) -> Result<Self, BusError> {
        if max_batch == 0 || pipeline == 0 {
            return Err(BusError::BadConfig("max_batch and pipeline must be at least 1".to_owned()));
        }
        Self::with_dispatch(name, topics, Dispatch::Batch { handler, max_batch, pipeline })
    }

    fn with_dispatch(name: &str, topics: &[&str], handler: Dispatch) -> Result<Self, BusError> {
        let ok_name = name.len() <= 64
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        if !ok_name {
            return Err(BusError::BadName { name: name.to_owned() });
        }
        if topics.is_empty() {
            return Err(BusError::BadFilter { filter: String::new(), reason: "at least one topic filter".to_owned() });
        }
        let topics = topics.iter().map(|t| TopicFilter::parse(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { name: name.to_owned(), topics, handler, order: DeliveryOrder::default(), retry: None })
    }

    /// Sets the delivery order during retries.
    #[must_use]
    pub fn order(mut self, order: DeliveryOrder) -> Self {
        self.order = order;
        self
    }

    /// Overrides the bus's retry policy for this subscription.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// What the bus can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A topic filter does not parse.
    #[error("bad topic filter {filter:?}: {reason}")]
    BadFilter {
        /// The filter.
        filter: String,
        /// Why.
        reason: String,
    },
    /// A subscriber name is not `[a-z0-9][a-z0-9_.-]{0,63}`.
    #[error("bad subscriber name {name:?}: use [a-z0-9][a-z0-9_.-]{{0,63}}")]
    BadName {
        /// The name.
        name: String,
    },
    /// Another subscription already has this name.
    #[error("subscriber {name} is already registered")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// Subscriptions are fixed once the bus has started.
    #[error("the bus has started; subscribe before starting it")]
    AlreadyStarted,
    /// A [`BusConfig`] value is out of range.
    #[error("bad bus configuration: {0}")]
    BadConfig(String),
    /// A page limit out of range.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A dead-letter id or cursor is not `{outbox_id}-{subscriber}`.
    #[error("bad dead-letter id {0:?}")]
    BadId(String),
    /// No dead letter has this id.
    #[error("no dead letter {id}")]
    NotFound {
        /// The id.
        id: String,
    },
    /// The dead letter's subscriber is not registered on this bus (any more).
    #[error("subscriber {name} is not registered")]
    UnknownSubscriber {
        /// The name.
        name: String,
    },
    /// A replayed delivery failed again; the dead letter stays (its attempts and last error updated).
    #[error("replay failed: {0}")]
    ReplayFailed(HandlerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Metric handles of one subscriber, resolved once.
struct SubMetrics {
    delivered: metrics::Counter,
    retries: metrics::Counter,
    dead_letters: metrics::Counter,
}

/// A registered subscription with its resolved policy.
pub(crate) struct Subscriber {
    name: String,
    topics: Vec<TopicFilter>,
    handler: Dispatch,
    order: DeliveryOrder,
    retry: RetryPolicy,
    metrics: SubMetrics,
}

impl Subscriber {
    fn matches(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t.matches(topic))
    }
}

/// State shared by the handle, the actor and the drainer.
pub(crate) struct Inner {
    store: Store,
    config: BusConfig,
    wake: Notify,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    started: AtomicBool,
    /// The running drainer, so a new incarnation can make sure the old one is gone.
    drainer: Mutex<Option<AbortHandle>>,
    in_flight: AtomicUsize,
    /// When set, the drainer runs only while it reads `true` (see [`EventBus::set_drain_gate`]).
    gate: Mutex<Option<watch::Receiver<bool>>>,
}

impl Inner {
    fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn subscriber(&self, name: &str) -> Option<Arc<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|s| s.name == name).cloned()
    }
}

/// The handle to one event bus. Clone freely. Register subscriptions, then put
/// [`child_spec`](Self::child_spec) in a supervision tree; writers call [`notify`](Self::notify)
/// after each commit that appended to the outbox.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.inner.subscribers().iter().map(|s| s.name.clone()).collect::<Vec<_>>())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus draining `store`'s outbox. Checks the config (page size and window ≥ 1, a valid
    /// dead-letter table name, at least one attempt).
    pub fn new(store: Store, config: BusConfig) -> Result<Self, BusError> {
        if config.page_size == 0 || config.max_in_flight == 0 {
            return Err(BusError::BadConfig("page_size and max_in_flight must be at least 1".to_owned()));
        }
        if config.retry.max_attempts == 0 {
            return Err(BusError::BadConfig("retry.max_attempts must be at least 1".to_owned()));
        }
        if config.poll_interval.is_zero() || config.handler_timeout.is_zero() {
            return Err(BusError::BadConfig("poll_interval and handler_timeout must be positive".to_owned()));
        }
        troupe_storage::check_table(&config.dead_letter_table)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                wake: Notify::new(),
                subscribers: Mutex::new(Vec::new()),
                started: AtomicBool::new(false),
                drainer: Mutex::new(None),
                in_flight: AtomicUsize::new(0),
                gate: Mutex::new(None),
            }),
        })
    }

    /// Registers `handler` as subscriber `name` for entries whose topic matches any of `topics`
    /// (`content.created`, `content.*`, `*`). Only before the bus starts.
    pub fn subscribe(&self, name: &str, topics: &[&str], handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.subscribe_with(Subscription::new(name, topics, handler)?)
    }

    /// Registers a subscription built with [`Subscription`] options. Only before the bus starts.
    pub fn subscribe_with(&self, sub: Subscription) -> Result<(), BusError> {
        let mut subs = self.inner.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock the actor's start also takes, so no subscription slips in after it.
        if self.inner.started.load(Ordering::Acquire) {
            return Err(BusError::AlreadyStarted);
        }
        if subs.iter().any(|s| s.name == sub.name) {
            return Err(BusError::Duplicate { name: sub.name });
        }
        let label = sub.name.clone();
        subs.push(Arc::new(Subscriber {
            metrics: SubMetrics {
                delivered: metrics::counter!("troupe_bus_delivered_total", "subscriber" => label.clone()),
                retries: metrics::counter!("troupe_bus_retries_total", "subscriber" => label.clone()),
                dead_letters: metrics::counter!("troupe_bus_dead_letters_total", "subscriber" => label),
            },
            name: sub.name,
            topics: sub.topics,
            handler: sub.handler,
            order: sub.order,
            retry: sub.retry.unwrap_or(self.inner.config.retry),
        }));
        Ok(())
    }

    /// Makes the drain conditional: the bus drains the outbox only while `gate` reads `true`, stops
    /// draining as soon as it turns `false` (entries not yet acknowledged are delivered again by the
    /// next drainer), and waits while it is `false`. A cluster opens it on the one node holding the
    /// outbox lease, so exactly one node drains at a time. Without a gate the bus always drains. Only
    /// before the bus starts.
    pub fn set_drain_gate(&self, gate: watch::Receiver<bool>) -> Result<(), BusError> {
        let _subs = self.inner.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        if self.inner.started.load(Ordering::Acquire) {
            return Err(BusError::AlreadyStarted);
        }
        *self.inner.gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(gate);
        Ok(())
    }

    /// Wakes the drainer now (cheap; call after committing a batch with outbox entries). Wake-ups
    /// coalesce; without them the bus still polls every `poll_interval`.
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// Entries currently held by the drainer (read, not yet acknowledged); at most `max_in_flight`.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The names of the registered subscribers, in registration order.
    pub fn subscriber_names(&self) -> Vec<String> {
        self.inner.subscribers().iter().map(|s| s.name.clone()).collect()
    }

    /// The bus's configuration.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// A supervised child running this bus (permanent, 5 s shutdown). Start it once per node.
    pub fn child_spec(&self, name: impl Into<String>) -> ChildSpec {
        ChildSpec::new(name, BusActor { inner: Arc::clone(&self.inner) }, || ()).shutdown(Duration::from_secs(5))
    }

    /// Up to `limit` (1..=1000) dead letters, oldest outbox id first, after the one whose id is
    /// `cursor`; `next` is the cursor for the following page.
    pub async fn dead_letters(&self, limit: usize, cursor: Option<&str>) -> Result<DeadLetterPage, BusError> {
        dead::list(&self.inner, limit, cursor).await
    }

    /// Delivers dead letter `id` to its subscriber once more: removed on success; on failure it stays
    /// (attempts and last error updated) and the handler's error is returned.
    pub async fn replay(&self, id: &str) -> Result<(), BusError> {
        dead::replay(&self.inner, id).await
    }

    /// Removes dead letter `id` without delivering it.
    pub async fn discard(&self, id: &str) -> Result<(), BusError> {
        dead::discard(&self.inner, id).await
    }
}

/// The supervised actor of a bus: it drives the drainer task and fails when the drainer dies, so its
/// supervisor restarts it (and the drainer starts again from the oldest unacknowledged entry).
#[derive(Clone)]
pub struct BusActor {
    inner: Arc<Inner>,
}

/// Messages of [`BusActor`].
#[derive(Debug)]
pub enum BusMsg {
    /// The drainer task ended (it never does on its own) or panicked.
    DrainerExited(String),
}

// Local only: the bus never takes messages from other nodes.
impl ractor::Message for BusMsg {}

/// What changes while a [`BusActor`] runs.
pub struct BusActorState {
    drainer: AbortHandle,
    monitor: JoinHandle<()>,
}

impl Actor for BusActor {
    type Msg = BusMsg;
    type State = BusActorState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<BusMsg>, _: ()) -> Result<BusActorState, ActorProcessingErr> {
        let subscribers = {
            let subs = self.inner.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
            self.inner.started.store(true, Ordering::Release);
            subs.clone()
        };
        // A killed incarnation never ran post_stop: make sure its drainer is gone before starting one.
        let previous = self.inner.drainer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(previous) = previous {
            previous.abort();
        }
        let gate = self.inner.gate.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let task = match gate {
            None => tokio::spawn(drain::run(Arc::clone(&self.inner), subscribers)),
            Some(gate) => tokio::spawn(gate::run(Arc::clone(&self.inner), subscribers, gate)),
        };
        let drainer = task.abort_handle();
        *self.inner.drainer.lock().unwrap_or_else(PoisonError::into_inner) = Some(drainer.clone());
        let monitor = tokio::spawn(async move {
            let reason = match task.await {
                Ok(reason) => reason,
                Err(e) if e.is_cancelled() => return,
                Err(e) => format!("drainer panicked: {e}"),
            };
            let _ = myself.send_message(BusMsg::DrainerExited(reason));
        });
        Ok(BusActorState { drainer, monitor })
    }

    async fn handle(&self, _: ActorRef<BusMsg>, msg: BusMsg, _: &mut BusActorState) -> Result<(), ActorProcessingErr> {
        match msg {
            BusMsg::DrainerExited(reason) => Err(reason.into()),
        }
    }

    async fn post_stop(&self, _: ActorRef<BusMsg>, state: &mut BusActorState) -> Result<(), ActorProcessingErr> {
        state.drainer.abort();
        // The monitor ends once the aborted drainer (and with it every worker) is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut state.monitor).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
