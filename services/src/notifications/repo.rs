//! [`Notifications`]: the service's work on the store — idempotent inserts with the unread index and
//! count in one conditional batch, listing, marking read, and the event rules (fan-out to followers).

use std::ops::Bound;

use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use troupe_storage::{Condition, Key, KeyPart, Row, Scan, Store, StoreError, WriteBatch};

use troupe_actors::bus::EventBus;

use super::{
    MAX_PAGE, NOTIFICATION_COUNTS, NOTIFICATION_CREATED, NOTIFICATIONS, NOTIFICATIONS_UNREAD, Notification,
    NotificationConfig, NotificationError, NotificationPage,
};
use crate::events::{CONTENT_CREATED, DomainEvent, USER_FOLLOWED};
use crate::schema::FOLLOWERS;

/// Conditional writes that lose a race are retried this many times before `Unavailable`.
const CAS_ATTEMPTS: usize = 32;
/// Unread notifications marked read per batch by `read_all`.
const READ_ALL_BATCH: usize = 100;
/// Longest user id accepted.
const MAX_USER_ID: usize = 256;

/// `content.created` payload fields this service uses.
#[derive(Deserialize)]
struct ContentCreated {
    content_id: String,
    author_id: String,
    #[serde(default)]
    title: Option<String>,
}

/// `user.followed` payload.
#[derive(Deserialize)]
struct UserFollowed {
    follower_id: String,
    followed_id: String,
}

/// The notification logic over the store; cheap to clone. The actor runs it; tests may call it
/// directly.
#[derive(Clone)]
pub struct Notifications {
    store: Store,
    config: NotificationConfig,
    /// Woken after a notification (and its push event) is committed.
    waker: Option<EventBus>,
}

fn contention(what: &str) -> NotificationError {
    NotificationError::Store(StoreError::Unavailable { reason: format!("{what}: too much contention") })
}

fn check_user(user_id: &str) -> Result<Key, NotificationError> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID {
        return Err(NotificationError::BadRequest(format!("user id must be 1 to {MAX_USER_ID} bytes")));
    }
    Ok(Key::from(user_id))
}

fn ck(created_at: u64, event_id: &str) -> Key {
    Key::empty().u64(created_at).str(event_id)
}

fn format_id(created_at: u64, event_id: &str) -> String {
    format!("{created_at}-{event_id}")
}

/// `{created_at}-{event_id}` → clustering key.
fn parse_id(id: &str) -> Result<Key, NotificationError> {
    let bad = || NotificationError::BadRequest(format!("bad notification id {id:?}"));
    let (ts, event_id) = id.split_once('-').ok_or_else(bad)?;
    if ts.is_empty() || event_id.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(ck(ts.parse().map_err(|_| bad())?, event_id))
}

fn decode(row: &Row) -> Result<Notification, NotificationError> {
    serde_json::from_slice(&row.value).map_err(|e| {
        NotificationError::Store(StoreError::CorruptData {
            table: NOTIFICATIONS.to_owned(),
            key: row.ck.display(),
            reason: e.to_string(),
        })
    })
}

fn encode(n: &Notification) -> Result<Vec<u8>, NotificationError> {
    serde_json::to_vec(n).map_err(|e| NotificationError::BadEvent(e.to_string()))
}

/// The `notification.created` outbox payload: a [`DomainEvent`] whose aggregate is the notification
/// (`{user_id}/{id}`, created once: version 1) and whose payload is the notification.
fn push_event(n: &Notification) -> Result<Vec<u8>, NotificationError> {
    let event = DomainEvent {
        id: crate::common::new_id(),
        kind: NOTIFICATION_CREATED.to_owned(),
        aggregate_id: format!("{}/{}", n.user_id, n.id),
        payload: serde_json::to_value(n).map_err(|e| NotificationError::BadEvent(e.to_string()))?,
        timestamp: n.created_at,
        version: 1,
        traceparent: None,
    };
    serde_json::to_vec(&event).map_err(|e| NotificationError::BadEvent(e.to_string()))
}

fn payload<T: serde::de::DeserializeOwned>(event: &DomainEvent) -> Result<T, NotificationError> {
    serde_json::from_value(event.payload.clone())
        .map_err(|e| NotificationError::BadEvent(format!("{} {}: bad payload: {e}", event.kind, event.id)))
}

impl Notifications {
    /// The logic over `store`.
    pub fn new(store: Store, config: NotificationConfig) -> Self {
        let config = NotificationConfig {
            fanout_page: config.fanout_page.max(1),
            fanout_concurrency: config.fanout_concurrency.max(1),
            ..config
        };
        Self { store, config, waker: None }
    }

    /// Calls `bus.notify()` after each new notification is committed.
    #[must_use]
    pub fn with_waker(mut self, bus: EventBus) -> Self {
        self.waker = Some(bus);
        self
    }

    /// The unread count row: (count, condition that it is unchanged).
    async fn count(&self, pk: &Key) -> Result<(u64, Condition), NotificationError> {
        match self.store.get(NOTIFICATION_COUNTS, pk, &Key::empty()).await? {
            None => Ok((0, Condition::Absent)),
            Some(row) => {
                let bytes: [u8; 8] = row.value.as_slice().try_into().map_err(|_| {
                    NotificationError::Store(StoreError::CorruptData {
                        table: NOTIFICATION_COUNTS.to_owned(),
                        key: pk.display(),
                        reason: "count is not a u64".to_owned(),
                    })
                })?;
                Ok((u64::from_be_bytes(bytes), Condition::Version(row.version)))
            }
        }
    }

    /// Writes `n` unless its (user, event) notification exists; returns whether it was new. A new one
    /// is committed together with its `notification.created` outbox entry, from which the push to the
    /// user's channel follows.
    pub async fn insert(&self, n: &Notification) -> Result<bool, NotificationError> {
        let pk = check_user(&n.user_id)?;
        let key = ck(n.created_at, &n.event_id);
        let value = encode(n)?;
        let push = push_event(n)?;
        for _ in 0..CAS_ATTEMPTS {
            let (count, unchanged) = self.count(&pk).await?;
            let mut batch = WriteBatch::new();
            batch.put_with(NOTIFICATIONS, &pk, &key, value.clone(), None, Condition::Absent);
            batch.put_with(NOTIFICATIONS_UNREAD, &pk, &key, value.clone(), None, Condition::Absent);
            batch.put_with(
                NOTIFICATION_COUNTS,
                &pk,
                &Key::empty(),
                (count + 1).to_be_bytes().to_vec(),
                None,
                unchanged,
            );
            batch.append_outbox(NOTIFICATION_CREATED, push.clone());
            match self.store.commit(batch).await {
                Ok(_) => {
                    if let Some(bus) = &self.waker {
                        bus.notify();
                    }
                    return Ok(true);
                }
                Err(StoreError::Conflict { .. }) => {
                    if self.store.get(NOTIFICATIONS, &pk, &key).await?.is_some() {
                        return Ok(false);
                    }
                    // The count moved under us: read it again.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(contention("insert notification"))
    }

    /// A page of `user_id`'s notifications, newest first.
    pub async fn list(
        &self,
        user_id: &str,
        unread_only: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<NotificationPage, NotificationError> {
        let pk = check_user(user_id)?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(NotificationError::BadRequest(format!("limit must be 1..={MAX_PAGE}")));
        }
        let mut scan = Scan::all().rev().limit(limit);
        if let Some(cursor) = cursor {
            scan.end = Bound::Excluded(parse_id(cursor)?.encode());
        }
        let table = if unread_only { NOTIFICATIONS_UNREAD } else { NOTIFICATIONS };
        let page = self.store.scan(table, &pk, &scan).await?;
        let items = page.rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let next = if page.next.is_some() && items.len() == limit { items.last().map(|n| n.id.clone()) } else { None };
        Ok(NotificationPage { items, next })
    }

    /// Marks one of `user_id`'s notifications read (idempotent); `NotFound` if it is not theirs.
    pub async fn mark_read(&self, user_id: &str, id: &str) -> Result<(), NotificationError> {
        let pk = check_user(user_id)?;
        let key = parse_id(id)?;
        for _ in 0..CAS_ATTEMPTS {
            let Some(unread) = self.store.get(NOTIFICATIONS_UNREAD, &pk, &key).await? else {
                // Read already, or not this user's (its key is under another partition).
                return match self.store.get(NOTIFICATIONS, &pk, &key).await? {
                    Some(_) => Ok(()),
                    None => Err(NotificationError::NotFound { id: id.to_owned() }),
                };
            };
            let mut n = decode(&unread)?;
            n.read = true;
            let (count, unchanged) = self.count(&pk).await?;
            let mut batch = WriteBatch::new();
            batch.put(NOTIFICATIONS, &pk, &key, encode(&n)?);
            batch.delete(NOTIFICATIONS_UNREAD, &pk, &key, Condition::Version(unread.version));
            batch.put_with(
                NOTIFICATION_COUNTS,
                &pk,
                &Key::empty(),
                count.saturating_sub(1).to_be_bytes().to_vec(),
                None,
                unchanged,
            );
            match self.store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(contention("mark read"))
    }

    /// Marks every unread notification of `user_id` read, in batches; returns how many.
    pub async fn read_all(&self, user_id: &str) -> Result<u64, NotificationError> {
        let pk = check_user(user_id)?;
        let mut marked = 0u64;
        let mut conflicts = 0;
        loop {
            let page = self.store.scan(NOTIFICATIONS_UNREAD, &pk, &Scan::all().limit(READ_ALL_BATCH)).await?;
            if page.rows.is_empty() {
                return Ok(marked);
            }
            let (count, unchanged) = self.count(&pk).await?;
            let mut batch = WriteBatch::new();
            for row in &page.rows {
                let mut n = decode(row)?;
                n.read = true;
                batch.put(NOTIFICATIONS, &pk, &row.ck, encode(&n)?);
                batch.delete(NOTIFICATIONS_UNREAD, &pk, &row.ck, Condition::Version(row.version));
            }
            let left = count.saturating_sub(page.rows.len() as u64);
            batch.put_with(NOTIFICATION_COUNTS, &pk, &Key::empty(), left.to_be_bytes().to_vec(), None, unchanged);
            match self.store.commit(batch).await {
                Ok(_) => {
                    marked += page.rows.len() as u64;
                    conflicts = 0;
                }
                Err(StoreError::Conflict { .. }) => {
                    conflicts += 1;
                    if conflicts >= CAS_ATTEMPTS {
                        return Err(contention("read all"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `user_id`'s unread count.
    pub async fn unread_count(&self, user_id: &str) -> Result<u64, NotificationError> {
        let pk = check_user(user_id)?;
        Ok(self.count(&pk).await?.0)
    }

    /// Applies the notification rules to one event; returns how many new notifications it made.
    pub async fn deliver(&self, event: &DomainEvent) -> Result<usize, NotificationError> {
        match event.kind.as_str() {
            CONTENT_CREATED => {
                let p: ContentCreated = payload(event)?;
                let template = Notification {
                    id: format_id(event.timestamp, &event.id),
                    user_id: String::new(),
                    kind: event.kind.clone(),
                    event_id: event.id.clone(),
                    actor_id: p.author_id.clone(),
                    content_id: Some(p.content_id),
                    title: p.title,
                    created_at: event.timestamp,
                    read: false,
                };
                self.fan_out(&p.author_id, &template).await
            }
            USER_FOLLOWED => {
                let p: UserFollowed = payload(event)?;
                if p.followed_id.is_empty() || p.followed_id.len() > MAX_USER_ID {
                    return Err(NotificationError::BadEvent(format!("{} {}: bad followed_id", event.kind, event.id)));
                }
                let n = Notification {
                    id: format_id(event.timestamp, &event.id),
                    user_id: p.followed_id,
                    kind: event.kind.clone(),
                    event_id: event.id.clone(),
                    actor_id: p.follower_id,
                    content_id: None,
                    title: None,
                    created_at: event.timestamp,
                    read: false,
                };
                Ok(usize::from(self.insert(&n).await?))
            }
            _ => Ok(0),
        }
    }

    /// Notifies every follower of `author_id`: a page of followers at a time, at most
    /// `fanout_concurrency` writes in flight.
    async fn fan_out(&self, author_id: &str, template: &Notification) -> Result<usize, NotificationError> {
        if author_id.is_empty() || author_id.len() > MAX_USER_ID {
            return Err(NotificationError::BadEvent(format!("event {}: bad author_id", template.event_id)));
        }
        let pk = Key::from(author_id);
        let mut cursor = None;
        let mut created = 0;
        loop {
            let scan = Scan::all().limit(self.config.fanout_page).after(cursor);
            let page = self.store.scan(FOLLOWERS, &pk, &scan).await?;
            let full = page.rows.len() == self.config.fanout_page;
            let followers: Vec<String> = page
                .rows
                .iter()
                .filter_map(|row| match row.ck.0.as_slice() {
                    [KeyPart::Str(follower)] if follower != author_id => Some(follower.clone()),
                    [KeyPart::Str(_)] => None,
                    _ => {
                        tracing::warn!(author_id, key = %row.ck.display(), "followers row with a bad key; skipped");
                        None
                    }
                })
                .collect();
            created += futures::stream::iter(followers)
                .map(|follower| {
                    let n = Notification { user_id: follower, ..template.clone() };
                    async move { self.insert(&n).await }
                })
                .buffer_unordered(self.config.fanout_concurrency)
                .try_fold(0usize, |acc, new| async move { Ok(acc + usize::from(new)) })
                .await?;
            match page.next {
                Some(next) if full => cursor = Some(next),
                _ => return Ok(created),
            }
        }
    }
}
