//! The notification service: turns domain events into per-user notifications (stored, listed, marked
//! read) and pushes each new one to the user's `notifications:{user_id}` channel.
//!
//! The push follows from the durable write: the batch that stores a notification also appends a
//! `notification.created` domain event (aggregate = the notification, version 1, payload = the
//! notification JSON) to the outbox, and the bus subscriber [`PushHandler`] (registered by
//! [`subscribe_push`]) publishes it to the [`NotificationSink`]. A crash between the write and the
//! push therefore delays the push until the bus runs again instead of losing it. The handler skips
//! notification ids it pushed recently (redelivery within one process); after a crash between a push
//! and the bus's ack the WebSocket client may see that notification twice.
//!
//! Rules: `content.created` notifies every follower of the author (the `FOLLOWERS` partition of the
//! author, paged, with a bounded number of writes in flight); `user.followed` notifies the followed
//! user. A notification is written at most once per (user, event): its key derives from the event, so
//! a redelivered event finds its notification present and neither writes nor publishes again.
//!
//! Tables (this service is their only writer):
//! - [`NOTIFICATIONS`]: pk `(user_id)`, ck `(created_at_ms, event_id)`, value the [`Notification`]
//!   JSON. Listing scans it backwards: newest first.
//! - [`NOTIFICATIONS_UNREAD`]: the same keys and values for unread notifications only (the unread
//!   listing and read-all scan it).
//! - [`NOTIFICATION_COUNTS`]: pk `(user_id)`, ck `()`, value the unread count (u64 big-endian).
//!
//! Every change touching the three tables is one atomic, conditional `WriteBatch`, so the count stays
//! exact under concurrent writers.
//!
//! Runs as a supervised actor ([`NotificationService`], messages [`NotificationMsg`], typed client
//! [`NotificationClient`]); the actor only dispatches: each request runs on its own task so a large
//! fan-out never holds up the REST operations. The bus subscriber ([`NotificationHandler`], registered
//! by [`subscribe`]) goes through the client (resolved lazily from the registry, so it can be
//! subscribed before the tree starts), so while the service is down, restarting or its breaker is
//! open the delivery fails, the bus retries it and the event waits in the outbox.
//!
//! Collaborators: `troupe_actors::bus` (delivery), the store, [`crate::schema::FOLLOWERS`] (read only),
//! a [`NotificationSink`] (the channel hub, wired by the node).

mod push;
mod repo;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_actors::bus::{BusError, BusEvent, EventBus, Handler, HandlerError};
use troupe_actors::{ChildSpec, Registry, ServiceRef};
use troupe_storage::{Store, StoreError};

use crate::events::{CONTENT_CREATED, DomainEvent, USER_FOLLOWED};

pub use push::{PUSH_SUBSCRIBER, PushHandler, subscribe_push};
pub use repo::Notifications;

/// Outbox topic of a stored notification: what the push follows from.
pub use crate::events::NOTIFICATION_CREATED;

/// Table of notifications (see the module docs).
pub const NOTIFICATIONS: &str = "notifications";
/// Table of unread notifications (see the module docs).
pub const NOTIFICATIONS_UNREAD: &str = "notifications_unread";
/// Table of unread counts (see the module docs).
pub const NOTIFICATION_COUNTS: &str = "notification_counts";
/// Name of the supervised actor.
pub const SERVICE_NAME: &str = "notifications";
/// Name of the bus subscription (dead letters carry it).
pub const SUBSCRIBER: &str = "notifications";
/// Largest page of [`NotificationClient::list`].
pub const MAX_PAGE: usize = 100;

/// The channel a user's notifications are pushed to: `notifications:{user_id}`.
pub fn channel_for(user_id: &str) -> String {
    format!("notifications:{user_id}")
}

/// Where new notifications are pushed (the node wires it to the channel hub). `data` is the
/// notification's JSON. Must not block: called from the service's tasks.
pub trait NotificationSink: Send + Sync + 'static {
    /// Publishes `data` on `channel`.
    fn publish(&self, channel: &str, data: Bytes);
}

/// A sink that drops everything (no channel hub).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl NotificationSink for NoopSink {
    fn publish(&self, _channel: &str, _data: Bytes) {}
}

/// One notification, as stored, listed and pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// `{created_at}-{event_id}`: what [`NotificationClient::mark_read`] takes and list cursors are.
    pub id: String,
    /// The recipient.
    pub user_id: String,
    /// The event type that caused it (`content.created`, `user.followed`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The causing event's id.
    pub event_id: String,
    /// Who acted: the author (content) or the follower (follow).
    pub actor_id: String,
    /// The new content (for `content.created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    /// The new content's title (for `content.created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The event's timestamp (ms since the Unix epoch).
    pub created_at: u64,
    /// Whether the user has read it.
    pub read: bool,
}

/// One page of notifications, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// The notifications.
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next (older) page; `None` when this was the last.
    pub next: Option<String>,
}

/// What the notification service can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotificationError {
    /// No notification with this id belongs to this user (→ 404).
    #[error("notification {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A bad limit, id, cursor or user id (→ 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An event that can never be handled (bad payload): dead-lettered by the bus at once.
    #[error("bad event: {0}")]
    BadEvent(String),
    /// The service is unavailable, overloaded, timed out or stopped (→ 503/504; retryable).
    #[error(transparent)]
    Service(#[from] troupe_actors::Error),
    /// The store failed (→ 503 if retryable, else 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settings of the notification service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationConfig {
    /// Followers read per page during a fan-out.
    pub fanout_page: usize,
    /// Notification writes in flight at once during a fan-out.
    pub fanout_concurrency: usize,
    /// Deadline of one event delivery through [`NotificationClient::deliver`] (a fan-out to many
    /// followers takes longer than a REST call; a delivery cut short is retried and resumes, as
    /// notifications already written are skipped).
    pub deliver_timeout: Duration,
}

impl Default for NotificationConfig {
    /// Pages of 256 followers, 16 writes in flight, 30 s per delivery (below the bus's default 60 s
    /// handler timeout, so the service's own deadline answers first).
    fn default() -> Self {
        Self { fanout_page: 256, fanout_concurrency: 16, deliver_timeout: Duration::from_secs(30) }
    }
}

type Reply<T> = RpcReplyPort<Result<T, NotificationError>>;

/// Messages of [`NotificationService`].
pub enum NotificationMsg {
    /// A page of a user's notifications.
    List {
        /// The user.
        user_id: String,
        /// Only unread ones.
        unread_only: bool,
        /// Page size, 1..=[`MAX_PAGE`].
        limit: usize,
        /// The `next` of the previous page.
        cursor: Option<String>,
        /// Answer.
        reply: Reply<NotificationPage>,
    },
    /// Mark one notification read.
    MarkRead {
        /// The user.
        user_id: String,
        /// The notification id.
        id: String,
        /// Answer.
        reply: Reply<()>,
    },
    /// Mark all of a user's notifications read; answers how many were unread.
    ReadAll {
        /// The user.
        user_id: String,
        /// Answer.
        reply: Reply<u64>,
    },
    /// A user's unread count.
    UnreadCount {
        /// The user.
        user_id: String,
        /// Answer.
        reply: Reply<u64>,
    },
    /// Handle one domain event; answers how many new notifications it made.
    Deliver {
        /// The event.
        event: Box<DomainEvent>,
        /// Answer.
        reply: Reply<usize>,
    },
}

// Local only: reached through its ServiceRef on this node.
impl ractor::Message for NotificationMsg {}

impl fmt::Debug for NotificationMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::List { .. } => "List",
            Self::MarkRead { .. } => "MarkRead",
            Self::ReadAll { .. } => "ReadAll",
            Self::UnreadCount { .. } => "UnreadCount",
            Self::Deliver { .. } => "Deliver",
        };
        f.write_str(name)
    }
}

/// The notification service actor. Holds configuration only; state lives in the store.
#[derive(Clone)]
pub struct NotificationService {
    core: Notifications,
    sink: Arc<dyn NotificationSink>,
}

impl NotificationService {
    /// A service over `store` whose new notifications reach `sink` through the outbox and
    /// [`Self::push_handler`] (subscribe it with [`subscribe_push`]).
    pub fn new(store: Store, sink: Arc<dyn NotificationSink>, config: NotificationConfig) -> Self {
        Self { core: Notifications::new(store, config), sink }
    }

    /// Wakes `bus` after each stored notification so its push goes out without waiting for the
    /// bus's poll interval.
    #[must_use]
    pub fn with_bus(mut self, bus: &EventBus) -> Self {
        self.core = self.core.with_waker(bus.clone());
        self
    }

    /// The bus subscriber that pushes stored notifications to this service's sink.
    pub fn push_handler(&self) -> PushHandler {
        PushHandler::new(Arc::clone(&self.sink))
    }

    /// The supervised child, named [`SERVICE_NAME`].
    pub fn child_spec(self) -> ChildSpec {
        ChildSpec::new(SERVICE_NAME, self, || ())
    }
}

/// Runs `work` on its own task and sends its result to `reply` (the actor never waits for the store).
fn answer<T, F>(reply: Reply<T>, work: F)
where
    T: Send + 'static,
    F: Future<Output = Result<T, NotificationError>> + Send + 'static,
{
    tokio::spawn(async move {
        let _ = reply.send(work.await);
    });
}

impl Actor for NotificationService {
    type Msg = NotificationMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<NotificationMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<NotificationMsg>,
        msg: NotificationMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let core = self.core.clone();
        match msg {
            NotificationMsg::List { user_id, unread_only, limit, cursor, reply } => {
                answer(reply, async move { core.list(&user_id, unread_only, limit, cursor.as_deref()).await });
            }
            NotificationMsg::MarkRead { user_id, id, reply } => {
                answer(reply, async move { core.mark_read(&user_id, &id).await });
            }
            NotificationMsg::ReadAll { user_id, reply } => answer(reply, async move { core.read_all(&user_id).await }),
            NotificationMsg::UnreadCount { user_id, reply } => {
                answer(reply, async move { core.unread_count(&user_id).await });
            }
            NotificationMsg::Deliver { event, reply } => answer(reply, async move { core.deliver(&event).await }),
        }
        Ok(())
    }
}

/// The typed client of the notification service (what the gateway and the bus subscriber call).
/// Every call has a deadline and fails fast while the service is down or its breaker is open.
#[derive(Clone, Debug)]
pub struct NotificationClient {
    svc: ServiceRef<NotificationMsg>,
    deliver_timeout: Duration,
}

impl NotificationClient {
    /// A client over the service's `ServiceRef`; deliveries get [`NotificationConfig::default`]'s deadline.
    pub fn new(svc: ServiceRef<NotificationMsg>) -> Self {
        Self { svc, deliver_timeout: NotificationConfig::default().deliver_timeout }
    }

    /// A client of the actor named [`SERVICE_NAME`] in `registry`.
    pub fn from_registry(registry: &Registry) -> Result<Self, troupe_actors::Error> {
        Ok(Self::new(registry.service(SERVICE_NAME)?))
    }

    /// Sets the deadline of [`deliver`](Self::deliver).
    #[must_use]
    pub fn with_deliver_timeout(mut self, timeout: Duration) -> Self {
        self.deliver_timeout = timeout;
        self
    }

    /// A page of `user_id`'s notifications (only unread ones if `unread_only`), newest first; `limit`
    /// 1..=[`MAX_PAGE`]; `cursor` is the previous page's `next`.
    pub async fn list(
        &self,
        user_id: &str,
        unread_only: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<NotificationPage, NotificationError> {
        let (user_id, cursor) = (user_id.to_owned(), cursor.map(str::to_owned));
        self.svc.call(|reply| NotificationMsg::List { user_id, unread_only, limit, cursor, reply }).await?
    }

    /// Marks notification `id` read; `NotFound` unless it is `user_id`'s. Idempotent.
    pub async fn mark_read(&self, user_id: &str, id: &str) -> Result<(), NotificationError> {
        let (user_id, id) = (user_id.to_owned(), id.to_owned());
        self.svc.call(|reply| NotificationMsg::MarkRead { user_id, id, reply }).await?
    }

    /// Marks all of `user_id`'s notifications read; returns how many were unread.
    pub async fn read_all(&self, user_id: &str) -> Result<u64, NotificationError> {
        let user_id = user_id.to_owned();
        self.svc.call(|reply| NotificationMsg::ReadAll { user_id, reply }).await?
    }

    /// `user_id`'s unread count.
    pub async fn unread_count(&self, user_id: &str) -> Result<u64, NotificationError> {
        let user_id = user_id.to_owned();
        self.svc.call(|reply| NotificationMsg::UnreadCount { user_id, reply }).await?
    }

    /// Handles one domain event; returns how many new notifications it made (0 for a redelivery or an
    /// event type this service ignores).
    pub async fn deliver(&self, event: DomainEvent) -> Result<usize, NotificationError> {
        let event = Box::new(event);
        self.svc.call_with_timeout(|reply| NotificationMsg::Deliver { event, reply }, self.deliver_timeout).await?
    }
}

/// The bus subscriber: decodes the [`DomainEvent`] and delivers it through the client. Undecodable
/// or malformed events are rejected (dead-lettered at once); every other failure (service down,
/// restarting, breaker open, timeout, store error) is retried by the bus.
#[derive(Clone, Debug)]
pub struct NotificationHandler {
    client: Arc<OnceLock<NotificationClient>>,
    registry: Option<Registry>,
    deliver_timeout: Duration,
}

impl NotificationHandler {
    /// A handler delivering through `client`.
    pub fn new(client: NotificationClient) -> Self {
        let deliver_timeout = client.deliver_timeout;
        Self { client: Arc::new(OnceLock::from(client)), registry: None, deliver_timeout }
    }

    /// A handler that finds the service named [`SERVICE_NAME`] in `registry` at its first delivery,
    /// so it can be subscribed before the supervision tree holding the service starts (deliveries
    /// before that fail and are retried).
    pub fn from_registry(registry: Registry) -> Self {
        Self {
            client: Arc::new(OnceLock::new()),
            registry: Some(registry),
            deliver_timeout: NotificationConfig::default().deliver_timeout,
        }
    }

    /// Sets the deadline of one delivery (for a handler made by [`from_registry`](Self::from_registry);
    /// keep it below the bus's `handler_timeout`).
    #[must_use]
    pub fn with_deliver_timeout(mut self, timeout: Duration) -> Self {
        self.deliver_timeout = timeout;
        self
    }

    fn client(&self) -> Result<&NotificationClient, HandlerError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let registry = self.registry.as_ref().ok_or_else(|| HandlerError::retry("no notification client"))?;
        let client = NotificationClient::from_registry(registry)
            .map_err(HandlerError::retry)?
            .with_deliver_timeout(self.deliver_timeout);
        Ok(self.client.get_or_init(|| client))
    }
}

impl Handler for NotificationHandler {
    fn handle<'a>(&'a self, event: &'a BusEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let domain: DomainEvent = serde_json::from_slice(&event.payload)
                .map_err(|e| HandlerError::reject(format!("not a domain event: {e}")))?;
            match self.client()?.deliver(domain).await {
                Ok(_) => Ok(()),
                Err(e @ NotificationError::BadEvent(_)) => Err(HandlerError::reject(e)),
                Err(e) => Err(HandlerError::retry(e)),
            }
        })
    }
}

/// Registers `handler` on `bus` as subscriber [`SUBSCRIBER`] for `content.created` and `user.followed`.
pub fn subscribe(bus: &EventBus, handler: NotificationHandler) -> Result<(), BusError> {
    bus.subscribe(SUBSCRIBER, &[CONTENT_CREATED, USER_FOLLOWED], Arc::new(handler))
}

#[cfg(test)]
mod tests;
