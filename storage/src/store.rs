//! [`Store`]: the API callers use. A cheap-to-clone handle over one [`Backend`] and one [`Clock`]; event
//! logs, snapshots, leases and the outbox are built here on the backend's get/scan/commit, once for all
//! backends.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use troupe_config::{StoreBackend, StoreConfig};

use crate::backend::Backend;
use crate::clock::{Clock, SystemClock, duration_ms};
use crate::error::{Result, StoreError};
use crate::key::Key;
use crate::model::{
    Condition, EVENTS_TABLE, Expected, LEASES_TABLE, OUTBOX_TABLE, Page, Row, SNAPSHOTS_TABLE, Scan, WriteBatch,
};
use crate::typed::{self, LeaseRecord, OutboxRecord, SnapshotRecord};

/// Most attempts a lease operation makes when it races another writer.
const LEASE_ATTEMPTS: usize = 16;

/// One event of an aggregate's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1-based, gap-free.
    pub version: u64,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// The latest snapshot of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The event version the state includes.
    pub version: u64,
    /// Opaque state.
    pub state: Vec<u8>,
}

/// A held lease. `token` is the fencing token: strictly greater than every token issued before for
/// this name; pass it with writes to the resource the lease guards and reject older tokens there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Lease name.
    pub name: String,
    /// Holder.
    pub owner: String,
    /// Fencing token.
    pub token: u64,
    /// Expiry (clock ms).
    pub expires_at_ms: u64,
}

/// One outbox entry awaiting publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Assigned at commit; increasing in commit order.
    pub id: u64,
    /// Destination topic / routing key.
    pub topic: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// The store handle. Clone freely; all clones share the backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend.name()).finish()
    }
}

impl Store {
    /// Opens the backend `config` names; the fjall store lives in `<data_dir>/store`.
    pub async fn open(config: &StoreConfig, data_dir: &Path) -> Result<Self> {
        match config.backend {
            StoreBackend::Fjall => {
                let backend = crate::fjall_backend::FjallBackend::open(data_dir.join("store")).await?;
                Ok(Self::new(Arc::new(backend), Arc::new(SystemClock)))
            }
            StoreBackend::Postgres => {
                let url = config
                    .url
                    .as_ref()
                    .ok_or_else(|| StoreError::bad_config("store.backend = \"postgres\" needs store.url"))?;
                let backend = crate::postgres_backend::PostgresBackend::open(url.expose()).await?;
                Ok(Self::new(Arc::new(backend), Arc::new(SystemClock)))
            }
            #[cfg(feature = "scylla")]
            StoreBackend::Scylla => {
                let nodes: Vec<String> = config.scylla_nodes().iter().map(ToString::to_string).collect();
                if nodes.is_empty() {
                    return Err(StoreError::bad_config(
                        "store.backend = \"scylla\" needs store.url (a host:port list)",
                    ));
                }
                let target = crate::scylla_backend::ScyllaTarget {
                    nodes,
                    keyspace: crate::scylla_backend::DEFAULT_KEYSPACE.to_owned(),
                };
                let backend = crate::scylla_backend::ScyllaBackend::open_target(&target).await?;
                Ok(Self::new(Arc::new(backend), Arc::new(SystemClock)))
            }
            #[cfg(not(feature = "scylla"))]
            StoreBackend::Scylla => Err(StoreError::bad_config(
                "store.backend = \"scylla\" is not available: this binary was built without the `scylla` cargo \
                 feature (rebuild with `--features scylla`)",
            )),
        }
    }

    /// A store over `backend` reading time from `clock`.
    pub fn new(backend: Arc<dyn Backend>, clock: Arc<dyn Clock>) -> Self {
        Self { backend, clock }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Now, per the store's clock (ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// "Expires at" for a time-to-live from now.
    pub fn expires_in(&self, ttl: Duration) -> u64 {
        self.now_ms().saturating_add(duration_ms(ttl))
    }

    /// Releases the backend (directory lock, connections).
    pub async fn close(&self) -> Result<()> {
        self.backend.close().await
    }

    // ---- rows ----

    /// Writes a row; returns its new version.
    pub async fn put(&self, table: &str, pk: &Key, ck: &Key, value: impl Into<Vec<u8>>) -> Result<u64> {
        self.put_row(table, pk, ck, value.into(), None, Condition::None).await
    }

    /// Writes a row that disappears at `expires_at_ms` (clock ms); returns its new version.
    pub async fn put_until(
        &self,
        table: &str,
        pk: &Key,
        ck: &Key,
        value: impl Into<Vec<u8>>,
        expires_at_ms: u64,
    ) -> Result<u64> {
        self.put_row(table, pk, ck, value.into(), Some(expires_at_ms), Condition::None).await
    }

    /// Writes a row only if absent (or expired); `Conflict` otherwise. Returns the new version (1 unless
    /// an expired row was replaced).
    pub async fn put_if_absent(
        &self,
        table: &str,
        pk: &Key,
        ck: &Key,
        value: impl Into<Vec<u8>>,
        expires_at_ms: Option<u64>,
    ) -> Result<u64> {
        self.put_row(table, pk, ck, value.into(), expires_at_ms, Condition::Absent).await
    }

    /// Replaces a row if it currently has the expected version or value; `Conflict` otherwise.
    pub async fn compare_and_set(
        &self,
        table: &str,
        pk: &Key,
        ck: &Key,
        expected: Expected,
        value: impl Into<Vec<u8>>,
    ) -> Result<u64> {
        self.put_row(table, pk, ck, value.into(), None, expected.into()).await
    }

    async fn put_row(
        &self,
        table: &str,
        pk: &Key,
        ck: &Key,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
        condition: Condition,
    ) -> Result<u64> {
        check_table(table)?;
        let mut batch = WriteBatch::new();
        batch.put_with(table, pk, ck, value, expires_at_ms, condition);
        first(self.backend.commit(batch, self.now_ms()).await?)
    }

    /// Reads a live row.
    pub async fn get(&self, table: &str, pk: &Key, ck: &Key) -> Result<Option<Row>> {
        check_table(table)?;
        self.backend.get(table, pk, ck, self.now_ms()).await
    }

    /// Deletes a row (no error if absent).
    pub async fn delete(&self, table: &str, pk: &Key, ck: &Key) -> Result<()> {
        check_table(table)?;
        let mut batch = WriteBatch::new();
        batch.delete(table, pk, ck, Condition::None);
        self.backend.commit(batch, self.now_ms()).await.map(drop)
    }

    /// One page of one partition.
    pub async fn scan(&self, table: &str, pk: &Key, scan: &Scan) -> Result<Page> {
        check_table(table)?;
        if scan.limit == 0 {
            return Err(StoreError::bad_config("scan limit must be at least 1"));
        }
        self.backend.scan(table, pk, scan, self.now_ms()).await
    }

    /// Commits a batch atomically (user tables, events, outbox); one `u64` per operation.
    pub async fn commit(&self, batch: WriteBatch) -> Result<Vec<u64>> {
        for op in &batch.ops {
            match op {
                crate::model::Op::Put { table, .. } | crate::model::Op::Delete { table, .. } => {
                    if table != EVENTS_TABLE {
                        check_table(table)?;
                    }
                }
                crate::model::Op::Outbox { .. } => {}
            }
        }
        self.commit_raw(batch).await
    }

    async fn commit_raw(&self, batch: WriteBatch) -> Result<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.backend.commit(batch, self.now_ms()).await
    }

    // ---- events ----

    /// Appends events if the aggregate is at `expected_version` (0 = new); returns the new version, or
    /// `Conflict { current }` with the aggregate's actual version.
    pub async fn append_events(&self, aggregate: &str, expected_version: u64, events: Vec<Vec<u8>>) -> Result<u64> {
        if events.is_empty() {
            return Err(StoreError::bad_config("append_events needs at least one event"));
        }
        let new_version = expected_version + events.len() as u64;
        let mut batch = WriteBatch::new();
        batch.append_events(aggregate, expected_version, events);
        match self.commit_raw(batch).await {
            Ok(_) => Ok(new_version),
            Err(StoreError::Conflict { .. }) => {
                Err(StoreError::Conflict { current: self.event_version(aggregate).await? })
            }
            Err(e) => Err(e),
        }
    }

    /// The aggregate's current version (0 = no events).
    pub async fn event_version(&self, aggregate: &str) -> Result<u64> {
        let pk = Key::from(aggregate);
        match self.backend.get(EVENTS_TABLE, &pk, &Key::empty(), self.now_ms()).await? {
            None => Ok(0),
            Some(row) => decode_u64(&row.value).ok_or_else(|| corrupt(EVENTS_TABLE, &pk, &row.ck, "bad head row")),
        }
    }

    /// Up to `limit` events with version ≥ `from_version`, in order.
    pub async fn read_events(&self, aggregate: &str, from_version: u64, limit: usize) -> Result<Vec<Event>> {
        let pk = Key::from(aggregate);
        let scan = Scan::from(&Key::empty().u64(from_version.max(1))).limit(limit.max(1));
        let page = self.backend.scan(EVENTS_TABLE, &pk, &scan, self.now_ms()).await?;
        page.rows
            .into_iter()
            .map(|row| match row.ck.0.as_slice() {
                [crate::key::KeyPart::U64(v)] => Ok(Event { version: *v, payload: row.value }),
                _ => Err(corrupt(EVENTS_TABLE, &pk, &row.ck, "event key is not (version)")),
            })
            .collect()
    }

    // ---- snapshots ----

    /// Stores the aggregate's snapshot at `version`, unless a newer one is stored (then `Conflict`).
    pub async fn save_snapshot(&self, aggregate: &str, version: u64, state: Vec<u8>) -> Result<()> {
        let pk = Key::from(aggregate);
        let value = typed::encode(&SnapshotRecord { version, state });
        let row = self.backend.get(SNAPSHOTS_TABLE, &pk, &Key::empty(), self.now_ms()).await?;
        let condition = match row {
            None => Condition::Absent,
            Some(row) => {
                let old: SnapshotRecord = decode_typed(SNAPSHOTS_TABLE, &pk, &row)?;
                if old.version > version {
                    return Err(StoreError::Conflict { current: old.version });
                }
                Condition::Version(row.version)
            }
        };
        let mut batch = WriteBatch::new();
        batch.put_with(SNAPSHOTS_TABLE, &pk, &Key::empty(), value, None, condition);
        self.commit_raw(batch).await.map(drop)
    }

    /// The latest snapshot, if any.
    pub async fn load_snapshot(&self, aggregate: &str) -> Result<Option<Snapshot>> {
        let pk = Key::from(aggregate);
        match self.backend.get(SNAPSHOTS_TABLE, &pk, &Key::empty(), self.now_ms()).await? {
            None => Ok(None),
            Some(row) => {
                let rec: SnapshotRecord = decode_typed(SNAPSHOTS_TABLE, &pk, &row)?;
                Ok(Some(Snapshot { version: rec.version, state: rec.state }))
            }
        }
    }

    // ---- leases ----

    /// Acquires `name` for `owner` for `ttl`. A free or expired lease gets a new, strictly greater fencing
    /// token; re-acquiring a lease `owner` still holds extends it and keeps its token. Held by another
    /// owner → `LeaseHeld`.
    pub async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let pk = Key::from(name);
        for _ in 0..LEASE_ATTEMPTS {
            let now = self.now_ms();
            let expires_at_ms = now.saturating_add(duration_ms(ttl));
            let row = self.backend.get(LEASES_TABLE, &pk, &Key::empty(), now).await?;
            let (token, condition) = match &row {
                None => (1, Condition::Absent),
                Some(row) => {
                    let rec: LeaseRecord = decode_typed(LEASES_TABLE, &pk, row)?;
                    let live = rec.expires_at_ms > now;
                    if live && rec.owner != owner {
                        return Err(StoreError::LeaseHeld {
                            name: name.to_owned(),
                            owner: rec.owner,
                            expires_at_ms: rec.expires_at_ms,
                        });
                    }
                    let token = if live { rec.token } else { rec.token + 1 };
                    (token, Condition::Version(row.version))
                }
            };
            let rec = LeaseRecord { owner: owner.to_owned(), token, expires_at_ms };
            if self.put_lease(&pk, &rec, condition, now).await? {
                return Ok(Lease { name: name.to_owned(), owner: owner.to_owned(), token, expires_at_ms });
            }
        }
        Err(StoreError::unavailable(format!("lease {name:?}: too much contention")))
    }

    /// Extends a lease this holder still has (same token, even if it lapsed while nobody took it over);
    /// `LeaseLost` when another token was issued or it was released.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let pk = Key::from(lease.name.as_str());
        for _ in 0..LEASE_ATTEMPTS {
            let now = self.now_ms();
            let Some((row, rec)) = self.lease_row(&pk, now).await? else {
                return Err(self.lost(lease));
            };
            if rec.token != lease.token || rec.owner != lease.owner || rec.expires_at_ms == 0 {
                return Err(self.lost(lease));
            }
            let expires_at_ms = now.saturating_add(duration_ms(ttl));
            let new = LeaseRecord { expires_at_ms, ..rec };
            if self.put_lease(&pk, &new, Condition::Version(row.version), now).await? {
                return Ok(Lease { expires_at_ms, ..lease.clone() });
            }
        }
        Err(StoreError::unavailable(format!("lease {:?}: too much contention", lease.name)))
    }

    /// Writes a lease record under `condition`: `Ok(false)` when another writer got there first (the
    /// caller re-reads and retries).
    async fn put_lease(&self, pk: &Key, rec: &LeaseRecord, condition: Condition, now: u64) -> Result<bool> {
        let mut batch = WriteBatch::new();
        batch.put_with(LEASES_TABLE, pk, &Key::empty(), typed::encode(rec), None, condition);
        match self.backend.commit(batch, now).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Releases a lease this holder still has; `false` if it was already lost. The token counter is kept,
    /// so the next acquire gets a greater token.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let pk = Key::from(lease.name.as_str());
        for _ in 0..LEASE_ATTEMPTS {
            let now = self.now_ms();
            let Some((row, rec)) = self.lease_row(&pk, now).await? else { return Ok(false) };
            if rec.token != lease.token || rec.owner != lease.owner || rec.expires_at_ms == 0 {
                return Ok(false);
            }
            let new = LeaseRecord { expires_at_ms: 0, ..rec };
            if self.put_lease(&pk, &new, Condition::Version(row.version), now).await? {
                return Ok(true);
            }
        }
        Err(StoreError::unavailable(format!("lease {:?}: too much contention", lease.name)))
    }

    async fn lease_row(&self, pk: &Key, now: u64) -> Result<Option<(Row, LeaseRecord)>> {
        match self.backend.get(LEASES_TABLE, pk, &Key::empty(), now).await? {
            None => Ok(None),
            Some(row) => {
                let rec = decode_typed(LEASES_TABLE, pk, &row)?;
                Ok(Some((row, rec)))
            }
        }
    }

    fn lost(&self, lease: &Lease) -> StoreError {
        StoreError::LeaseLost { name: lease.name.clone(), token: lease.token }
    }

    // ---- outbox ----

    /// Up to `limit` unacknowledged outbox entries, oldest first.
    pub async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.pending_outbox_after(None, limit).await
    }

    /// Up to `limit` unacknowledged outbox entries with an id greater than `after` (all when `None`),
    /// oldest first: lets a drainer page past entries it holds but has not acknowledged yet.
    pub async fn pending_outbox_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxEntry>> {
        let pk = Key::empty();
        let mut scan = Scan::all().limit(limit.max(1));
        if let Some(after) = after {
            scan.start = std::ops::Bound::Excluded(Key::empty().u64(after).encode());
        }
        let page = self.backend.scan(OUTBOX_TABLE, &pk, &scan, self.now_ms()).await?;
        page.rows
            .into_iter()
            .map(|row| {
                let id = match row.ck.0.as_slice() {
                    [crate::key::KeyPart::U64(id)] => *id,
                    _ => return Err(corrupt(OUTBOX_TABLE, &pk, &row.ck, "outbox key is not (id)")),
                };
                let rec: OutboxRecord = decode_typed(OUTBOX_TABLE, &pk, &row)?;
                Ok(OutboxEntry { id, topic: rec.topic, payload: rec.payload })
            })
            .collect()
    }

    /// Removes published entries (unknown ids are ignored).
    pub async fn ack_outbox(&self, ids: &[u64]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for id in ids {
            batch.delete(OUTBOX_TABLE, &Key::empty(), &Key::empty().u64(*id), Condition::None);
        }
        self.commit_raw(batch).await.map(drop)
    }
}

/// User table names: `[a-z][a-z0-9_]{0,62}` (names starting with `_` are the store's own).
pub fn check_table(table: &str) -> Result<()> {
    let mut chars = table.chars();
    let ok = table.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::bad_config(format!("bad table name {table:?}: use [a-z][a-z0-9_]{{0,62}}")))
    }
}

fn first(results: Vec<u64>) -> Result<u64> {
    results.first().copied().ok_or_else(|| StoreError::unavailable("backend returned no result"))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

pub(crate) fn corrupt(table: &str, pk: &Key, ck: &Key, reason: impl Into<String>) -> StoreError {
    StoreError::CorruptData {
        table: table.to_owned(),
        key: format!("{}/{}", pk.display(), ck.display()),
        reason: reason.into(),
    }
}

fn decode_typed<T: serde::de::DeserializeOwned>(table: &str, pk: &Key, row: &Row) -> Result<T> {
    typed::decode(&row.value).map_err(|reason| corrupt(table, pk, &row.ck, reason))
}
