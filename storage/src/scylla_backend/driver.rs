//! The production [`Cql`]: the `scylla` driver session, the schema created at open and the statements
//! prepared once per session. Everything here is a thin translation of [`Cql`] calls to prepared
//! statements; the logic (plans, retries, outbox) lives in `scylla_backend.rs` and is tested offline there
//! against an in-memory model of the same calls.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::CqlValue;

use super::{
    ALL_STMTS, BOUND_KINDS, Cql, CqlError, CqlResult, OUTBOX_BUCKET, OutboxCols, Planned, REQUEST_TIMEOUT, RawCols,
    SCHEMA_VERSION, ScanCols, ScyllaTarget, Stmt, applied_of, bound_kind, certainly_not_applied, check_keyspace,
    cql_values, exec_err, is_conditional, keyspace_cql, keyspace_cql_without_tablets, replication_factor, scan_cql,
    scan_index, schema_cql, scy, stmt_cql,
};
use crate::error::{Result, StoreError};
use crate::model::Direction;

/// A request error as a [`CqlError`]: is the outcome of a write unknown?
fn failed(e: ExecutionError) -> CqlError {
    let unknown_outcome = !certainly_not_applied(&e);
    CqlError { error: exec_err(e), unknown_outcome }
}

/// Rows that do not decode: corrupt data in `table` (the caller's keys are not known here).
fn undecodable(table: &str, e: impl std::fmt::Display) -> CqlError {
    CqlError {
        error: StoreError::CorruptData {
            table: table.to_owned(),
            key: "(undecodable row)".into(),
            reason: e.to_string(),
        },
        unknown_outcome: false,
    }
}

fn closed() -> CqlError {
    CqlError { error: StoreError::unavailable("scylla store is closed"), unknown_outcome: false }
}

/// Prepared statements, once per session.
struct Prepared {
    get: PreparedStatement,
    get_serial: PreparedStatement,
    read_many: PreparedStatement,
    scans: Vec<PreparedStatement>,
    writes: HashMap<Stmt, PreparedStatement>,
    outbox_intent: PreparedStatement,
    outbox_scan: PreparedStatement,
    outbox_homes: PreparedStatement,
    outbox_delete_id: PreparedStatement,
    outbox_delete_one: PreparedStatement,
    delete_if_exists: PreparedStatement,
}

impl Prepared {
    async fn new(session: &Session, ks: &str) -> Result<Self> {
        let prep = |cql: String, idempotent: bool| async move {
            let mut p = session.prepare(cql).await.map_err(scy)?;
            p.set_is_idempotent(idempotent);
            Ok::<_, StoreError>(p)
        };
        let get_cql =
            format!("SELECT v, version, expires_at_ms, wid FROM {ks}.rows WHERE pk = ? AND tbl = ? AND ck = ?");
        let mut get_serial = prep(get_cql.clone(), true).await?;
        get_serial.set_consistency(Consistency::Serial);
        let mut scans = Vec::with_capacity(18);
        for lo in BOUND_KINDS {
            for hi in BOUND_KINDS {
                for dir in [Direction::Ascending, Direction::Descending] {
                    debug_assert_eq!(scan_index(lo, hi, dir), scans.len());
                    scans.push(prep(scan_cql(ks, lo, hi, dir), true).await?);
                }
            }
        }
        let mut writes = HashMap::new();
        for stmt in ALL_STMTS {
            // Conditional statements are never idempotent: no driver retries, no speculative execution.
            writes.insert(stmt, prep(stmt_cql(ks, stmt), !is_conditional(stmt)).await?);
        }
        Ok(Self {
            get: prep(get_cql, true).await?,
            get_serial,
            read_many: prep(
                format!(
                    "SELECT ck, v, version, expires_at_ms, wid FROM {ks}.rows WHERE pk = ? AND tbl = ? AND ck IN ?"
                ),
                true,
            )
            .await?,
            scans,
            writes,
            outbox_intent: prep(
                format!("INSERT INTO {ks}.outbox (bucket, id, home, created_ms) VALUES (?, ?, ?, ?)"),
                true,
            )
            .await?,
            outbox_scan: prep(
                format!(
                    "SELECT id, home, v, created_ms FROM {ks}.outbox WHERE bucket = ? AND (id, home) > (?, ?) LIMIT ?"
                ),
                true,
            )
            .await?,
            outbox_homes: prep(format!("SELECT home FROM {ks}.outbox WHERE bucket = ? AND id = ?"), true).await?,
            outbox_delete_id: prep(format!("DELETE FROM {ks}.outbox WHERE bucket = ? AND id = ?"), true).await?,
            outbox_delete_one: prep(format!("DELETE FROM {ks}.outbox WHERE bucket = ? AND id = ? AND home = ?"), true)
                .await?,
            delete_if_exists: prep(
                format!("DELETE FROM {ks}.rows WHERE pk = ? AND tbl = ? AND ck = ? IF EXISTS"),
                false,
            )
            .await?,
        })
    }

    fn write(&self, stmt: Stmt) -> CqlResult<&PreparedStatement> {
        self.writes.get(&stmt).ok_or_else(|| CqlError {
            error: StoreError::unavailable(format!("scylla: {stmt:?} not prepared")),
            unknown_outcome: false,
        })
    }
}

/// The driver-backed [`Cql`].
pub(super) struct DriverCql {
    /// `None` once closed: the connections close when the last in-flight request lets go of it.
    session: RwLock<Option<Arc<Session>>>,
    prepared: Prepared,
}

impl DriverCql {
    /// Connects, creates the keyspace and schema if needed, checks the schema version, prepares statements.
    pub(super) async fn connect(target: &ScyllaTarget) -> Result<Self> {
        check_keyspace(&target.keyspace)?;
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::Quorum)
            .serial_consistency(Some(SerialConsistency::Serial))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .build()
            .into_handle();
        let session = SessionBuilder::new()
            .known_nodes(&target.nodes)
            .connection_timeout(Duration::from_secs(5))
            .default_execution_profile_handle(profile)
            .build()
            .await
            .map_err(|e| StoreError::unavailable(format!("scylla: cannot connect to {:?}: {e}", target.nodes)))?;
        let ks = target.keyspace.as_str();
        let rf = replication_factor(session.get_cluster_state().get_nodes_info().len());
        if let Err(e) = session.query_unpaged(keyspace_cql(ks, rf), ()).await {
            // ScyllaDB before tablets (and Cassandra) do not know the option; vnodes are their only mode.
            if !e.to_string().contains("tablets") {
                return Err(exec_err(e));
            }
            session.query_unpaged(keyspace_cql_without_tablets(ks, rf), ()).await.map_err(exec_err)?;
        }
        for cql in schema_cql(ks) {
            session.query_unpaged(cql, ()).await.map_err(exec_err)?;
        }
        check_schema_version(&session, ks).await?;
        let prepared = Prepared::new(&session, ks).await?;
        Ok(Self { session: RwLock::new(Some(Arc::new(session))), prepared })
    }

    fn session(&self) -> CqlResult<Arc<Session>> {
        match self.session.read() {
            Ok(guard) => guard.clone().ok_or_else(closed),
            Err(_) => Err(closed()),
        }
    }

    async fn rows<R>(
        &self,
        stmt: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        table: &str,
    ) -> CqlResult<Vec<R>>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let result = self.session()?.execute_unpaged(stmt, values).await.map_err(failed)?;
        let rows = result.into_rows_result().map_err(|e| CqlError { error: scy(e), unknown_outcome: false })?;
        rows.rows::<R>()
            .map_err(|e| undecodable(table, e))?
            .collect::<std::result::Result<Vec<R>, _>>()
            .map_err(|e| undecodable(table, e))
    }

    async fn run(&self, stmt: &PreparedStatement, values: impl scylla::serialize::row::SerializeRow) -> CqlResult<()> {
        self.session()?.execute_unpaged(stmt, values).await.map_err(failed).map(drop)
    }
}

fn blob(b: &[u8]) -> Option<CqlValue> {
    Some(CqlValue::Blob(b.to_vec()))
}

impl Cql for DriverCql {
    fn get<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        ck: &'a [u8],
        serial: bool,
    ) -> BoxFuture<'a, CqlResult<Option<RawCols>>> {
        async move {
            let stmt = if serial { &self.prepared.get_serial } else { &self.prepared.get };
            let rows: Vec<RawCols> = self.rows(stmt, (pk, tbl, ck), tbl).await?;
            Ok(rows.into_iter().next())
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
            let list = CqlValue::List(cks.iter().cloned().map(CqlValue::Blob).collect());
            let values = vec![blob(pk), Some(CqlValue::Text(tbl.to_owned())), Some(list)];
            self.rows(&self.prepared.read_many, values, tbl).await
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
            let stmt =
                self.prepared.scans.get(scan_index(bound_kind(lo), bound_kind(hi), direction)).ok_or_else(|| {
                    CqlError {
                        error: StoreError::unavailable("scylla: scan statement missing"),
                        unknown_outcome: false,
                    }
                })?;
            let mut values = vec![blob(pk), Some(CqlValue::Text(tbl.to_owned()))];
            for b in [lo, hi] {
                if let Bound::Included(col) | Bound::Excluded(col) = b {
                    values.push(blob(col));
                }
            }
            values.push(Some(CqlValue::Int(i32::try_from(limit).unwrap_or(i32::MAX))));
            self.rows(stmt, values, tbl).await
        }
        .boxed()
    }

    fn batch<'a>(&'a self, lwt: bool, statements: &'a [Planned]) -> BoxFuture<'a, CqlResult<bool>> {
        async move {
            let mut batch = Batch::new(if lwt { BatchType::Unlogged } else { BatchType::Logged });
            let mut values = Vec::with_capacity(statements.len());
            let mut conditional = false;
            for p in statements {
                conditional |= is_conditional(p.stmt);
                batch.append_statement(self.prepared.write(p.stmt)?.clone());
                values.push(cql_values(p.values.clone()));
            }
            batch.set_is_idempotent(!conditional);
            let result = self.session()?.batch(&batch, values).await.map_err(failed)?;
            if !lwt {
                return Ok(true);
            }
            // The request completed; a malformed answer leaves the outcome unknown.
            let unknown = |e: String| CqlError { error: scy(e), unknown_outcome: true };
            let rows = result.into_rows_result().map_err(|e| unknown(e.to_string()))?;
            let first: Option<scylla::value::Row> = rows.maybe_first_row().map_err(|e| unknown(e.to_string()))?;
            first.as_ref().and_then(applied_of).ok_or_else(|| unknown("LWT batch result without [applied]".into()))
        }
        .boxed()
    }

    fn outbox_intent<'a>(&'a self, id: i64, home: &'a [u8], created_ms: i64) -> BoxFuture<'a, CqlResult<()>> {
        self.run(&self.prepared.outbox_intent, (OUTBOX_BUCKET, id, home, created_ms)).boxed()
    }

    fn outbox_scan(&self, after: (i64, Vec<u8>), limit: usize) -> BoxFuture<'_, CqlResult<Vec<OutboxCols>>> {
        async move {
            let values = (OUTBOX_BUCKET, after.0, after.1, i32::try_from(limit).unwrap_or(i32::MAX));
            self.rows(&self.prepared.outbox_scan, values, crate::model::OUTBOX_TABLE).await
        }
        .boxed()
    }

    fn outbox_homes(&self, id: i64) -> BoxFuture<'_, CqlResult<Vec<Vec<u8>>>> {
        async move {
            let rows: Vec<(Vec<u8>,)> =
                self.rows(&self.prepared.outbox_homes, (OUTBOX_BUCKET, id), crate::model::OUTBOX_TABLE).await?;
            Ok(rows.into_iter().map(|(h,)| h).collect())
        }
        .boxed()
    }

    fn outbox_delete<'a>(&'a self, id: i64, home: Option<&'a [u8]>) -> BoxFuture<'a, CqlResult<()>> {
        async move {
            match home {
                Some(home) => self.run(&self.prepared.outbox_delete_one, (OUTBOX_BUCKET, id, home)).await,
                None => self.run(&self.prepared.outbox_delete_id, (OUTBOX_BUCKET, id)).await,
            }
        }
        .boxed()
    }

    fn delete_if_exists<'a>(&'a self, pk: &'a [u8], tbl: &'a str, ck: &'a [u8]) -> BoxFuture<'a, CqlResult<()>> {
        self.run(&self.prepared.delete_if_exists, (pk, tbl, ck)).boxed()
    }

    fn close(&self) {
        let session = match self.session.write() {
            Ok(mut guard) => guard.take(),
            Err(_) => None,
        };
        drop(session);
    }
}

/// Checks (or records) the schema version; another version is refused.
async fn check_schema_version(session: &Session, ks: &str) -> Result<()> {
    let insert =
        format!("INSERT INTO {ks}.meta (name, value) VALUES ('schema_version', {SCHEMA_VERSION}) IF NOT EXISTS");
    session.query_unpaged(insert, ()).await.map_err(exec_err)?;
    let mut read =
        scylla::statement::Statement::new(format!("SELECT value FROM {ks}.meta WHERE name = 'schema_version'"));
    read.set_consistency(Consistency::Serial);
    let result = session.query_unpaged(read, ()).await.map_err(exec_err)?;
    let rows = result.into_rows_result().map_err(scy)?;
    let found: Option<(Option<i32>,)> = rows.maybe_first_row().map_err(scy)?;
    match found.and_then(|(v,)| v) {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) => Err(StoreError::bad_config(format!(
            "ScyllaDB keyspace {ks} has schema version {v}, this build reads version {SCHEMA_VERSION}"
        ))),
        None => Err(StoreError::unavailable(format!("scylla: keyspace {ks} has no schema version row"))),
    }
}
