//! Tests of the ScyllaDB backend, in three layers:
//! - offline unit tests of the pure parts (URI, CQL text, keys, TTL, batch shapes, the commit planner,
//!   row mapping, error mapping);
//! - offline end-to-end tests of the backend's logic over `MemCql`, an in-memory model of the CQL requests
//!   (the whole conformance suite, injected unknown outcomes, the outbox drainer's grace period);
//! - the conformance suite against a real cluster when `TROUPE_TEST_SCYLLA_URI` (or `SCYLLA_URI`) is set
//!   (`host:port[,host:port…][/keyspace]`; each test gets its own keyspace `<keyspace>_t<random>`, dropped
//!   afterwards). Without it those tests print why they skip; with it, an unreachable server fails them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(clippy::print_stderr, reason = "tests explain why they skip")]

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt as _;
use futures::future::BoxFuture;

use proptest::prelude::*;

use super::*;
use crate::{Condition, Key, ManualClock, Store, WriteBatch};

// ---- URI, names, DDL ----

#[test]
fn uri_lists_contact_points_and_optional_keyspace() {
    let t = parse_uri("127.0.0.1:9042").unwrap();
    assert_eq!(t, ScyllaTarget { nodes: vec!["127.0.0.1:9042".into()], keyspace: "troupe".into() });
    let t = parse_uri(" db-1:9042, db-2:19042/app_state ").unwrap();
    assert_eq!(t.nodes, vec!["db-1:9042".to_owned(), "db-2:19042".to_owned()]);
    assert_eq!(t.keyspace, "app_state");
    assert_eq!(parse_uri("scylla://[::1]:9042/").unwrap().nodes, vec!["[::1]:9042".to_owned()]);
    assert_eq!(parse_uri("scylla://[::1]:9042/").unwrap().keyspace, DEFAULT_KEYSPACE);
    for bad in ["", "/ks", "db-1", "db-1:0", "db-1:99999", ":9042", "db:9042/Bad-Name", "db:9042/1ks"] {
        assert!(matches!(parse_uri(bad), Err(StoreError::BadConfig { .. })), "{bad:?} accepted");
    }
    assert!(check_keyspace(&"k".repeat(48)).is_ok());
    assert!(check_keyspace(&"k".repeat(49)).is_err());
}

#[test]
fn keyspace_turns_tablets_off_and_replicates_up_to_three() {
    let cql = keyspace_cql("troupe", 3);
    assert!(cql.starts_with("CREATE KEYSPACE IF NOT EXISTS troupe WITH replication"), "{cql}");
    assert!(cql.contains("'replication_factor': 3"), "{cql}");
    assert!(cql.ends_with("AND tablets = {'enabled': false}"), "{cql}");
    let old = keyspace_cql_without_tablets("troupe", 1);
    assert!(old.contains("'replication_factor': 1") && !old.contains("tablets"), "{old}");
    assert_eq!((replication_factor(0), replication_factor(1), replication_factor(2)), (1, 1, 2));
    assert_eq!((replication_factor(3), replication_factor(12)), (3, 3));
}

#[test]
fn schema_partitions_by_store_key_with_table_first_in_clustering() {
    let ddl = schema_cql("ks");
    assert_eq!(ddl.len(), 3);
    assert!(ddl[0].contains("ks.rows") && ddl[0].contains("PRIMARY KEY ((pk), tbl, ck)"), "{}", ddl[0]);
    assert!(ddl[0].contains("CLUSTERING ORDER BY (tbl ASC, ck ASC)"), "{}", ddl[0]);
    assert!(ddl[1].contains("ks.outbox") && ddl[1].contains("PRIMARY KEY ((bucket), id, home)"), "{}", ddl[1]);
    assert!(ddl[2].contains("ks.meta"), "{}", ddl[2]);
    assert!(ddl.iter().all(|d| d.starts_with("CREATE TABLE IF NOT EXISTS")));
}

// ---- statement text ----

fn placeholders(cql: &str) -> usize {
    cql.matches('?').count()
}

#[test]
fn scan_statements_cover_every_bound_and_direction_once() {
    let mut seen = std::collections::HashSet::new();
    for lo in BOUND_KINDS {
        for hi in BOUND_KINDS {
            for dir in [Direction::Ascending, Direction::Descending] {
                let i = scan_index(lo, hi, dir);
                assert!(i < 18 && seen.insert(i), "index {i} reused");
                let cql = scan_cql("ks", lo, hi, dir);
                let bounds = usize::from(lo != BoundKind::None) + usize::from(hi != BoundKind::None);
                assert_eq!(placeholders(&cql), 3 + bounds, "{cql}");
                assert!(
                    cql.starts_with("SELECT ck, v, version, expires_at_ms, wid FROM ks.rows WHERE pk = ? AND tbl = ?")
                );
                assert!(cql.ends_with("LIMIT ?"), "{cql}");
            }
        }
    }
    assert_eq!(
        scan_cql("ks", BoundKind::Inclusive, BoundKind::Exclusive, Direction::Ascending),
        "SELECT ck, v, version, expires_at_ms, wid FROM ks.rows WHERE pk = ? AND tbl = ? AND ck >= ? AND ck < ? \
         ORDER BY tbl ASC, ck ASC LIMIT ?"
    );
    assert_eq!(
        scan_cql("ks", BoundKind::Exclusive, BoundKind::Inclusive, Direction::Descending),
        "SELECT ck, v, version, expires_at_ms, wid FROM ks.rows WHERE pk = ? AND tbl = ? AND ck > ? AND ck <= ? \
         ORDER BY tbl DESC, ck DESC LIMIT ?"
    );
    assert_eq!(bound_kind(&Bound::Included(vec![1])), BoundKind::Inclusive);
    assert_eq!(bound_kind(&Bound::Excluded(vec![1])), BoundKind::Exclusive);
    assert_eq!(bound_kind(&Bound::Unbounded), BoundKind::None);
}

#[test]
fn only_if_statements_are_conditional_and_lwt_keeps_ttl_after_the_condition() {
    for stmt in ALL_STMTS {
        let cql = stmt_cql("ks", stmt);
        assert_eq!(is_conditional(stmt), cql.contains(" IF "), "{cql}");
    }
    assert!(stmt_cql("ks", Stmt::InsertNew).ends_with("IF NOT EXISTS USING TTL ?"));
    assert!(stmt_cql("ks", Stmt::UpdateGuarded).ends_with("IF wid = ?"));
    assert!(stmt_cql("ks", Stmt::DeleteGuarded).ends_with("IF wid = ?"));
}

// ---- keys, TTL, rows ----

#[test]
fn key_columns_are_prefixed_never_empty_and_round_trip() {
    assert_eq!(key_col(&Key::empty().encode()), vec![KEY_PREFIX]);
    let k = Key::from("a").u64(7);
    assert_eq!(key_of_col(&key_col(&k.encode())), Some(k.encode().as_slice()));
    assert_eq!(key_of_col(&[]), None);
    assert_eq!(key_of_col(&[0x01, 2]), None);
    assert_eq!(bound_to_col(&Bound::Excluded(vec![3])), Bound::Excluded(vec![KEY_PREFIX, 3]));
    assert_eq!(bound_to_col(&Bound::Included(vec![])), Bound::Included(vec![KEY_PREFIX]));
    assert_eq!(bound_to_col(&Bound::Unbounded), Bound::Unbounded);
}

fn arb_key() -> impl Strategy<Value = Key> {
    let part = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(crate::KeyPart::Bytes),
        "[a-c\\x00]{0,3}".prop_map(crate::KeyPart::Str),
        any::<u64>().prop_map(crate::KeyPart::U64),
        any::<i64>().prop_map(crate::KeyPart::I64),
    ];
    proptest::collection::vec(part, 0..3).prop_map(Key)
}

proptest! {
    /// Column values (prefix + encoding) compare like the keys, so CQL's blob order is tuple order.
    #[test]
    fn key_column_order_is_key_order(a in arb_key(), b in arb_key()) {
        prop_assert_eq!(key_col(&a.encode()).cmp(&key_col(&b.encode())), a.cmp(&b));
        let t = "t";
        prop_assert_eq!(ck_from_col(t, &Key::empty(), &key_col(&a.encode())).unwrap(), a);
    }

    /// Outbox ids grow with the clock whatever the random bits, and stay valid bigints.
    #[test]
    fn outbox_ids_follow_the_clock(ms in 1_600_000_000_000u64..4_000_000_000_000, d in 1u64..1_000_000, a: u64, b: u64) {
        let (x, y) = (outbox_id(ms, a), outbox_id(ms + d, b));
        prop_assert!(x < y);
        prop_assert!(i64::try_from(y).is_ok());
    }
}

#[test]
fn ttl_rounds_up_to_whole_seconds_and_never_shortens_a_row() {
    assert_eq!(ttl_secs(None, 1_000), 0);
    assert_eq!(ttl_secs(Some(1_001), 1_000), 1);
    assert_eq!(ttl_secs(Some(2_000), 1_000), 1);
    assert_eq!(ttl_secs(Some(2_001), 1_000), 2);
    assert_eq!(ttl_secs(Some(6_000), 1_000), 5);
    assert_eq!(ttl_secs(Some(500), 1_000), 1, "already expired: purge soon");
    assert_eq!(ttl_secs(Some(u64::MAX), 0), 0, "beyond ScyllaDB's largest TTL: no engine TTL, reads filter");
    assert_eq!(ttl_secs(Some(MAX_TTL_SECS * 1000), 0), i32::try_from(MAX_TTL_SECS).unwrap());
}

#[test]
fn raw_rows_map_to_rows_and_bad_ones_are_corrupt_data_naming_table_and_key() {
    let (pk, ck) = (Key::from("p"), Key::from(3u64));
    let s = stored_from("t", &pk, &ck, (Some(b"v".to_vec()), Some(4), Some(9_000), Some(-7))).unwrap();
    assert_eq!(s, Stored { value: b"v".to_vec(), version: 4, expires_at_ms: Some(9_000), wid: -7 });
    assert!(s.live(8_999) && !s.live(9_000));
    let row = to_store_row(ck.clone(), s);
    assert_eq!(row, Row { ck: ck.clone(), value: b"v".to_vec(), version: 4, expires_at_ms: Some(9_000) });
    let forever = stored_from("t", &pk, &ck, (Some(vec![]), Some(1), None, Some(1))).unwrap();
    assert!(forever.live(u64::MAX));
    let cases: [RawCols; 5] = [
        (None, Some(1), None, Some(1)),
        (Some(vec![]), None, None, Some(1)),
        (Some(vec![]), Some(-1), None, Some(1)),
        (Some(vec![]), Some(1), Some(-5), Some(1)),
        (Some(vec![]), Some(1), None, None),
    ];
    for raw in cases {
        match stored_from("t", &pk, &ck, raw.clone()).unwrap_err() {
            StoreError::CorruptData { table, key, .. } => {
                assert_eq!(table, "t");
                assert_eq!(key, "(\"p\")/(3)");
            }
            other => panic!("{raw:?}: {other:?}"),
        }
    }
    for col in [vec![], vec![0x07, 1], vec![KEY_PREFIX, 0x09]] {
        assert!(matches!(ck_from_col("t", &pk, &col), Err(StoreError::CorruptData { .. })), "{col:?}");
    }
}

// ---- batch shapes ----

#[test]
fn batch_shapes_follow_what_cql_can_commit_atomically() {
    let (a, b) = (Key::from("a"), Key::from("b"));
    assert_eq!(classify(&WriteBatch::new()).unwrap(), BatchShape::Empty);

    let mut one = WriteBatch::new();
    one.put_with("t", &a, &Key::from(1u64), b"x".to_vec(), None, Condition::Absent);
    one.put("u", &a, &Key::empty(), b"y".to_vec());
    one.append_events("a", 0, vec![b"e".to_vec()]);
    one.append_outbox("topic", b"p".to_vec());
    assert_eq!(classify(&one).unwrap(), BatchShape::OnePartition(a.encode()), "tables of one key share a partition");

    let mut many = WriteBatch::new();
    many.put("t", &a, &Key::empty(), b"x".to_vec());
    many.delete("t", &b, &Key::empty(), Condition::None);
    many.append_outbox("topic", b"p".to_vec());
    assert_eq!(classify(&many).unwrap(), BatchShape::ManyUnconditional);

    let mut cond = many.clone();
    cond.put_with("t", &b, &Key::from(2u64), b"z".to_vec(), None, Condition::Version(3));
    match classify(&cond).unwrap_err() {
        StoreError::BadConfig { reason } => assert!(reason.contains("2 partitions"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let mut outbox_only = WriteBatch::new();
    outbox_only.append_outbox("t", b"1".to_vec());
    assert_eq!(classify(&outbox_only).unwrap(), BatchShape::OutboxOnly);

    let mut ack = WriteBatch::new();
    for id in [5u64, 9] {
        ack.delete(OUTBOX_TABLE, &Key::empty(), &Key::empty().u64(id), Condition::None);
    }
    assert_eq!(classify(&ack).unwrap(), BatchShape::AckOutbox(vec![5, 9]));
    let mut mixed = ack.clone();
    mixed.put("t", &a, &Key::empty(), b"x".to_vec());
    assert!(matches!(classify(&mixed), Err(StoreError::BadConfig { .. })));

    let mut home = WriteBatch::new();
    home.put(OUTBOX_HOME_TABLE, &a, &Key::empty(), b"x".to_vec());
    assert!(matches!(classify(&home), Err(StoreError::BadConfig { .. })));
}

// ---- the commit planner ----

fn stored(value: &[u8], version: u64, expires_at_ms: Option<u64>, wid: i64) -> Stored {
    Stored { value: value.to_vec(), version, expires_at_ms, wid }
}

fn row_id(table: &str, ck: &Key) -> RowId {
    (table.to_owned(), key_col(&ck.encode()))
}

/// Plans `batch` (one partition `pk`) with write ids 100, 101, …
fn plan(
    batch: &WriteBatch,
    pk: &Key,
    current: &[(RowId, Stored)],
    outbox: &[(u64, Vec<u8>)],
    guarded: bool,
) -> Result<PartitionPlan> {
    let ops: Vec<(usize, &Op)> =
        batch.ops.iter().enumerate().filter(|(_, op)| !matches!(op, Op::Outbox { .. })).collect();
    let current: HashMap<RowId, Stored> = current.iter().cloned().collect();
    let mut next = 99;
    let mut wid = || {
        next += 1;
        next
    };
    let plan = plan_partition(pk, &ops, &current, outbox, NOW, guarded, &mut wid)?;
    for p in &plan.statements {
        assert_eq!(p.values.len(), placeholders(&stmt_cql("ks", p.stmt)), "{:?} binds every marker", p.stmt);
    }
    Ok(plan)
}

const NOW: u64 = 1_000_000;

fn kinds(plan: &PartitionPlan) -> Vec<Stmt> {
    plan.statements.iter().map(|p| p.stmt).collect()
}

#[test]
fn absent_rows_are_inserted_if_not_exists_with_version_one_and_ttl() {
    let pk = Key::from("p");
    let mut b = WriteBatch::new();
    b.put_with("t", &pk, &Key::from(1u64), b"v".to_vec(), Some(NOW + 1_500), Condition::Absent);
    let plan = plan(&b, &pk, &[], &[], true).unwrap();
    assert_eq!(kinds(&plan), vec![Stmt::InsertNew]);
    assert_eq!(plan.results, vec![(0, 1)]);
    assert_eq!(
        plan.statements[0].values,
        vec![
            Val::Blob(key_col(&pk.encode())),
            Val::Text("t".into()),
            Val::Blob(key_col(&Key::from(1u64).encode())),
            Val::Blob(b"v".to_vec()),
            Val::BigInt(1),
            Val::BigInt(i64::try_from(NOW + 1_500).unwrap()),
            Val::BigInt(100),
            Val::Int(2),
        ]
    );
    assert_eq!(plan.probe, Some((row_id("t", &Key::from(1u64)), Some(100), None)));
}

#[test]
fn present_rows_are_replaced_under_a_guard_on_the_read_write_id() {
    let (pk, ck) = (Key::from("p"), Key::from("k"));
    let mut b = WriteBatch::new();
    b.put("t", &pk, &ck, b"new".to_vec());
    let plan = plan(&b, &pk, &[(row_id("t", &ck), stored(b"old", 4, None, 77))], &[], true).unwrap();
    assert_eq!(kinds(&plan), vec![Stmt::UpdateGuarded, Stmt::Touch]);
    assert_eq!(plan.results, vec![(0, 5)]);
    let update = &plan.statements[0].values;
    assert_eq!(update[0], Val::Int(0), "no TTL");
    assert_eq!(update[1..5], [Val::Blob(b"new".to_vec()), Val::BigInt(5), Val::Null, Val::BigInt(100)]);
    assert_eq!(update.last(), Some(&Val::BigInt(77)), "IF wid = <read wid>");
    assert_eq!(plan.statements[1].values.last(), Some(&Val::Int(0)), "row marker refreshed without TTL");
    assert_eq!(plan.probe, Some((row_id("t", &ck), Some(100), Some(77))));
}

#[test]
fn conditions_are_checked_on_the_read_with_expired_rows_counting_as_absent() {
    let (pk, ck) = (Key::from("p"), Key::from("k"));
    let live = [(row_id("t", &ck), stored(b"A", 3, Some(NOW + 1), 9))];
    let expired = [(row_id("t", &ck), stored(b"A", 3, Some(NOW), 9))];
    let put = |c: Condition| {
        let mut b = WriteBatch::new();
        b.put_with("t", &pk, &ck, b"B".to_vec(), None, c);
        b
    };
    let conflict = |r: Result<PartitionPlan>| match r {
        Err(StoreError::Conflict { current }) => current,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(conflict(plan(&put(Condition::Absent), &pk, &live, &[], true)), 3);
    assert_eq!(conflict(plan(&put(Condition::Version(2)), &pk, &live, &[], true)), 3);
    assert_eq!(conflict(plan(&put(Condition::Value(b"Z".to_vec())), &pk, &live, &[], true)), 3);
    assert_eq!(conflict(plan(&put(Condition::Version(3)), &pk, &expired, &[], true)), 0);
    assert_eq!(conflict(plan(&put(Condition::Version(1)), &pk, &[], &[], true)), 0);
    assert_eq!(plan(&put(Condition::Version(3)), &pk, &live, &[], true).unwrap().results, vec![(0, 4)]);
    assert_eq!(plan(&put(Condition::Value(b"A".to_vec())), &pk, &live, &[], true).unwrap().results, vec![(0, 4)]);
    // An expired row is absent for the condition, and is replaced under a guard on its write id.
    let p = plan(&put(Condition::Absent), &pk, &expired, &[], true).unwrap();
    assert_eq!(kinds(&p), vec![Stmt::UpdateGuarded, Stmt::Touch]);
    assert_eq!(p.results, vec![(0, 4)], "like PostgreSQL: an expired row's version goes on");
    let mut del = WriteBatch::new();
    del.delete("t", &pk, &ck, Condition::Version(3));
    assert_eq!(kinds(&plan(&del, &pk, &live, &[], true).unwrap()), vec![Stmt::DeleteGuarded]);
    assert_eq!(conflict(plan(&del, &pk, &expired, &[], true)), 0);
}

#[test]
fn later_ops_see_earlier_ones_and_each_row_gets_one_guarded_statement() {
    let (pk, ck) = (Key::from("p"), Key::from("k"));
    let mut b = WriteBatch::new();
    b.put_with("t", &pk, &ck, b"1".to_vec(), None, Condition::Absent);
    b.put_with("t", &pk, &ck, b"2".to_vec(), None, Condition::Version(1));
    let p = plan(&b, &pk, &[], &[], true).unwrap();
    assert_eq!(kinds(&p), vec![Stmt::InsertNew]);
    assert_eq!(p.results, vec![(0, 1), (1, 2)]);
    assert_eq!(p.statements[0].values[3..5], [Val::Blob(b"2".to_vec()), Val::BigInt(2)]);
    // A repeated put-if-absent conflicts with the row the batch itself created.
    let mut twice = WriteBatch::new();
    twice.put_with("t", &pk, &ck, b"1".to_vec(), None, Condition::Absent);
    twice.put_with("t", &pk, &ck, b"2".to_vec(), None, Condition::Absent);
    assert!(matches!(plan(&twice, &pk, &[], &[], true), Err(StoreError::Conflict { current: 1 })));
    // Put then delete of a present row: one guarded delete.
    let mut gone = WriteBatch::new();
    gone.put("t", &pk, &ck, b"1".to_vec());
    gone.delete("t", &pk, &ck, Condition::None);
    let p = plan(&gone, &pk, &[(row_id("t", &ck), stored(b"0", 1, None, 5))], &[], true).unwrap();
    assert_eq!(kinds(&p), vec![Stmt::DeleteGuarded]);
    assert_eq!(p.results, vec![(0, 2), (1, 0)]);
}

#[test]
fn deleting_an_absent_row_alone_writes_nothing_but_inside_a_batch_is_guarded() {
    let (pk, ck) = (Key::from("p"), Key::from("k"));
    let mut alone = WriteBatch::new();
    alone.delete("t", &pk, &ck, Condition::None);
    let p = plan(&alone, &pk, &[], &[], true).unwrap();
    assert!(p.statements.is_empty());
    assert_eq!(p.results, vec![(0, 0)]);
    let mut with_other = alone.clone();
    with_other.put("t", &pk, &Key::from("other"), b"x".to_vec());
    let p = plan(&with_other, &pk, &[], &[], true).unwrap();
    assert_eq!(kinds(&p), vec![Stmt::InsertNew, Stmt::InsertNew]);
    let marker = &p.statements[0].values;
    assert_eq!(marker[3..6], [Val::Blob(vec![]), Val::BigInt(0), Val::BigInt(0)], "an already-expired marker");
    assert_eq!(marker.last(), Some(&Val::Int(DEAD_MARKER_TTL_SECS)), "purged by the engine after a minute");
    assert_eq!(p.probe.map(|(id, _, _)| id), Some(row_id("t", &Key::from("other"))), "the longest-lived row probes");
}

#[test]
fn outbox_entries_are_inserted_in_the_batch_partition_under_the_reserved_table() {
    let pk = Key::from("acct");
    let mut b = WriteBatch::new();
    b.put_with("accounts", &pk, &Key::from("balance"), b"20".to_vec(), None, Condition::Version(1));
    b.append_outbox("balances", b"changed".to_vec());
    b.append_events("acct", 0, vec![b"deposited".to_vec()]);
    let current = [(row_id("accounts", &Key::from("balance")), stored(b"10", 1, None, 3))];
    let p = plan(&b, &pk, &current, &[(42, b"rec".to_vec())], true).unwrap();
    assert_eq!(
        kinds(&p),
        vec![Stmt::UpdateGuarded, Stmt::Touch, Stmt::InsertNew, Stmt::InsertNew, Stmt::InsertNew],
        "state, events head + event 1, outbox row"
    );
    assert_eq!(p.results, vec![(0, 2), (2, 1), (3, 1)]);
    let outbox = &p.statements[4].values;
    assert_eq!(outbox[0], Val::Blob(key_col(&pk.encode())), "same partition as the state change");
    assert_eq!(outbox[1], Val::Text(OUTBOX_HOME_TABLE.into()));
    assert_eq!(outbox[2], Val::Blob(key_col(&Key::empty().u64(42).encode())));
    assert_eq!(outbox[3], Val::Blob(b"rec".to_vec()));
}

#[test]
fn logged_plans_are_plain_writes_with_read_versions() {
    let (pk, ck) = (Key::from("p"), Key::from("k"));
    let mut b = WriteBatch::new();
    b.put_with("t", &pk, &ck, b"x".to_vec(), Some(NOW + 10_000), Condition::None);
    b.delete("t", &pk, &Key::from("gone"), Condition::None);
    b.delete("t", &pk, &Key::from("never"), Condition::None);
    let current =
        [(row_id("t", &ck), stored(b"old", 7, None, 1)), (row_id("t", &Key::from("gone")), stored(b"old", 1, None, 2))];
    let p = plan(&b, &pk, &current, &[], false).unwrap();
    assert_eq!(kinds(&p), vec![Stmt::Upsert, Stmt::Delete]);
    assert_eq!(p.results, vec![(0, 8), (1, 0), (2, 0)]);
    assert_eq!(p.statements[0].values.last(), Some(&Val::Int(10)));
    assert!(p.probe.is_none());
}

// ---- results and outcomes ----

#[test]
fn lwt_results_and_unknown_outcomes_are_read_correctly() {
    let row = |cols: Vec<Option<CqlValue>>| ::scylla::value::Row { columns: cols };
    assert_eq!(applied_of(&row(vec![Some(CqlValue::Boolean(true)), None])), Some(true));
    assert_eq!(applied_of(&row(vec![Some(CqlValue::Boolean(false)), Some(CqlValue::BigInt(3))])), Some(false));
    assert_eq!(applied_of(&row(vec![])), None);
    assert_eq!(applied_of(&row(vec![Some(CqlValue::Int(1))])), None);

    assert_eq!(resolve(Some(5), Some(5), None), Resolution::Applied);
    assert_eq!(resolve(None, Some(5), None), Resolution::NotApplied);
    assert_eq!(resolve(Some(3), Some(5), Some(3)), Resolution::NotApplied);
    assert_eq!(resolve(Some(4), Some(5), Some(3)), Resolution::Unknown);
    assert_eq!(resolve(None, None, Some(3)), Resolution::Unknown, "a delete: applied, or someone else deleted");
    assert_eq!(resolve(Some(3), None, Some(3)), Resolution::NotApplied);

    assert!(certainly_not_applied(&ExecutionError::EmptyPlan));
    assert!(!certainly_not_applied(&ExecutionError::RequestTimeout(Duration::from_secs(1))));
    let db = |e: DbError| ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, String::new()));
    assert!(certainly_not_applied(&db(DbError::Overloaded)));
    let timeout = DbError::WriteTimeout {
        consistency: ::scylla::statement::Consistency::Serial,
        received: 1,
        required: 2,
        write_type: ::scylla::errors::WriteType::Cas,
    };
    assert!(!certainly_not_applied(&db(timeout.clone())), "a CAS write timeout may still have applied");
    assert!(matches!(exec_err(db(timeout)), StoreError::Unavailable { .. }));
    assert!(exec_err(ExecutionError::RequestTimeout(Duration::from_secs(1))).is_retryable());
    assert!(matches!(exec_err(db(DbError::Invalid)), StoreError::BadConfig { .. }));
    assert!(matches!(exec_err(db(DbError::SyntaxError)), StoreError::BadConfig { .. }));
}

#[test]
fn outbox_scans_start_after_an_id_bound() {
    assert_eq!(outbox_start(&Bound::Unbounded).unwrap(), (-1, vec![]));
    let k = Key::empty().u64(10).encode();
    assert_eq!(outbox_start(&Bound::Included(k.clone())).unwrap(), (9, vec![0xFF]));
    assert_eq!(outbox_start(&Bound::Excluded(k)).unwrap(), (10, vec![0xFF]));
    assert!(outbox_start(&Bound::Included(Key::from("x").encode())).is_err());
    assert!(key_col(&Key::from("any").encode()) < vec![0xFF], "every home sorts before [0xFF]");
    let page = Page {
        rows: (0..3u64).map(|i| Row { ck: Key::from(i), value: vec![], version: 1, expires_at_ms: None }).collect(),
        next: None,
    };
    let cut = finish(page.clone(), 2);
    assert_eq!(cut.rows.len(), 2);
    assert_eq!(cut.next, Some(Cursor(Key::from(1u64).encode())));
    assert_eq!(finish(page, 3).next, None);
}

#[tokio::test]
async fn bad_uris_and_unreachable_servers_are_typed_errors() {
    assert!(matches!(ScyllaBackend::open("nowhere").await, Err(StoreError::BadConfig { .. })));
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = tokio::time::timeout(Duration::from_secs(30), ScyllaBackend::open("127.0.0.1:1")).await.unwrap();
    match err {
        Err(e @ StoreError::Unavailable { .. }) => assert!(e.is_retryable()),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to 127.0.0.1:1?"),
    }
}

#[tokio::test]
async fn store_open_with_the_feature_connects_to_the_configured_nodes() {
    use troupe_config::{Secret, StoreBackend, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let none = StoreConfig { backend: StoreBackend::Scylla, url: None };
    match Store::open(&none, dir.path()).await.unwrap_err() {
        StoreError::BadConfig { reason } => assert!(reason.contains("store.url"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let down = StoreConfig { backend: StoreBackend::Scylla, url: Some(Secret::new("127.0.0.1:1")) };
    let err = tokio::time::timeout(Duration::from_secs(30), Store::open(&down, dir.path())).await.unwrap().unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

// ---- an in-memory model of the CQL requests: the backend's logic end to end, offline ----

type MemKey = (Vec<u8>, String, Vec<u8>);
type MemRow = (Option<Vec<u8>>, Option<i64>, Option<i64>, Option<i64>);
type MemOutbox = (Option<Vec<u8>>, Option<i64>);

/// What the next LWT batch does instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Applies (if its conditions hold), then reports a timeout.
    ApplyThenTimeout,
    /// Does not apply and reports a timeout.
    TimeoutWithoutApply,
    /// Does not apply, another writer rewrites the batch's first row, then reports a timeout.
    OtherWriterThenTimeout,
}

/// The CQL semantics the backend relies on: `IF NOT EXISTS`, `IF wid = ?` evaluated together for a
/// single-partition batch, plain writes, index rows. Engine TTL is not modelled (reads filter by
/// `expires_at_ms` anyway). Every request yields first, so concurrent commits interleave.
#[derive(Default)]
struct MemCql {
    rows: std::sync::Mutex<std::collections::BTreeMap<MemKey, MemRow>>,
    outbox: std::sync::Mutex<std::collections::BTreeMap<(i64, Vec<u8>), MemOutbox>>,
    faults: std::sync::Mutex<std::collections::VecDeque<Fault>>,
    lwt_batches: std::sync::atomic::AtomicUsize,
    closed: AtomicBool,
}

#[derive(Clone)]
struct SharedMem(Arc<MemCql>);

fn blob_at(v: &[Val], i: usize) -> Vec<u8> {
    match &v[i] {
        Val::Blob(b) => b.clone(),
        other => panic!("value {i}: expected a blob, got {other:?}"),
    }
}

fn text_at(v: &[Val], i: usize) -> String {
    match &v[i] {
        Val::Text(t) => t.clone(),
        other => panic!("value {i}: expected text, got {other:?}"),
    }
}

fn bigint_at(v: &[Val], i: usize) -> Option<i64> {
    match &v[i] {
        Val::BigInt(n) => Some(*n),
        Val::Null => None,
        other => panic!("value {i}: expected a bigint, got {other:?}"),
    }
}

fn int_at(v: &[Val], i: usize) -> i32 {
    match &v[i] {
        Val::Int(n) => *n,
        other => panic!("value {i}: expected an int, got {other:?}"),
    }
}

impl MemCql {
    fn check_open(&self) -> CqlResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CqlError { error: StoreError::unavailable("mem closed"), unknown_outcome: false });
        }
        Ok(())
    }

    /// The row a statement addresses and its condition on the current state.
    fn row_and_condition(p: &Planned) -> (MemKey, Option<Option<i64>>) {
        let v = &p.values;
        assert_eq!(v.len(), placeholders(&stmt_cql("ks", p.stmt)));
        let key = |i: usize| (blob_at(v, i), text_at(v, i + 1), blob_at(v, i + 2));
        match p.stmt {
            // Some(None) = must be absent; Some(Some(w)) = must exist with wid w; None = no condition.
            Stmt::InsertNew => (key(0), Some(None)),
            Stmt::UpdateGuarded => (key(5), Some(bigint_at(v, 8))),
            Stmt::DeleteGuarded => (key(0), Some(bigint_at(v, 3))),
            Stmt::Touch | Stmt::Upsert | Stmt::Delete => (key(0), None),
            Stmt::OutboxInline => ((vec![], String::new(), vec![]), None),
        }
    }

    fn apply(&self, p: &Planned) {
        let v = &p.values;
        let key = |i: usize| (blob_at(v, i), text_at(v, i + 1), blob_at(v, i + 2));
        let cols = |i: usize| (Some(blob_at(v, i)), bigint_at(v, i + 1), bigint_at(v, i + 2), bigint_at(v, i + 3));
        let mut rows = self.rows.lock().unwrap();
        match p.stmt {
            Stmt::InsertNew | Stmt::Upsert => {
                assert!(int_at(v, 7) >= 0);
                rows.insert(key(0), cols(3));
            }
            Stmt::UpdateGuarded => {
                assert!(int_at(v, 0) >= 0);
                rows.insert(key(5), cols(1));
            }
            Stmt::Touch => assert!(rows.contains_key(&key(0)), "a row marker for a row the batch does not write"),
            Stmt::DeleteGuarded | Stmt::Delete => {
                rows.remove(&key(0));
            }
            Stmt::OutboxInline => {
                assert_eq!(int_at(v, 0), OUTBOX_BUCKET);
                let id = bigint_at(v, 1).unwrap();
                self.outbox.lock().unwrap().insert((id, blob_at(v, 2)), (Some(blob_at(v, 3)), bigint_at(v, 4)));
            }
        }
    }
}

impl Cql for SharedMem {
    fn get<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        ck: &'a [u8],
        _serial: bool,
    ) -> BoxFuture<'a, CqlResult<Option<RawCols>>> {
        async move {
            tokio::task::yield_now().await;
            self.0.check_open()?;
            Ok(self.0.rows.lock().unwrap().get(&(pk.to_vec(), tbl.to_owned(), ck.to_vec())).cloned())
        }
        .boxed()
    }

    fn read_many<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        cks: &'a [Vec<u8>],
    ) -> BoxFuture<'a, CqlResult<Vec<ScanCols>>> {
        async move {
            tokio::task::yield_now().await;
            self.0.check_open()?;
            assert!(cks.len() <= IN_CHUNK);
            let rows = self.0.rows.lock().unwrap();
            Ok(cks
                .iter()
                .filter_map(|ck| {
                    let (v, version, exp, wid) = rows.get(&(pk.to_vec(), tbl.to_owned(), ck.clone()))?.clone();
                    Some((ck.clone(), v, version, exp, wid))
                })
                .collect())
        }
        .boxed()
    }

    fn scan<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        lo: &'a Bound<Vec<u8>>,
        hi: &'a Bound<Vec<u8>>,
        direction: Direction,
        limit: usize,
    ) -> BoxFuture<'a, CqlResult<Vec<ScanCols>>> {
        async move {
            tokio::task::yield_now().await;
            self.0.check_open()?;
            let rows = self.0.rows.lock().unwrap();
            let in_range = |ck: &Vec<u8>| {
                (match lo {
                    Bound::Included(b) => ck >= b,
                    Bound::Excluded(b) => ck > b,
                    Bound::Unbounded => true,
                }) && (match hi {
                    Bound::Included(b) => ck <= b,
                    Bound::Excluded(b) => ck < b,
                    Bound::Unbounded => true,
                })
            };
            let mut out: Vec<ScanCols> = rows
                .iter()
                .filter(|((p, t, ck), _)| p == pk && t == tbl && in_range(ck))
                .map(|((_, _, ck), (v, version, exp, wid))| (ck.clone(), v.clone(), *version, *exp, *wid))
                .collect();
            if direction == Direction::Descending {
                out.reverse();
            }
            out.truncate(limit);
            Ok(out)
        }
        .boxed()
    }

    fn batch<'a>(&'a self, lwt: bool, statements: &'a [Planned]) -> BoxFuture<'a, CqlResult<bool>> {
        async move {
            tokio::task::yield_now().await;
            self.0.check_open()?;
            let fault = if lwt { self.0.faults.lock().unwrap().pop_front() } else { None };
            if lwt {
                self.0.lwt_batches.fetch_add(1, Ordering::Relaxed);
                let pks: std::collections::HashSet<Vec<u8>> =
                    statements.iter().map(|p| MemCql::row_and_condition(p).0.0).collect();
                assert_eq!(pks.len(), 1, "an LWT batch spans one partition");
                assert!(statements.iter().all(|p| matches!(
                    p.stmt,
                    Stmt::InsertNew | Stmt::UpdateGuarded | Stmt::DeleteGuarded | Stmt::Touch
                )));
            } else {
                assert!(statements.iter().all(|p| !is_conditional(p.stmt)), "no IF in a LOGGED batch");
            }
            if fault == Some(Fault::OtherWriterThenTimeout) {
                let key = MemCql::row_and_condition(&statements[0]).0;
                let other = (Some(b"other".to_vec()), Some(1), None, Some(424_242));
                self.0.rows.lock().unwrap().insert(key, other);
            }
            if matches!(fault, Some(Fault::TimeoutWithoutApply | Fault::OtherWriterThenTimeout)) {
                return Err(CqlError { error: StoreError::unavailable("mem: timeout"), unknown_outcome: true });
            }
            // Conditions on the state before the batch, all or nothing; the row lock stands for Paxos.
            let applied = {
                let rows = self.0.rows.lock().unwrap();
                statements.iter().all(|p| match MemCql::row_and_condition(p) {
                    (_, None) => true,
                    (key, Some(None)) => !rows.contains_key(&key),
                    (key, Some(Some(wid))) => rows.get(&key).is_some_and(|r| r.3 == Some(wid)),
                })
            };
            if applied {
                for p in statements {
                    self.0.apply(p);
                }
            }
            if fault == Some(Fault::ApplyThenTimeout) {
                return Err(CqlError { error: StoreError::unavailable("mem: timeout"), unknown_outcome: true });
            }
            Ok(applied)
        }
        .boxed()
    }

    fn outbox_intent<'a>(&'a self, id: i64, home: &'a [u8], created_ms: i64) -> BoxFuture<'a, CqlResult<()>> {
        async move {
            tokio::task::yield_now().await;
            self.0.check_open()?;
            self.0.outbox.lock().unwrap().insert((id, home.to_vec()), (None, Some(created_ms)));
            Ok(())
        }
        .boxed()
    }

    fn outbox_scan(&self, after: (i64, Vec<u8>), limit: usize) -> BoxFuture<'_, CqlResult<Vec<OutboxCols>>> {
        async move {
            tokio::task::yield_now().await;
            self.0.check_open()?;
            let outbox = self.0.outbox.lock().unwrap();
            Ok(outbox
                .range((Bound::Excluded(after), Bound::Unbounded))
                .take(limit)
                .map(|((id, home), (v, created))| (*id, home.clone(), v.clone(), *created))
                .collect())
        }
        .boxed()
    }

    fn outbox_homes(&self, id: i64) -> BoxFuture<'_, CqlResult<Vec<Vec<u8>>>> {
        async move {
            self.0.check_open()?;
            let outbox = self.0.outbox.lock().unwrap();
            Ok(outbox.keys().filter(|(i, _)| *i == id).map(|(_, h)| h.clone()).collect())
        }
        .boxed()
    }

    fn outbox_delete<'a>(&'a self, id: i64, home: Option<&'a [u8]>) -> BoxFuture<'a, CqlResult<()>> {
        async move {
            self.0.check_open()?;
            self.0.outbox.lock().unwrap().retain(|(i, h), _| !(*i == id && home.is_none_or(|home| home == h)));
            Ok(())
        }
        .boxed()
    }

    fn delete_if_exists<'a>(&'a self, pk: &'a [u8], tbl: &'a str, ck: &'a [u8]) -> BoxFuture<'a, CqlResult<()>> {
        async move {
            self.0.check_open()?;
            self.0.rows.lock().unwrap().remove(&(pk.to_vec(), tbl.to_owned(), ck.to_vec()));
            Ok(())
        }
        .boxed()
    }

    fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
    }
}

fn mem_backend() -> (Arc<MemCql>, Store, ManualClock) {
    let mem = Arc::new(MemCql::default());
    let clock = ManualClock::new(NOW);
    let backend = ScyllaBackend::with_cql(Box::new(SharedMem(Arc::clone(&mem))), "mem");
    (mem, Store::new(Arc::new(backend), Arc::new(clock.clone())), clock)
}

async fn mem_store(clock: ManualClock) -> (Store, Arc<MemCql>) {
    let mem = Arc::new(MemCql::default());
    let backend = ScyllaBackend::with_cql(Box::new(SharedMem(Arc::clone(&mem))), "mem");
    (Store::new(Arc::new(backend), Arc::new(clock)), mem)
}

/// The whole conformance suite over the in-memory CQL model: plans, retries, scans and the outbox
/// drainer end to end (not the CQL text or the driver).
mod mem_model {
    crate::conformance_tests!(super::mem_store);
}

#[tokio::test]
async fn an_unknown_outcome_that_applied_is_a_success_and_is_not_applied_twice() {
    let (mem, store, _clock) = mem_backend();
    mem.faults.lock().unwrap().push_back(Fault::ApplyThenTimeout);
    let mut b = WriteBatch::new();
    b.put("t", &Key::from("p"), &Key::from("k"), b"v".to_vec());
    b.append_outbox("topic", b"once".to_vec());
    let results = store.commit(b).await.unwrap();
    assert_eq!(results[0], 1);
    assert_eq!(mem.lwt_batches.load(Ordering::Relaxed), 1, "resolved by the serial read, not retried");
    assert_eq!(store.get("t", &Key::from("p"), &Key::from("k")).await.unwrap().unwrap().version, 1);
    let pending = store.pending_outbox(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, results[1]);
}

#[tokio::test]
async fn an_unknown_outcome_that_did_not_apply_is_retried() {
    let (mem, store, _clock) = mem_backend();
    mem.faults.lock().unwrap().push_back(Fault::TimeoutWithoutApply);
    let mut b = WriteBatch::new();
    b.put_with("t", &Key::from("p"), &Key::from("k"), b"v".to_vec(), None, Condition::Absent);
    b.append_outbox("topic", b"once".to_vec());
    let results = store.commit(b).await.unwrap();
    assert_eq!(results[0], 1);
    assert_eq!(mem.lwt_batches.load(Ordering::Relaxed), 2);
    let pending = store.pending_outbox(10).await.unwrap();
    assert_eq!(pending.len(), 1, "the first attempt's intent was dropped: {pending:?}");
    assert_eq!(pending[0].id, results[1]);
}

#[tokio::test]
async fn an_unknown_outcome_on_a_row_changed_since_is_unavailable() {
    let (mem, store, _clock) = mem_backend();
    store.put("t", &Key::from("p"), &Key::from("k"), b"v1".to_vec()).await.unwrap();
    mem.faults.lock().unwrap().push_back(Fault::OtherWriterThenTimeout);
    let mut b = WriteBatch::new();
    b.put("t", &Key::from("p"), &Key::from("k"), b"v2".to_vec());
    b.append_outbox("topic", b"maybe".to_vec());
    let result = store.commit(b).await;
    let err = result.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("outcome unknown"), "{err}");
    assert_eq!(mem.lwt_batches.load(Ordering::Relaxed), 2, "not retried blindly");
    assert_eq!(mem.outbox.lock().unwrap().len(), 1, "the intent stays for the drainer to resolve");
}

#[tokio::test]
async fn an_intent_without_its_row_holds_the_drainer_until_the_grace_period_then_is_dropped() {
    let (mem, store, clock) = mem_backend();
    let mut first = WriteBatch::new();
    first.put("t", &Key::from("a"), &Key::empty(), b"1".to_vec());
    first.append_outbox("topic", b"first".to_vec());
    store.commit(first).await.unwrap();
    // An inline entry (a multi-partition batch).
    let mut later = WriteBatch::new();
    later.put("t", &Key::from("x"), &Key::empty(), b"1".to_vec());
    later.put("t", &Key::from("y"), &Key::empty(), b"1".to_vec());
    later.append_outbox("topic", b"later".to_vec());
    store.commit(later).await.unwrap();
    // Between the two: a committer that wrote its intent and died before its LWT.
    let orphan_home = key_col(&Key::from("dead").encode());
    let later_id = mem.outbox.lock().unwrap().keys().map(|(id, _)| *id).max().unwrap();
    mem.outbox.lock().unwrap().insert((later_id - 1, orphan_home.clone()), (None, Some(to_i64(NOW))));
    let payloads = |entries: Vec<crate::OutboxEntry>| entries.into_iter().map(|e| e.payload).collect::<Vec<_>>();
    assert_eq!(payloads(store.pending_outbox(10).await.unwrap()), vec![b"first".to_vec()], "held at the intent");
    clock.advance(Duration::from_millis(OUTBOX_GRACE_MS));
    assert_eq!(payloads(store.pending_outbox(10).await.unwrap()), vec![b"first".to_vec(), b"later".to_vec()]);
    assert!(!mem.outbox.lock().unwrap().contains_key(&(later_id - 1, orphan_home)), "the dead intent was dropped");
}

#[tokio::test]
async fn multi_partition_batches_are_logged_when_unconditional_and_refused_otherwise() {
    let (mem, store, _clock) = mem_backend();
    store.put("t", &Key::from("b"), &Key::empty(), b"old".to_vec()).await.unwrap();
    let mut b = WriteBatch::new();
    b.put("t", &Key::from("a"), &Key::empty(), b"1".to_vec());
    b.put("t", &Key::from("b"), &Key::empty(), b"2".to_vec());
    b.append_outbox("topic", b"both".to_vec());
    let batches_before = mem.lwt_batches.load(Ordering::Relaxed);
    let results = store.commit(b).await.unwrap();
    assert_eq!(mem.lwt_batches.load(Ordering::Relaxed), batches_before, "one LOGGED batch, no LWT");
    assert_eq!(&results[..2], &[1, 2]);
    let pending = store.pending_outbox(10).await.unwrap();
    assert_eq!((pending.len(), pending[0].id), (1, results[2]));
    store.ack_outbox(&[pending[0].id]).await.unwrap();
    assert!(store.pending_outbox(10).await.unwrap().is_empty());
    assert!(mem.outbox.lock().unwrap().is_empty());

    let mut c = WriteBatch::new();
    c.put_with("t", &Key::from("a"), &Key::empty(), b"x".to_vec(), None, Condition::Version(1));
    c.put("t", &Key::from("c"), &Key::empty(), b"x".to_vec());
    assert!(matches!(store.commit(c).await, Err(StoreError::BadConfig { .. })));
    assert!(store.get("t", &Key::from("c"), &Key::empty()).await.unwrap().is_none(), "nothing written");
}

#[tokio::test]
async fn acknowledging_removes_the_colocated_rows_too() {
    let (mem, store, _clock) = mem_backend();
    let mut b = WriteBatch::new();
    b.put("t", &Key::from("a"), &Key::empty(), b"1".to_vec());
    b.append_outbox("topic", b"x".to_vec());
    b.append_outbox("topic", b"y".to_vec());
    store.commit(b).await.unwrap();
    let home_rows = || mem.rows.lock().unwrap().keys().filter(|(_, t, _)| t == OUTBOX_HOME_TABLE).count();
    assert_eq!(home_rows(), 2);
    let pending = store.pending_outbox(1).await.unwrap();
    assert_eq!(pending.len(), 1);
    store.ack_outbox(&[pending[0].id]).await.unwrap();
    assert_eq!(home_rows(), 1);
    let rest = store.pending_outbox(10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].id > pending[0].id);
    assert_eq!(rest[0].payload, b"y");
}

#[tokio::test]
async fn a_closed_backend_is_unavailable() {
    let (_mem, store, _clock) = mem_backend();
    store.close().await.unwrap();
    assert!(matches!(store.get("t", &Key::from("a"), &Key::empty()).await, Err(StoreError::Unavailable { .. })));
    assert!(matches!(
        store.put("t", &Key::from("a"), &Key::empty(), vec![]).await,
        Err(StoreError::Unavailable { .. })
    ));
}

// ---- the conformance suite against a real server (SCYLLA_URI) ----

/// Variables naming the test cluster, `host:port[,host:port…][/keyspace]`: `TROUPE_TEST_SCYLLA_URI`, else
/// `SCYLLA_URI`.
fn test_uri() -> Option<String> {
    [troupe_config::env::SCYLLA_URI_VAR, troupe_config::env::SCYLLA_URI_ALIAS]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|s| !s.trim().is_empty()))
}

/// Drops the test's keyspace when the test ends.
struct KeyspaceGuard {
    nodes: Vec<String>,
    keyspace: String,
}

impl Drop for KeyspaceGuard {
    fn drop(&mut self) {
        let (nodes, keyspace) = (self.nodes.clone(), self.keyspace.clone());
        // Own thread and runtime: Drop may run inside (and must not block) the test's runtime worker.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async move {
                if let Ok(session) =
                    ::scylla::client::session_builder::SessionBuilder::new().known_nodes(&nodes).build().await
                {
                    let _ = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await;
                }
            });
        })
        .join();
    }
}

async fn scylla_store(clock: ManualClock) -> Option<(Store, KeyspaceGuard)> {
    let Some(uri) = test_uri() else {
        eprintln!(
            "skipping: no ScyllaDB named (set TROUPE_TEST_SCYLLA_URI or SCYLLA_URI, e.g. 127.0.0.1:9042, to run the \
             conformance suite on ScyllaDB)"
        );
        return None;
    };
    let mut target = parse_uri(&uri).expect("the ScyllaDB URI is host:port[,host:port…][/keyspace]");
    let base: String = target.keyspace.chars().take(30).collect();
    target.keyspace = format!("{base}_t{:016x}", fastrand::u64(..));
    let guard = KeyspaceGuard { nodes: target.nodes.clone(), keyspace: target.keyspace.clone() };
    let backend = ScyllaBackend::open_target(&target).await.unwrap_or_else(|e| panic!("ScyllaDB at {uri}: {e}"));
    Some((Store::new(Arc::new(backend), Arc::new(clock)), guard))
}

mod scylla {
    crate::conformance_tests!(optional super::scylla_store);
}
