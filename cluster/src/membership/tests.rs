#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use troupe_storage::{FjallBackend, ManualClock, Store};

use super::*;

fn member(id: &str, incarnation: u64) -> Member {
    Member {
        node_id: id.to_owned(),
        name: "n1".to_owned(),
        incarnation,
        cluster_addr: "127.0.0.1:4000".to_owned(),
        http_addr: "127.0.0.1:8080".to_owned(),
        status: NodeStatus::Joining,
        heartbeat: 0,
        last_heartbeat_ms: 5,
        reason: "started".to_owned(),
    }
}

async fn table() -> (MembershipTable, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    let store = Store::new(Arc::new(backend), Arc::new(ManualClock::new(1_000)));
    (MembershipTable::new(store), dir)
}

#[test]
fn rows_round_trip_in_the_envelope_and_garbage_is_a_typed_error() {
    let m = member("a", 7);
    let bytes = m.encode().unwrap();
    assert_eq!(&bytes[..3], b"TRP");
    assert_eq!(Member::decode(&bytes).unwrap(), m);
    assert!(matches!(Member::decode(b"nonsense"), Err(ClusterError::Decode { .. })));
    let other = Envelope::seal("something.else", "a", 1, &m).unwrap().encode().unwrap();
    assert!(matches!(Member::decode(&other), Err(ClusterError::Decode { .. })));
}

#[test]
fn incarnations_only_grow() {
    assert_eq!(next_incarnation(None, 100), 100);
    assert_eq!(next_incarnation(Some(500), 100), 501, "a clock behind the old incarnation still moves up");
    assert_eq!(next_incarnation(Some(50), 100), 100);
    assert_eq!(next_incarnation(Some(u64::MAX), 1), u64::MAX);
}

#[test]
fn statuses_classify() {
    assert!(NodeStatus::ALL.iter().all(|s| s.is_live() == (*s != NodeStatus::Down)));
    let meshed: Vec<_> = NodeStatus::ALL.into_iter().filter(|s| s.is_meshed()).collect();
    assert_eq!(meshed, [NodeStatus::Up, NodeStatus::Suspect, NodeStatus::Leaving]);
    assert_eq!(NodeStatus::Leaving.to_string(), "leaving");
}

#[tokio::test]
async fn writes_are_compare_and_set_on_the_row_version() {
    let (t, _dir) = table().await;
    let mut a = member("a", 1);
    let v1 = t.write(&a, None).await.unwrap().unwrap();
    assert_eq!(t.write(&a, None).await.unwrap(), None, "put-if-absent loses to an existing row");
    a.status = NodeStatus::Up;
    let v2 = t.write(&a, Some(v1)).await.unwrap().unwrap();
    // A peer that read v1 cannot mark it down over the newer write.
    let mut stale = a.clone();
    stale.status = NodeStatus::Down;
    assert_eq!(t.write(&stale, Some(v1)).await.unwrap(), None);
    let got = t.get("a").await.unwrap().unwrap();
    assert_eq!((got.member.status, got.version), (NodeStatus::Up, v2));
    t.write(&member("b", 3), None).await.unwrap().unwrap();
    let all = t.load_all().await.unwrap();
    assert_eq!(all.iter().map(|r| r.member.node_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    t.remove("b").await.unwrap();
    assert!(t.get("b").await.unwrap().is_none());
    assert_eq!(t.now_ms(), 1_000);
}

#[tokio::test]
async fn an_undecodable_row_is_skipped_not_fatal() {
    let (t, _dir) = table().await;
    t.write(&member("a", 1), None).await.unwrap();
    t.store.put(MEMBERS_TABLE, &t.pk, &Key::from("zz"), b"garbage".to_vec()).await.unwrap();
    let all = t.load_all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(matches!(t.get("zz").await, Err(ClusterError::Decode { .. })));
}
