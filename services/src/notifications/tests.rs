#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
//! Notification service tests over a real fjall store in a temp dir: the rules and idempotence, paging,
//! ownership, the actor and client, and the whole path from the outbox through the bus — including an
//! outage of the service. Real time with short backoffs (the fjall writer thread does not mix with
//! tokio's paused clock); every wait has a generous upper bound.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use troupe_actors::bus::{BusConfig, EventBus, RetryPolicy};
use troupe_actors::{Backoff, Registry, RootHandle, Supervisor, SupervisorSpec};
use troupe_storage::{FjallBackend, Key, Store, SystemClock, WriteBatch};

use super::{
    Notification, NotificationClient, NotificationConfig, NotificationError, NotificationHandler, NotificationMsg,
    NotificationService, NotificationSink, Notifications, PushHandler, SUBSCRIBER, channel_for, subscribe,
    subscribe_push,
};
use crate::events::{CONTENT_CREATED, DomainEvent, NOTIFICATION_CREATED, USER_CREATED, USER_FOLLOWED};
use crate::schema::{DEAD_LETTERS, FOLLOWERS};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    (Store::new(Arc::new(backend), Arc::new(SystemClock)), dir)
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Bytes)>>);

impl Recorder {
    fn published(&self) -> Vec<(String, Bytes)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl NotificationSink for Recorder {
    fn publish(&self, channel: &str, data: Bytes) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((channel.to_owned(), data));
    }
}

fn config() -> NotificationConfig {
    NotificationConfig { fanout_page: 3, fanout_concurrency: 2, deliver_timeout: Duration::from_secs(10) }
}

fn event(kind: &str, aggregate: &str, payload: serde_json::Value, timestamp: u64) -> DomainEvent {
    DomainEvent {
        id: uuid::Uuid::now_v7().to_string(),
        kind: kind.to_owned(),
        aggregate_id: aggregate.to_owned(),
        payload,
        timestamp,
        version: 1,
        traceparent: None,
    }
}

fn followed(follower: &str, followed: &str, ts: u64) -> DomainEvent {
    event(USER_FOLLOWED, follower, serde_json::json!({"follower_id": follower, "followed_id": followed}), ts)
}

fn created(author: &str, content: &str, ts: u64) -> DomainEvent {
    let payload = serde_json::json!({"content_id": content, "author_id": author, "title": "T", "tags": ["a"]});
    event(CONTENT_CREATED, content, payload, ts)
}

async fn follow(store: &Store, follower: &str, followed: &str) {
    store.put(FOLLOWERS, &Key::from(followed), &Key::from(follower), 1u64.to_be_bytes().to_vec()).await.unwrap();
}

/// Writes an event to the outbox the way services do (topic = type, payload = JSON).
async fn emit(store: &Store, event: &DomainEvent) {
    let mut batch = WriteBatch::new();
    batch.append_outbox(&event.kind, serde_json::to_vec(event).unwrap());
    store.commit(batch).await.unwrap();
}

/// The notifications whose push waits in the outbox (`notification.created`), oldest first.
async fn pending_pushes(store: &Store) -> Vec<Notification> {
    let entries = store.pending_outbox(100_000).await.unwrap();
    entries
        .into_iter()
        .filter(|e| e.topic == NOTIFICATION_CREATED)
        .map(|e| {
            let ev: DomainEvent = serde_json::from_slice(&e.payload).unwrap();
            assert_eq!((ev.kind.as_str(), ev.version), (NOTIFICATION_CREATED, 1));
            serde_json::from_value(ev.payload).unwrap()
        })
        .collect()
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tree with the notification service, and its client.
async fn start(store: &Store, sink: Arc<Recorder>) -> (RootHandle, Registry, NotificationClient) {
    let registry = Registry::new();
    let spec = SupervisorSpec::new("t").child(NotificationService::new(store.clone(), sink, config()).child_spec());
    let root = Supervisor::start_root(spec, registry.clone()).await.unwrap();
    let client = NotificationClient::from_registry(&registry).unwrap().with_deliver_timeout(Duration::from_secs(10));
    (root, registry, client)
}

fn bus(store: &Store) -> EventBus {
    let config = BusConfig {
        poll_interval: Duration::from_millis(10),
        retry: RetryPolicy {
            backoff: Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(50), jitter: 0.0 },
            max_attempts: 10_000,
        },
        dead_letter_table: DEAD_LETTERS.to_owned(),
        ..BusConfig::default()
    };
    EventBus::new(store.clone(), config).unwrap()
}

fn ids(items: &[Notification]) -> Vec<u64> {
    items.iter().map(|n| n.created_at).collect()
}

#[tokio::test]
async fn a_follow_notifies_the_followed_user_once_under_redelivery() {
    let (store, _dir) = store().await;
    let sink = Arc::new(Recorder::default());
    let (root, _registry, client) = start(&store, sink.clone()).await;
    let ev = followed("alice", "bob", 1_000);
    assert_eq!(client.deliver(ev.clone()).await.unwrap(), 1);
    assert_eq!(client.deliver(ev.clone()).await.unwrap(), 0, "redelivery makes nothing new");
    assert_eq!(client.deliver(ev.clone()).await.unwrap(), 0);

    let page = client.list("bob", false, 10, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let n = &page.items[0];
    assert_eq!((n.user_id.as_str(), n.kind.as_str(), n.actor_id.as_str()), ("bob", USER_FOLLOWED, "alice"));
    assert_eq!((n.event_id.as_str(), n.created_at, n.read), (ev.id.as_str(), 1_000, false));
    assert_eq!(client.unread_count("bob").await.unwrap(), 1);
    assert!(client.list("alice", false, 10, None).await.unwrap().items.is_empty());

    // The push waits in the outbox, written with the notification: once.
    assert_eq!(pending_pushes(&store).await, vec![n.clone()], "push staged once");
    assert!(sink.published().is_empty(), "nothing is pushed before the bus delivers it");
    // Other event types are ignored.
    assert_eq!(client.deliver(event(USER_CREATED, "x", serde_json::json!({}), 1)).await.unwrap(), 0);
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn content_fans_out_to_followers_over_several_pages() {
    let (store, _dir) = store().await;
    let core = Notifications::new(store.clone(), config());
    let followers: Vec<String> = (0..10).map(|i| format!("f{i:02}")).collect();
    for f in &followers {
        follow(&store, f, "author").await;
    }
    follow(&store, "x", "someone-else").await;
    let ev = created("author", "c1", 5_000);
    // Pages of 3 followers: 4 pages.
    assert_eq!(core.deliver(&ev).await.unwrap(), 10);
    assert_eq!(core.deliver(&ev).await.unwrap(), 0, "idempotent per (user, event)");
    for f in &followers {
        let items = core.list(f, false, 10, None).await.unwrap().items;
        assert_eq!(items.len(), 1, "{f}");
        assert_eq!(items[0].content_id.as_deref(), Some("c1"));
        assert_eq!(items[0].title.as_deref(), Some("T"));
        assert_eq!(items[0].actor_id, "author");
    }
    assert!(core.list("author", false, 10, None).await.unwrap().items.is_empty());
    assert!(core.list("x", false, 10, None).await.unwrap().items.is_empty());
    let mut channels: Vec<String> = pending_pushes(&store).await.into_iter().map(|n| channel_for(&n.user_id)).collect();
    channels.sort();
    assert_eq!(channels, followers.iter().map(|f| channel_for(f)).collect::<Vec<_>>());
}

#[tokio::test]
async fn list_is_newest_first_with_cursor_paging() {
    let (store, _dir) = store().await;
    let core = Notifications::new(store.clone(), config());
    for ts in [3_000, 1_000, 7_000, 2_000, 5_000, 4_000, 6_000] {
        core.deliver(&followed(&format!("u{ts}"), "bob", ts)).await.unwrap();
    }
    let p1 = core.list("bob", false, 3, None).await.unwrap();
    assert_eq!(ids(&p1.items), vec![7_000, 6_000, 5_000]);
    let p2 = core.list("bob", false, 3, p1.next.as_deref()).await.unwrap();
    assert_eq!(ids(&p2.items), vec![4_000, 3_000, 2_000]);
    let p3 = core.list("bob", false, 3, p2.next.as_deref()).await.unwrap();
    assert_eq!(ids(&p3.items), vec![1_000]);
    assert!(p3.next.is_none());

    // Unread only, after reading two.
    core.mark_read("bob", &p1.items[0].id).await.unwrap();
    core.mark_read("bob", &p2.items[1].id).await.unwrap();
    let unread = core.list("bob", true, 10, None).await.unwrap();
    assert_eq!(ids(&unread.items), vec![6_000, 5_000, 4_000, 2_000, 1_000]);
    assert!(unread.items.iter().all(|n| !n.read));
    let all = core.list("bob", false, 10, None).await.unwrap().items;
    assert!(all[0].read && !all[1].read && all[4].read);
    let u1 = core.list("bob", true, 2, None).await.unwrap();
    let u2 = core.list("bob", true, 2, u1.next.as_deref()).await.unwrap();
    assert_eq!(ids(&u2.items), vec![4_000, 2_000]);

    for bad in [0, 101] {
        assert!(matches!(core.list("bob", false, bad, None).await, Err(NotificationError::BadRequest(_))));
    }
    assert!(matches!(core.list("bob", false, 3, Some("zzz")).await, Err(NotificationError::BadRequest(_))));
    assert!(matches!(core.list("", false, 3, None).await, Err(NotificationError::BadRequest(_))));
}

#[tokio::test]
async fn mark_read_is_owner_only_and_counts_stay_exact() {
    let (store, _dir) = store().await;
    let sink = Arc::new(Recorder::default());
    let (root, _registry, client) = start(&store, sink).await;
    let events: Vec<DomainEvent> =
        ["a", "b", "c"].iter().enumerate().map(|(i, who)| followed(who, "bob", 1_000 + i as u64)).collect();
    for ev in &events {
        client.deliver(ev.clone()).await.unwrap();
    }
    client.deliver(followed("bob", "carol", 1_000)).await.unwrap();
    let bobs = client.list("bob", false, 10, None).await.unwrap().items;
    let id = bobs[0].id.clone();
    assert!(matches!(client.mark_read("carol", &id).await, Err(NotificationError::NotFound { .. })));
    assert!(matches!(client.mark_read("bob", "1-nope").await, Err(NotificationError::NotFound { .. })));
    assert!(matches!(client.mark_read("bob", "nope").await, Err(NotificationError::BadRequest(_))));
    assert_eq!(client.unread_count("bob").await.unwrap(), 3);

    client.mark_read("bob", &id).await.unwrap();
    client.mark_read("bob", &id).await.unwrap();
    assert_eq!(client.unread_count("bob").await.unwrap(), 2, "marking twice counts once");
    assert_eq!(client.read_all("bob").await.unwrap(), 2);
    assert_eq!(client.read_all("bob").await.unwrap(), 0);
    assert_eq!(client.unread_count("bob").await.unwrap(), 0);
    assert!(client.list("bob", true, 10, None).await.unwrap().items.is_empty());
    assert!(client.list("bob", false, 10, None).await.unwrap().items.iter().all(|n| n.read));
    assert_eq!(client.unread_count("carol").await.unwrap(), 1, "other users untouched");
    // A redelivered event whose notification was read does not come back unread.
    assert_eq!(client.deliver(events[0].clone()).await.unwrap(), 0);
    assert_eq!(client.unread_count("bob").await.unwrap(), 0);
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn concurrent_inserts_keep_the_unread_count_exact() {
    let (store, _dir) = store().await;
    let core = Notifications::new(store.clone(), config());
    let events: Vec<DomainEvent> = (0..20).map(|i| followed(&format!("u{i}"), "bob", 1_000 + i)).collect();
    // Every event twice, all at once: 20 notifications, count 20.
    let tasks: Vec<_> = events
        .iter()
        .chain(events.iter())
        .map(|ev| {
            let (core, ev) = (core.clone(), ev.clone());
            tokio::spawn(async move { core.deliver(&ev).await.unwrap() })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        made += t.await.unwrap();
    }
    assert_eq!(made, 20);
    assert_eq!(core.unread_count("bob").await.unwrap(), 20);
    assert_eq!(core.list("bob", true, 100, None).await.unwrap().items.len(), 20);
}

#[tokio::test]
async fn events_flow_from_the_outbox_through_the_bus() {
    let (store, _dir) = store().await;
    let sink = Arc::new(Recorder::default());
    let bus = bus(&store);
    // The service's tree first (the subscriber needs its client), then the bus.
    let registry = Registry::new();
    let svc_root = Supervisor::start_root(
        SupervisorSpec::new("svc").child(NotificationService::new(store.clone(), sink.clone(), config()).child_spec()),
        registry.clone(),
    )
    .await
    .unwrap();
    let client = NotificationClient::from_registry(&registry).unwrap();
    subscribe(&bus, NotificationHandler::new(client.clone())).unwrap();
    assert_eq!(bus.subscriber_names(), vec![SUBSCRIBER.to_owned()]);
    subscribe_push(&bus, PushHandler::new(sink.clone())).unwrap();
    let bus_root = Supervisor::start_root(SupervisorSpec::new("bus").child(bus.child_spec("bus")), registry.clone())
        .await
        .unwrap();

    follow(&store, "f1", "author").await;
    follow(&store, "f2", "author").await;
    emit(&store, &created("author", "c1", 10)).await;
    emit(&store, &followed("f3", "author", 11)).await;
    emit(&store, &event(USER_CREATED, "z", serde_json::json!({}), 12)).await;
    // Undecodable: dead-lettered at once.
    let mut batch = WriteBatch::new();
    batch.append_outbox(CONTENT_CREATED, b"not json".to_vec());
    store.commit(batch).await.unwrap();
    bus.notify();

    eventually("outbox drained", || async { store.pending_outbox(100).await.unwrap().is_empty() }).await;
    for f in ["f1", "f2"] {
        assert_eq!(client.list(f, false, 10, None).await.unwrap().items.len(), 1);
    }
    assert_eq!(client.list("author", false, 10, None).await.unwrap().items[0].actor_id, "f3");
    let dead = bus.dead_letters(10, None).await.unwrap().items;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].subscriber, SUBSCRIBER);
    assert!(dead[0].last_error.starts_with("rejected: not a domain event"), "{}", dead[0].last_error);
    assert_eq!(sink.published().len(), 3);
    bus_root.shutdown(Duration::from_secs(5)).await;
    svc_root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_outage_of_the_service_loses_no_notification() {
    let (store, _dir) = store().await;
    let sink = Arc::new(Recorder::default());
    let bus = bus(&store);
    // One tree as a node builds it: the service, then the bus, the subscriber resolving the service
    // lazily. The service restarts 1.5 s after a crash; the bus keeps retrying meanwhile.
    let registry = Registry::new();
    subscribe(&bus, NotificationHandler::from_registry(registry.clone())).unwrap();
    subscribe_push(&bus, PushHandler::new(sink.clone())).unwrap();
    let restart = Duration::from_millis(1500);
    let root = Supervisor::start_root(
        SupervisorSpec::new("node")
            .backoff(Backoff { initial: restart, max: restart, jitter: 0.0 })
            .child(NotificationService::new(store.clone(), sink.clone(), config()).child_spec())
            .child(bus.child_spec("bus")),
        registry.clone(),
    )
    .await
    .unwrap();
    let client = NotificationClient::from_registry(&registry).unwrap();
    for f in ["f1", "f2", "f3", "f4"] {
        follow(&store, f, "author").await;
    }

    // Crash the service, then create content while it is down.
    registry.actor_ref::<NotificationMsg>(super::SERVICE_NAME).unwrap().kill();
    eventually("service down", || async { client.unread_count("f1").await.is_err() }).await;
    for i in 0..5 {
        emit(&store, &created("author", &format!("c{i}"), 100 + i)).await;
        bus.notify();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !store.pending_outbox(100).await.unwrap().is_empty(),
        "events wait in the outbox while the service is down"
    );

    eventually("outbox drained after recovery", || async { store.pending_outbox(100).await.unwrap().is_empty() }).await;
    for f in ["f1", "f2", "f3", "f4"] {
        let items = client.list(f, false, 10, None).await.unwrap().items;
        assert_eq!(items.len(), 5, "{f} got every notification once");
        assert_eq!(client.unread_count(f).await.unwrap(), 5);
    }
    assert!(bus.dead_letters(10, None).await.unwrap().items.is_empty());
    assert_eq!(registry.slot(super::SERVICE_NAME).unwrap().restarts(), 1);
    assert_eq!(sink.published().len(), 20, "each new notification pushed once");
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_push_survives_a_crash_between_the_write_and_the_push() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Process 1 stores the notification and dies before any bus delivers its push.
    let store = Store::new(Arc::new(FjallBackend::open(&path).await.unwrap()), Arc::new(SystemClock));
    let core = Notifications::new(store.clone(), config());
    assert_eq!(core.deliver(&followed("alice", "bob", 1_000)).await.unwrap(), 1);
    drop(core);
    store.close().await.unwrap();
    drop(store);

    // Process 2: only the bus with the push subscriber runs; the push arrives.
    let store = Store::new(Arc::new(FjallBackend::open(&path).await.unwrap()), Arc::new(SystemClock));
    let sink = Arc::new(Recorder::default());
    let bus = bus(&store);
    subscribe_push(&bus, PushHandler::new(sink.clone())).unwrap();
    let root =
        Supervisor::start_root(SupervisorSpec::new("bus").child(bus.child_spec("bus")), Registry::new()).await.unwrap();
    eventually("push after the restart", || async { !sink.published().is_empty() }).await;
    eventually("outbox drained", || async { store.pending_outbox(100).await.unwrap().is_empty() }).await;
    let published = sink.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, channel_for("bob"));
    let pushed: Notification = serde_json::from_slice(&published[0].1).unwrap();
    let stored = Notifications::new(store.clone(), config()).list("bob", false, 10, None).await.unwrap().items;
    assert_eq!(stored, vec![pushed], "the push is the stored notification");
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pushes_are_deduplicated_by_notification_id_and_bad_payloads_rejected() {
    let (store, _dir) = store().await;
    let core = Notifications::new(store.clone(), config());
    core.deliver(&followed("alice", "bob", 1_000)).await.unwrap();
    core.deliver(&followed("carol", "bob", 2_000)).await.unwrap();
    let entries = store.pending_outbox(100).await.unwrap();
    let sink = Arc::new(Recorder::default());
    let push = PushHandler::new(sink.clone());
    for e in entries.iter().chain(entries.iter()) {
        push.push(&e.payload).unwrap();
    }
    assert_eq!(sink.published().len(), 2, "a redelivered entry is not pushed again");
    for bad in [&b"not json"[..], br#"{"id":"x"}"#] {
        assert!(matches!(push.push(bad), Err(troupe_actors::bus::HandlerError::Reject(_))));
    }
}
