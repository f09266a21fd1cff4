//! The ScyllaDB backend (cargo feature `scylla`, driver `scylla` 1.9): the scale-out shared store.
//!
//! **Schema** (created at open in keyspace `troupe` or the one the URI names; `CREATE KEYSPACE IF NOT EXISTS
//! … AND tablets = {'enabled': false}` because LWT needs vnode keyspaces; replication factor `min(3, nodes)`
//! with `NetworkTopologyStrategy` — production clusters should create the keyspace themselves):
//! - `rows (pk blob, tbl text, ck blob, v blob, version bigint, expires_at_ms bigint, wid bigint,
//!   PRIMARY KEY ((pk), tbl, ck))`, clustering ascending — one shared table for every store table, like
//!   PostgreSQL's `troupe_rows`. `pk`/`ck` hold `0x00` + the order-preserving encoding of `crate::key`
//!   (the prefix keeps them non-empty: CQL refuses empty partition keys); blobs compare bytewise, so
//!   clustering order is key order. **The partition is the store partition key alone, with the store
//!   table as the first clustering column**: every table's rows for one key (an account's state, its
//!   event log, its snapshot) share one CQL partition, so a batch over them is one single-partition
//!   batch, which ScyllaDB applies atomically with all its `IF` conditions (one Paxos round).
//!   `wid` is a random id written with every row version: conditional statements guard on it.
//! - `outbox (bucket int, id bigint, home blob, v blob, created_ms bigint, PRIMARY KEY ((bucket), id, home))`
//!   — the outbox index (see below); `gc_grace_seconds = 3600` keeps acknowledged entries' tombstones short.
//! - `meta (name text PRIMARY KEY, value int)` with row `schema_version` = [`SCHEMA_VERSION`], checked at
//!   open (another version is refused).
//!
//! Statements are prepared once per session at open (18 scan variants: lower bound none/`>`/`>=`, upper
//! bound none/`<`/`<=`, ascending or `ORDER BY tbl DESC, ck DESC`). Scans page by key: `LIMIT n`, then
//! continue after the last clustering key seen, until `limit + 1` live rows or the range ends; the cursor
//! is the encoded clustering key.
//!
//! **Writes are compare-and-set on a pre-read.** A commit reads the rows it touches, checks the batch's
//! conditions in Rust exactly like the fjall/PostgreSQL backends (expired rows count as absent; ops apply
//! in order, later ops see earlier ones), computes each row's final state and new version, and sends one
//! LWT batch per partition whose statements are guarded by "the row is still what I read": `INSERT … IF
//! NOT EXISTS` for an absent row, `UPDATE … IF wid = ?` / `DELETE … IF wid = ?` for a present one (the
//! guard names the exact row incarnation, so there is no ABA). If the guard fails, another writer got
//! in between: read again and retry (bounded, then `Unavailable`); a condition that fails on the read is
//! `Conflict { current }`. Why not `IF version = ?`/`IF v = ?` directly: "absent" must also match an
//! expired row (CQL `IF` has no `OR`), and versions (+1 per write) need the current version anyway.
//! Every write to `rows` is therefore an LWT — also unconditional puts — which also avoids mixing Paxos
//! and plain-timestamp writes on a row. Conditional statements are never marked idempotent, so the driver
//! neither retries nor speculatively re-sends them.
//!
//! **Atomicity by batch shape** ([`BatchShape`]):
//! - one partition (plus any outbox entries) → one LWT batch: atomic and isolated;
//! - several partitions, all unconditional, → one LOGGED batch of plain writes with versions from the
//!   pre-read: atomic (batchlog) but not isolated; under concurrent writers of the same row two writes may
//!   get the same version, and with clock skew a plain write can lose to an earlier LWT on the same row.
//!   Do not mix multi-partition batches with compare-and-set on the same rows;
//! - several partitions with any condition → `BadConfig` naming the shape (CQL cannot do that atomically);
//!   nothing is written.
//!
//! **Outbox.** Entries committed with one partition live *in that partition* (table
//! `_troupe_outbox_home`, ck `(id)`) and are inserted by the same LWT batch, so they exist iff the state
//! change does. Before the LWT, an *intent* row `(id, home partition)` is written to the `outbox` index;
//! the drainer (`pending_outbox` = a scan of [`OUTBOX_TABLE`]) walks the index in id order and publishes
//! an intent only once its colocated row exists. It stops at a young unresolved intent (an LWT still in
//! flight: keeps id order), and drops intents older than a grace period (60 s) whose colocated row a
//! SERIAL read (which finishes any in-progress Paxos round) does not find. Entries of multi-partition
//! (LOGGED) batches and outbox-only batches are written inline into the index by the same logged batch.
//! Ids are `wall-clock ms << 21 | random bits`, strictly increasing per process, unique across nodes
//! with overwhelming probability (a clash loses nothing: the index key includes the home partition, and
//! the colocated row's `IF NOT EXISTS` makes a clash in one partition retry), ordered by time across nodes
//! only as well as their clocks agree, not gap-free. Acknowledging deletes
//! the colocated row (LWT) and then the index entry.
//!
//! **TTL**: `expires_at_ms` is stored and reads filter `expires_at_ms > now` (the store clock); rows with
//! an expiry are also written `USING TTL` (seconds rounded up, so the row lives at least as long as
//! asked) so the engine purges them. An unguarded row marker is refreshed with every write so a row whose
//! latest write has a TTL vanishes entirely.
//!
//! **Outcomes and errors**: connection errors, timeouts and overload → `Unavailable` (retryable). When an
//! LWT's outcome is unknown (timeout, broken connection), a SERIAL read of the longest-lived row it writes
//! decides: our `wid` there → committed; the row as pre-read → not applied (retried); anything else →
//! `Unavailable` (outcome unknown; the outbox intents stay for the drainer to resolve).
//! "Still absent" for a row a batch reads but leaves absent is guarded by inserting an invisible,
//! already-expired marker row (version 0, engine TTL 60 s).
//! Undecodable rows → `CorruptData` naming table and key. Consistency: QUORUM, serial SERIAL.
//!
//! **Limits**: the outbox index is one CQL partition (every node's outbox traffic and its tombstones meet
//! there; fine for moderate rates); a commit is a pre-read plus one Paxos round per partition (about
//! 4–5 round trips); with SERIAL/QUORUM a multi-DC cluster pays cross-DC latency on every write; batches
//! over one partition are bounded by ScyllaDB's batch size limits; a key written only by multi-partition
//! batches gets versions that are not linearizable (see above).
//!
//! Collaborators: `store.rs` (the `Store` API on top: events, snapshots, leases, outbox), `key.rs` (the
//! key encoding), `model.rs` (batches and scans), the `scylla` driver.
//!
//! **Verified offline vs not**: the backend's logic runs over a small `Cql` trait (the requests above);
//! `scylla_backend/driver.rs` implements it with the driver, the tests with an in-memory model of the same
//! CQL semantics (single-partition LWT batches all-or-nothing on `IF NOT EXISTS` / `IF wid = ?`, plain
//! writes, the outbox index; every request yields so concurrent commits interleave). Offline, in
//! `cargo test -p troupe-storage --features scylla`: the whole conformance suite over that model (races,
//! TTL, cursors, outbox atomicity), injected unknown outcomes (applied, not applied, overtaken), the
//! drainer's grace period, multi-partition shapes, plus unit tests of statement texts, key/bound encoding,
//! TTL rounding, batch shapes, the planner and row mapping. **Not verified**: no ScyllaDB server was
//! available while this was written, so the CQL text, the driver calls and ScyllaDB's real LWT behaviour
//! have never run; the conformance suite runs against a real cluster when `TROUPE_TEST_SCYLLA_URI` (or
//! `SCYLLA_URI`) is set.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::value::CqlValue;

use crate::backend::Backend;
use crate::error::{Result, StoreError};
use crate::key::Key;
use crate::model::{Condition, Cursor, Direction, OUTBOX_TABLE, Op, Page, Row, Scan, WriteBatch};
use crate::store::corrupt;

/// Schema version this build creates and reads.
pub const SCHEMA_VERSION: i32 = 1;
/// Keyspace used when the URI names none.
pub const DEFAULT_KEYSPACE: &str = "troupe";
/// Internal table (in the batch's partition) holding outbox entries committed with that partition.
pub const OUTBOX_HOME_TABLE: &str = "_troupe_outbox_home";
/// Attempts for a commit whose guard lost to a concurrent writer.
const COMMIT_ATTEMPTS: usize = 16;
/// Outbox intents older than this whose colocated row does not exist are dropped.
const OUTBOX_GRACE_MS: u64 = 60_000;
/// The one outbox index partition.
const OUTBOX_BUCKET: i32 = 0;
/// Rows fetched per scan round trip at most.
const SCAN_CHUNK: usize = 1000;
/// Most clustering keys in one `IN` list (ScyllaDB's default limit is 100).
const IN_CHUNK: usize = 100;
/// ScyllaDB's largest TTL (20 years), in seconds.
const MAX_TTL_SECS: u64 = 630_720_000;
/// Client-side timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Engine TTL of the invisible marker row that guards "still absent" (see `plan_partition`).
const DEAD_MARKER_TTL_SECS: i32 = 60;
/// Prefix byte of `pk`/`ck` column values (keeps them non-empty).
const KEY_PREFIX: u8 = 0x00;

// ---------------------------------------------------------------------------------------------------------
// Pure parts: URI, CQL text, keys, TTL, batch shape, commit planning, row mapping (unit-tested offline).
// ---------------------------------------------------------------------------------------------------------

/// Where to connect: contact points and keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaTarget {
    /// `host:port` contact points.
    pub nodes: Vec<String>,
    /// Keyspace (`[a-z][a-z0-9_]{0,47}`).
    pub keyspace: String,
}

/// Parses `host:port[,host:port…][/keyspace]` (keyspace defaults to [`DEFAULT_KEYSPACE`]).
pub fn parse_uri(uri: &str) -> Result<ScyllaTarget> {
    let uri = uri.trim();
    let uri = uri.strip_prefix("scylla://").unwrap_or(uri);
    let (hosts, keyspace) = match uri.split_once('/') {
        Some((h, k)) if !k.is_empty() => (h, k),
        Some((h, _)) => (h, DEFAULT_KEYSPACE),
        None => (uri, DEFAULT_KEYSPACE),
    };
    check_keyspace(keyspace)?;
    let mut nodes = Vec::new();
    for item in hosts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port_ok =
            item.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(StoreError::bad_config(format!("bad ScyllaDB contact point {item:?}: expected host:port")));
        }
        nodes.push(item.to_owned());
    }
    if nodes.is_empty() {
        return Err(StoreError::bad_config(format!("ScyllaDB URI {uri:?} names no host:port")));
    }
    Ok(ScyllaTarget { nodes, keyspace: keyspace.to_owned() })
}

/// Keyspace names: `[a-z][a-z0-9_]{0,47}` (unquoted CQL identifiers, ScyllaDB's length limit).
pub fn check_keyspace(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::bad_config(format!("bad keyspace name {name:?}: use [a-z][a-z0-9_]{{0,47}}")))
    }
}

/// `CREATE KEYSPACE` for `rf` replicas, tablets off (LWT needs vnodes).
fn keyspace_cql(keyspace: &str, rf: usize) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {rf}}} AND tablets = {{'enabled': false}}"
    )
}

/// `CREATE KEYSPACE` for engines without tablets.
fn keyspace_cql_without_tablets(keyspace: &str, rf: usize) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {rf}}}"
    )
}

/// Replication factor for a cluster of `nodes` nodes.
fn replication_factor(nodes: usize) -> usize {
    nodes.clamp(1, 3)
}

/// The tables, in creation order.
fn schema_cql(ks: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.rows (pk blob, tbl text, ck blob, v blob, version bigint, \
             expires_at_ms bigint, wid bigint, PRIMARY KEY ((pk), tbl, ck)) \
             WITH CLUSTERING ORDER BY (tbl ASC, ck ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.outbox (bucket int, id bigint, home blob, v blob, created_ms bigint, \
             PRIMARY KEY ((bucket), id, home)) WITH CLUSTERING ORDER BY (id ASC, home ASC) \
             AND gc_grace_seconds = 3600"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.meta (name text PRIMARY KEY, value int)"),
    ]
}

/// How a scan bound restricts `ck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoundKind {
    None,
    Inclusive,
    Exclusive,
}

const BOUND_KINDS: [BoundKind; 3] = [BoundKind::None, BoundKind::Inclusive, BoundKind::Exclusive];

fn bound_kind(b: &Bound<Vec<u8>>) -> BoundKind {
    match b {
        Bound::Unbounded => BoundKind::None,
        Bound::Included(_) => BoundKind::Inclusive,
        Bound::Excluded(_) => BoundKind::Exclusive,
    }
}

/// Index of the prepared scan statement for these bounds and direction.
fn scan_index(lo: BoundKind, hi: BoundKind, direction: Direction) -> usize {
    let pos = |k: BoundKind| BOUND_KINDS.iter().position(|x| *x == k).unwrap_or(0);
    pos(lo) * 6 + pos(hi) * 2 + usize::from(direction == Direction::Descending)
}

/// The scan statement text; binds `pk, tbl, [lo], [hi], limit`.
fn scan_cql(ks: &str, lo: BoundKind, hi: BoundKind, direction: Direction) -> String {
    let mut cql = format!("SELECT ck, v, version, expires_at_ms, wid FROM {ks}.rows WHERE pk = ? AND tbl = ?");
    match lo {
        BoundKind::None => {}
        BoundKind::Inclusive => cql.push_str(" AND ck >= ?"),
        BoundKind::Exclusive => cql.push_str(" AND ck > ?"),
    }
    match hi {
        BoundKind::None => {}
        BoundKind::Inclusive => cql.push_str(" AND ck <= ?"),
        BoundKind::Exclusive => cql.push_str(" AND ck < ?"),
    }
    cql.push_str(match direction {
        Direction::Ascending => " ORDER BY tbl ASC, ck ASC LIMIT ?",
        Direction::Descending => " ORDER BY tbl DESC, ck DESC LIMIT ?",
    });
    cql
}

/// The statements a commit plan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Stmt {
    /// Create an absent row: `pk, tbl, ck, v, version, expires_at_ms, wid, ttl`; `IF NOT EXISTS`.
    InsertNew,
    /// Replace a present row: `ttl, v, version, expires_at_ms, wid, pk, tbl, ck, old_wid`; `IF wid = ?`.
    UpdateGuarded,
    /// Refresh the row marker's TTL (same row as an `UpdateGuarded`): `pk, tbl, ck, ttl`.
    Touch,
    /// Delete a present row: `pk, tbl, ck, old_wid`; `IF wid = ?`.
    DeleteGuarded,
    /// Plain upsert (LOGGED batches): `pk, tbl, ck, v, version, expires_at_ms, wid, ttl`.
    Upsert,
    /// Plain delete (LOGGED batches): `pk, tbl, ck`.
    Delete,
    /// Inline outbox entry: `bucket, id, home, v, created_ms`.
    OutboxInline,
}

fn stmt_cql(ks: &str, stmt: Stmt) -> String {
    match stmt {
        Stmt::InsertNew => format!(
            "INSERT INTO {ks}.rows (pk, tbl, ck, v, version, expires_at_ms, wid) VALUES (?, ?, ?, ?, ?, ?, ?) \
             IF NOT EXISTS USING TTL ?"
        ),
        Stmt::UpdateGuarded => format!(
            "UPDATE {ks}.rows USING TTL ? SET v = ?, version = ?, expires_at_ms = ?, wid = ? \
             WHERE pk = ? AND tbl = ? AND ck = ? IF wid = ?"
        ),
        Stmt::Touch => format!("INSERT INTO {ks}.rows (pk, tbl, ck) VALUES (?, ?, ?) USING TTL ?"),
        Stmt::DeleteGuarded => format!("DELETE FROM {ks}.rows WHERE pk = ? AND tbl = ? AND ck = ? IF wid = ?"),
        Stmt::Upsert => format!(
            "INSERT INTO {ks}.rows (pk, tbl, ck, v, version, expires_at_ms, wid) VALUES (?, ?, ?, ?, ?, ?, ?) \
             USING TTL ?"
        ),
        Stmt::Delete => format!("DELETE FROM {ks}.rows WHERE pk = ? AND tbl = ? AND ck = ?"),
        Stmt::OutboxInline => {
            format!("INSERT INTO {ks}.outbox (bucket, id, home, v, created_ms) VALUES (?, ?, ?, ?, ?)")
        }
    }
}

const ALL_STMTS: [Stmt; 7] = [
    Stmt::InsertNew,
    Stmt::UpdateGuarded,
    Stmt::Touch,
    Stmt::DeleteGuarded,
    Stmt::Upsert,
    Stmt::Delete,
    Stmt::OutboxInline,
];

/// True for the statements that carry an `IF` (never idempotent).
fn is_conditional(stmt: Stmt) -> bool {
    matches!(stmt, Stmt::InsertNew | Stmt::UpdateGuarded | Stmt::DeleteGuarded)
}

/// A bound value (driver-independent, so plans are testable).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Blob(Vec<u8>),
    Text(String),
    BigInt(i64),
    Int(i32),
    Null,
}

impl Val {
    fn into_cql(self) -> Option<CqlValue> {
        match self {
            Val::Blob(b) => Some(CqlValue::Blob(b)),
            Val::Text(s) => Some(CqlValue::Text(s)),
            Val::BigInt(v) => Some(CqlValue::BigInt(v)),
            Val::Int(v) => Some(CqlValue::Int(v)),
            Val::Null => None,
        }
    }
}

fn cql_values(values: Vec<Val>) -> Vec<Option<CqlValue>> {
    values.into_iter().map(Val::into_cql).collect()
}

/// `pk`/`ck` column value of an encoded key.
fn key_col(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len() + 1);
    out.push(KEY_PREFIX);
    out.extend_from_slice(encoded);
    out
}

/// The encoded key of a `pk`/`ck` column value.
fn key_of_col(col: &[u8]) -> Option<&[u8]> {
    match col.split_first() {
        Some((&KEY_PREFIX, rest)) => Some(rest),
        _ => None,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `USING TTL` seconds for a row expiring at `expires_at_ms` written at `now_ms`: 0 (none) without an
/// expiry or beyond ScyllaDB's largest TTL; else the remaining time rounded up to whole seconds, at least 1.
fn ttl_secs(expires_at_ms: Option<u64>, now_ms: u64) -> i32 {
    let Some(at) = expires_at_ms else { return 0 };
    let secs = at.saturating_sub(now_ms).div_ceil(1000).max(1);
    if secs > MAX_TTL_SECS { 0 } else { i32::try_from(secs).unwrap_or(0) }
}

/// A row as stored (what a pre-read finds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    value: Vec<u8>,
    version: u64,
    expires_at_ms: Option<u64>,
    wid: i64,
}

impl Stored {
    fn live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// The raw columns `v, version, expires_at_ms, wid` of one row.
type RawCols = (Option<Vec<u8>>, Option<i64>, Option<i64>, Option<i64>);
/// The raw columns `ck, v, version, expires_at_ms, wid` of a scanned row.
type ScanCols = (Vec<u8>, Option<Vec<u8>>, Option<i64>, Option<i64>, Option<i64>);
/// The raw columns `id, home, v, created_ms` of an outbox index row.
type OutboxCols = (i64, Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// Maps raw columns to a stored row; missing or negative values are `CorruptData` naming table and key.
fn stored_from(table: &str, pk: &Key, ck: &Key, raw: RawCols) -> Result<Stored> {
    let (v, version, expires, wid) = raw;
    let bad = |reason: String| corrupt(table, pk, ck, reason);
    let value = v.ok_or_else(|| bad("row without a value".into()))?;
    let version = version.ok_or_else(|| bad("row without a version".into()))?;
    let version = u64::try_from(version).map_err(|_| bad(format!("negative version {version}")))?;
    let expires_at_ms = match expires {
        None => None,
        Some(e) => Some(u64::try_from(e).map_err(|_| bad(format!("negative expiry {e}")))?),
    };
    let wid = wid.ok_or_else(|| bad("row without a write id".into()))?;
    Ok(Stored { value, version, expires_at_ms, wid })
}

/// Decodes a `ck` column value.
fn ck_from_col(table: &str, pk: &Key, col: &[u8]) -> Result<Key> {
    let raw = Key::empty().bytes(col.to_vec());
    let encoded = key_of_col(col).ok_or_else(|| corrupt(table, pk, &raw, "clustering key without prefix"))?;
    Key::decode(encoded).map_err(|e| corrupt(table, pk, &raw, e.to_string()))
}

fn to_store_row(ck: Key, s: Stored) -> Row {
    Row { ck, value: s.value, version: s.version, expires_at_ms: s.expires_at_ms }
}

/// What a [`WriteBatch`] is, for the backend (see the module doc's atomicity rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchShape {
    /// Nothing to do.
    Empty,
    /// Only deletes of outbox entries (`ack_outbox`): these ids.
    AckOutbox(Vec<u64>),
    /// Only outbox entries: inline into the index.
    OutboxOnly,
    /// All puts/deletes in one partition (encoded key): one LWT batch (plus colocated outbox rows).
    OnePartition(Vec<u8>),
    /// Several partitions, no conditions: one LOGGED batch.
    ManyUnconditional,
}

/// Classifies `batch`, or names the shape CQL cannot commit atomically (`BadConfig`).
pub fn classify(batch: &WriteBatch) -> Result<BatchShape> {
    if batch.ops.is_empty() {
        return Ok(BatchShape::Empty);
    }
    let mut acks = Vec::new();
    let mut partitions: Vec<Vec<u8>> = Vec::new();
    let (mut conditional, mut others, mut outbox) = (false, 0usize, 0usize);
    for op in &batch.ops {
        match op {
            Op::Delete { table, ck, .. } if table == OUTBOX_TABLE => match ck.0.as_slice() {
                [crate::key::KeyPart::U64(id)] => acks.push(*id),
                _ => return Err(StoreError::bad_config("outbox entries are deleted by (id)")),
            },
            Op::Put { table, .. } | Op::Delete { table, .. } if table == OUTBOX_TABLE || table == OUTBOX_HOME_TABLE => {
                return Err(StoreError::bad_config(format!("table {table:?} is written by the store only")));
            }
            Op::Put { pk, condition, .. } | Op::Delete { pk, condition, .. } => {
                others += 1;
                conditional |= *condition != Condition::None;
                let enc = pk.encode();
                if !partitions.contains(&enc) {
                    partitions.push(enc);
                }
            }
            Op::Outbox { .. } => outbox += 1,
        }
    }
    if !acks.is_empty() {
        if others + outbox > 0 {
            return Err(StoreError::bad_config("acknowledging outbox entries cannot share a batch with writes"));
        }
        return Ok(BatchShape::AckOutbox(acks));
    }
    match partitions.len() {
        0 => Ok(BatchShape::OutboxOnly),
        1 => Ok(BatchShape::OnePartition(partitions.swap_remove(0))),
        n if conditional => Err(StoreError::bad_config(format!(
            "the scylla backend cannot commit conditional writes spread over {n} partitions atomically \
             (CQL conditions are atomic within one partition): put the conditional rows under one partition \
             key, or split the batch"
        ))),
        _ => Ok(BatchShape::ManyUnconditional),
    }
}

/// One row of a partition: (table, `ck` column value).
type RowId = (String, Vec<u8>);

/// A statement to run with its values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    stmt: Stmt,
    values: Vec<Val>,
}

/// A commit plan for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PartitionPlan {
    /// Statements, guarded (LWT) or plain (LOGGED) per the plan mode.
    statements: Vec<Planned>,
    /// Result per op of the batch (indexes into `WriteBatch::ops`); outbox slots filled by the caller.
    results: Vec<(usize, u64)>,
    /// A row this plan writes, to resolve an unknown outcome: its id, our new `wid` (None = we delete it)
    /// and its pre-read `wid` (None = it was absent).
    probe: Option<(RowId, Option<i64>, Option<i64>)>,
}

/// Plans one partition's ops (`(index, op)`, puts/deletes only) against the pre-read rows `current`:
/// checks conditions in order (later ops see earlier ones; expired rows count as absent), computes
/// versions, and emits one guarded statement per touched row (`guarded = true`, LWT) or plain writes.
/// `outbox` are `(id, encoded record)` rows colocated in this partition (`OUTBOX_HOME_TABLE`, ck `(id)`).
#[allow(clippy::too_many_arguments, reason = "one pure planning step; a struct would only rename them")]
fn plan_partition(
    pk: &Key,
    ops: &[(usize, &Op)],
    current: &HashMap<RowId, Stored>,
    outbox: &[(u64, Vec<u8>)],
    now_ms: u64,
    guarded: bool,
    next_wid: &mut dyn FnMut() -> i64,
) -> Result<PartitionPlan> {
    let pk_col = key_col(&pk.encode());
    let mut view: HashMap<RowId, Option<Stored>> = HashMap::new();
    let mut order: Vec<RowId> = Vec::new();
    let mut ttls: HashMap<RowId, i32> = HashMap::new();
    let mut plan = PartitionPlan::default();
    for (i, op) in ops {
        let (table, ck, condition) = match op {
            Op::Put { table, ck, condition, .. } | Op::Delete { table, ck, condition, .. } => (table, ck, condition),
            Op::Outbox { .. } => continue,
        };
        let id: RowId = (table.clone(), key_col(&ck.encode()));
        if !view.contains_key(&id) {
            view.insert(id.clone(), current.get(&id).cloned());
            order.push(id.clone());
        }
        let cur = view.get(&id).cloned().flatten();
        let live = cur.as_ref().filter(|s| s.live(now_ms));
        let holds = match condition {
            Condition::None => true,
            Condition::Absent => live.is_none(),
            Condition::Version(v) => live.is_some_and(|s| s.version == *v),
            Condition::Value(v) => live.is_some_and(|s| s.value == *v),
        };
        if !holds {
            return Err(StoreError::Conflict { current: live.map_or(0, |s| s.version) });
        }
        match op {
            Op::Put { value, expires_at_ms, .. } => {
                let version = cur.as_ref().map_or(1, |s| s.version + 1);
                ttls.insert(id.clone(), ttl_secs(*expires_at_ms, now_ms));
                view.insert(id, Some(Stored { value: value.clone(), version, expires_at_ms: *expires_at_ms, wid: 0 }));
                plan.results.push((*i, version));
            }
            _ => {
                view.insert(id, None);
                plan.results.push((*i, 0));
            }
        }
    }
    let single_op = ops.len() == 1 && outbox.is_empty();
    let mut probe_rank = i64::MIN;
    for id in order {
        let before = current.get(&id);
        let after = view.remove(&id).flatten();
        let (tbl, ck_col) = (Val::Text(id.0.clone()), Val::Blob(id.1.clone()));
        let row_vals = |s: &Stored, wid: i64| {
            vec![
                Val::Blob(s.value.clone()),
                Val::BigInt(to_i64(s.version)),
                s.expires_at_ms.map_or(Val::Null, |e| Val::BigInt(to_i64(e))),
                Val::BigInt(wid),
            ]
        };
        let key_vals = || vec![Val::Blob(pk_col.clone()), tbl.clone(), ck_col.clone()];
        let mut new_wid = None;
        match (before, after) {
            (_, Some(s)) if !guarded => {
                let wid = next_wid();
                new_wid = Some(wid);
                let ttl = ttls.get(&id).copied().unwrap_or(0);
                let mut values = key_vals();
                values.extend(row_vals(&s, wid));
                values.push(Val::Int(ttl));
                plan.statements.push(Planned { stmt: Stmt::Upsert, values });
            }
            (Some(_), None) if !guarded => plan.statements.push(Planned { stmt: Stmt::Delete, values: key_vals() }),
            (None, None) if !guarded => {}
            (None, Some(s)) => {
                let wid = next_wid();
                new_wid = Some(wid);
                let mut values = key_vals();
                values.extend(row_vals(&s, wid));
                values.push(Val::Int(ttls.get(&id).copied().unwrap_or(0)));
                plan.statements.push(Planned { stmt: Stmt::InsertNew, values });
            }
            (Some(old), Some(s)) => {
                let wid = next_wid();
                new_wid = Some(wid);
                let ttl = ttls.get(&id).copied().unwrap_or(0);
                let mut values = vec![Val::Int(ttl)];
                values.extend(row_vals(&s, wid));
                values.extend(key_vals());
                values.push(Val::BigInt(old.wid));
                plan.statements.push(Planned { stmt: Stmt::UpdateGuarded, values });
                let mut touch = key_vals();
                touch.push(Val::Int(ttl));
                plan.statements.push(Planned { stmt: Stmt::Touch, values: touch });
            }
            (Some(old), None) => {
                let mut values = key_vals();
                values.push(Val::BigInt(old.wid));
                plan.statements.push(Planned { stmt: Stmt::DeleteGuarded, values });
            }
            (None, None) if single_op => {}
            (None, None) => {
                // Guard "still absent" without a visible row: an already-expired marker row (version 0,
                // expires_at_ms 0), purged by the engine after a minute (long enough to resolve an
                // unknown outcome with it).
                let wid = next_wid();
                let dead = Stored { value: Vec::new(), version: 0, expires_at_ms: Some(0), wid };
                let mut values = key_vals();
                values.extend(row_vals(&dead, wid));
                values.push(Val::Int(DEAD_MARKER_TTL_SECS));
                plan.statements.push(Planned { stmt: Stmt::InsertNew, values });
                new_wid = Some(wid);
            }
        }
        // The probe: the row whose written state lasts longest (no TTL best; a delete cannot tell
        // "applied" from "deleted by someone else").
        let rank = match new_wid {
            None => -1,
            Some(_) => match ttls.get(&id).copied().unwrap_or(DEAD_MARKER_TTL_SECS) {
                0 => i64::MAX,
                ttl => i64::from(ttl),
            },
        };
        if guarded && probe_rank < rank {
            probe_rank = rank;
            plan.probe = Some((id.clone(), new_wid, before.map(|s| s.wid)));
        }
    }
    for (id, value) in outbox {
        let wid = next_wid();
        let row = Stored { value: value.clone(), version: 1, expires_at_ms: None, wid };
        let mut values = vec![
            Val::Blob(pk_col.clone()),
            Val::Text(OUTBOX_HOME_TABLE.to_owned()),
            Val::Blob(key_col(&Key::empty().u64(*id).encode())),
        ];
        values.extend([Val::Blob(row.value), Val::BigInt(1), Val::Null, Val::BigInt(wid), Val::Int(0)]);
        plan.statements.push(Planned { stmt: if guarded { Stmt::InsertNew } else { Stmt::Upsert }, values });
    }
    Ok(plan)
}

/// The `[applied]` flag of an LWT result row (its first column).
fn applied_of(row: &scylla::value::Row) -> Option<bool> {
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Some(*b),
        _ => None,
    }
}

/// What a SERIAL read of the probe row says about an LWT whose outcome was unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    Applied,
    NotApplied,
    Unknown,
}

fn resolve(found_wid: Option<i64>, ours: Option<i64>, before: Option<i64>) -> Resolution {
    match (found_wid, ours) {
        (Some(w), Some(o)) if w == o => Resolution::Applied,
        _ if found_wid == before => Resolution::NotApplied,
        _ => Resolution::Unknown,
    }
}

/// Outbox id from wall-clock ms and random low bits: `ms << 21 | low`, below 2^63 until the year 2109.
fn outbox_id(ms: u64, low: u64) -> u64 {
    ((ms & ((1 << 42) - 1)) << 21) | (low & ((1 << 21) - 1))
}

/// splitmix64: spreads a counter into well-mixed bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Errors after which the statement certainly did not apply (never sent, or refused before Paxos).
fn certainly_not_applied(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(_)
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::UseKeyspaceError(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::SyntaxError
                | DbError::Invalid
                | DbError::Unauthorized
                | DbError::ConfigError
        ),
        ExecutionError::LastAttemptError(
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::UnableToAllocStreamId,
        ) => true,
        _ => false,
    }
}

fn scy(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("scylla: {e}"))
}

/// A request error: refused statements (syntax, invalid, unauthorized, configuration) are `BadConfig`;
/// everything else (connection, timeout, overload, unavailable replicas) is `Unavailable`, retryable.
fn exec_err(e: ExecutionError) -> StoreError {
    match &e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::SyntaxError
            | DbError::Invalid
            | DbError::Unauthorized
            | DbError::AuthenticationError
            | DbError::ConfigError,
            _,
        )) => StoreError::bad_config(format!("scylla refused a statement: {e}")),
        _ => scy(e),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The backend: logic over the `Cql` calls (the driver in production, an in-memory model in the tests).
// ---------------------------------------------------------------------------------------------------------

/// A failed CQL request.
#[derive(Debug)]
struct CqlError {
    /// The error to report.
    error: StoreError,
    /// A write may have applied anyway (timeout, broken connection, malformed answer).
    unknown_outcome: bool,
}

impl From<CqlError> for StoreError {
    fn from(e: CqlError) -> Self {
        e.error
    }
}

type CqlResult<T> = std::result::Result<T, CqlError>;

/// The CQL requests the backend makes. Keys are column values (`key_col`), bounds too.
trait Cql: Send + Sync + 'static {
    /// `(v, version, expires_at_ms, wid)` of one row; `serial` = a SERIAL read (finishes Paxos rounds).
    fn get<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        ck: &'a [u8],
        serial: bool,
    ) -> BoxFuture<'a, CqlResult<Option<RawCols>>>;
    /// The rows with these clustering keys (at most `IN_CHUNK`).
    fn read_many<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        cks: &'a [Vec<u8>],
    ) -> BoxFuture<'a, CqlResult<Vec<ScanCols>>>;
    /// Up to `limit` rows within the bounds, in `direction` order.
    fn scan<'a>(
        &'a self,
        pk: &'a [u8],
        tbl: &'a str,
        lo: &'a Bound<Vec<u8>>,
        hi: &'a Bound<Vec<u8>>,
        direction: Direction,
        limit: usize,
    ) -> BoxFuture<'a, CqlResult<Vec<ScanCols>>>;
    /// One batch: LWT (`lwt`, returns `[applied]`) or LOGGED (returns `true`).
    fn batch<'a>(&'a self, lwt: bool, statements: &'a [Planned]) -> BoxFuture<'a, CqlResult<bool>>;
    /// Writes an outbox intent `(id, home)`.
    fn outbox_intent<'a>(&'a self, id: i64, home: &'a [u8], created_ms: i64) -> BoxFuture<'a, CqlResult<()>>;
    /// Up to `limit` index entries after `(id, home)`, in order.
    fn outbox_scan(&self, after: (i64, Vec<u8>), limit: usize) -> BoxFuture<'_, CqlResult<Vec<OutboxCols>>>;
    /// The homes of the index entries with this id.
    fn outbox_homes(&self, id: i64) -> BoxFuture<'_, CqlResult<Vec<Vec<u8>>>>;
    /// Deletes the index entry `(id, home)`, or every entry of `id`.
    fn outbox_delete<'a>(&'a self, id: i64, home: Option<&'a [u8]>) -> BoxFuture<'a, CqlResult<()>>;
    /// `DELETE … IF EXISTS` of one row.
    fn delete_if_exists<'a>(&'a self, pk: &'a [u8], tbl: &'a str, ck: &'a [u8]) -> BoxFuture<'a, CqlResult<()>>;
    /// Releases connections; later requests fail.
    fn close(&self);
}

/// The ScyllaDB backend. See the module doc.
pub struct ScyllaBackend {
    cql: Box<dyn Cql>,
    keyspace: String,
    closed: AtomicBool,
    /// Last outbox id handed out (strictly increasing per process).
    last_outbox_id: AtomicU64,
    /// Per-process random salt and counter for write ids and outbox id low bits.
    salt: u64,
    counter: AtomicU64,
}

impl ScyllaBackend {
    /// Connects to `host:port[,host:port…][/keyspace]`, creating the keyspace and schema if needed.
    pub async fn open(uri: &str) -> Result<Self> {
        let target = parse_uri(uri)?;
        Self::open_target(&target).await
    }

    /// Connects to `target`, creating the keyspace and schema if needed.
    pub async fn open_target(target: &ScyllaTarget) -> Result<Self> {
        let cql = driver::DriverCql::connect(target).await?;
        tracing::info!(keyspace = %target.keyspace, schema = SCHEMA_VERSION, nodes = ?target.nodes, "scylla store open");
        Ok(Self::with_cql(Box::new(cql), &target.keyspace))
    }

    fn with_cql(cql: Box<dyn Cql>, keyspace: &str) -> Self {
        Self {
            cql,
            keyspace: keyspace.to_owned(),
            closed: AtomicBool::new(false),
            last_outbox_id: AtomicU64::new(0),
            salt: std::collections::hash_map::RandomState::new().build_hasher().finish(),
            counter: AtomicU64::new(0),
        }
    }

    /// The keyspace in use.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::unavailable("scylla store is closed"));
        }
        Ok(())
    }

    fn random(&self) -> u64 {
        mix(self.salt ^ mix(self.counter.fetch_add(1, Ordering::Relaxed)))
    }

    fn next_wid(&self) -> i64 {
        // Any 64-bit pattern is a valid write id.
        self.random() as i64
    }

    /// `n` fresh outbox ids, increasing.
    fn outbox_ids(&self, n: usize) -> Vec<u64> {
        let ms = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let candidate = outbox_id(ms, self.random());
            let mut last = self.last_outbox_id.load(Ordering::Acquire);
            loop {
                let id = candidate.max(last + 1);
                match self.last_outbox_id.compare_exchange(last, id, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        ids.push(id);
                        break;
                    }
                    Err(seen) => last = seen,
                }
            }
        }
        ids
    }

    async fn get_row(&self, table: &str, pk: &Key, ck: &Key, now_ms: u64) -> Result<Option<Row>> {
        self.check_open()?;
        let found = self.get_stored(table, pk, ck, false).await?;
        Ok(found.filter(|s| s.live(now_ms)).map(|s| to_store_row(ck.clone(), s)))
    }

    async fn get_stored(&self, table: &str, pk: &Key, ck: &Key, serial: bool) -> Result<Option<Stored>> {
        let (pk_col, ck_col) = (key_col(&pk.encode()), key_col(&ck.encode()));
        let raw = self.cql.get(&pk_col, table, &ck_col, serial).await?;
        raw.map(|raw| stored_from(table, pk, ck, raw)).transpose()
    }

    async fn scan_rows(&self, table: &str, pk: &Key, scan: &Scan, now_ms: u64) -> Result<Page> {
        self.check_open()?;
        if table == OUTBOX_TABLE {
            return self.drain_outbox(scan, now_ms).await;
        }
        let (mut lo, mut hi) = scan.effective_bounds();
        let pk_col = key_col(&pk.encode());
        let want = scan.limit.max(1);
        let mut page = Page::default();
        let mut live: Vec<Row> = Vec::new();
        loop {
            let n = (want + 1 - live.len()).min(SCAN_CHUNK);
            let (lo_col, hi_col) = (bound_to_col(&lo), bound_to_col(&hi));
            let rows = self.cql.scan(&pk_col, table, &lo_col, &hi_col, scan.direction, n).await?;
            let got = rows.len();
            let mut last_col = None;
            for (ck_col, v, version, expires, wid) in rows {
                let ck = ck_from_col(table, pk, &ck_col)?;
                let stored = stored_from(table, pk, &ck, (v, version, expires, wid))?;
                last_col = Some(ck_col);
                if stored.live(now_ms) {
                    live.push(to_store_row(ck, stored));
                }
            }
            let Some(last) = last_col.and_then(|c| key_of_col(&c).map(<[u8]>::to_vec)) else { break };
            if live.len() > want || got < n {
                break;
            }
            match scan.direction {
                Direction::Ascending => lo = Bound::Excluded(last),
                Direction::Descending => hi = Bound::Excluded(last),
            }
        }
        if live.len() > want {
            live.truncate(want);
            page.next = live.last().map(|r| Cursor(r.ck.encode()));
        }
        page.rows = live;
        Ok(page)
    }

    /// Reads the rows of `partition` that `ops` touch (physically present, expired or not).
    async fn pre_read(&self, pk: &Key, ops: &[(usize, &Op)]) -> Result<HashMap<RowId, Stored>> {
        let pk_col = key_col(&pk.encode());
        let mut by_table: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
        for (_, op) in ops {
            if let Op::Put { table, ck, .. } | Op::Delete { table, ck, .. } = op {
                let col = key_col(&ck.encode());
                match by_table.iter_mut().find(|(t, _)| *t == table.as_str()) {
                    Some((_, cks)) if cks.contains(&col) => {}
                    Some((_, cks)) => cks.push(col),
                    None => by_table.push((table.as_str(), vec![col])),
                }
            }
        }
        let mut found = HashMap::new();
        for (table, cks) in by_table {
            for chunk in cks.chunks(IN_CHUNK) {
                for (ck_col, v, version, expires, wid) in self.cql.read_many(&pk_col, table, chunk).await? {
                    let ck = ck_from_col(table, pk, &ck_col)?;
                    let stored = stored_from(table, pk, &ck, (v, version, expires, wid))?;
                    found.insert((table.to_owned(), ck_col), stored);
                }
            }
        }
        Ok(found)
    }

    async fn commit_batch(&self, batch: &WriteBatch, now_ms: u64) -> Result<Vec<u64>> {
        self.check_open()?;
        match classify(batch)? {
            BatchShape::Empty => Ok(Vec::new()),
            BatchShape::AckOutbox(ids) => self.ack_outbox(&ids).await.map(|()| vec![0; batch.ops.len()]),
            BatchShape::OutboxOnly | BatchShape::ManyUnconditional => self.commit_logged(batch, now_ms).await,
            BatchShape::OnePartition(_) => self.commit_partition(batch, now_ms).await,
        }
    }

    /// Several partitions, unconditional (or only outbox entries): one LOGGED batch.
    async fn commit_logged(&self, batch: &WriteBatch, now_ms: u64) -> Result<Vec<u64>> {
        let mut results = vec![0; batch.ops.len()];
        let mut statements = Vec::new();
        let mut groups: Vec<(Key, Vec<(usize, &Op)>)> = Vec::new();
        let mut outbox = Vec::new();
        for (i, op) in batch.ops.iter().enumerate() {
            match op {
                Op::Put { pk, .. } | Op::Delete { pk, .. } => match groups.iter_mut().find(|(k, _)| k == pk) {
                    Some((_, ops)) => ops.push((i, op)),
                    None => groups.push((pk.clone(), vec![(i, op)])),
                },
                Op::Outbox { value } => outbox.push((i, value)),
            }
        }
        for (pk, ops) in &groups {
            let current = self.pre_read(pk, ops).await?;
            let plan = plan_partition(pk, ops, &current, &[], now_ms, false, &mut || self.next_wid())?;
            statements.extend(plan.statements);
            for (i, v) in plan.results {
                set(&mut results, i, v);
            }
        }
        let ids = self.outbox_ids(outbox.len());
        for ((i, value), id) in outbox.into_iter().zip(ids) {
            statements.push(Planned {
                stmt: Stmt::OutboxInline,
                values: vec![
                    Val::Int(OUTBOX_BUCKET),
                    Val::BigInt(to_i64(id)),
                    Val::Blob(Vec::new()),
                    Val::Blob(value.clone()),
                    Val::BigInt(to_i64(now_ms)),
                ],
            });
            set(&mut results, i, id);
        }
        if !statements.is_empty() {
            self.cql.batch(false, &statements).await?;
        }
        Ok(results)
    }

    /// One partition: pre-read, plan, LWT batch; retried while guards lose to concurrent writers.
    async fn commit_partition(&self, batch: &WriteBatch, now_ms: u64) -> Result<Vec<u64>> {
        let mut ops: Vec<(usize, &Op)> = Vec::new();
        let mut outbox_slots: Vec<(usize, &Vec<u8>)> = Vec::new();
        let mut pk = None;
        for (i, op) in batch.ops.iter().enumerate() {
            match op {
                Op::Put { pk: p, .. } | Op::Delete { pk: p, .. } => {
                    pk.get_or_insert_with(|| p.clone());
                    ops.push((i, op));
                }
                Op::Outbox { value } => outbox_slots.push((i, value)),
            }
        }
        let pk = pk.ok_or_else(|| StoreError::unavailable("scylla: partition batch without a partition"))?;
        let home = key_col(&pk.encode());
        for _ in 0..COMMIT_ATTEMPTS {
            let current = self.pre_read(&pk, &ops).await?;
            let ids = self.outbox_ids(outbox_slots.len());
            let outbox: Vec<(u64, Vec<u8>)> =
                ids.iter().copied().zip(outbox_slots.iter().map(|(_, v)| (*v).clone())).collect();
            let plan = plan_partition(&pk, &ops, &current, &outbox, now_ms, true, &mut || self.next_wid())?;
            let mut results = vec![0; batch.ops.len()];
            for (i, v) in &plan.results {
                set(&mut results, *i, *v);
            }
            for ((i, _), id) in outbox_slots.iter().zip(&ids) {
                set(&mut results, *i, *id);
            }
            if plan.statements.is_empty() {
                return Ok(results);
            }
            // Intents first: the drainer publishes an entry once its colocated row exists.
            for id in &ids {
                if let Err(e) = self.cql.outbox_intent(to_i64(*id), &home, to_i64(now_ms)).await {
                    self.drop_intents(&ids, &home).await;
                    return Err(e.error);
                }
            }
            let outcome = match self.cql.batch(true, &plan.statements).await {
                Ok(true) => Resolution::Applied,
                Ok(false) => Resolution::NotApplied,
                Err(e) if !e.unknown_outcome => {
                    self.drop_intents(&ids, &home).await;
                    return Err(e.error);
                }
                Err(e) => {
                    tracing::debug!(error = %e.error, "scylla LWT outcome unknown; resolving with a serial read");
                    match self.resolve_probe(&pk, &plan).await {
                        Resolution::Unknown => {
                            return Err(StoreError::unavailable(format!(
                                "scylla: commit outcome unknown: {}",
                                e.error
                            )));
                        }
                        r => r,
                    }
                }
            };
            if outcome == Resolution::Applied {
                return Ok(results);
            }
            self.drop_intents(&ids, &home).await;
            tokio::time::sleep(Duration::from_millis(1 + self.random() % 5)).await;
        }
        Err(StoreError::unavailable("scylla: commit lost to concurrent writers too many times"))
    }

    async fn resolve_probe(&self, pk: &Key, plan: &PartitionPlan) -> Resolution {
        let Some(((table, ck_col), ours, before)) = &plan.probe else { return Resolution::Unknown };
        match self.cql.get(&key_col(&pk.encode()), table, ck_col, true).await {
            Ok(found) => resolve(found.and_then(|r| r.3), *ours, *before),
            Err(_) => Resolution::Unknown,
        }
    }

    /// Best effort: removes intents of an LWT that did not apply (else the drainer drops them later).
    async fn drop_intents(&self, ids: &[u64], home: &[u8]) {
        for id in ids {
            if let Err(e) = self.cql.outbox_delete(to_i64(*id), Some(home)).await {
                tracing::debug!(error = %e.error, id, "scylla: outbox intent left for the drainer");
            }
        }
    }

    /// `pending_outbox`: index entries in id order; intents resolved against their colocated rows.
    async fn drain_outbox(&self, scan: &Scan, now_ms: u64) -> Result<Page> {
        if scan.direction != Direction::Ascending {
            return Err(StoreError::bad_config("the scylla outbox is read in ascending id order only"));
        }
        let want = scan.limit.max(1);
        let mut after = outbox_start(&scan.effective_bounds().0)?;
        let mut page = Page::default();
        loop {
            let n = (want + 1 - page.rows.len()).min(SCAN_CHUNK);
            let entries = self.cql.outbox_scan(after.clone(), n).await?;
            let got = entries.len();
            for (id, home, v, created) in entries {
                after = (id, home.clone());
                let Ok(uid) = u64::try_from(id) else { continue };
                let value = match v {
                    Some(v) => Some(v),
                    None => match self.resolve_intent(uid, &home, created, now_ms).await? {
                        IntentState::Published(v) => Some(v),
                        IntentState::Dropped => None,
                        IntentState::InFlight => return Ok(finish(page, want)),
                    },
                };
                if let Some(value) = value {
                    page.rows.push(Row { ck: Key::empty().u64(uid), value, version: 1, expires_at_ms: None });
                    if page.rows.len() > want {
                        return Ok(finish(page, want));
                    }
                }
            }
            if got < n {
                return Ok(finish(page, want));
            }
        }
    }

    async fn resolve_intent(&self, id: u64, home: &[u8], created: Option<i64>, now_ms: u64) -> Result<IntentState> {
        let pk = match key_of_col(home).map(Key::decode) {
            Some(Ok(pk)) => pk,
            _ => return Err(corrupt(OUTBOX_TABLE, &Key::empty(), &Key::empty().u64(id), "bad home partition")),
        };
        let ck = Key::empty().u64(id);
        if let Some(s) = self.get_stored(OUTBOX_HOME_TABLE, &pk, &ck, false).await? {
            return Ok(IntentState::Published(s.value));
        }
        let age = now_ms.saturating_sub(created.and_then(|c| u64::try_from(c).ok()).unwrap_or(0));
        if age < OUTBOX_GRACE_MS {
            return Ok(IntentState::InFlight);
        }
        // Old: a SERIAL read finishes any in-progress Paxos round before we decide.
        if let Some(s) = self.get_stored(OUTBOX_HOME_TABLE, &pk, &ck, true).await? {
            return Ok(IntentState::Published(s.value));
        }
        self.cql.outbox_delete(to_i64(id), Some(home)).await?;
        tracing::debug!(id, "scylla: dropped an outbox intent whose commit never applied");
        Ok(IntentState::Dropped)
    }

    /// Deletes acknowledged entries: colocated rows first (LWT, as they were written), then the index.
    async fn ack_outbox(&self, ids: &[u64]) -> Result<()> {
        for id in ids {
            let ck_col = key_col(&Key::empty().u64(*id).encode());
            for home in self.cql.outbox_homes(to_i64(*id)).await?.into_iter().filter(|h| !h.is_empty()) {
                self.cql.delete_if_exists(&home, OUTBOX_HOME_TABLE, &ck_col).await?;
            }
            self.cql.outbox_delete(to_i64(*id), None).await?;
        }
        Ok(())
    }
}

/// A scan bound on an encoded key as a bound on the `ck` column.
fn bound_to_col(b: &Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(key_col(k)),
        Bound::Excluded(k) => Bound::Excluded(key_col(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// What the drainer found for an outbox intent.
enum IntentState {
    /// The commit applied: this is the entry.
    Published(Vec<u8>),
    /// Old and never applied: removed.
    Dropped,
    /// Young and not (yet) applied: stop here to keep id order.
    InFlight,
}

/// Where an outbox scan starts: the `(id, home)` to read strictly after, for a lower bound on `(id)`.
/// Homes are empty or start with `KEY_PREFIX` (0x00), so `[0xFF]` sorts after every home of an id.
fn outbox_start(lower: &Bound<Vec<u8>>) -> Result<(i64, Vec<u8>)> {
    let (encoded, inclusive) = match lower {
        Bound::Unbounded => return Ok((-1, Vec::new())),
        Bound::Included(k) => (k, true),
        Bound::Excluded(k) => (k, false),
    };
    let key = Key::decode(encoded).map_err(|e| StoreError::bad_config(format!("bad outbox bound: {e}")))?;
    match key.0.as_slice() {
        [crate::key::KeyPart::U64(id)] if inclusive => Ok((to_i64(*id).saturating_sub(1), vec![0xFF])),
        [crate::key::KeyPart::U64(id)] => Ok((to_i64(*id), vec![0xFF])),
        _ => Err(StoreError::bad_config("outbox scans take an (id) bound")),
    }
}

fn finish(mut page: Page, want: usize) -> Page {
    if page.rows.len() > want {
        page.rows.truncate(want);
        page.next = page.rows.last().map(|r| Cursor(r.ck.encode()));
    }
    page
}

fn set(results: &mut [u64], i: usize, v: u64) {
    if let Some(slot) = results.get_mut(i) {
        *slot = v;
    }
}

impl Backend for ScyllaBackend {
    fn name(&self) -> &'static str {
        "scylla"
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
            self.closed.store(true, Ordering::Release);
            self.cql.close();
            Ok(())
        }
        .boxed()
    }
}

mod driver;
#[cfg(test)]
mod tests;
