//! The backend conformance suite: the same checks for every backend. Each `pub async fn` takes a fresh
//! [`Store`] built over a [`ManualClock`]; [`conformance_tests!`](crate::conformance_tests) generates one
//! `#[tokio::test]` per check for a backend from an `async fn(ManualClock) -> (Store, Guard)`, where
//! `Guard` is anything to keep alive for the test (a temp dir, a schema to drop).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test support: a failed expectation is a failed test")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::{Direction, Expected, Key, ManualClock, Scan, Store, StoreError, WriteBatch};

/// Generates one `#[tokio::test]` per conformance check, each over a fresh store from `$make(clock).await`
/// (which returns the store and a guard dropped after the test).
///
/// `conformance_tests!(optional $make)` is for backends behind an external service: `$make(clock).await`
/// returns `Option<(Store, Guard)>`, and `None` (service not reachable, skip allowed) ends the test early.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@list required $make);
    };
    (optional $make:path) => {
        $crate::conformance_tests!(@list optional $make);
    };
    (@list $mode:ident $make:path) => {
        $crate::conformance_tests!(@each $mode $make;
            ordering, ranges_both_ways, cursors, ttl_expiry, versions_and_delete, cas_and_put_if_absent,
            cas_race_has_one_winner, put_if_absent_race_has_one_winner, append_conflicts, append_race,
            snapshots, lease_expiry_and_fencing, lease_race_and_token_monotonicity, outbox_atomicity,
            foreign_bytes_are_corrupt_data);
    };
    (@make required $make:path, $clock:expr) => {
        Some($make($clock).await)
    };
    (@make optional $make:path, $clock:expr) => {
        $make($clock).await
    };
    (@each $mode:ident $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let clock = $crate::ManualClock::new(1_000_000);
                let Some((store, guard)) = $crate::conformance_tests!(@make $mode $make, clock.clone()) else {
                    return;
                };
                $crate::conformance::$name(&store, &clock).await;
                store.close().await.expect("close");
                drop(guard);
            }
        )*
    };
}

fn keys_of(page: &crate::Page) -> Vec<Key> {
    page.rows.iter().map(|r| r.ck.clone()).collect()
}

/// Rows come back in clustering-key tuple order, partitions do not leak into each other.
pub async fn ordering(store: &Store, _clock: &ManualClock) {
    let pk = Key::from("p");
    let mut cks = vec![
        Key::empty().u64(10),
        Key::empty().u64(2),
        Key::empty().str("b"),
        Key::empty().str("a").u64(1),
        Key::empty().str("a"),
        Key::empty().bytes(vec![0, 1]),
        Key::empty().bytes(vec![0]),
        Key::empty().i64(-5),
        Key::empty(),
    ];
    for (i, ck) in cks.iter().enumerate() {
        store.put("t", &pk, ck, vec![i as u8]).await.unwrap();
    }
    // Neighbouring partitions whose encodings share a prefix with "p".
    for other in [Key::from("p").u64(1), Key::from("pq"), Key::empty().bytes(b"p".to_vec()), Key::empty()] {
        store.put("t", &other, &Key::empty().u64(1), b"x".to_vec()).await.unwrap();
    }
    cks.sort();
    let page = store.scan("t", &pk, &Scan::all()).await.unwrap();
    assert_eq!(keys_of(&page), cks);
    assert!(page.next.is_none());
    let page = store.scan("t", &pk, &Scan::all().rev()).await.unwrap();
    cks.reverse();
    assert_eq!(keys_of(&page), cks);
    let row = store.get("t", &pk, &Key::empty().str("b")).await.unwrap().unwrap();
    assert_eq!(row.value, vec![2]);
    assert!(store.get("t", &pk, &Key::empty().str("zz")).await.unwrap().is_none());
    assert!(store.get("other_table", &pk, &Key::empty().str("b")).await.unwrap().is_none());
}

/// Clustering-key ranges and prefixes, ascending and descending.
pub async fn ranges_both_ways(store: &Store, _clock: &ManualClock) {
    let pk = Key::from("r");
    for i in 0..10u64 {
        store.put("t", &pk, &Key::empty().u64(i), vec![]).await.unwrap();
        store.put("t", &pk, &Key::empty().u64(i).str("sub"), vec![]).await.unwrap();
    }
    let mut scan = Scan::between(&Key::empty().u64(3), &Key::empty().u64(7));
    scan.end = std::ops::Bound::Excluded(Key::empty().u64(6).str("sub").encode());
    let asc = store.scan("t", &pk, &scan).await.unwrap();
    let expected: Vec<Key> = vec![
        Key::empty().u64(3),
        Key::empty().u64(3).str("sub"),
        Key::empty().u64(4),
        Key::empty().u64(4).str("sub"),
        Key::empty().u64(5),
        Key::empty().u64(5).str("sub"),
        Key::empty().u64(6),
    ];
    assert_eq!(keys_of(&asc), expected);
    let desc = store.scan("t", &pk, &scan.clone().direction(Direction::Descending)).await.unwrap();
    assert_eq!(keys_of(&desc), expected.into_iter().rev().collect::<Vec<_>>());
    let prefix = store.scan("t", &pk, &Scan::prefix(&Key::empty().u64(8))).await.unwrap();
    assert_eq!(keys_of(&prefix), vec![Key::empty().u64(8), Key::empty().u64(8).str("sub")]);
    let prefix_desc = store.scan("t", &pk, &Scan::prefix(&Key::empty().u64(8)).rev().limit(1)).await.unwrap();
    assert_eq!(keys_of(&prefix_desc), vec![Key::empty().u64(8).str("sub")]);
    let from = store.scan("t", &pk, &Scan::from(&Key::empty().u64(9)).rev()).await.unwrap();
    assert_eq!(keys_of(&from), vec![Key::empty().u64(9).str("sub"), Key::empty().u64(9)]);
    let empty = store.scan("t", &pk, &Scan::between(&Key::empty().u64(7), &Key::empty().u64(7))).await.unwrap();
    assert!(empty.rows.is_empty());
}

/// Pages resume exactly where the previous one stopped, both ways; the last page has no cursor.
pub async fn cursors(store: &Store, _clock: &ManualClock) {
    let pk = Key::from("c");
    for i in 0..25u64 {
        store.put("t", &pk, &Key::empty().u64(i), i.to_be_bytes().to_vec()).await.unwrap();
    }
    for direction in [Direction::Ascending, Direction::Descending] {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let scan = Scan::all().direction(direction).limit(10).after(cursor.take());
            let page = store.scan("t", &pk, &scan).await.unwrap();
            pages += 1;
            seen.extend(page.rows.iter().map(|r| r.ck.clone()));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut expected: Vec<Key> = (0..25u64).map(|i| Key::empty().u64(i)).collect();
        if direction == Direction::Descending {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{direction:?}");
        assert_eq!(pages, 3, "{direction:?}");
    }
    // Exactly `limit` rows left: no cursor.
    let page = store.scan("t", &pk, &Scan::all().limit(25)).await.unwrap();
    assert_eq!(page.rows.len(), 25);
    assert!(page.next.is_none());
}

/// Expired rows are invisible to get and scan, and count as absent for put_if_absent.
pub async fn ttl_expiry(store: &Store, clock: &ManualClock) {
    let pk = Key::from("ttl");
    let at = store.expires_in(Duration::from_secs(5));
    store.put_until("t", &pk, &Key::from(1), b"short".to_vec(), at).await.unwrap();
    store.put("t", &pk, &Key::from(2), b"forever".to_vec()).await.unwrap();
    let row = store.get("t", &pk, &Key::from(1)).await.unwrap().unwrap();
    assert_eq!(row.expires_at_ms, Some(at));
    clock.advance(Duration::from_millis(4_999));
    assert!(store.get("t", &pk, &Key::from(1)).await.unwrap().is_some());
    clock.advance(Duration::from_millis(1));
    assert!(store.get("t", &pk, &Key::from(1)).await.unwrap().is_none());
    let page = store.scan("t", &pk, &Scan::all()).await.unwrap();
    assert_eq!(keys_of(&page), vec![Key::from(2)]);
    let page = store.scan("t", &pk, &Scan::all().limit(1)).await.unwrap();
    assert_eq!(keys_of(&page), vec![Key::from(2)]);
    assert!(page.next.is_none(), "an expired row must not produce a cursor");
    store.put_if_absent("t", &pk, &Key::from(1), b"again".to_vec(), None).await.unwrap();
    assert_eq!(store.get("t", &pk, &Key::from(1)).await.unwrap().unwrap().value, b"again");
}

/// Versions start at 1 and grow by one per write; delete removes.
pub async fn versions_and_delete(store: &Store, _clock: &ManualClock) {
    let (pk, ck) = (Key::from("v"), Key::from("k"));
    assert_eq!(store.put("t", &pk, &ck, b"a".to_vec()).await.unwrap(), 1);
    assert_eq!(store.put("t", &pk, &ck, b"b".to_vec()).await.unwrap(), 2);
    assert_eq!(store.get("t", &pk, &ck).await.unwrap().unwrap().version, 2);
    store.delete("t", &pk, &ck).await.unwrap();
    assert!(store.get("t", &pk, &ck).await.unwrap().is_none());
    store.delete("t", &pk, &ck).await.unwrap();
    assert!(matches!(store.put("Bad-Name", &pk, &ck, vec![]).await, Err(StoreError::BadConfig { .. })));
    assert!(matches!(store.put("_troupe_leases", &pk, &ck, vec![]).await, Err(StoreError::BadConfig { .. })));
}

/// put_if_absent and compare_and_set by version and by value.
pub async fn cas_and_put_if_absent(store: &Store, _clock: &ManualClock) {
    let (pk, ck) = (Key::from("cas"), Key::from("k"));
    assert_eq!(store.put_if_absent("t", &pk, &ck, b"1".to_vec(), None).await.unwrap(), 1);
    let err = store.put_if_absent("t", &pk, &ck, b"2".to_vec(), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 1 }), "{err:?}");
    assert_eq!(store.compare_and_set("t", &pk, &ck, Expected::Version(1), b"2".to_vec()).await.unwrap(), 2);
    let err = store.compare_and_set("t", &pk, &ck, Expected::Version(1), b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 2 }), "{err:?}");
    let err = store.compare_and_set("t", &pk, &ck, Expected::Value(b"1".to_vec()), b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 2 }), "{err:?}");
    store.compare_and_set("t", &pk, &ck, Expected::Value(b"2".to_vec()), b"3".to_vec()).await.unwrap();
    assert_eq!(store.get("t", &pk, &ck).await.unwrap().unwrap().value, b"3");
    let missing = Key::from("missing");
    let err = store.compare_and_set("t", &pk, &missing, Expected::Version(1), b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 0 }), "{err:?}");
}

const RACERS: usize = 32;

/// Many tasks CAS the same version: exactly one wins.
pub async fn cas_race_has_one_winner(store: &Store, _clock: &ManualClock) {
    let (pk, ck) = (Key::from("race"), Key::from("k"));
    store.put("t", &pk, &ck, b"start".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, pk, ck) = (store.clone(), pk.clone(), ck.clone());
        tasks.push(tokio::spawn(async move {
            store.compare_and_set("t", &pk, &ck, Expected::Version(1), vec![i as u8]).await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(v) => winners.push((i, v)),
            Err(StoreError::Conflict { current: 2 }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (winner, version) = winners[0];
    assert_eq!(version, 2);
    assert_eq!(store.get("t", &pk, &ck).await.unwrap().unwrap().value, vec![winner as u8]);
}

/// Many tasks put_if_absent the same row: exactly one wins.
pub async fn put_if_absent_race_has_one_winner(store: &Store, _clock: &ManualClock) {
    let pk = Key::from("pia");
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, pk) = (store.clone(), pk.clone());
        tasks.push(tokio::spawn(
            async move { store.put_if_absent("t", &pk, &Key::from("k"), vec![i as u8], None).await },
        ));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(1) => wins += 1,
            Err(StoreError::Conflict { current: 1 }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// append_events: expected-version checks, Conflict carries the current version, reads from a version.
pub async fn append_conflicts(store: &Store, _clock: &ManualClock) {
    let agg = "order-1";
    assert_eq!(store.append_events(agg, 0, vec![b"e1".to_vec(), b"e2".to_vec()]).await.unwrap(), 2);
    let err = store.append_events(agg, 0, vec![b"x".to_vec()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 2 }), "{err:?}");
    let err = store.append_events(agg, 5, vec![b"x".to_vec()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 2 }), "{err:?}");
    let err = store.append_events(agg, 1, vec![b"x".to_vec()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 2 }), "{err:?}");
    assert_eq!(store.append_events(agg, 2, vec![b"e3".to_vec()]).await.unwrap(), 3);
    assert_eq!(store.event_version(agg).await.unwrap(), 3);
    let all = store.read_events(agg, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[2].payload, b"e3");
    let tail = store.read_events(agg, 2, 1).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2]);
    assert!(store.read_events("nobody", 1, 10).await.unwrap().is_empty());
    assert_eq!(store.event_version("nobody").await.unwrap(), 0);
}

/// Concurrent appenders that each retry on conflict: the log ends gap-free with every event once.
pub async fn append_race(store: &Store, _clock: &ManualClock) {
    let agg = "race-agg";
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut expected = 0;
            let mut conflicts = 0;
            loop {
                match store.append_events(agg, expected, vec![vec![i]]).await {
                    Ok(v) => return (v, conflicts),
                    Err(StoreError::Conflict { current }) => {
                        conflicts += 1;
                        expected = current;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }));
    }
    let mut versions = HashSet::new();
    for t in tasks {
        let (v, _) = t.await.unwrap();
        assert!(versions.insert(v), "version {v} acknowledged twice");
    }
    let events = store.read_events(agg, 1, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
    let payloads: HashSet<u8> = events.iter().map(|e| e.payload[0]).collect();
    assert_eq!(payloads.len(), 16);
}

/// Snapshots: latest wins, an older one is refused.
pub async fn snapshots(store: &Store, _clock: &ManualClock) {
    assert!(store.load_snapshot("s").await.unwrap().is_none());
    store.save_snapshot("s", 5, b"five".to_vec()).await.unwrap();
    store.save_snapshot("s", 9, b"nine".to_vec()).await.unwrap();
    let err = store.save_snapshot("s", 7, b"seven".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: 9 }), "{err:?}");
    let snap = store.load_snapshot("s").await.unwrap().unwrap();
    assert_eq!((snap.version, snap.state.as_slice()), (9, b"nine".as_slice()));
}

/// Leases: held → refused; expiry → taken over with a greater token; the old holder's renew/release fail.
pub async fn lease_expiry_and_fencing(store: &Store, clock: &ManualClock) {
    let ttl = Duration::from_secs(10);
    let a = store.acquire_lease("shard-1", "node-a", ttl).await.unwrap();
    assert_eq!(a.token, 1);
    let err = store.acquire_lease("shard-1", "node-b", ttl).await.unwrap_err();
    assert!(matches!(&err, StoreError::LeaseHeld { owner, .. } if owner == "node-a"), "{err:?}");
    clock.advance(Duration::from_secs(5));
    let a = store.renew_lease(&a, ttl).await.unwrap();
    let again = store.acquire_lease("shard-1", "node-a", ttl).await.unwrap();
    assert_eq!(again.token, a.token, "re-acquire by the holder keeps the token");
    clock.advance(Duration::from_secs(10));
    let b = store.acquire_lease("shard-1", "node-b", ttl).await.unwrap();
    assert!(b.token > a.token);
    assert!(matches!(store.renew_lease(&a, ttl).await, Err(StoreError::LeaseLost { .. })));
    assert!(!store.release_lease(&a).await.unwrap());
    assert!(store.release_lease(&b).await.unwrap());
    let a2 = store.acquire_lease("shard-1", "node-a", ttl).await.unwrap();
    assert!(a2.token > b.token, "release keeps the token counter");
    // A lapsed lease nobody took over can still be renewed by its holder (its token is still current).
    clock.advance(Duration::from_secs(60));
    let a3 = store.renew_lease(&a2, ttl).await.unwrap();
    assert_eq!(a3.token, a2.token);
}

/// Many nodes race for one free lease, repeatedly: one winner per round, tokens strictly increase.
pub async fn lease_race_and_token_monotonicity(store: &Store, clock: &ManualClock) {
    let ttl = Duration::from_secs(1);
    let mut last = 0;
    for _round in 0..5 {
        let mut tasks = Vec::new();
        for n in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.acquire_lease("leader", &format!("node-{n}"), ttl).await }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(l) => winners.push(l),
                Err(StoreError::LeaseHeld { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert!(winners[0].token > last);
        last = winners[0].token;
        clock.advance(Duration::from_secs(2));
    }
}

/// An outbox entry commits with its state change or not at all; ack removes; ids grow in commit order.
pub async fn outbox_atomicity(store: &Store, _clock: &ManualClock) {
    let (pk, ck) = (Key::from("acct"), Key::from("balance"));
    store.put("accounts", &pk, &ck, b"10".to_vec()).await.unwrap();
    // Failing condition: neither the state change nor the outbox entry is written.
    let mut batch = WriteBatch::new();
    batch.put_with("accounts", &pk, &ck, b"20".to_vec(), None, crate::Condition::Version(7));
    batch.append_outbox("balances", b"changed to 20".to_vec());
    assert!(matches!(store.commit(batch).await, Err(StoreError::Conflict { current: 1 })));
    assert!(store.pending_outbox(10).await.unwrap().is_empty());
    assert_eq!(store.get("accounts", &pk, &ck).await.unwrap().unwrap().value, b"10");
    // Holding condition: both.
    let mut batch = WriteBatch::new();
    batch.put_with("accounts", &pk, &ck, b"20".to_vec(), None, crate::Condition::Version(1));
    batch.append_outbox("balances", b"changed to 20".to_vec());
    batch.append_events("acct", 0, vec![b"deposited 10".to_vec()]);
    let results = store.commit(batch).await.unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(store.get("accounts", &pk, &ck).await.unwrap().unwrap().value, b"20");
    assert_eq!(store.event_version("acct").await.unwrap(), 1);
    let pending = store.pending_outbox(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].topic.as_str(), pending[0].payload.as_slice()), ("balances", b"changed to 20".as_slice()));
    assert_eq!(pending[0].id, results[1]);
    // Concurrent writers: every entry once, ids unique and pending in id order.
    let store = Arc::new(store.clone());
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut batch = WriteBatch::new();
            batch.put("accounts", &Key::from("acct"), &Key::empty().u64(u64::from(i)), vec![i]);
            batch.append_outbox("t", vec![i]);
            store.commit(batch).await.unwrap()[1]
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pending = store.pending_outbox(100).await.unwrap();
    assert_eq!(pending.len(), 21);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    let ids: Vec<u64> = pending.iter().take(11).map(|e| e.id).collect();
    store.ack_outbox(&ids).await.unwrap();
    let rest = store.pending_outbox(100).await.unwrap();
    assert_eq!(rest.len(), 10);
    assert!(rest.iter().all(|e| e.id > ids[10]));
}

/// Foreign bytes where the store expects its own records → `CorruptData` naming table and key, no panic.
pub async fn foreign_bytes_are_corrupt_data(store: &Store, _clock: &ManualClock) {
    let mut batch = WriteBatch::new();
    batch.put(crate::EVENTS_TABLE, &Key::from("bad-agg"), &Key::empty(), b"not a version".to_vec());
    store.commit(batch).await.unwrap();
    let check = |err: StoreError| match err {
        StoreError::CorruptData { table, key, .. } => {
            assert_eq!(table, crate::EVENTS_TABLE);
            assert_eq!(key, "(\"bad-agg\")/()");
        }
        other => panic!("expected CorruptData, got {other:?}"),
    };
    check(store.event_version("bad-agg").await.unwrap_err());
    check(store.append_events("bad-agg", 0, vec![b"e".to_vec()]).await.unwrap_err());
    // An event row whose key is not (version).
    let mut batch = WriteBatch::new();
    batch.put(crate::EVENTS_TABLE, &Key::from("bad-key"), &Key::empty().u64(1).str("x"), b"e".to_vec());
    store.commit(batch).await.unwrap();
    match store.read_events("bad-key", 0, 10).await.unwrap_err() {
        StoreError::CorruptData { table, key, .. } => {
            assert_eq!(table, crate::EVENTS_TABLE);
            assert!(key.contains("bad-key"), "{key}");
        }
        other => panic!("expected CorruptData, got {other:?}"),
    }
}
