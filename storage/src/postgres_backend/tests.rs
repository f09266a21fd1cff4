//! Runs the conformance suite (and a few backend-specific checks) against PostgreSQL at
//! `TROUPE_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`). Each test gets its own
//! schema (`search_path`), dropped afterwards. When the server is not reachable the tests are skipped,
//! unless `TROUPE_REQUIRE_SERVICES=1` (CI), which makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(clippy::print_stderr, reason = "tests explain why they skip")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::{ManualClock, Store};

/// Variable naming the test server.
const URL_VAR: &str = "TROUPE_TEST_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://root@127.0.0.1:5432/test";

fn test_url() -> String {
    std::env::var(URL_VAR).ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Drops the test's schema when the test ends.
struct SchemaGuard {
    config: tokio_postgres::Config,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (config, schema) = (self.config.clone(), self.schema.clone());
        // Own thread and runtime: Drop may run inside (and must not block) the test's runtime worker.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async move {
                if let Ok((client, conn)) = config.connect(NoTls).await {
                    let task = tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}

/// A fresh schema on the test server, or `None` (skip) when the server is not reachable.
async fn fresh_schema() -> Option<(tokio_postgres::Config, SchemaGuard)> {
    let url = test_url();
    let mut config: tokio_postgres::Config = url.parse().expect("TROUPE_TEST_POSTGRES_URL is not a PostgreSQL URL");
    config.connect_timeout(Duration::from_secs(3));
    let (client, conn) = match config.connect(NoTls).await {
        Ok(c) => c,
        Err(e) if troupe_config::require_services() => {
            panic!("PostgreSQL not reachable at {url} ({e}) and TROUPE_REQUIRE_SERVICES=1")
        }
        Err(e) => {
            eprintln!("skipping: PostgreSQL not reachable at {url} ({e})");
            return None;
        }
    };
    let task = tokio::spawn(conn);
    let schema = format!("troupe_test_{:016x}", fastrand::u64(..));
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    drop(client);
    let _ = task.await;
    let guard = SchemaGuard { config: config.clone(), schema: schema.clone() };
    config.options(format!("-c search_path={schema}"));
    Some((config, guard))
}

async fn postgres_store(clock: ManualClock) -> Option<(Store, SchemaGuard)> {
    let (config, guard) = fresh_schema().await?;
    let backend = PostgresBackend::open_with(config, 8).await.expect("open postgres backend");
    Some((Store::new(Arc::new(backend), Arc::new(clock)), guard))
}

mod postgres {
    crate::conformance_tests!(optional super::postgres_store);
}

#[tokio::test]
async fn schema_is_versioned_and_reopen_is_idempotent() {
    let Some((config, _guard)) = fresh_schema().await else { return };
    let a = PostgresBackend::open_with(config.clone(), 2).await.expect("first open");
    let b = PostgresBackend::open_with(config.clone(), 2).await.expect("second open migrates nothing");
    let store = Store::new(Arc::new(a), Arc::new(ManualClock::new(1)));
    let other = Store::new(Arc::new(b), Arc::new(ManualClock::new(1)));
    store.put("t", &Key::from("p"), &Key::from("c"), b"x".to_vec()).await.unwrap();
    assert_eq!(other.get("t", &Key::from("p"), &Key::from("c")).await.unwrap().unwrap().value, b"x");
    store.close().await.unwrap();
    other.close().await.unwrap();
    let err = store.get("t", &Key::from("p"), &Key::from("c")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    // A schema from a newer build is refused with a clear error.
    let (client, conn) = config.connect(NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client.batch_execute("UPDATE troupe_schema_version SET version = 99").await.unwrap();
    drop(client);
    let _ = task.await;
    let err = PostgresBackend::open_with(config, 2).await.err().expect("newer schema must be refused");
    assert!(matches!(&err, StoreError::BadConfig { reason } if reason.contains("schema version 99")), "{err:?}");
}

#[tokio::test]
async fn unreachable_server_is_unavailable_and_bad_url_is_bad_config() {
    let err = PostgresBackend::open("not a url at all").await.err().expect("bad url");
    assert!(matches!(err, StoreError::BadConfig { .. }), "{err:?}");
    let err = PostgresBackend::open("postgres://root@127.0.0.1:1/test?connect_timeout=2").await.err().expect("port 1");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn store_open_from_config() {
    let Some((pg_config, guard)) = fresh_schema().await else { return };
    // The schema goes in the URL, as an operator would put it (`options=-c search_path=…`).
    let url = test_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20search_path%3D{}", guard.schema);
    let config = troupe_config::StoreConfig {
        backend: troupe_config::StoreBackend::Postgres,
        url: Some(troupe_config::Secret::new(url)),
    };
    let dir = std::path::Path::new("/nonexistent");
    let store = Store::open(&config, dir).await.expect("open from config");
    assert_eq!(store.backend_name(), "postgres");
    store.put("t", &Key::from("p"), &Key::from("c"), b"x".to_vec()).await.unwrap();
    store.close().await.unwrap();
    // The rows went to the test schema, not the default one.
    let (client, conn) = pg_config.connect(NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    let n: i64 = client.query_one("SELECT count(*) FROM troupe_rows", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    drop(client);
    let _ = task.await;
}

/// Informal throughput: concurrent single-event appends (one transaction each). Run with
/// `cargo test -p troupe-storage --release -- --ignored postgres_append_throughput --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
#[ignore = "informal benchmark"]
async fn postgres_append_throughput() {
    let Some((config, _guard)) = fresh_schema().await else { return };
    let backend = PostgresBackend::open_with(config, 16).await.unwrap();
    let store = Store::new(Arc::new(backend), Arc::new(ManualClock::new(1)));
    for batch in [1usize, 64] {
        let tasks = 16;
        let per_task = if batch == 1 { 500 } else { 40 };
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let agg = format!("bench-{batch}-{t}");
                let mut version = 0;
                for _ in 0..per_task {
                    version = store.append_events(&agg, version, vec![vec![0u8; 100]; batch]).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let events = tasks * per_task * batch;
        let secs = start.elapsed().as_secs_f64();
        eprintln!("postgres: batch {batch}: {events} events in {secs:.2}s = {:.0} events/s", events as f64 / secs);
    }
    store.close().await.unwrap();
}

/// Multi-row put-if-absent runs behave like one-by-one: an expired row in the middle is replaced (its
/// version grows), a live one fails the whole batch and nothing of it is written.
#[tokio::test]
async fn put_if_absent_runs_behave_like_one_by_one() {
    let clock = ManualClock::new(1_000);
    let Some((store, _guard)) = postgres_store(clock.clone()).await else { return };
    let pk = Key::from("p");
    store.put_until("t", &pk, &Key::from(2), b"old".to_vec(), 1_500).await.unwrap();
    store.put("t", &pk, &Key::from(9), b"live".to_vec()).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let mut batch = WriteBatch::new();
    for i in 1..=4 {
        batch.put_with("t", &pk, &Key::from(i), vec![i as u8], None, Condition::Absent);
    }
    batch.put_with("t", &pk, &Key::from(1), b"again".to_vec(), None, Condition::None);
    assert_eq!(store.commit(batch).await.unwrap(), vec![1, 2, 1, 1, 2]);
    let mut batch = WriteBatch::new();
    for i in [5, 9, 6] {
        batch.put_with("t", &pk, &Key::from(i), vec![], None, Condition::Absent);
    }
    assert!(matches!(store.commit(batch).await, Err(StoreError::Conflict { current: 1 })));
    // A key repeated in one run: inserted once, then the repeat conflicts (as one-by-one would).
    let mut batch = WriteBatch::new();
    for _ in 0..2 {
        batch.put_with("t", &pk, &Key::from(7), vec![], None, Condition::Absent);
    }
    assert!(matches!(store.commit(batch).await, Err(StoreError::Conflict { current: 1 })));
    let page = store.scan("t", &pk, &Scan::all()).await.unwrap();
    let keys: Vec<Key> = page.rows.iter().map(|r| r.ck.clone()).collect();
    assert_eq!(keys, [1, 2, 3, 4, 9].map(Key::from).to_vec());
    store.close().await.unwrap();
}
