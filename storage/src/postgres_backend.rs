//! The PostgreSQL backend (tokio-postgres 0.7): the shared store multi-node deployments use.
//!
//! **Schema** (created/migrated at open, in the first schema of the connection's `search_path`):
//! - `troupe_rows (tbl text, pk bytea, ck bytea, v bytea, version bigint, expires_at_ms bigint null,
//!   primary key (tbl, pk, ck))` — one shared table for every store table. Store tables are created on
//!   first write by callers at runtime; one shared table means no DDL on the write path and no catalog
//!   growth per table. `pk`/`ck` hold the order-preserving encodings of `crate::key`; PostgreSQL compares
//!   `bytea` bytewise, which is exactly the key order, so scans are `ORDER BY ck` on the primary-key index.
//! - `troupe_counters (name text primary key, value bigint)` — the outbox id counter (row `outbox`).
//! - `troupe_schema_version (version int)` — checked at open; a newer version is refused.
//!
//! The outbox lives in `troupe_rows` like every table ([`OUTBOX_TABLE`], pk `()`, ck `(id)`); ids come
//! from `UPDATE troupe_counters … RETURNING`, taken as the last step of a commit. That row lock is held
//! until the transaction commits, so outbox-writing commits are serialized on it: ids are gap-free and
//! increase in commit order (a drainer never sees a smaller id appear after a larger one).
//!
//! **Isolation**: READ COMMITTED with row locks. A conditional write first locks the row
//! (`SELECT … FOR UPDATE`; a waiter re-reads the row its predecessor committed) and checks the condition
//! in Rust (expired rows count as absent, exactly like fjall); an absent row is created with
//! `INSERT … ON CONFLICT DO NOTHING`, and when a concurrent insert won, the loop locks and re-checks the
//! row the winner inserted. Unconditional puts are one upsert; a run of put-if-absent ops (the events of
//! an append) is one multi-row insert. So concurrent CAS / put-if-absent / appends on one
//! row serialize on that row, with exactly one winner and gap-free versions, and without SERIALIZABLE's
//! false conflicts. Deadlocks (batches locking rows in opposite orders) and serialization failures are
//! retried inside the backend a few times, then reported as `Unavailable` (retryable), as are connection
//! errors. Durability is PostgreSQL's (`synchronous_commit` on by default: acknowledged = WAL flushed).
//! As with any networked store, a connection lost during `COMMIT` leaves the outcome unknown to the
//! caller (`Unavailable`); conditional writes make the retry safe.
//!
//! **Pool**: a small fixed pool of our own (no extra dependency): at most `pool_size` connections,
//! bounded by a tokio `Semaphore`; idle connections wait in a `std::sync::Mutex<Vec<_>>` that is only
//! touched for a push/pop (never held across `.await`); a closed connection is dropped and replaced
//! lazily. Each connection prepares its statements once.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::backend::Backend;
use crate::error::{Result, StoreError};
use crate::key::Key;
use crate::model::{Condition, Cursor, Direction, OUTBOX_TABLE, Op, Page, Row, Scan, WriteBatch};
use crate::store::corrupt;

/// Schema version this build creates and reads.
pub const SCHEMA_VERSION: i32 = 1;
/// Default most connections per backend.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Longest a caller waits for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Attempts for a commit that hits a deadlock or serialization failure.
const COMMIT_ATTEMPTS: usize = 8;
/// Advisory lock key serializing schema migrations ("troupe" in ASCII).
const MIGRATION_LOCK: i64 = 0x74_72_6f_75_70_65;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS troupe_schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS troupe_rows (
    tbl text NOT NULL,
    pk bytea NOT NULL,
    ck bytea NOT NULL,
    v bytea NOT NULL,
    version bigint NOT NULL,
    expires_at_ms bigint NULL,
    PRIMARY KEY (tbl, pk, ck)
);
CREATE TABLE IF NOT EXISTS troupe_counters (name text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO troupe_counters (name, value) VALUES ('outbox', 0) ON CONFLICT (name) DO NOTHING;
";

const GET_SQL: &str = "SELECT v, version, expires_at_ms FROM troupe_rows \
     WHERE tbl = $1 AND pk = $2 AND ck = $3 AND (expires_at_ms IS NULL OR expires_at_ms > $4)";
const LOCK_SQL: &str =
    "SELECT v, version, expires_at_ms FROM troupe_rows WHERE tbl = $1 AND pk = $2 AND ck = $3 FOR UPDATE";
const UPSERT_SQL: &str = "INSERT INTO troupe_rows (tbl, pk, ck, v, version, expires_at_ms) \
     VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (tbl, pk, ck) DO UPDATE \
     SET v = EXCLUDED.v, version = troupe_rows.version + 1, expires_at_ms = EXCLUDED.expires_at_ms \
     RETURNING version";
const INSERT_NEW_SQL: &str = "INSERT INTO troupe_rows (tbl, pk, ck, v, version, expires_at_ms) \
     VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (tbl, pk, ck) DO NOTHING RETURNING version";
const INSERT_MANY_SQL: &str = "INSERT INTO troupe_rows (tbl, pk, ck, v, version, expires_at_ms) \
     SELECT t, p, c, v, 1, e FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[]) \
     AS u(t, p, c, v, e) ON CONFLICT (tbl, pk, ck) DO NOTHING RETURNING tbl, pk, ck";
const UPDATE_SQL: &str =
    "UPDATE troupe_rows SET v = $4, version = $5, expires_at_ms = $6 WHERE tbl = $1 AND pk = $2 AND ck = $3";
const DELETE_SQL: &str = "DELETE FROM troupe_rows WHERE tbl = $1 AND pk = $2 AND ck = $3";
const OUTBOX_IDS_SQL: &str = "UPDATE troupe_counters SET value = value + $1 WHERE name = 'outbox' RETURNING value";

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::unavailable(format!("postgres: {e}"))
}

/// True for errors a retry of the whole transaction may fix.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One pooled connection with its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    lock: Statement,
    upsert: Statement,
    insert_new: Statement,
    insert_many: Statement,
    update: Statement,
    delete: Statement,
    outbox_ids: Statement,
    /// Scan statements by SQL text (bounds and direction vary).
    scans: HashMap<String, Statement>,
}

impl Conn {
    async fn connect(config: &tokio_postgres::Config) -> Result<Self> {
        let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        Ok(Self {
            get: client.prepare(GET_SQL).await.map_err(pg)?,
            lock: client.prepare(LOCK_SQL).await.map_err(pg)?,
            upsert: client.prepare(UPSERT_SQL).await.map_err(pg)?,
            insert_new: client.prepare(INSERT_NEW_SQL).await.map_err(pg)?,
            insert_many: client.prepare(INSERT_MANY_SQL).await.map_err(pg)?,
            update: client.prepare(UPDATE_SQL).await.map_err(pg)?,
            delete: client.prepare(DELETE_SQL).await.map_err(pg)?,
            outbox_ids: client.prepare(OUTBOX_IDS_SQL).await.map_err(pg)?,
            scans: HashMap::new(),
            client,
        })
    }

    async fn scan_statement(&mut self, sql: String) -> Result<Statement> {
        if let Some(s) = self.scans.get(&sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&sql).await.map_err(pg)?;
        self.scans.insert(sql, stmt.clone());
        Ok(stmt)
    }
}

/// The fixed pool (see the module doc).
struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    closed: AtomicBool,
}

/// A connection checked out of the pool; returned on drop unless it broke.
struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Pooled<'_> {
    fn conn(&mut self) -> Result<&mut Conn> {
        self.conn.as_mut().ok_or_else(|| StoreError::unavailable("postgres: connection already returned"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.client.is_closed() || self.pool.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(conn);
        }
    }
}

impl Pool {
    async fn get(&self) -> Result<Pooled<'_>> {
        // A saturated pool answers `Unavailable` (retryable) after a bounded wait instead of queueing callers
        // without limit behind a slow database.
        let permit = match tokio::time::timeout(POOL_WAIT, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StoreError::unavailable("postgres store is closed")),
            Err(_) => {
                return Err(StoreError::unavailable(format!(
                    "postgres pool: no connection free within {} ms",
                    POOL_WAIT.as_millis()
                )));
            }
        };
        let reused = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(_) => None,
        };
        let conn = match reused {
            Some(c) if !c.client.is_closed() => c,
            _ => Conn::connect(&self.config).await?,
        };
        Ok(Pooled { conn: Some(conn), pool: self, _permit: permit })
    }
}

/// The PostgreSQL backend. See the module doc.
pub struct PostgresBackend {
    pool: Arc<Pool>,
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user@host:port/db`), creating or migrating the schema.
    pub async fn open(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::bad_config(format!("bad PostgreSQL URL: {e}")))?;
        Self::open_with(config, DEFAULT_POOL_SIZE).await
    }

    /// Connects with an explicit client config (e.g. with `options` setting `search_path`) and pool size.
    pub async fn open_with(mut config: tokio_postgres::Config, pool_size: usize) -> Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let pool = Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(pool_size.max(1)),
            closed: AtomicBool::new(false),
        };
        migrate(&pool.config).await?;
        // Open one connection now so a bad URL or missing server fails at open.
        drop(pool.get().await?);
        tracing::info!(schema = SCHEMA_VERSION, pool_size, "postgres store open");
        Ok(Self { pool: Arc::new(pool) })
    }

    async fn get_row(&self, table: &str, pk: &Key, ck: &Key, now_ms: u64) -> Result<Option<Row>> {
        let mut pooled = self.pool.get().await?;
        let conn = pooled.conn()?;
        let (pkb, ckb) = (pk.encode(), ck.encode());
        let row = conn.client.query_opt(&conn.get, &[&table, &pkb, &ckb, &to_i64(now_ms)]).await.map_err(pg)?;
        row.map(|r| to_row(table, pk, ck.clone(), &r)).transpose()
    }

    async fn scan_rows(&self, table: &str, pk: &Key, scan: &Scan, now_ms: u64) -> Result<Page> {
        let (lo, hi) = scan.effective_bounds();
        let mut sql = String::from(
            "SELECT ck, v, version, expires_at_ms FROM troupe_rows WHERE tbl = $1 AND pk = $2 \
             AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
        );
        let mut params: Vec<Vec<u8>> = Vec::new();
        for (bound, incl, excl) in [(lo, ">=", ">"), (hi, "<=", "<")] {
            let (op, b) = match bound {
                Bound::Included(b) => (incl, b),
                Bound::Excluded(b) => (excl, b),
                Bound::Unbounded => continue,
            };
            params.push(b);
            sql.push_str(&format!(" AND ck {op} ${}", params.len() + 4));
        }
        sql.push_str(match scan.direction {
            Direction::Ascending => " ORDER BY ck ASC LIMIT $4",
            Direction::Descending => " ORDER BY ck DESC LIMIT $4",
        });
        let limit = i64::try_from(scan.limit).unwrap_or(i64::MAX - 1).saturating_add(1);
        let pkb = pk.encode();
        let now = to_i64(now_ms);
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&table, &pkb, &now, &limit];
        for p in &params {
            args.push(p);
        }
        let mut pooled = self.pool.get().await?;
        let conn = pooled.conn()?;
        let stmt = conn.scan_statement(sql).await?;
        let rows = conn.client.query(&stmt, &args).await.map_err(pg)?;
        let mut page = Page::default();
        for r in &rows {
            if page.rows.len() == scan.limit {
                page.next = page.rows.last().map(|r| Cursor(r.ck.encode()));
                break;
            }
            let ck_bytes: Vec<u8> = r.try_get(0).map_err(|e| corrupt(table, pk, &Key::empty(), e.to_string()))?;
            let ck = Key::decode(&ck_bytes)
                .map_err(|e| corrupt(table, pk, &Key::empty().bytes(ck_bytes.clone()), e.to_string()))?;
            page.rows.push(to_row_at(table, pk, ck, r, 1)?);
        }
        Ok(page)
    }

    async fn commit_batch(&self, batch: &WriteBatch, now_ms: u64) -> Result<Vec<u64>> {
        let mut pooled = self.pool.get().await?;
        let conn = pooled.conn()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match commit_once(conn, batch, now_ms).await {
                Ok(Ok(results)) => return Ok(results),
                Ok(Err(e)) => return Err(e),
                Err(e) if is_transient(&e) && attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "postgres commit retried");
                    tokio::time::sleep(Duration::from_millis(backoff_ms(attempt))).await;
                }
                Err(e) => return Err(pg(e)),
            }
        }
    }
}

/// Small growing backoff with jitter from the clock's sub-millisecond noise (no RNG dependency needed).
fn backoff_ms(attempt: usize) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (1u64 << attempt.min(6)) + u64::from(nanos % 5)
}

/// One attempt: `Err` = a database error (maybe transient), `Ok(Err)` = a store-level failure (conflict,
/// corrupt data) after which the transaction was rolled back.
///
/// A run of consecutive put-if-absent operations (the events of an `append_events`) is one multi-row
/// `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING` key; only the ones that found a row
/// take the locking path, in order. That is equivalent to running them one by one: a failed insert wrote
/// nothing, and a key repeated in the run is inserted once and then conflicts on the locking path.
async fn commit_once(
    conn: &mut Conn,
    batch: &WriteBatch,
    now_ms: u64,
) -> std::result::Result<Result<Vec<u64>>, tokio_postgres::Error> {
    let tx = conn.client.transaction().await?;
    let s = Stmts {
        lock: &conn.lock,
        upsert: &conn.upsert,
        insert_new: &conn.insert_new,
        insert_many: &conn.insert_many,
        update: &conn.update,
        delete: &conn.delete,
    };
    let mut results = vec![0; batch.ops.len()];
    let mut outbox = Vec::new();
    let mut i = 0;
    while let Some(op) = batch.ops.get(i) {
        match op {
            Op::Outbox { value } => {
                outbox.push((i, value));
                i += 1;
            }
            Op::Put { condition: Condition::Absent, .. } => {
                let run: Vec<(usize, &Op)> = batch.ops[i..]
                    .iter()
                    .take_while(|op| matches!(op, Op::Put { condition: Condition::Absent, .. }))
                    .enumerate()
                    .map(|(j, op)| (i + j, op))
                    .collect();
                let encoded: Vec<(usize, &Op, Vec<u8>, Vec<u8>)> = run
                    .iter()
                    .map(|(j, op)| match op {
                        Op::Put { pk, ck, .. } => (*j, *op, pk.encode(), ck.encode()),
                        _ => (*j, *op, Vec::new(), Vec::new()),
                    })
                    .collect();
                let mut tbls: Vec<&str> = Vec::with_capacity(encoded.len());
                let (mut pks, mut cks, mut vs, mut exps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (_, op, pkb, ckb) in &encoded {
                    if let Op::Put { table, value, expires_at_ms, .. } = op {
                        tbls.push(table);
                        pks.push(pkb.as_slice());
                        cks.push(ckb.as_slice());
                        vs.push(value.as_slice());
                        exps.push(expires_at_ms.map(to_i64));
                    }
                }
                let rows = tx.query(s.insert_many, &[&tbls, &pks, &cks, &vs, &exps]).await?;
                let mut new_rows: HashSet<(String, Vec<u8>, Vec<u8>)> = HashSet::with_capacity(rows.len());
                for r in &rows {
                    new_rows.insert((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
                }
                let inserted: Vec<bool> = encoded
                    .iter()
                    .map(|(_, op, pkb, ckb)| match op {
                        // The first op of a key claims its inserted row; a repeat takes the locking path
                        // (and conflicts with the row just inserted, as one-by-one would).
                        Op::Put { table, .. } => new_rows.remove(&(table.clone(), pkb.clone(), ckb.clone())),
                        _ => false,
                    })
                    .collect();
                for ((j, op, _, _), done) in encoded.iter().zip(inserted) {
                    if done {
                        set(&mut results, *j, 1);
                        continue;
                    }
                    match apply(&tx, &s, op, now_ms).await? {
                        Ok(v) => set(&mut results, *j, v),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                i += run.len();
            }
            op => {
                match apply(&tx, &s, op, now_ms).await? {
                    Ok(v) => set(&mut results, i, v),
                    Err(e) => return Ok(Err(e)),
                }
                i += 1;
            }
        }
    }
    if !outbox.is_empty() {
        // Last step: the counter row lock is then held only until this commit (see the module doc).
        let n = i64::try_from(outbox.len()).unwrap_or(i64::MAX);
        let row = tx.query_one(&conn.outbox_ids, &[&n]).await?;
        let last: i64 = row.try_get(0)?;
        let last = u64::try_from(last).unwrap_or(0);
        let first = (last + 1).saturating_sub(outbox.len() as u64);
        let pkb = Key::empty().encode();
        for (j, (i, value)) in outbox.into_iter().enumerate() {
            let id = first + j as u64;
            let ckb = Key::empty().u64(id).encode();
            tx.query_one(s.upsert, &[&OUTBOX_TABLE, &pkb, &ckb, value, &None::<i64>]).await?;
            set(&mut results, i, id);
        }
    }
    tx.commit().await?;
    Ok(Ok(results))
}

fn set(results: &mut [u64], i: usize, v: u64) {
    if let Some(slot) = results.get_mut(i) {
        *slot = v;
    }
}

/// The prepared statements a commit uses.
#[derive(Clone, Copy)]
struct Stmts<'a> {
    lock: &'a Statement,
    upsert: &'a Statement,
    insert_new: &'a Statement,
    insert_many: &'a Statement,
    update: &'a Statement,
    delete: &'a Statement,
}

/// Applies one put or delete (never an outbox entry): `Ok(Ok(result))`, `Ok(Err(conflict or corrupt))`,
/// or the database error.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    s: &Stmts<'_>,
    op: &Op,
    now_ms: u64,
) -> std::result::Result<Result<u64>, tokio_postgres::Error> {
    let (table, pk, ck, value, expires_at_ms, condition) = match op {
        Op::Put { table, pk, ck, value, expires_at_ms, condition } => {
            (table.as_str(), pk, ck, Some(value), expires_at_ms.map(to_i64), condition)
        }
        Op::Delete { table, pk, ck, condition } => (table.as_str(), pk, ck, None, None, condition),
        Op::Outbox { .. } => return Ok(Ok(0)),
    };
    let (pkb, ckb) = (pk.encode(), ck.encode());
    // Fast paths: unconditional put = one upsert; unconditional delete = one delete.
    match (value, condition) {
        (Some(v), Condition::None) => {
            let row = tx.query_one(s.upsert, &[&table, &pkb, &ckb, v, &expires_at_ms]).await?;
            return Ok(version_of(table, pk, ck, &row, 0));
        }
        (None, Condition::None) => {
            tx.execute(s.delete, &[&table, &pkb, &ckb]).await?;
            return Ok(Ok(0));
        }
        _ => {}
    }
    loop {
        let found = tx.query_opt(s.lock, &[&table, &pkb, &ckb]).await?;
        let (version, live, holds) = match &found {
            None => (0, false, !matches!(condition, Condition::Version(_) | Condition::Value(_))),
            Some(r) => {
                let current = match to_row(table, pk, ck.clone(), r) {
                    Ok(row) => row,
                    Err(e) => return Ok(Err(e)),
                };
                let live = current.expires_at_ms.is_none_or(|at| at > now_ms);
                let holds = match condition {
                    Condition::None => true,
                    Condition::Absent => !live,
                    Condition::Version(v) => live && current.version == *v,
                    Condition::Value(v) => live && current.value == *v,
                };
                (current.version, live, holds)
            }
        };
        if !holds {
            return Ok(Err(StoreError::Conflict { current: if live { version } else { 0 } }));
        }
        return match (value, found.is_some()) {
            (Some(v), true) => {
                let new_version = version + 1;
                tx.execute(s.update, &[&table, &pkb, &ckb, v, &to_i64(new_version), &expires_at_ms]).await?;
                Ok(Ok(new_version))
            }
            (Some(v), false) => {
                // Lost an insert race: lock and check the row the winner committed.
                if tx.query_opt(s.insert_new, &[&table, &pkb, &ckb, v, &expires_at_ms]).await?.is_none() {
                    continue;
                }
                Ok(Ok(1))
            }
            (None, true) => {
                tx.execute(s.delete, &[&table, &pkb, &ckb]).await?;
                Ok(Ok(0))
            }
            (None, false) => Ok(Ok(0)),
        };
    }
}

fn version_of(table: &str, pk: &Key, ck: &Key, row: &tokio_postgres::Row, idx: usize) -> Result<u64> {
    let v: i64 = row.try_get(idx).map_err(|e| corrupt(table, pk, ck, e.to_string()))?;
    u64::try_from(v).map_err(|_| corrupt(table, pk, ck, format!("negative version {v}")))
}

/// A row from `(v, version, expires_at_ms)`.
fn to_row(table: &str, pk: &Key, ck: Key, r: &tokio_postgres::Row) -> Result<Row> {
    to_row_at(table, pk, ck, r, 0)
}

/// A row from `(v, version, expires_at_ms)` starting at column `at`.
fn to_row_at(table: &str, pk: &Key, ck: Key, r: &tokio_postgres::Row, at: usize) -> Result<Row> {
    let value: Vec<u8> = r.try_get(at).map_err(|e| corrupt(table, pk, &ck, e.to_string()))?;
    let version = version_of(table, pk, &ck, r, at + 1)?;
    let expires: Option<i64> = r.try_get(at + 2).map_err(|e| corrupt(table, pk, &ck, e.to_string()))?;
    let expires_at_ms = match expires {
        None => None,
        Some(e) => Some(u64::try_from(e).map_err(|_| corrupt(table, pk, &ck, format!("negative expiry {e}")))?),
    };
    Ok(Row { ck, value, version, expires_at_ms })
}

/// Creates or checks the schema, serialized across nodes by an advisory lock.
async fn migrate(config: &tokio_postgres::Config) -> Result<()> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(pg)?;
    let task = tokio::spawn(connection);
    let outcome = async {
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
        tx.batch_execute(SCHEMA_SQL).await.map_err(pg)?;
        let found: Option<i32> = tx
            .query_opt("SELECT max(version) FROM troupe_schema_version", &[])
            .await
            .map_err(pg)?
            .and_then(|r| r.get(0));
        match found {
            None => {
                tx.execute("INSERT INTO troupe_schema_version (version) VALUES ($1)", &[&SCHEMA_VERSION])
                    .await
                    .map_err(pg)?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::bad_config(format!(
                    "PostgreSQL store has schema version {v}, this build reads version {SCHEMA_VERSION}"
                )));
            }
        }
        tx.commit().await.map_err(pg)
    }
    .await;
    drop(client);
    let _ = task.await;
    outcome
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn get<'a>(&'a self, table: &'a str, pk: &'a Key, ck: &'a Key, now_ms: u64) -> BoxFuture<'a, Result<Option<Row>>> {
        self.get_row(table, pk, ck, now_ms).boxed()
    }

    fn scan<'a>(&'a self, table: &'a str, pk: &'a Key, scan: &'a Scan, now_ms: u64) -> BoxFuture<'a, Result<Page>> {
        self.scan_rows(table, pk, scan, now_ms).boxed()
    }

    fn commit(&self, batch: WriteBatch, now_ms: u64) -> BoxFuture<'_, Result<Vec<u64>>> {
        async move { self.commit_batch(&batch, now_ms).await }.boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.pool.closed.store(true, Ordering::Release);
            self.pool.permits.close();
            let idle = match self.pool.idle.lock() {
                Ok(mut idle) => std::mem::take(&mut *idle),
                Err(_) => Vec::new(),
            };
            drop(idle);
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
