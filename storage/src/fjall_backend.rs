//! The embedded fjall 3 backend: one fjall keyspace per table, row key = escaped(pk) ‖ ck (both in the
//! order-preserving encoding of `crate::key`), row value = 17-byte header (format, row version, expiry)
//! ‖ payload.
//!
//! Writes go through one writer thread fed by a bounded queue (**group commit**): it takes every request
//! waiting (up to [`MAX_GROUP`]), checks each request's conditions against the store plus the writes of
//! earlier requests in the same group, merges the accepted ones into one fjall batch and commits it with
//! `PersistMode::SyncAll`, then answers them all. One fsync is shared by every writer in the group, and a
//! write is acknowledged only once it is on disk (fjall makes a batch visible after its persist).
//! Point reads run inline (bounded work); scans run on tokio's blocking pool. Expired rows are hidden on read at once, and removed from disk by
//! a compaction filter (`TtlFilter`) when fjall next compacts the table that holds them; "now" for the
//! filter is the latest clock reading the backend has been given, so a test's manual clock governs
//! removal too. A removed row's version starts again at 1 when it is written anew, as after a delete.
//!
//! Layout of the directory: `FORMAT` (this backend's format version, checked at open) and `fjall/`.
//! fjall holds an exclusive file lock on `fjall/`, so a second open (another process or this one) fails
//! with `StoreError::Locked`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use lsm_tree::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};
use tokio::sync::{mpsc, oneshot};

use crate::backend::Backend;
use crate::error::{Result, StoreError};
use crate::key::{Key, KeyPart, escape_into};
use crate::model::{Condition, Direction, EVENTS_TABLE, OUTBOX_TABLE, Op, Page, Row, Scan, WriteBatch};
use crate::store::corrupt;

/// Format version of a fjall store directory written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Most requests merged into one group commit.
pub const MAX_GROUP: usize = 4096;
/// Stop adding requests to a group past this many payload bytes (a group is held in memory).
pub const MAX_GROUP_BYTES: usize = 64 << 20;
/// Capacity of the writer's queue (callers wait for room beyond it).
pub const QUEUE_CAPACITY: usize = 8192;

const FORMAT_FILE: &str = "FORMAT";
const HEADER_MAGIC: u8 = 0xA1;
const HEADER_LEN: usize = 17;
const META_TABLE: &str = "_troupe_meta";
const OUTBOX_NEXT_KEY: &[u8] = b"outbox_next";

/// A stored value: header fields and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    version: u64,
    expires_at_ms: Option<u64>,
    payload: Vec<u8>,
}

impl Stored {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(HEADER_MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, &'static str> {
        let (version, expires_at_ms, payload) = Self::peek(bytes)?;
        Ok(Self { version, expires_at_ms, payload: payload.to_vec() })
    }

    /// Header fields and the payload, without copying.
    fn peek(bytes: &[u8]) -> std::result::Result<(u64, Option<u64>, &[u8]), &'static str> {
        let (header, payload) = bytes.split_at_checked(HEADER_LEN).ok_or("value shorter than its header")?;
        let (magic, rest) = header.split_first().ok_or("empty value")?;
        if *magic != HEADER_MAGIC {
            return Err("unknown value header");
        }
        let (v, e) = rest.split_at_checked(8).ok_or("short header")?;
        let version = u64::from_be_bytes(v.try_into().map_err(|_| "bad version")?);
        let expires = u64::from_be_bytes(e.try_into().map_err(|_| "bad expiry")?);
        Ok((version, (expires != 0).then_some(expires), payload))
    }

    fn live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// The encoded partition prefix: escaped(pk.encode()).
fn partition_prefix(pk: &Key) -> Vec<u8> {
    let mut out = Vec::new();
    escape_into(&pk.encode(), &mut out);
    out
}

fn row_key(pk: &Key, ck: &Key) -> Vec<u8> {
    let mut out = partition_prefix(pk);
    ck.encode_into(&mut out);
    out
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("fjall: {e}"))
}

struct Shared {
    db: Database,
    /// The latest `now_ms` any call brought (the TTL compaction filter's clock).
    now_hint: Arc<AtomicU64>,
    tables: Mutex<HashMap<String, Keyspace>>,
    groups: AtomicU64,
    requests: AtomicU64,
}

/// Group-commit counters since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitStats {
    /// Durable commits (fsyncs) made.
    pub groups: u64,
    /// Write requests acknowledged by them.
    pub requests: u64,
}

impl Shared {
    fn keyspace(&self, table: &str) -> Result<Keyspace> {
        if table.is_empty() || table.len() > 255 {
            return Err(StoreError::bad_config(format!("bad table name {table:?}")));
        }
        let mut tables = self.tables.lock().map_err(|_| StoreError::unavailable("fjall: table map poisoned"))?;
        if let Some(ks) = tables.get(table) {
            return Ok(ks.clone());
        }
        let ks = self.db.keyspace(table, KeyspaceCreateOptions::default).map_err(io)?;
        tables.insert(table.to_owned(), ks.clone());
        Ok(ks)
    }

    fn observe(&self, now_ms: u64) {
        self.now_hint.fetch_max(now_ms, Ordering::AcqRel);
    }

    fn get(&self, table: &str, pk: &Key, ck: &Key, now_ms: u64) -> Result<Option<Row>> {
        self.observe(now_ms);
        let ks = self.keyspace(table)?;
        let Some(bytes) = ks.get(row_key(pk, ck)).map_err(io)? else { return Ok(None) };
        let stored = Stored::decode(&bytes).map_err(|r| corrupt(table, pk, ck, r))?;
        Ok(stored.live(now_ms).then(|| Row {
            ck: ck.clone(),
            value: stored.payload,
            version: stored.version,
            expires_at_ms: stored.expires_at_ms,
        }))
    }

    fn scan(&self, table: &str, pk: &Key, scan: &Scan, now_ms: u64) -> Result<Page> {
        self.observe(now_ms);
        let ks = self.keyspace(table)?;
        let prefix = partition_prefix(pk);
        let with_prefix = |b: &[u8]| {
            let mut k = prefix.clone();
            k.extend_from_slice(b);
            k
        };
        let (start, end) = scan.effective_bounds();
        let lo = match start {
            Bound::Included(b) => Bound::Included(with_prefix(&b)),
            Bound::Excluded(b) => Bound::Excluded(with_prefix(&b)),
            Bound::Unbounded => Bound::Included(prefix.clone()),
        };
        let hi = match end {
            Bound::Included(b) => Bound::Included(with_prefix(&b)),
            Bound::Excluded(b) => Bound::Excluded(with_prefix(&b)),
            Bound::Unbounded => {
                // The prefix ends with the terminator 0x00 0x00; every key of the partition sorts below
                // the prefix with its last byte raised to 0x01, and no other partition's key does.
                let mut hi = prefix.clone();
                if let Some(last) = hi.last_mut() {
                    *last = 0x01;
                }
                Bound::Excluded(hi)
            }
        };
        let iter = ks.range::<Vec<u8>, _>((lo, hi));
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = match scan.direction {
            Direction::Ascending => Box::new(iter),
            Direction::Descending => Box::new(iter.rev()),
        };
        let mut page = Page::default();
        for guard in iter {
            let (k, v) = guard.into_inner().map_err(io)?;
            let ck_bytes = k.get(prefix.len()..).unwrap_or_default();
            let ck = Key::decode(ck_bytes)
                .map_err(|e| corrupt(table, pk, &Key::empty().bytes(ck_bytes.to_vec()), e.to_string()))?;
            let stored = Stored::decode(&v).map_err(|r| corrupt(table, pk, &ck, r))?;
            if !stored.live(now_ms) {
                continue;
            }
            if page.rows.len() == scan.limit {
                page.next = page.rows.last().map(|r| crate::model::Cursor(r.ck.encode()));
                break;
            }
            page.rows.push(Row {
                ck,
                value: stored.payload,
                version: stored.version,
                expires_at_ms: stored.expires_at_ms,
            });
        }
        Ok(page)
    }
}

struct Request {
    batch: WriteBatch,
    now_ms: u64,
    reply: oneshot::Sender<Result<Vec<u64>>>,
}

enum Command {
    Write(Request),
    Close(oneshot::Sender<()>),
    /// From the committer: a group is durable, hand over the next one.
    Wake,
}

/// The fjall backend. See the module doc.
pub struct FjallBackend {
    shared: Mutex<Option<Arc<Shared>>>,
    tx: mpsc::Sender<Command>,
    path: PathBuf,
}

impl FjallBackend {
    /// Opens (creating if needed) the store directory `path`. Errors: `FormatVersion` for a directory
    /// of another format, `BadConfig` for a non-store directory, `Locked` when it is already open.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let p = path.clone();
        let (shared, next_outbox) = tokio::task::spawn_blocking(move || open_blocking(&p)).await.map_err(io)??;
        let shared = Arc::new(shared);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer::new(Arc::clone(&shared), next_outbox);
        let wake = tx.downgrade();
        std::thread::Builder::new()
            .name("troupe-store-writer".to_owned())
            .spawn(move || writer.run(rx, wake))
            .map_err(io)?;
        tracing::info!(path = %path.display(), format = FORMAT_VERSION, "fjall store open");
        Ok(Self { shared: Mutex::new(Some(shared)), tx, path })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        let guard = self.shared.lock().map_err(|_| StoreError::unavailable("fjall: handle poisoned"))?;
        guard.clone().ok_or_else(|| StoreError::unavailable("fjall store is closed"))
    }

    /// Group-commit counters (zero once closed).
    pub fn stats(&self) -> GroupCommitStats {
        self.shared()
            .map(|s| GroupCommitStats {
                groups: s.groups.load(Ordering::Relaxed),
                requests: s.requests.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// Flushes `table`'s memtable and compacts it fully (tests: TTL removal without waiting for fjall).
    #[cfg(test)]
    fn compact_now(&self, table: &str) -> Result<()> {
        let ks = self.shared()?.keyspace(table)?;
        ks.rotate_memtable_and_wait().map_err(io)?;
        ks.major_compact().map_err(io)
    }

    /// Whether `table` holds any bytes under the raw key of (pk, ck), expired or not.
    #[cfg(test)]
    fn raw_contains(&self, table: &str, pk: &Key, ck: &Key) -> Result<bool> {
        self.shared()?.keyspace(table)?.contains_key(row_key(pk, ck)).map_err(io)
    }

    #[cfg(test)]
    fn raw_insert(&self, table: &str, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.shared()?.keyspace(table)?.insert(key, value).map_err(io)
    }
}

impl Drop for FjallBackend {
    /// Dropping the database waits for fjall's worker threads (flushes, compactions): never on the
    /// caller's (possibly tokio) thread. Call [`Backend::close`] to know when the directory is released.
    fn drop(&mut self) {
        let taken = match self.shared.lock() {
            Ok(mut guard) => guard.take(),
            Err(_) => None,
        };
        if let Some(shared) = taken {
            let _ = std::thread::Builder::new().name("troupe-store-drop".to_owned()).spawn(move || drop(shared));
        }
    }
}

fn open_blocking(path: &Path) -> Result<(Shared, u64)> {
    std::fs::create_dir_all(path).map_err(|e| StoreError::bad_config(format!("{}: {e}", path.display())))?;
    let format_path = path.join(FORMAT_FILE);
    let db_path = path.join("fjall");
    let expected = format!("troupe-store fjall {FORMAT_VERSION}\n");
    let fresh = match std::fs::read_to_string(&format_path) {
        Ok(found) if found == expected => false,
        Ok(found) => {
            return Err(StoreError::FormatVersion {
                path: format_path,
                found: found.trim().to_owned(),
                expected: FORMAT_VERSION,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if db_path.exists() {
                return Err(StoreError::bad_config(format!(
                    "{} holds data but no {FORMAT_FILE} file: not a Troupe store",
                    path.display()
                )));
            }
            true
        }
        Err(e) => return Err(StoreError::bad_config(format!("{}: {e}", format_path.display()))),
    };
    if fresh {
        // FORMAT goes first: a process killed between the two steps leaves FORMAT and no data, which
        // the next open completes; the other order would leave data that looks foreign.
        write_format(&format_path, &expected)?;
    }
    let now_hint = Arc::new(AtomicU64::new(0));
    let ttl = Arc::clone(&now_hint);
    let db = Database::builder(&db_path)
        .with_compaction_filter_factories(Arc::new(move |keyspace: &str| {
            (keyspace != META_TABLE).then(|| Arc::new(TtlFilterFactory { now: Arc::clone(&ttl) }) as Arc<dyn Factory>)
        }))
        .open()
        .map_err(|e| match e {
            fjall::Error::Locked => StoreError::Locked { path: path.to_owned() },
            e => io(e),
        })?;
    let shared = Shared {
        db,
        now_hint,
        tables: Mutex::new(HashMap::new()),
        groups: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    };
    let meta = shared.keyspace(META_TABLE)?;
    let next_outbox = match meta.get(OUTBOX_NEXT_KEY).map_err(io)? {
        None => 1,
        Some(v) => {
            let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::CorruptData {
                table: META_TABLE.to_owned(),
                key: "outbox_next".to_owned(),
                reason: "not a u64".to_owned(),
            })?;
            u64::from_be_bytes(arr)
        }
    };
    Ok((shared, next_outbox))
}

/// Makes [`TtlFilter`]s for one keyspace's compactions.
struct TtlFilterFactory {
    now: Arc<AtomicU64>,
}

impl Factory for TtlFilterFactory {
    fn name(&self) -> &str {
        "troupe-ttl"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        Box::new(TtlFilter { now_ms: self.now.load(Ordering::Acquire) })
    }
}

/// Drops rows whose expiry has passed (as of the compaction's start) while fjall compacts.
struct TtlFilter {
    now_ms: u64,
}

impl CompactionFilter for TtlFilter {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> lsm_tree::Result<Verdict> {
        if self.now_ms == 0 {
            return Ok(Verdict::Keep);
        }
        let value = item.value()?;
        Ok(match Stored::peek(&value) {
            Ok((_, Some(at), _)) if at <= self.now_ms => Verdict::Remove,
            // Live, no expiry, or not ours to judge (the reader reports corrupt bytes).
            _ => Verdict::Keep,
        })
    }
}

/// Writes FORMAT atomically: a temporary file, fsynced, renamed over, then the directory fsynced — a
/// crash leaves either no FORMAT or a complete one.
fn write_format(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| StoreError::bad_config(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(contents.as_bytes()).and_then(|()| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

/// The writer thread's state (the stager: checks conditions and builds groups; the committer thread
/// makes them durable).
struct Writer {
    shared: Arc<Shared>,
    next_outbox: u64,
    /// Table name → index into `keyspaces` (the writer's own cache: no lock, no string key per row).
    table_ids: HashMap<String, u32>,
    keyspaces: Vec<Keyspace>,
    /// Groups handed to the committer and not yet known to be applied, oldest first: staging reads
    /// through them, because fjall does not show a group until its commit returns.
    in_flight: std::collections::VecDeque<(u64, Arc<Overlay>)>,
    /// Sequence number of the next group.
    next_seq: u64,
    /// Highest sequence number the committer has applied (or failed).
    done: Arc<AtomicU64>,
    /// Set by the committer after a failed commit: the groups staged on top of it are failed too, and
    /// the store stays unavailable (fjall's journal is in an unknown state) until it is reopened.
    failed: Arc<std::sync::atomic::AtomicBool>,
}

/// One request's staged writes.
struct Staging {
    local: Overlay,
    appends: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
    results: Vec<u64>,
    next_outbox: u64,
}

/// Where a write request's outcome goes.
type Reply = oneshot::Sender<Result<Vec<u64>>>;

/// The group being staged.
struct Open {
    overlay: Overlay,
    /// New event rows (table id, key, value) and outbox acknowledgements (value `None`: removed),
    /// written after the overlay.
    appends: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
    accepted: Vec<(Reply, Vec<u64>)>,
    /// Refused requests are answered after the group is written, so a loser that re-reads at once sees
    /// the winner's write instead of conflicting again on the old state.
    refused: Vec<(Reply, StoreError)>,
    requests: usize,
    bytes: usize,
    outbox_before: u64,
}

impl Open {
    fn new(outbox_before: u64) -> Self {
        Self {
            overlay: Overlay::new(),
            appends: Vec::new(),
            accepted: Vec::new(),
            refused: Vec::new(),
            requests: 0,
            bytes: 0,
            outbox_before,
        }
    }
}

/// A staged group on its way to the committer.
struct Staged {
    seq: u64,
    overlay: Arc<Overlay>,
    appends: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
    /// The outbox counter to persist with this group, if it moved.
    next_outbox: Option<u64>,
    keyspaces: Vec<Keyspace>,
    accepted: Vec<(Reply, Vec<u64>)>,
    refused: Vec<(Reply, StoreError)>,
}

/// What the writer found at a row it is about to write.
struct Found {
    /// Stored version (0 = absent), also of an expired row, so versions keep growing.
    version: u64,
    live: bool,
    holds: bool,
}

/// Key of a row inside one group: (table id, row key).
type GroupKey = (u32, Vec<u8>);
/// Final state of the rows a group writes (None = delete), in key order.
type Overlay = BTreeMap<GroupKey, Option<Vec<u8>>>;

impl Writer {
    fn new(shared: Arc<Shared>, next_outbox: u64) -> Self {
        Self {
            shared,
            next_outbox,
            table_ids: HashMap::new(),
            keyspaces: Vec::new(),
            in_flight: std::collections::VecDeque::new(),
            next_seq: 1,
            done: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>, wake: mpsc::WeakSender<Command>) {
        // One group is staged while the previous one is being made durable (its fsync is most of its
        // time): a channel of one keeps at most one group waiting behind the one committing.
        let (to_committer, from_stager) = std::sync::mpsc::sync_channel::<Staged>(1);
        let committer = {
            let (shared, done, failed) = (Arc::clone(&self.shared), Arc::clone(&self.done), Arc::clone(&self.failed));
            std::thread::Builder::new()
                .name("troupe-store-commit".to_owned())
                .spawn(move || commit_loop(&shared, &done, &failed, &from_stager, &wake))
        };
        let close = match committer {
            Ok(handle) => {
                let close = self.run_stager(&mut rx, &to_committer);
                drop(to_committer);
                let _ = handle.join();
                close
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the fjall committer thread; the store is unavailable");
                self.failed.store(true, Ordering::Release);
                drop(to_committer);
                self.run_stager(&mut rx, &std::sync::mpsc::sync_channel::<Staged>(1).0)
            }
        };
        // Both threads' handles on the database are gone before `close` hears back.
        drop(self);
        if let Some(done) = close {
            let _ = done.send(());
        }
    }

    /// Stages requests into the open group as they arrive and hands the group to the committer as soon as
    /// it is idle, so staging (CPU) overlaps the previous group's fsync and a group holds everything that
    /// arrived while the previous one was being made durable. Returns the close request's reply, if one
    /// came.
    fn run_stager(
        &mut self,
        rx: &mut mpsc::Receiver<Command>,
        to_committer: &std::sync::mpsc::SyncSender<Staged>,
    ) -> Option<oneshot::Sender<()>> {
        let mut open = Open::new(self.next_outbox);
        while let Some(cmd) = rx.blocking_recv() {
            let mut close = None;
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Write(r) => {
                        self.stage_into(&mut open, r);
                        if open.requests >= MAX_GROUP || open.bytes >= MAX_GROUP_BYTES {
                            // Full: wait for the committer to take it (back-pressure on writers).
                            self.hand_over(&mut open, to_committer);
                        }
                    }
                    Command::Close(done) => {
                        close = Some(done);
                        break;
                    }
                    Command::Wake => {}
                }
                next = rx.try_recv().ok();
            }
            if open.requests > 0 && (close.is_some() || self.committer_idle()) {
                self.hand_over(&mut open, to_committer);
            }
            if let Some(done) = close {
                rx.close();
                // Fail whatever is still queued; `run` lets the committer finish what it has.
                while let Ok(cmd) = rx.try_recv() {
                    if let Command::Write(r) = cmd {
                        let _ = r.reply.send(Err(StoreError::unavailable("fjall store is closed")));
                    }
                }
                return Some(done);
            }
        }
        if open.requests > 0 {
            self.hand_over(&mut open, to_committer);
        }
        None
    }

    fn committer_idle(&self) -> bool {
        self.done.load(Ordering::Acquire) + 1 >= self.next_seq
    }

    /// Stages one request into the open group (answering it at once if the store already failed).
    fn stage_into(&mut self, open: &mut Open, req: Request) {
        // Groups the committer has applied are visible in fjall now: stop reading through them.
        let done = self.done.load(Ordering::Acquire);
        while self.in_flight.front().is_some_and(|(seq, _)| *seq <= done) {
            self.in_flight.pop_front();
        }
        if self.failed.load(Ordering::Acquire) {
            let _ = req.reply.send(Err(StoreError::unavailable("fjall store failed a commit; reopen it")));
            return;
        }
        open.requests += 1;
        open.bytes += req.batch.payload_bytes();
        match self.stage(req.batch, req.now_ms, &open.overlay) {
            Ok(staging) => {
                open.overlay.extend(staging.local);
                open.appends.extend(staging.appends);
                self.next_outbox = staging.next_outbox;
                open.accepted.push((req.reply, staging.results));
            }
            Err(e) => open.refused.push((req.reply, e)),
        }
    }

    /// Sends the open group to the committer (blocking while it still holds an earlier one).
    fn hand_over(&mut self, open: &mut Open, to_committer: &std::sync::mpsc::SyncSender<Staged>) {
        let group = std::mem::replace(open, Open::new(self.next_outbox));
        let seq = self.next_seq;
        self.next_seq += 1;
        let overlay = Arc::new(group.overlay);
        if !group.accepted.is_empty() {
            self.in_flight.push_back((seq, Arc::clone(&overlay)));
        }
        let next_outbox = (self.next_outbox != group.outbox_before).then_some(self.next_outbox);
        let staged = Staged {
            seq,
            overlay,
            appends: group.appends,
            next_outbox,
            keyspaces: self.keyspaces.clone(),
            accepted: group.accepted,
            refused: group.refused,
        };
        if let Err(std::sync::mpsc::SendError(staged)) = to_committer.send(staged) {
            self.failed.store(true, Ordering::Release);
            for (reply, _) in staged.accepted {
                let _ = reply.send(Err(StoreError::unavailable("fjall committer stopped")));
            }
            for (reply, e) in staged.refused {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn table_id(&mut self, table: &str) -> Result<u32> {
        if let Some(id) = self.table_ids.get(table) {
            return Ok(*id);
        }
        let ks = self.shared.keyspace(table)?;
        let id = u32::try_from(self.keyspaces.len()).map_err(|_| StoreError::bad_config("too many tables"))?;
        self.keyspaces.push(ks);
        self.table_ids.insert(table.to_owned(), id);
        Ok(id)
    }

    /// Checks one request's conditions and computes its writes, without touching the store.
    ///
    /// **Event-log invariant**: event rows (`EVENTS_TABLE`, ck `(version)`) are only ever written
    /// together with their aggregate's head row (ck `()`, holding the version) in one atomic batch, by
    /// `WriteBatch::append_events`. So once a batch's head-row condition held at head version `h`, its
    /// event rows with versions above `h` are known to be absent and their `Absent` checks need no read —
    /// the read per event was most of the writer's time on large appends.
    fn stage(&mut self, batch: WriteBatch, now_ms: u64, overlay: &Overlay) -> Result<Staging> {
        let mut local = Overlay::new();
        // New event rows: known absent, never read back by a later request, so they skip the overlay.
        let mut appends = Vec::new();
        let mut results = Vec::with_capacity(batch.ops.len());
        let mut next_outbox = self.next_outbox;
        // The last partition's encoding (an append's rows all share one).
        let mut last_prefix: Option<(Key, Vec<u8>)> = None;
        // Aggregates (encoded pk) whose head row this batch checked, with the head version found.
        let mut heads: Vec<(Vec<u8>, u64)> = Vec::new();
        for op in batch.ops {
            let (table, pk, ck, new_value, expires_at_ms, condition) = match op {
                Op::Put { table, pk, ck, value, expires_at_ms, condition } => {
                    (table, pk, ck, Some(value), expires_at_ms, condition)
                }
                Op::Delete { table, pk, ck, condition } => (table, pk, ck, None, None, condition),
                Op::Outbox { value } => {
                    let id = next_outbox;
                    next_outbox += 1;
                    let stored = Stored { version: 1, expires_at_ms: None, payload: value };
                    let key = row_key(&Key::empty(), &Key::empty().u64(id));
                    local.insert((self.table_id(OUTBOX_TABLE)?, key), Some(stored.encode()));
                    results.push(id);
                    continue;
                }
            };
            let tid = self.table_id(&table)?;
            // An outbox acknowledgement: outbox rows are created only by `Op::Outbox` (fresh ids) and
            // never read by a condition, so the delete needs neither a read nor the overlay (whose
            // ordered inserts were a visible share of the bus's profile).
            if new_value.is_none() && matches!(condition, Condition::None) && table == OUTBOX_TABLE {
                let mut key = partition_prefix(&pk);
                ck.encode_into(&mut key);
                appends.push((tid, key, None));
                results.push(0);
                continue;
            }
            let prefix = match &last_prefix {
                Some((k, p)) if *k == pk => p.clone(),
                _ => {
                    let p = partition_prefix(&pk);
                    last_prefix = Some((pk.clone(), p.clone()));
                    p
                }
            };
            let mut key = prefix.clone();
            ck.encode_into(&mut key);
            let gk = (tid, key);
            let is_events = table == EVENTS_TABLE;
            // An event row above a head version this batch already verified: absent by the invariant.
            let known_absent = is_events
                && matches!(condition, Condition::Absent)
                && match ck.0.as_slice() {
                    [KeyPart::U64(v)] => heads.iter().any(|(p, h)| *p == prefix && v > h),
                    _ => false,
                };
            // An unconditional delete needs nothing of the current row (its result is always 0): no
            // read. Outbox acknowledgements are exactly this, a thousand keys at a time.
            let blind_delete = new_value.is_none() && matches!(condition, Condition::None);
            let found = if known_absent || blind_delete {
                Found { version: 0, live: false, holds: true }
            } else {
                // The current row's version and liveness, and whether the condition holds, without copying it.
                let check = |bytes: Option<&[u8]>| -> Result<Found> {
                    let Some(bytes) = bytes else {
                        return Ok(Found {
                            version: 0,
                            live: false,
                            holds: !matches!(condition, Condition::Version(_) | Condition::Value(_)),
                        });
                    };
                    let (version, expires_at_ms, payload) =
                        Stored::peek(bytes).map_err(|r| corrupt(&table, &pk, &ck, r))?;
                    let live = expires_at_ms.is_none_or(|at| at > now_ms);
                    let holds = match &condition {
                        Condition::None => true,
                        Condition::Absent => !live,
                        Condition::Version(v) => live && version == *v,
                        Condition::Value(v) => live && payload == v.as_slice(),
                    };
                    Ok(Found { version, live, holds })
                };
                let pending = local
                    .get(&gk)
                    .or_else(|| overlay.get(&gk))
                    .or_else(|| self.in_flight.iter().rev().find_map(|(_, o)| o.get(&gk)));
                match pending {
                    Some(v) => check(v.as_deref())?,
                    None => {
                        let ks = self.keyspaces.get(tid as usize).ok_or_else(|| io("unknown table id"))?;
                        check(ks.get(&gk.1).map_err(io)?.as_deref())?
                    }
                }
            };
            if !found.holds {
                return Err(StoreError::Conflict { current: if found.live { found.version } else { 0 } });
            }
            if is_events && ck.0.is_empty() {
                let head = match &condition {
                    Condition::Absent => Some(0),
                    Condition::Value(v) => <[u8; 8]>::try_from(v.as_slice()).ok().map(u64::from_be_bytes),
                    _ => None,
                };
                if let Some(h) = head {
                    heads.push((prefix, h));
                }
            }
            match new_value {
                Some(payload) if known_absent => {
                    appends.push((gk.0, gk.1, Some(Stored { version: 1, expires_at_ms, payload }.encode())));
                    results.push(1);
                }
                Some(payload) => {
                    let version = found.version + 1;
                    local.insert(gk, Some(Stored { version, expires_at_ms, payload }.encode()));
                    results.push(version);
                }
                None => {
                    local.insert(gk, None);
                    results.push(0);
                }
            }
        }
        Ok(Staging { local, appends, results, next_outbox })
    }
}

/// The committer thread: makes staged groups durable in order, then answers their writers.
fn commit_loop(
    shared: &Shared,
    done: &AtomicU64,
    failed: &std::sync::atomic::AtomicBool,
    from_stager: &std::sync::mpsc::Receiver<Staged>,
    wake: &mpsc::WeakSender<Command>,
) {
    while let Ok(mut staged) = from_stager.recv() {
        let outcome = if failed.load(Ordering::Acquire) {
            Err("an earlier group commit failed".to_owned())
        } else if staged.accepted.is_empty() {
            Ok(())
        } else {
            write_group(shared, &mut staged)
        };
        if outcome.is_err() {
            failed.store(true, Ordering::Release);
        } else if !staged.accepted.is_empty() {
            shared.groups.fetch_add(1, Ordering::Relaxed);
            shared.requests.fetch_add(staged.accepted.len() as u64, Ordering::Relaxed);
        }
        done.store(staged.seq, Ordering::Release);
        // Wake the stager if it waits with an open group (a full queue wakes it anyway).
        if let Some(tx) = wake.upgrade() {
            let _ = tx.try_send(Command::Wake);
        }
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "fjall group commit failed; the store is unavailable until reopened");
        }
        for (reply, results) in staged.accepted {
            let _ = reply.send(match &outcome {
                Ok(()) => Ok(results),
                Err(e) => Err(StoreError::unavailable(e.clone())),
            });
        }
        for (reply, e) in staged.refused {
            let _ = reply.send(Err(e));
        }
    }
}

fn write_group(shared: &Shared, staged: &mut Staged) -> Result<(), String> {
    let mut batch = shared.db.batch().durability(Some(PersistMode::SyncAll));
    for ((table, key), value) in staged.overlay.iter() {
        let ks = staged.keyspaces.get(*table as usize).ok_or("unknown table id")?;
        match value {
            Some(v) => batch.insert(ks, key.as_slice(), v.as_slice()),
            None => batch.remove(ks, key.as_slice()),
        }
    }
    for (table, key, value) in std::mem::take(&mut staged.appends) {
        let ks = staged.keyspaces.get(table as usize).ok_or("unknown table id")?;
        match value {
            Some(v) => batch.insert(ks, key, v),
            None => batch.remove(ks, key),
        }
    }
    if let Some(next) = staged.next_outbox {
        let meta = shared.keyspace(META_TABLE).map_err(|e| e.to_string())?;
        batch.insert(&meta, OUTBOX_NEXT_KEY, next.to_be_bytes().to_vec());
    }
    batch.commit().map_err(|e| format!("fjall commit: {e}"))
}

impl Backend for FjallBackend {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn get<'a>(&'a self, table: &'a str, pk: &'a Key, ck: &'a Key, now_ms: u64) -> BoxFuture<'a, Result<Option<Row>>> {
        // A point read is bounded work (memtables, then at most one block per level, usually from the
        // block cache or the page cache: microseconds), so it runs inline. Handing it to the blocking pool
        // cost ~7× the read itself (measured: 62k → 448k direct `get`s/s). Scans, whose work grows with
        // the range, stay on the blocking pool.
        async move { self.shared()?.get(table, pk, ck, now_ms) }.boxed()
    }

    fn scan<'a>(&'a self, table: &'a str, pk: &'a Key, scan: &'a Scan, now_ms: u64) -> BoxFuture<'a, Result<Page>> {
        async move {
            let shared = self.shared()?;
            let (table, pk, scan) = (table.to_owned(), pk.clone(), scan.clone());
            tokio::task::spawn_blocking(move || shared.scan(&table, &pk, &scan, now_ms)).await.map_err(io)?
        }
        .boxed()
    }

    fn commit(&self, batch: WriteBatch, now_ms: u64) -> BoxFuture<'_, Result<Vec<u64>>> {
        async move {
            self.shared()?.observe(now_ms);
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Command::Write(Request { batch, now_ms, reply }))
                .await
                .map_err(|_| StoreError::unavailable("fjall store is closed"))?;
            rx.await.map_err(|_| StoreError::unavailable("fjall writer stopped"))?
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            let taken = match self.shared.lock() {
                Ok(mut guard) => guard.take(),
                Err(_) => None,
            };
            let (done, rx) = oneshot::channel();
            if self.tx.send(Command::Close(done)).await.is_ok() {
                let _ = rx.await;
            }
            if let Some(shared) = taken {
                // Readers in flight hold their own clones; this drops ours (the last, once they finish).
                tokio::task::spawn_blocking(move || drop(shared)).await.map_err(io)?;
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
