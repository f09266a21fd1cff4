#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
//! Bus tests over a real fjall store in a temp dir, the bus running under a real supervisor. Time is
//! real (the fjall writer is a plain thread, so tokio's paused clock would jump past its commits);
//! backoffs are a few milliseconds without jitter and every wait has a generous upper bound, so no
//! assertion depends on timing.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use proptest::prelude::*;
use tokio::sync::Semaphore;
use troupe_storage::{FjallBackend, Store, SystemClock, WriteBatch};

use super::dead::{format_id, parse_id};
use super::{
    BatchHandler, BatchResults, BusConfig, BusError, BusEvent, BusMsg, DeliveryOrder, EventBus, Handler, HandlerError,
    RetryPolicy, Subscription, TopicFilter,
};
use crate::{Backoff, Registry, RootHandle, Supervisor, SupervisorSpec};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    (Store::new(Arc::new(backend), Arc::new(SystemClock)), dir)
}

fn config() -> BusConfig {
    BusConfig {
        poll_interval: Duration::from_millis(10),
        page_size: 4,
        max_in_flight: 16,
        retry: RetryPolicy {
            backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(4), jitter: 0.0 },
            max_attempts: 3,
        },
        handler_timeout: Duration::from_secs(10),
        dead_letter_table: "dead_letters".to_owned(),
    }
}

async fn start(bus: &EventBus) -> (RootHandle, Registry) {
    let registry = Registry::new();
    let root = Supervisor::start_root(
        SupervisorSpec::new("t").backoff(Backoff::NONE).child(bus.child_spec("bus")),
        registry.clone(),
    )
    .await
    .unwrap();
    (root, registry)
}

async fn append(store: &Store, topic: &str, payload: &str) -> u64 {
    let mut batch = WriteBatch::new();
    batch.append_outbox(topic, payload.as_bytes().to_vec());
    store.commit(batch).await.unwrap()[0]
}

/// Polls `cond` until it holds; fails the test after 10 s.
async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), cond).await;
}

/// Polls `cond` until it holds; fails the test after `limit`.
async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn outbox_len(store: &Store) -> usize {
    store.pending_outbox(10_000).await.unwrap().len()
}

type FailFn = Box<dyn Fn(u64, u32) -> Option<HandlerError> + Send + Sync>;

/// A test subscriber: records successful deliveries in order, counts attempts per id, can fail by rule,
/// fail everything while `failing` is set, or wait for a permit of `gate` on every call.
#[derive(Default)]
struct Probe {
    seen: Mutex<Vec<u64>>,
    attempts: Mutex<HashMap<u64, u32>>,
    calls: AtomicUsize,
    failing: AtomicBool,
    fail: Option<FailFn>,
    gate: Option<Arc<Semaphore>>,
}

impl Probe {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    fn failing_by(fail: impl Fn(u64, u32) -> Option<HandlerError> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { fail: Some(Box::new(fail)), ..Self::default() })
    }
    fn gated(gate: &Arc<Semaphore>) -> Arc<Self> {
        Arc::new(Self { gate: Some(Arc::clone(gate)), ..Self::default() })
    }
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn seen_set(&self) -> BTreeSet<u64> {
        self.seen().into_iter().collect()
    }
    fn attempts(&self, id: u64) -> u32 {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).get(&id).copied().unwrap_or(0)
    }
}

impl Handler for Probe {
    fn handle<'a>(&'a self, event: &'a BusEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
                let n = attempts.entry(event.id).or_default();
                *n += 1;
                *n
            };
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(HandlerError::retry("boom"));
            }
            if let Some(err) = self.fail.as_ref().and_then(|f| f(event.id, attempt)) {
                return Err(err);
            }
            self.seen.lock().unwrap_or_else(PoisonError::into_inner).push(event.id);
            Ok(())
        })
    }
}

#[tokio::test]
async fn delivers_to_matching_subscribers_only_in_outbox_order() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let (exact, prefix, all, users) = (Probe::new(), Probe::new(), Probe::new(), Probe::new());
    bus.subscribe("exact", &["content.created"], exact.clone()).unwrap();
    bus.subscribe("prefix", &["content.*"], prefix.clone()).unwrap();
    bus.subscribe("all", &["*"], all.clone()).unwrap();
    bus.subscribe("users", &["user.followed", "user.created"], users.clone()).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(append(&store, "content.created", &format!("{i}")).await);
    }
    let deleted = append(&store, "content.deleted", "x").await;
    let followed = append(&store, "user.followed", "x").await;
    let other = append(&store, "contentious", "x").await;
    let (root, _registry) = start(&bus).await;
    eventually("outbox drained", || async { outbox_len(&store).await == 0 }).await;

    assert_eq!(exact.seen(), ids, "exact filter, in outbox order");
    let mut content = ids.clone();
    content.push(deleted);
    assert_eq!(prefix.seen(), content, "prefix filter takes content.* only");
    let mut everything = content.clone();
    everything.extend([followed, other]);
    assert_eq!(all.seen(), everything);
    assert_eq!(users.seen(), vec![followed]);
    assert!(bus.dead_letters(10, None).await.unwrap().items.is_empty());
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn notify_wakes_the_drainer_long_before_the_poll_interval() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), BusConfig { poll_interval: Duration::from_secs(3600), ..config() }).unwrap();
    let probe = Probe::new();
    bus.subscribe("s", &["*"], probe.clone()).unwrap();
    let (root, _registry) = start(&bus).await;
    // Let the drainer finish its first (empty) read and go to sleep.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = append(&store, "t", "x").await;
    bus.notify();
    eventually("delivered after notify", || async { probe.seen() == vec![id] }).await;
    eventually("acked", || async { outbox_len(&store).await == 0 }).await;
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn acks_only_after_every_matching_subscriber_succeeded() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (fast, slow) = (Probe::new(), Probe::gated(&gate));
    bus.subscribe("fast", &["*"], fast.clone()).unwrap();
    bus.subscribe("slow", &["*"], slow.clone()).unwrap();
    let (root, _registry) = start(&bus).await;
    let id = append(&store, "t", "x").await;
    bus.notify();
    eventually("fast got it", || async { fast.seen() == vec![id] }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(outbox_len(&store).await, 1, "not acked while one subscriber is still working");
    gate.add_permits(1);
    eventually("acked after both", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(slow.seen(), vec![id]);
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn retries_then_dead_letters_then_replay_and_discard() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let probe = Probe::new();
    probe.failing.store(true, Ordering::SeqCst);
    bus.subscribe("flaky", &["t"], probe.clone()).unwrap();
    let (root, _registry) = start(&bus).await;
    let first = append(&store, "t", r#"{"n":1}"#).await;
    let second = append(&store, "t", "plain text").await;
    bus.notify();
    eventually("both dead-lettered and acked", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(probe.attempts(first), 3, "max_attempts attempts, then the dead letter");
    assert_eq!(probe.attempts(second), 3);

    let page = bus.dead_letters(10, None).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let dl = &page.items[0];
    assert_eq!((dl.outbox_id, dl.subscriber.as_str(), dl.topic.as_str()), (first, "flaky", "t"));
    assert_eq!(dl.id, format!("{first}-flaky"));
    assert_eq!(&dl.payload[..], br#"{"n":1}"#);
    assert_eq!((dl.attempts, dl.last_error.as_str()), (3, "boom"));
    assert!(dl.first_failure_ms > 0 && dl.first_failure_ms <= dl.last_failure_ms);
    let json = serde_json::to_value(dl).unwrap();
    assert_eq!(json["payload"], serde_json::json!({"n": 1}), "JSON payloads are embedded as JSON");
    assert_eq!(serde_json::to_value(&page.items[1]).unwrap()["payload"], "plain text");

    // Paging: one at a time.
    let p1 = bus.dead_letters(1, None).await.unwrap();
    assert_eq!(p1.items[0].outbox_id, first);
    let p2 = bus.dead_letters(1, p1.next.as_deref()).await.unwrap();
    assert_eq!(p2.items[0].outbox_id, second);
    if let Some(cursor) = p2.next.as_deref() {
        let p3 = bus.dead_letters(1, Some(cursor)).await.unwrap();
        assert!(p3.items.is_empty() && p3.next.is_none(), "{p3:?}");
    }

    // Replay while still failing: kept, one more attempt recorded.
    let err = bus.replay(&dl.id).await.unwrap_err();
    assert!(matches!(err, BusError::ReplayFailed(HandlerError::Retry(_))), "{err:?}");
    assert_eq!(bus.dead_letters(1, None).await.unwrap().items[0].attempts, 4);

    probe.failing.store(false, Ordering::SeqCst);
    bus.replay(&dl.id).await.unwrap();
    assert_eq!(probe.seen(), vec![first]);
    let left = bus.dead_letters(10, None).await.unwrap().items;
    assert_eq!(left.iter().map(|d| d.outbox_id).collect::<Vec<_>>(), vec![second]);
    assert!(matches!(bus.replay(&dl.id).await, Err(BusError::NotFound { .. })));

    bus.discard(&left[0].id).await.unwrap();
    assert!(bus.dead_letters(10, None).await.unwrap().items.is_empty());
    assert!(matches!(bus.discard(&left[0].id).await, Err(BusError::NotFound { .. })));
    assert!(matches!(bus.discard("nope").await, Err(BusError::BadId(_))));
    assert!(matches!(bus.replay("12-").await, Err(BusError::BadId(_))));
    assert!(matches!(bus.dead_letters(0, None).await, Err(BusError::BadRequest(_))));
    assert!(matches!(bus.dead_letters(1001, None).await, Err(BusError::BadRequest(_))));
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn rejected_events_are_dead_lettered_without_retries() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let probe = Probe::failing_by(|_, _| Some(HandlerError::reject("cannot decode")));
    bus.subscribe("strict", &["*"], probe.clone()).unwrap();
    let (root, _registry) = start(&bus).await;
    let id = append(&store, "t", "garbage").await;
    bus.notify();
    eventually("dead-lettered", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(probe.attempts(id), 1);
    let dl = bus.dead_letters(10, None).await.unwrap().items;
    assert_eq!((dl.len(), dl[0].attempts, dl[0].last_error.as_str()), (1, 1, "rejected: cannot decode"));
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_failing_subscriber_does_not_stop_the_others_and_recovers_everything() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let (down, up) = (Probe::new(), Probe::new());
    down.failing.store(true, Ordering::SeqCst);
    let patient = RetryPolicy {
        backoff: Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(20), jitter: 0.0 },
        max_attempts: 100_000,
    };
    bus.subscribe_with(Subscription::new("down", &["*"], down.clone()).unwrap().retry(patient)).unwrap();
    bus.subscribe("up", &["*"], up.clone()).unwrap();
    let (root, _registry) = start(&bus).await;
    let mut ids = BTreeSet::new();
    for i in 0..10 {
        ids.insert(append(&store, "t", &format!("{i}")).await);
    }
    bus.notify();
    eventually("the healthy subscriber got everything", || async { up.seen_set() == ids }).await;
    eventually("the failing one is being retried", || async { ids.iter().all(|id| down.attempts(*id) >= 2) }).await;
    assert_eq!(outbox_len(&store).await, 10, "nothing acked while one subscriber fails (outage)");
    // Recovery: every entry arrives, none dead-lettered.
    down.failing.store(false, Ordering::SeqCst);
    eventually("outbox drained after recovery", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(down.seen_set(), ids);
    assert_eq!(up.seen().len(), 10, "the healthy subscriber got each entry once");
    assert!(bus.dead_letters(10, None).await.unwrap().items.is_empty());
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn in_flight_window_is_bounded_by_a_stuck_subscriber() {
    let (store, _dir) = store().await;
    let cfg = BusConfig { max_in_flight: 8, page_size: 3, ..config() };
    let bus = EventBus::new(store.clone(), cfg).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (stuck, free) = (Probe::gated(&gate), Probe::new());
    bus.subscribe("stuck", &["*"], stuck.clone()).unwrap();
    bus.subscribe("free", &["*"], free.clone()).unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..30 {
        ids.insert(append(&store, "t", &format!("{i}")).await);
    }
    let (root, _registry) = start(&bus).await;
    eventually("window filled", || async { free.seen().len() == 8 }).await;
    // Several poll intervals later nothing more was read.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(free.seen().len(), 8, "no entry beyond the window is read");
    assert_eq!(bus.in_flight(), 8);
    assert_eq!(stuck.calls.load(Ordering::SeqCst), 1, "the stuck subscriber works on one entry at a time");
    gate.add_permits(1000);
    eventually("all delivered", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(free.seen_set(), ids);
    assert_eq!(stuck.seen(), ids.iter().copied().collect::<Vec<_>>(), "first attempts in outbox order");
    eventually("window empty", || async { bus.in_flight() == 0 }).await;
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_killed_bus_restarts_and_redelivers_what_was_not_acked() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    // Two deliveries succeed, the third hangs until the gate opens.
    let gate = Arc::new(Semaphore::new(2));
    let probe = Probe::gated(&gate);
    bus.subscribe("s", &["*"], probe.clone()).unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..6 {
        ids.insert(append(&store, "t", &format!("{i}")).await);
    }
    let (root, registry) = start(&bus).await;
    eventually("third delivery in progress", || async { probe.calls.load(Ordering::SeqCst) == 3 }).await;
    assert_eq!(probe.seen().len(), 2);
    // Kill mid-delivery: the supervisor restarts the bus, which starts again from the outbox.
    registry.actor_ref::<BusMsg>("bus").unwrap().kill();
    eventually("restarted", || async { registry.slot("bus").unwrap().restarts() == 1 }).await;
    gate.add_permits(1000);
    eventually("outbox drained", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(probe.seen_set(), ids, "none lost");
    let third = *ids.iter().nth(2).unwrap();
    assert!(probe.attempts(third) >= 2, "the interrupted delivery was made again");
    assert!(registry.slot("bus").unwrap().status() == crate::Status::Running);
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_new_bus_on_the_same_store_delivers_what_the_stopped_one_left() {
    let (store, _dir) = store().await;
    let gate = Arc::new(Semaphore::new(1));
    let probe = Probe::gated(&gate);
    let bus = EventBus::new(store.clone(), config()).unwrap();
    bus.subscribe("s", &["*"], probe.clone()).unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..4 {
        ids.insert(append(&store, "t", &format!("{i}")).await);
    }
    let (root, _registry) = start(&bus).await;
    eventually("second delivery in progress", || async { probe.calls.load(Ordering::SeqCst) == 2 }).await;
    root.shutdown(Duration::from_secs(5)).await;
    assert!(outbox_len(&store).await >= 3, "unfinished entries stay in the outbox");

    let again = Probe::new();
    let bus = EventBus::new(store.clone(), config()).unwrap();
    bus.subscribe("s", &["*"], again.clone()).unwrap();
    let (root, _registry) = start(&bus).await;
    eventually("outbox drained", || async { outbox_len(&store).await == 0 }).await;
    let mut all = probe.seen_set();
    all.extend(again.seen());
    assert_eq!(all, ids, "none lost across the restart");
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn retry_order_first_attempt_versus_strict() {
    for (order, expected) in [(DeliveryOrder::FirstAttempt, [2, 3, 4, 1]), (DeliveryOrder::Strict, [1, 2, 3, 4])] {
        let (store, _dir) = store().await;
        let bus = EventBus::new(store.clone(), config()).unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(append(&store, "t", &format!("{i}")).await);
        }
        let first = ids[0];
        // The first entry fails once; its retry waits 200 ms.
        let probe =
            Probe::failing_by(move |id, attempt| (id == first && attempt == 1).then(|| HandlerError::retry("once")));
        let retry = RetryPolicy {
            backoff: Backoff { initial: Duration::from_millis(200), max: Duration::from_millis(200), jitter: 0.0 },
            max_attempts: 5,
        };
        bus.subscribe_with(Subscription::new("s", &["*"], probe.clone()).unwrap().order(order).retry(retry)).unwrap();
        let (root, _registry) = start(&bus).await;
        eventually("drained", || async { outbox_len(&store).await == 0 }).await;
        let want: Vec<u64> = expected.iter().map(|i| ids[i - 1]).collect();
        assert_eq!(probe.seen(), want, "{order:?}");
        root.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt() {
    struct Panics;
    impl Handler for Panics {
        fn handle<'a>(&'a self, _: &'a BusEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
            Box::pin(async { panic!("handler bug") })
        }
    }
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let ok = Probe::new();
    bus.subscribe("panics", &["*"], Arc::new(Panics)).unwrap();
    bus.subscribe("ok", &["*"], ok.clone()).unwrap();
    let (root, registry) = start(&bus).await;
    let id = append(&store, "t", "x").await;
    bus.notify();
    eventually("dead-lettered and acked", || async { outbox_len(&store).await == 0 }).await;
    let dl = bus.dead_letters(10, None).await.unwrap().items;
    assert_eq!((dl.len(), dl[0].last_error.as_str(), dl[0].attempts), (1, "handler panicked", 3));
    assert_eq!(ok.seen(), vec![id]);
    assert_eq!(registry.slot("bus").unwrap().restarts(), 0, "a handler panic does not crash the bus");
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn subscriptions_are_checked_and_fixed_at_start() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let p = Probe::new();
    assert!(matches!(bus.subscribe("Bad Name", &["*"], p.clone()), Err(BusError::BadName { .. })));
    assert!(matches!(bus.subscribe("x", &[], p.clone()), Err(BusError::BadFilter { .. })));
    assert!(matches!(bus.subscribe("x", &["a.*.b"], p.clone()), Err(BusError::BadFilter { .. })));
    bus.subscribe("x", &["*"], p.clone()).unwrap();
    assert!(matches!(bus.subscribe("x", &["*"], p.clone()), Err(BusError::Duplicate { .. })));
    let (root, _registry) = start(&bus).await;
    assert!(matches!(bus.subscribe("y", &["*"], p.clone()), Err(BusError::AlreadyStarted)));
    assert_eq!(bus.subscriber_names(), vec!["x".to_owned()]);
    root.shutdown(Duration::from_secs(5)).await;

    let bad =
        |c: BusConfig| matches!(EventBus::new(store.clone(), c), Err(BusError::BadConfig(_) | BusError::Store(_)));
    assert!(bad(BusConfig { max_in_flight: 0, ..config() }));
    assert!(bad(BusConfig { page_size: 0, ..config() }));
    assert!(bad(BusConfig { dead_letter_table: "_troupe_x".to_owned(), ..config() }));
    assert!(bad(BusConfig { retry: RetryPolicy { max_attempts: 0, ..config().retry }, ..config() }));
}

#[tokio::test]
async fn pending_outbox_after_pages_past_held_entries() {
    let (store, _dir) = store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(append(&store, "t", &format!("{i}")).await);
    }
    let after: Vec<u64> = store.pending_outbox_after(Some(ids[1]), 10).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(after, ids[2..].to_vec());
    let first_two: Vec<u64> = store.pending_outbox_after(None, 2).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(first_two, ids[..2].to_vec());
    assert!(store.pending_outbox_after(Some(ids[4]), 10).await.unwrap().is_empty());
}

#[test]
fn topic_filters() {
    assert_eq!(TopicFilter::parse("*").unwrap(), TopicFilter::All);
    assert_eq!(TopicFilter::parse("content.*").unwrap(), TopicFilter::Prefix("content.".to_owned()));
    assert_eq!(TopicFilter::parse("content.created").unwrap(), TopicFilter::Exact("content.created".to_owned()));
    for bad in ["", ".*", "a.*.b", "*.a", "con*", "a b", "a.**"] {
        assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
    }
    let prefix = TopicFilter::parse("content.*").unwrap();
    assert!(prefix.matches("content.created") && prefix.matches("content.a.b"));
    assert!(!prefix.matches("content") && !prefix.matches("contents.x") && !prefix.matches("user.content.x"));
    let exact = TopicFilter::parse("user.followed").unwrap();
    assert!(exact.matches("user.followed") && !exact.matches("user.followed.x"));
    assert!(TopicFilter::All.matches("anything"));
}

proptest! {
    /// Dead-letter ids round-trip for every outbox id and valid subscriber name.
    #[test]
    fn dead_letter_ids_round_trip(id in any::<u64>(), name in "[a-z0-9][a-z0-9_.-]{0,63}") {
        let s = format_id(id, &name);
        prop_assert_eq!(parse_id(&s).unwrap(), (id, name.as_str()));
    }

    /// A prefix filter matches exactly the topics under its prefix.
    #[test]
    fn prefix_filters_match_their_subtree(prefix in "[a-z]{1,8}", topic in "[a-z.]{0,16}") {
        let filter = TopicFilter::parse(&format!("{prefix}.*")).unwrap();
        prop_assert_eq!(filter.matches(&topic), topic.starts_with(&format!("{prefix}.")));
    }
}

/// Retry delays follow the backoff exactly (paused clock, no jitter): 1 s, 2 s, 4 s, then the 4 s cap.
#[tokio::test(start_paused = true)]
async fn retry_delays_follow_the_backoff() {
    let (store, _dir) = store().await;
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&times);
    let probe = Probe::failing_by(move |_, attempt| {
        seen.lock().unwrap_or_else(PoisonError::into_inner).push(tokio::time::Instant::now());
        (attempt <= 4).then(|| HandlerError::retry("not yet"))
    });
    let retry = RetryPolicy {
        backoff: Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(4), jitter: 0.0 },
        max_attempts: 10,
    };
    let bus = EventBus::new(store.clone(), BusConfig { retry, ..config() }).unwrap();
    bus.subscribe("s", &["*"], probe.clone()).unwrap();
    let id = append(&store, "t", "x").await;
    let (root, _registry) = start(&bus).await;
    eventually_within("delivered on the fifth attempt", Duration::from_secs(60), || async { probe.seen() == vec![id] })
        .await;
    let times = times.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(gaps, vec![secs(1), secs(2), secs(4), secs(4)]);
    root.shutdown(Duration::from_secs(5)).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// For random topics and failure schedules: every (subscriber, matching entry) ends either delivered
    /// (fewer failures than max_attempts) or dead-lettered with max_attempts attempts, never both; entries
    /// that succeed on their first attempt arrive in outbox order; the outbox ends empty.
    #[test]
    fn every_delivery_ends_delivered_or_dead_lettered(
        entries in proptest::collection::vec((0usize..3, proptest::collection::vec(0u32..5, 3)), 1..20),
        window in 1usize..6,
        strict in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let topics = ["a.x", "a.y", "b"];
            let filters = ["a.*", "*", "b"];
            let (store, _dir) = store().await;
            let cfg = BusConfig { max_in_flight: window, page_size: 2, ..config() };
            let bus = EventBus::new(store.clone(), cfg).unwrap();
            let mut ids = Vec::new();
            for (topic, _) in &entries {
                ids.push(append(&store, topics[*topic], "x").await);
            }
            // failures[(sub, id)] = attempts that fail before success.
            let mut failures = HashMap::new();
            for (i, (_, fails)) in entries.iter().enumerate() {
                for (s, f) in fails.iter().enumerate() {
                    failures.insert((s, ids[i]), *f);
                }
            }
            let order = if strict { DeliveryOrder::Strict } else { DeliveryOrder::FirstAttempt };
            let mut probes = Vec::new();
            for (s, filter) in filters.iter().enumerate() {
                let failures = failures.clone();
                let probe = Probe::failing_by(move |id, attempt| {
                    (attempt <= failures[&(s, id)]).then(|| HandlerError::retry("scheduled"))
                });
                let sub = Subscription::new(&format!("s{s}"), &[filter], probe.clone()).unwrap().order(order);
                bus.subscribe_with(sub).unwrap();
                probes.push(probe);
            }
            let (root, _registry) = start(&bus).await;
            eventually("drained", || async { outbox_len(&store).await == 0 }).await;
            let dead: BTreeSet<(String, u64, u32)> = bus
                .dead_letters(1000, None)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|d| (d.subscriber, d.outbox_id, d.attempts))
                .collect();
            let mut expected_dead = BTreeSet::new();
            for (s, filter) in filters.iter().enumerate() {
                let filter = TopicFilter::parse(filter).unwrap();
                let seen = probes[s].seen();
                let mut first_try = Vec::new();
                for (i, (topic, _)) in entries.iter().enumerate() {
                    let id = ids[i];
                    let fails = failures[&(s, id)];
                    let matches = filter.matches(topics[*topic]);
                    let delivered = seen.iter().filter(|x| **x == id).count();
                    if !matches {
                        assert_eq!(delivered, 0);
                    } else if fails < 3 {
                        assert_eq!(delivered, 1, "s{s} id {id}");
                        if fails == 0 {
                            first_try.push(id);
                        }
                    } else {
                        assert_eq!(delivered, 0);
                        expected_dead.insert((format!("s{s}"), id, 3));
                    }
                }
                let seen_first: Vec<u64> = seen.iter().copied().filter(|id| first_try.contains(id)).collect();
                assert_eq!(seen_first, first_try, "first attempts in outbox order");
                if strict {
                    let mut sorted = seen.clone();
                    sorted.sort_unstable();
                    assert_eq!(seen, sorted, "strict order holds through retries");
                }
            }
            assert_eq!(dead, expected_dead);
            root.shutdown(Duration::from_secs(5)).await;
        });
    }
}

type BatchFailFn = Box<dyn Fn(u64, u32) -> Option<HandlerError> + Send + Sync>;

/// A batched test subscriber: records every call's ids at call time (the order it was handed events
/// in), counts attempts per id, answers after a short sleep (so calls overlap) and fails by rule.
struct BatchProbe {
    calls: Mutex<Vec<Vec<u64>>>,
    attempts: Mutex<HashMap<u64, u32>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    fail: BatchFailFn,
}

impl BatchProbe {
    fn new(fail: impl Fn(u64, u32) -> Option<HandlerError> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            attempts: Mutex::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            fail: Box::new(fail),
        })
    }
    fn handed(&self) -> Vec<u64> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).iter().flatten().copied().collect()
    }
}

impl BatchHandler for BatchProbe {
    fn handle_batch(&self, events: Vec<Arc<BusEvent>>) -> BoxFuture<'static, BatchResults> {
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(ids.clone());
        let results: BatchResults = {
            let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
            ids.iter()
                .map(|id| {
                    let n = attempts.entry(*id).or_default();
                    *n += 1;
                    (self.fail)(*id, *n).map_or(Ok(()), Err)
                })
                .collect()
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let in_flight = Arc::clone(&self.in_flight);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            results
        })
    }
}

/// Whether the last occurrence of every id comes in increasing id order (repeats allowed, no reordering).
fn last_occurrences_increase(handed: &[u64]) -> bool {
    let mut last: HashMap<u64, usize> = HashMap::new();
    for (pos, id) in handed.iter().enumerate() {
        last.insert(*id, pos);
    }
    let mut by_pos: Vec<(usize, u64)> = last.into_iter().map(|(id, pos)| (pos, id)).collect();
    by_pos.sort_unstable();
    by_pos.windows(2).all(|w| w[0].1 < w[1].1)
}

#[tokio::test]
async fn batched_strict_subscriber_goes_again_from_the_failed_event_in_order() {
    let (store, _dir) = store().await;
    let bus = EventBus::new(store.clone(), config()).unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(append(&store, "t", &format!("{i}")).await);
    }
    let (bad, worse) = (ids[9], ids[25]);
    // `bad` fails twice, `worse` once: each time, it and everything handed over after it go again.
    let probe = BatchProbe::new(move |id, attempt| {
        ((id == bad && attempt <= 2) || (id == worse && attempt == 1)).then(|| HandlerError::retry("nack"))
    });
    let sub = Subscription::batched("s", &["*"], probe.clone(), 4, 3).unwrap().order(DeliveryOrder::Strict);
    bus.subscribe_with(sub).unwrap();
    let (root, _registry) = start(&bus).await;
    eventually("drained", || async { outbox_len(&store).await == 0 }).await;

    let handed = probe.handed();
    assert!(probe.calls.lock().unwrap().iter().all(|c| !c.is_empty() && c.len() <= 4), "batches of 1..=4");
    assert!(probe.max_in_flight.load(Ordering::SeqCst) <= 3, "at most 3 calls in flight");
    assert_eq!(handed.iter().copied().collect::<BTreeSet<_>>(), ids.iter().copied().collect(), "every event");
    assert!(last_occurrences_increase(&handed), "repeats only, never reordered: {handed:?}");
    // After a failure the next call starts at the failed event.
    let first_bad = handed.iter().position(|id| *id == bad).unwrap();
    let again = handed[first_bad + 1..].iter().position(|id| *id == bad).unwrap() + first_bad + 1;
    assert!(handed[first_bad..again].iter().all(|id| *id >= bad), "nothing before the failed one goes again");
    assert!(bus.dead_letters(10, None).await.unwrap().items.is_empty());
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn batched_subscriber_dead_letters_rejects_and_replays_one_event() {
    for order in [DeliveryOrder::FirstAttempt, DeliveryOrder::Strict] {
        let (store, _dir) = store().await;
        let bus = EventBus::new(store.clone(), config()).unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(append(&store, "t", &format!("{i}")).await);
        }
        let (rejected, flaky) = (ids[3], ids[12]);
        let probe = BatchProbe::new(move |id, attempt| {
            if id == rejected && attempt == 1 {
                Some(HandlerError::reject("undecodable"))
            } else {
                (id == flaky && attempt == 1).then(|| HandlerError::retry("once"))
            }
        });
        bus.subscribe_with(Subscription::batched("s", &["*"], probe.clone(), 8, 2).unwrap().order(order)).unwrap();
        let (root, _registry) = start(&bus).await;
        eventually("drained", || async { outbox_len(&store).await == 0 }).await;
        let dead = bus.dead_letters(10, None).await.unwrap().items;
        assert_eq!(dead.iter().map(|d| d.outbox_id).collect::<Vec<_>>(), vec![rejected], "{order:?}");
        assert_eq!(probe.attempts.lock().unwrap()[&rejected], 1, "rejects are not retried");
        assert!(probe.attempts.lock().unwrap()[&flaky] >= 2, "retried");
        bus.replay(&dead[0].id).await.unwrap();
        assert!(bus.dead_letters(10, None).await.unwrap().items.is_empty());
        assert_eq!(probe.calls.lock().unwrap().last().unwrap(), &vec![rejected], "replay is a batch of one");
        root.shutdown(Duration::from_secs(5)).await;
    }
}

#[test]
fn batched_subscriptions_need_a_batch_and_a_pipeline() {
    let probe = BatchProbe::new(|_, _| None);
    assert!(matches!(Subscription::batched("s", &["*"], probe.clone(), 0, 1), Err(BusError::BadConfig(_))));
    assert!(matches!(Subscription::batched("s", &["*"], probe, 1, 0), Err(BusError::BadConfig(_))));
}

#[tokio::test]
async fn with_a_drain_gate_only_the_open_bus_drains_and_a_closed_one_stops() {
    let (store, _dir) = store().await;
    let (pa, pb) = (Probe::new(), Probe::new());
    let (a, b) = (EventBus::new(store.clone(), config()).unwrap(), EventBus::new(store.clone(), config()).unwrap());
    a.subscribe("s", &["*"], pa.clone()).unwrap();
    b.subscribe("s", &["*"], pb.clone()).unwrap();
    let (gate_a, gate_b) = (tokio::sync::watch::Sender::new(true), tokio::sync::watch::Sender::new(false));
    a.set_drain_gate(gate_a.subscribe()).unwrap();
    b.set_drain_gate(gate_b.subscribe()).unwrap();
    let (ra, _) = start(&a).await;
    let (rb, _) = start(&b).await;
    assert!(matches!(a.set_drain_gate(gate_a.subscribe()), Err(BusError::AlreadyStarted)));

    let mut first = Vec::new();
    for i in 0..5 {
        first.push(append(&store, "t", &format!("{i}")).await);
    }
    eventually("a drained the first entries", || async { outbox_len(&store).await == 0 }).await;
    assert_eq!(pa.seen_set(), first.iter().copied().collect());
    assert!(pb.seen().is_empty(), "a bus behind a closed gate delivers nothing");

    // The singleton moves: a's gate closes, b's opens; b delivers what follows, a nothing more.
    gate_a.send_replace(false);
    gate_b.send_replace(true);
    let seen_by_a = pa.seen().len();
    let mut second = Vec::new();
    for i in 0..5 {
        second.push(append(&store, "t", &format!("x{i}")).await);
    }
    eventually("b drained the later entries", || async { outbox_len(&store).await == 0 }).await;
    assert!(second.iter().all(|id| pb.seen_set().contains(id)));
    assert_eq!(pa.seen().len(), seen_by_a, "a stopped draining when its gate closed");
    ra.shutdown(Duration::from_secs(2)).await;
    rb.shutdown(Duration::from_secs(2)).await;
}
