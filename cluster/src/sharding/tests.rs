#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use troupe_storage::{FjallBackend, Store, SystemClock};

use super::*;
use crate::placement::desired_shards;

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    (Store::new(Arc::new(backend), Arc::new(SystemClock)), dir)
}

const SHARDS: u32 = 16;

/// Real time (the store's fjall I/O runs on blocking threads, which a paused tokio clock would skip
/// over), with short leases so the moves take well under a second.
fn settings() -> ShardSettings {
    ShardSettings {
        shards: SHARDS,
        lease_ttl: Duration::from_millis(800),
        renew_interval: Duration::from_millis(150),
        checkpoint_timeout: Duration::from_millis(500),
    }
}

/// A counter entity: `inc` adds one and saves; answers `<node id>:<count>`.
struct Counter {
    count: u64,
}

impl Entity for Counter {
    fn handle<'a>(&'a mut self, ctx: &'a EntityContext, message: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            if message == b"inc" {
                self.count += 1;
                ctx.save(self.count.to_string().into_bytes()).await?;
            }
            Ok(format!("{}:{}", ctx.node_id(), self.count).into_bytes())
        })
    }
}

struct CounterFactory;

impl EntityFactory for CounterFactory {
    fn create<'a>(&'a self, ctx: &'a EntityContext) -> BoxFuture<'a, Result<Box<dyn Entity>>> {
        Box::pin(async move {
            let count = match ctx.load().await? {
                Some(bytes) => String::from_utf8(bytes).unwrap().parse().unwrap(),
                None => 0,
            };
            Ok(Box::new(Counter { count }) as Box<dyn Entity>)
        })
    }
}

struct Node {
    id: String,
    up: watch::Sender<UpSet>,
    sharding: Sharding,
}

async fn node(store: &Store, id: &str) -> Node {
    let (up, rx) = watch::channel(UpSet { incarnation: 1, members: Vec::new() });
    let kinds = EntityKinds::new().register("counter", Arc::new(CounterFactory));
    let sharding = Sharding::start(settings(), store.clone(), id, rx, kinds).await.unwrap();
    Node { id: id.to_owned(), up, sharding }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

fn set_up(nodes: &[&Node], members: &[&Node]) {
    let members: Vec<String> = members.iter().map(|n| n.id.clone()).collect();
    for n in nodes {
        n.up.send_modify(|u| u.members = members.clone());
    }
}

/// Waits until `check` holds; fails after half a minute (a bound for hangs, not a timing assertion).
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never converged: {what}");
}

fn converged(nodes: &[&Node], members: &[&Node]) -> bool {
    let ids: Vec<String> = members.iter().map(|n| n.id.clone()).collect();
    nodes.iter().all(|n| {
        let want = if ids.contains(&n.id) { desired_shards(SHARDS, &ids, &n.id) } else { BTreeSet::new() };
        n.sharding.owned() == want
    })
}

fn assert_exactly_once(nodes: &[&Node]) {
    let mut all = BTreeSet::new();
    for n in nodes {
        for s in n.sharding.owned() {
            assert!(all.insert(s), "shard {s} is owned twice");
        }
    }
    assert_eq!(all, (0..SHARDS).collect::<BTreeSet<u32>>(), "every shard is owned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_is_owned_once_and_shards_move_on_join_and_leave() {
    let (store, _dir) = store().await;
    // Ids are random: with 16 shards one of three nodes may by chance be owed none (p ≈ 0.5 %), which
    // would make "spread over all three" fail for no fault of the code. Draw ids until each is owed some.
    let ids = loop {
        let ids = [unique("a"), unique("b"), unique("c")];
        if ids.iter().all(|id| !desired_shards(SHARDS, &ids, id).is_empty()) {
            break ids;
        }
    };
    let (a, b, c) = (node(&store, &ids[0]).await, node(&store, &ids[1]).await, node(&store, &ids[2]).await);
    let all = [&a, &b, &c];

    set_up(&all, &[&a, &b]);
    until("a and b own everything", || converged(&all, &[&a, &b])).await;
    assert_exactly_once(&all);

    // c joins: it takes only its shards, from their previous owners (released, then acquired).
    set_up(&all, &[&a, &b, &c]);
    until("three owners", || converged(&all, &[&a, &b, &c])).await;
    assert_exactly_once(&all);
    assert!(all.iter().all(|n| !n.sharding.owned().is_empty()), "shards spread over all three");

    // c leaves gracefully: it releases, a and b acquire at once.
    c.sharding.release_all(Duration::from_secs(5)).await;
    assert!(c.sharding.owned().is_empty());
    set_up(&all, &[&a, &b]);
    until("back to two owners", || converged(&all, &[&a, &b])).await;
    assert_exactly_once(&all);

    // The published owners match.
    let published = a.sharding.published_owners().await.unwrap();
    assert_eq!(published[&a.id].shards, a.sharding.owned().into_iter().collect::<Vec<_>>());
    for n in all {
        n.sharding.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_shards_are_taken_once_its_leases_lapse() {
    let (store, _dir) = store().await;
    let (a, b, c) =
        (node(&store, &unique("a")).await, node(&store, &unique("b")).await, node(&store, &unique("c")).await);
    let all = [&a, &b, &c];
    set_up(&all, &[&a, &b, &c]);
    until("three owners", || converged(&all, &[&a, &b, &c])).await;
    let lost = c.sharding.owned();

    // c dies without releasing: the others must wait for its leases to lapse.
    c.sharding.stop().await;
    set_up(&[&a, &b], &[&a, &b]);
    until("a and b own c's shards", || converged(&[&a, &b], &[&a, &b])).await;
    let now: BTreeSet<u32> = a.sharding.owned().union(&b.sharding.owned()).copied().collect();
    assert!(lost.is_subset(&now));
    assert_exactly_once(&[&a, &b]);
    a.sharding.stop().await;
    b.sharding.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_live_on_the_owner_and_callers_anywhere_reach_them() {
    let (store, _dir) = store().await;
    let (a, b) = (node(&store, &unique("a")).await, node(&store, &unique("b")).await);
    let all = [&a, &b];
    set_up(&all, &[&a, &b]);
    until("two owners", || converged(&all, &[&a, &b])).await;

    let t = Duration::from_secs(5);
    let mut on = BTreeSet::new();
    for i in 0..20 {
        let key = format!("user-{i}");
        let owner = if a.sharding.owned().contains(&a.sharding.shard_of(&key)) { &a.id } else { &b.id };
        // From a, then from b: both land on the same entity, on the owner.
        let first = a.sharding.call("counter", &key, b"inc".to_vec(), t).await.unwrap();
        let second = b.sharding.call("counter", &key, b"inc".to_vec(), t).await.unwrap();
        assert_eq!(String::from_utf8(first).unwrap(), format!("{owner}:1"));
        assert_eq!(String::from_utf8(second).unwrap(), format!("{owner}:2"));
        on.insert(owner.clone());
    }
    assert_eq!(on.len(), 2, "entities on both nodes");
    let err = a.sharding.call("nope", "user-1", Vec::new(), t).await.unwrap_err();
    assert!(matches!(err, ClusterError::UnknownKind(_)), "{err:?}");

    // b leaves: its entities checkpoint and stop, a takes their shards and reloads their state.
    b.sharding.release_all(t).await;
    set_up(&all, &[&a]);
    until("a owns everything", || converged(&all, &[&a])).await;
    for i in 0..20 {
        let key = format!("user-{i}");
        let got = b.sharding.call("counter", &key, b"get".to_vec(), t).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("{}:2", a.id), "state survived the move");
    }
    a.sharding.stop().await;
    b.sharding.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_shard_without_owner_fails_retryably_then_with_the_deadline() {
    let (store, _dir) = store().await;
    let a = node(&store, &unique("a")).await;
    // Nobody is up: no owner.
    let err = a.sharding.call("counter", "k", b"inc".to_vec(), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Deadline(_)), "{err:?}");
    // The owner is a node that is not connected: unavailable, retried, then the deadline.
    let ghost = unique("ghost");
    a.up.send_modify(|u| u.members = vec![ghost.clone()]);
    let err = a.sharding.call("counter", "k", b"inc".to_vec(), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Deadline(ref m) if m.contains("not connected")), "{err:?}");
    a.sharding.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owners_writes_are_rejected_once_the_new_owner_claimed_the_state() {
    let (store, _dir) = store().await;
    let ctx = |node: &str, token| EntityContext {
        kind: "counter".to_owned(),
        key: "k".to_owned(),
        shard: 3,
        token,
        node_id: node.to_owned(),
        store: store.clone(),
    };
    let (old, new) = (ctx("a", 1), ctx("b", 2));
    old.save(b"1".to_vec()).await.unwrap();
    // The new owner claims (and sees the old owner's last write) …
    assert_eq!(new.load().await.unwrap(), Some(b"1".to_vec()));
    // … so the old owner, resumed, cannot write any more, even before the new owner wrote.
    let err = old.save(b"2".to_vec()).await.unwrap_err();
    assert!(matches!(err, ClusterError::Fenced(_)), "{err:?}");
    assert!(matches!(old.load().await.unwrap_err(), ClusterError::Fenced(_)));
    new.save(b"2".to_vec()).await.unwrap();
    assert_eq!(new.load().await.unwrap(), Some(b"2".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_stops_acting_before_its_successor_can_take_over() {
    let (store, _dir) = store().await;
    let (a, b) = (node(&store, &unique("a")).await, node(&store, &unique("b")).await);
    let all = [&a, &b];
    set_up(&all, &[&a, &b]);
    until("two owners", || converged(&all, &[&a, &b])).await;
    let before = a.sharding.owned();
    assert!(!before.is_empty());
    // a "freezes": its manager no longer runs (renewals stop) while its router still answers.
    let tasks = std::mem::take(&mut *a.sharding.inner.tasks.lock().unwrap());
    tasks[0].abort();
    // b sees a down and takes its shards once the leases lapse.
    set_up(&[&b], &[&b]);
    until("b owns everything", || converged(&[&b], &[&b])).await;
    // a's table still lists the shards it had (no manager to expire them), but its entities are
    // fenced: the successor claimed their state.
    let key = (0..1000).map(|i| format!("k{i}")).find(|k| before.contains(&a.sharding.shard_of(k))).unwrap();
    b.sharding.call("counter", &key, b"inc".to_vec(), Duration::from_secs(5)).await.unwrap();
    let err = a.sharding.call("counter", &key, b"inc".to_vec(), Duration::from_millis(500)).await.unwrap_err();
    assert!(err.to_string().contains("lost the shard"), "{err}");
    a.sharding.inner.router.stop(None);
    b.sharding.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_holds_a_singleton_and_another_takes_over() {
    let (store, _dir) = store().await;
    let name = unique("singleton");
    let ids = [unique("a"), unique("b")];
    let ups: Vec<watch::Sender<UpSet>> =
        (0..2).map(|_| watch::Sender::new(UpSet { incarnation: 1, members: ids.to_vec() })).collect();
    let (ga, ta) = singleton::lease_gate(store.clone(), &ids[0], &name, ups[0].subscribe(), &settings());
    let (gb, tb) = singleton::lease_gate(store.clone(), &ids[1], &name, ups[1].subscribe(), &settings());
    until("one holder", || *ga.borrow() || *gb.borrow()).await;
    // Never both, while they run for a few renewals.
    for _ in 0..20 {
        assert!(!(*ga.borrow() && *gb.borrow()), "two holders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (first, (g_other, up_first)) = if *ga.borrow() { (&ga, (&gb, &ups[0])) } else { (&gb, (&ga, &ups[1])) };
    // The holder leaves (not up any more): it lets go and the other takes over.
    let leaving = if *ga.borrow() { &ids[0] } else { &ids[1] };
    up_first.send_modify(|u| u.members.retain(|m| m != leaving));
    until("the other holds it", || *g_other.borrow()).await;
    assert!(!*first.borrow());
    // The new holder dies without releasing: the first takes over once its lease lapses.
    up_first.send_modify(|u| u.members = ids.to_vec());
    if *gb.borrow() {
        tb.abort()
    } else {
        ta.abort()
    }
    until("taken over after the lease lapsed", || *first.borrow()).await;
    ta.abort();
    tb.abort();
}
