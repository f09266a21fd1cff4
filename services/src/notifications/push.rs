//! [`PushHandler`]: the bus subscriber that turns `notification.created` outbox entries into pushes on
//! the user's `notifications:{user_id}` channel. Because the entry is committed in the same batch as
//! the notification, a push survives a crash between the write and the push (the bus delivers it
//! after the restart). Idempotent by notification id within a process: ids pushed recently (the last
//! [`RECENT_IDS`]) are skipped on redelivery.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::future::BoxFuture;
use troupe_actors::bus::{BusError, BusEvent, EventBus, Handler, HandlerError};

use super::{NOTIFICATION_CREATED, Notification, NotificationSink, channel_for};
use crate::events::DomainEvent;

/// Name of the push subscription on the bus.
pub const PUSH_SUBSCRIBER: &str = "notifications.push";
/// Notification ids remembered for deduplication.
pub const RECENT_IDS: usize = 4096;

/// Bounded set of recently pushed ids (oldest forgotten first).
#[derive(Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Publishes each stored notification to its user's channel. Clone freely.
#[derive(Clone)]
pub struct PushHandler {
    sink: Arc<dyn NotificationSink>,
    recent: Arc<Mutex<Recent>>,
}

impl std::fmt::Debug for PushHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHandler").finish_non_exhaustive()
    }
}

impl PushHandler {
    /// A handler publishing to `sink`.
    pub fn new(sink: Arc<dyn NotificationSink>) -> Self {
        Self { sink, recent: Arc::new(Mutex::new(Recent::default())) }
    }

    /// Pushes the notification carried by a `notification.created` payload (unless pushed recently).
    pub fn push(&self, payload: &[u8]) -> Result<bool, HandlerError> {
        let event: DomainEvent = serde_json::from_slice(payload)
            .map_err(|e| HandlerError::reject(format!("not a notification.created event: {e}")))?;
        let n: Notification = serde_json::from_value(event.payload)
            .map_err(|e| HandlerError::reject(format!("bad notification payload: {e}")))?;
        let key = format!("{}/{}", n.user_id, n.id);
        if !self.recent.lock().unwrap_or_else(PoisonError::into_inner).insert(&key) {
            return Ok(false);
        }
        let data = serde_json::to_vec(&n).map_err(HandlerError::reject)?;
        self.sink.publish(&channel_for(&n.user_id), Bytes::from(data));
        Ok(true)
    }
}

impl Handler for PushHandler {
    fn handle<'a>(&'a self, event: &'a BusEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move { self.push(&event.payload).map(|_| ()) })
    }
}

/// Registers `handler` on `bus` as subscriber [`PUSH_SUBSCRIBER`] for `notification.created`.
pub fn subscribe_push(bus: &EventBus, handler: PushHandler) -> Result<(), BusError> {
    bus.subscribe(PUSH_SUBSCRIBER, &[NOTIFICATION_CREATED], Arc::new(handler))
}
