//! Storage benchmark: durable event appends and a long scan through `Store` on fjall, against raw fjall
//! doing the same work with the same batching, in the same run; then the same `Store` workload on
//! PostgreSQL when it is reachable.
//!
//! ```sh
//! cargo bench -p troupe-storage --bench store            # fjall vs raw fjall (+ PostgreSQL if up)
//! TROUPE_BENCH_QUICK=1 cargo bench -p troupe-storage --bench store
//! ```
//!
//! Workload per configuration: `WRITERS` concurrent writers, each appending batches of `B` events
//! (100-byte payloads) to its own aggregate, every batch acknowledged only when durable.
//! - `Store` (fjall backend): `Store::append_events` — conditional on the aggregate's version, group
//!   commit shares one fsync among all writers waiting.
//! - raw fjall: each writer thread puts the same rows (head row + one row per event) in one fjall batch
//!   committed with `PersistMode::SyncAll` — what an application using fjall directly would write, with no
//!   version check and no cross-writer grouping beyond what fjall's journal does itself.
//!
//! Runs alternate raw/Store `RUNS` times; medians and the Store/raw ratio are printed. Scan: one
//! aggregate of 10,000 events read in pages of 1,000 through `Store::read_events` vs a raw fjall prefix
//! iteration copying each key and value out (the owned rows a caller needs), in one pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use troupe_storage::{Backend, FjallBackend, PostgresBackend, Store, SystemClock};

const PAYLOAD: usize = 100;

fn quick() -> bool {
    std::env::var_os("TROUPE_BENCH_QUICK").is_some()
}

fn runs() -> usize {
    if quick() { 3 } else { 5 }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (writers, batch, batches per writer)
fn configs() -> Vec<(usize, usize, usize)> {
    let scale = if quick() { 1 } else { 3 };
    vec![(64, 1, 30 * scale), (64, 64, 8 * scale), (8, 1024, 4 * scale)]
}

async fn store_appends(store: &Store, tag: &str, writers: usize, batch: usize, batches: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let agg = format!("{tag}-{w}");
        tasks.push(tokio::spawn(async move {
            let mut version = 0;
            for _ in 0..batches {
                version = store.append_events(&agg, version, vec![vec![7u8; PAYLOAD]; batch]).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    (writers * batch * batches) as f64 / start.elapsed().as_secs_f64()
}

fn raw_appends(db: &Database, tag: &str, writers: usize, batch: usize, batches: usize) -> f64 {
    let ks = db.keyspace("raw_events", KeyspaceCreateOptions::default).expect("keyspace");
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let ks = ks.clone();
            let db = db.clone();
            let agg = format!("{tag}-{w}");
            s.spawn(move || {
                let mut version = 0u64;
                for _ in 0..batches {
                    let mut b = db.batch().durability(Some(PersistMode::SyncAll));
                    for _ in 0..batch {
                        version += 1;
                        let mut key = agg.as_bytes().to_vec();
                        key.push(0);
                        key.extend_from_slice(&version.to_be_bytes());
                        b.insert(&ks, key, vec![7u8; PAYLOAD]);
                    }
                    let mut head = agg.as_bytes().to_vec();
                    head.push(0);
                    b.insert(&ks, head, version.to_be_bytes().to_vec());
                    b.commit().expect("commit");
                }
            });
        }
    });
    (writers * batch * batches) as f64 / start.elapsed().as_secs_f64()
}

async fn scan_store(store: &Store, agg: &str, total: u64) -> Duration {
    let start = Instant::now();
    let mut next = 1;
    while next <= total {
        let events = store.read_events(agg, next, 1000).await.expect("read");
        next += events.len() as u64;
    }
    start.elapsed()
}

fn scan_raw(db: &Database, agg: &str) -> (Duration, usize) {
    let ks = db.keyspace("raw_events", KeyspaceCreateOptions::default).expect("keyspace");
    let start = Instant::now();
    let mut prefix = agg.as_bytes().to_vec();
    prefix.push(0);
    // Owned rows, as a caller needs them (the Store returns owned `Event`s): key and value copied out.
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for guard in ks.prefix(&prefix) {
        let (k, v) = guard.into_inner().expect("read");
        rows.push((k.to_vec(), v.to_vec()));
    }
    (start.elapsed(), rows.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let raw = Database::builder(raw_dir.path()).open().expect("raw fjall");
    let backend = rt.block_on(FjallBackend::open(dir.path().join("store"))).expect("store");
    let backend = Arc::new(backend);
    let store = Store::new(Arc::clone(&backend) as Arc<dyn Backend>, Arc::new(SystemClock));

    println!("durable appends, events/s (median of {} alternating runs)", runs());
    println!(
        "{:>8} {:>6} {:>14} {:>14} {:>8} {:>14}",
        "writers", "batch", "raw fjall", "Store(fjall)", "ratio", "fsyncs/commit"
    );
    for (writers, batch, batches) in configs() {
        let (mut raw_r, mut store_r) = (Vec::new(), Vec::new());
        let before = backend.stats();
        for run in 0..runs() {
            let tag = format!("w{writers}b{batch}r{run}");
            raw_r.push(raw_appends(&raw, &tag, writers, batch, batches));
            store_r.push(rt.block_on(store_appends(&store, &tag, writers, batch, batches)));
        }
        let after = backend.stats();
        let (r, s) = (median(raw_r), median(store_r));
        println!(
            "{writers:>8} {batch:>6} {r:>14.0} {s:>14.0} {:>7.2}x {:>14.3}",
            s / r,
            (after.groups - before.groups) as f64 / (after.requests - before.requests).max(1) as f64
        );
    }

    // Scan: one aggregate of 10k events, written in batches of 1000 to both.
    let total = 10_000u64;
    rt.block_on(async {
        let mut v = 0;
        while v < total {
            v = store.append_events("scan", v, vec![vec![7u8; PAYLOAD]; 1000]).await.expect("append");
        }
    });
    raw_appends(&raw, "scan", 1, 1000, 10);
    let (mut raw_s, mut store_s) = (Vec::new(), Vec::new());
    for _ in 0..runs() * 3 {
        let (d, n) = scan_raw(&raw, "scan-0");
        assert!(n as u64 >= total);
        raw_s.push(d.as_secs_f64() * 1e3);
        store_s.push(rt.block_on(scan_store(&store, "scan", total)).as_secs_f64() * 1e3);
    }
    let (r, s) = (median(raw_s), median(store_s));
    println!(
        "\nscan of a 10,000-event aggregate (pages of 1,000), ms: raw fjall {r:.2}, Store {s:.2}, ratio (raw/Store time) {:.2}x",
        r / s
    );
    rt.block_on(store.close()).expect("close");

    // PostgreSQL: the same Store workload.
    let url = std::env::var("TROUPE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned());
    // A schema of its own, dropped at the end, so the shared database is left as found.
    let schema = format!("troupe_bench_{:016x}", fastrand::u64(..));
    let pg = rt.block_on(async {
        let mut config: tokio_postgres::Config = url.parse().ok()?;
        config.connect_timeout(Duration::from_secs(3));
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.ok()?;
        config.options(format!("-c search_path={schema}"));
        Some((PostgresBackend::open_with(config, 16).await.ok()?, client))
    });
    let Some((pg, admin)) = pg else {
        println!("\nPostgreSQL: not reachable at {url}; skipped");
        return;
    };
    let pg_store = Store::new(Arc::new(pg), Arc::new(SystemClock));
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    println!("\nPostgreSQL (pool 16), Store appends, events/s (median of {} runs)", runs());
    println!("{:>8} {:>6} {:>14}", "writers", "batch", "Store(pg)");
    for (writers, batch, batches) in [(16usize, 1usize, 50usize), (16, 64, 10), (4, 1024, 3)] {
        let mut r = Vec::new();
        for run in 0..runs() {
            let tag = format!("bench-{stamp}-w{writers}b{batch}r{run}");
            r.push(rt.block_on(store_appends(&pg_store, &tag, writers, batch, batches)));
        }
        println!("{writers:>8} {batch:>6} {:>14.0}", median(r));
    }
    let agg = format!("bench-{stamp}-scan");
    rt.block_on(async {
        let mut v = 0;
        while v < total {
            v = pg_store.append_events(&agg, v, vec![vec![7u8; PAYLOAD]; 1000]).await.expect("append");
        }
    });
    let mut pg_s = Vec::new();
    for _ in 0..runs() {
        pg_s.push(rt.block_on(scan_store(&pg_store, &agg, total)).as_secs_f64() * 1e3);
    }
    println!("PostgreSQL scan of a 10,000-event aggregate, ms: {:.2}", median(pg_s));
    rt.block_on(pg_store.close()).expect("close");
    rt.block_on(admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))).expect("drop schema");
}
