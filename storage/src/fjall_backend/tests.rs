#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::{LEASES_TABLE, ManualClock, Store};

async fn open(dir: &Path) -> (Store, Arc<FjallBackend>) {
    let backend = Arc::new(FjallBackend::open(dir.join("store")).await.expect("open"));
    let store = Store::new(Arc::clone(&backend) as Arc<dyn Backend>, Arc::new(ManualClock::new(1_000)));
    (store, backend)
}

#[tokio::test]
async fn second_open_of_the_same_dir_is_refused_until_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _backend) = open(dir.path()).await;
    let err = FjallBackend::open(dir.path().join("store")).await.err().expect("second open must fail");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
    store.close().await.expect("close");
    let err = store.put("t", &Key::from("a"), &Key::from("b"), vec![]).await.expect_err("closed");
    assert!(err.is_retryable());
    drop(store);
    drop(_backend);
    let (store, _backend) = open(dir.path()).await;
    store.close().await.expect("close");
}

#[test]
fn a_second_process_gets_a_clear_error() {
    // Re-run this test binary as a child that opens the same directory while we hold it.
    if let Ok(path) = std::env::var("STORAGE_LOCK_TEST_CHILD_DIR") {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let err = rt.block_on(FjallBackend::open(PathBuf::from(path))).err().expect("child open must fail");
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    let backend = rt.block_on(FjallBackend::open(dir.path().join("store"))).expect("open");
    let exe = std::env::current_exe().expect("exe");
    let status = std::process::Command::new(exe)
        .args(["--exact", "fjall_backend::tests::a_second_process_gets_a_clear_error", "--nocapture"])
        .env("STORAGE_LOCK_TEST_CHILD_DIR", dir.path().join("store"))
        .status()
        .expect("spawn child");
    assert!(status.success(), "child could open a locked store");
    rt.block_on(backend.close()).expect("close");
}

#[tokio::test]
async fn format_version_is_checked_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _b) = open(dir.path()).await;
    store.close().await.expect("close");
    drop((store, _b));
    let format = dir.path().join("store").join(FORMAT_FILE);
    assert_eq!(std::fs::read_to_string(&format).expect("format file"), "troupe-store fjall 1\n");
    std::fs::write(&format, "troupe-store fjall 99\n").expect("write");
    let err = FjallBackend::open(dir.path().join("store")).await.err().expect("must fail");
    assert!(matches!(&err, StoreError::FormatVersion { found, expected: 1, .. } if found == "troupe-store fjall 99"));
    assert!(err.to_string().contains("format version"), "{err}");
    std::fs::remove_file(&format).expect("rm");
    let err = FjallBackend::open(dir.path().join("store")).await.err().expect("must fail");
    assert!(matches!(err, StoreError::BadConfig { .. }), "{err:?}");
}

#[tokio::test]
async fn data_and_outbox_ids_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(dir.path()).await;
    store.put("t", &Key::from("p"), &Key::from(1), b"kept".to_vec()).await.expect("put");
    assert_eq!(store.append_events("agg", 0, vec![b"e".to_vec(); 3]).await.expect("append"), 3);
    let mut batch = WriteBatch::new();
    batch.append_outbox("x", b"1".to_vec()).append_outbox("x", b"2".to_vec());
    let ids = store.commit(batch).await.expect("commit");
    store.ack_outbox(&ids).await.expect("ack");
    store.close().await.expect("close");
    drop((store, b));
    let (store, _b) = open(dir.path()).await;
    let row = store.get("t", &Key::from("p"), &Key::from(1)).await.expect("get").expect("row");
    assert_eq!(row.value, b"kept");
    assert_eq!(store.event_version("agg").await.expect("version"), 3);
    let mut batch = WriteBatch::new();
    batch.append_outbox("x", b"3".to_vec());
    let id = store.commit(batch).await.expect("commit")[0];
    assert!(id > ids[1], "outbox ids must not be reused after a restart ({id} after {ids:?})");
    store.close().await.expect("close");
}

#[tokio::test]
async fn corrupt_bytes_are_corrupt_data_naming_table_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(dir.path()).await;
    let (pk, ck) = (Key::from("user-7"), Key::from("profile"));
    b.raw_insert("users", row_key(&pk, &ck), b"\xffgarbage".to_vec()).expect("raw");
    for err in [
        store.get("users", &pk, &ck).await.expect_err("get"),
        store.scan("users", &pk, &Scan::all()).await.expect_err("scan"),
        store.put("users", &pk, &ck, b"x".to_vec()).await.expect_err("put over corrupt row"),
    ] {
        match &err {
            StoreError::CorruptData { table, key, .. } => {
                assert_eq!(table, "users");
                assert_eq!(key, "(\"user-7\")/(\"profile\")");
            }
            other => panic!("expected CorruptData, got {other:?}"),
        }
    }
    // A well-formed row whose typed payload is foreign bytes.
    let foreign = Stored { version: 1, expires_at_ms: None, payload: vec![9, 9, 9] }.encode();
    b.raw_insert(LEASES_TABLE, row_key(&Key::from("l"), &Key::empty()), foreign).expect("raw");
    let err = store.acquire_lease("l", "me", Duration::from_secs(1)).await.expect_err("lease");
    assert!(matches!(&err, StoreError::CorruptData { table, .. } if table == LEASES_TABLE), "{err:?}");
    // A key that is not a valid encoding inside a partition.
    let mut bad_key = partition_prefix(&pk);
    bad_key.push(0x7f);
    let ok = Stored { version: 1, expires_at_ms: None, payload: vec![] }.encode();
    b.raw_insert("other", bad_key, ok).expect("raw");
    let err = store.scan("other", &pk, &Scan::all()).await.expect_err("scan");
    assert!(matches!(&err, StoreError::CorruptData { table, .. } if table == "other"), "{err:?}");
    store.close().await.expect("close");
}

proptest::proptest! {
    #[test]
    fn value_header_decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
        let _ = Stored::decode(&bytes);
    }

    #[test]
    fn value_header_roundtrips(version in 1u64.., expires in proptest::option::of(1u64..), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)) {
        let s = Stored { version, expires_at_ms: expires, payload };
        proptest::prop_assert_eq!(Stored::decode(&s.encode()), Ok(s));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(dir.path()).await;
    let writers = 256;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append_events(&format!("agg-{i}"), 0, vec![vec![0u8; 64]]).await.expect("append")
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let stats = b.stats();
    assert_eq!(stats.requests, writers);
    assert!(stats.groups < writers / 2, "group commit did not batch: {stats:?}");
    store.close().await.expect("close");
}

/// Informal throughput figure: `cargo test -p troupe-storage --release -- --ignored --nocapture group_commit_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "informal measurement, not a test"]
#[allow(clippy::print_stderr, reason = "prints the measured figure")]
async fn group_commit_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(dir.path()).await;
    for (writers, per_writer, batch) in
        [(1usize, 200usize, 1usize), (64, 100, 1), (256, 100, 1), (64, 20, 64), (1, 20, 1024), (8, 20, 1024)]
    {
        let before = b.stats();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let agg = format!("bench-{writers}-{batch}-{w}");
                let mut version = 0;
                for _ in 0..per_writer {
                    version = store.append_events(&agg, version, vec![vec![7u8; 100]; batch]).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let secs = start.elapsed().as_secs_f64();
        let after = b.stats();
        let events = (writers * per_writer * batch) as f64;
        eprintln!(
            "writers={writers} batch={batch}: {:.0} events/s, {:.0} commits/s, {} fsyncs for {} requests",
            events / secs,
            (writers * per_writer) as f64 / secs,
            after.groups - before.groups,
            after.requests - before.requests
        );
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn compaction_removes_expired_rows_and_keeps_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(FjallBackend::open(dir.path().join("store")).await.expect("open"));
    let clock = ManualClock::new(1_000);
    let store = Store::new(Arc::clone(&backend) as Arc<dyn Backend>, Arc::new(clock.clone()));
    let pk = Key::from("p");
    for i in 0..100u64 {
        let expires = if i % 2 == 0 { 2_000 } else { 10_000 };
        store.put_until("ttl", &pk, &Key::empty().u64(i), b"v".to_vec(), expires).await.expect("put");
    }
    store.put("ttl", &pk, &Key::empty().u64(1_000), b"forever".to_vec()).await.expect("put");
    // Not yet expired: compaction keeps everything.
    backend.compact_now("ttl").expect("compact");
    assert!(backend.raw_contains("ttl", &pk, &Key::empty().u64(0)).expect("raw"));
    // The clock passes the first expiry; the backend learns the time from the next call.
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.get("ttl", &pk, &Key::empty().u64(0)).await.expect("get"), None, "hidden at once");
    backend.compact_now("ttl").expect("compact");
    for i in 0..100u64 {
        let present = backend.raw_contains("ttl", &pk, &Key::empty().u64(i)).expect("raw");
        assert_eq!(present, i % 2 == 1, "row {i}: expired rows are removed from disk, live ones kept");
    }
    assert!(backend.raw_contains("ttl", &pk, &Key::empty().u64(1_000)).expect("raw"));
    let page = store.scan("ttl", &pk, &Scan::all()).await.expect("scan");
    assert_eq!(page.rows.len(), 51);
    store.close().await.expect("close");
}
