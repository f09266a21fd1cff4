//! The [`Backend`] trait: the few primitives a storage engine implements. Everything else in the `Store`
//! API (events, snapshots, leases, outbox) is built on these in `store.rs`, once for all backends.

use futures::future::BoxFuture;

use crate::error::Result;
use crate::key::Key;
use crate::model::{Page, Row, Scan, WriteBatch};

/// A storage engine. Object-safe (boxed futures) so a `Store` holds `Arc<dyn Backend>`.
///
/// `now_ms` comes from the store's clock: rows with `expires_at_ms <= now_ms` are invisible to reads and
/// count as absent for conditions.
pub trait Backend: Send + Sync + 'static {
    /// Short name for logs ("fjall", "postgres", …).
    fn name(&self) -> &'static str;

    /// One row, if present and live.
    fn get<'a>(&'a self, table: &'a str, pk: &'a Key, ck: &'a Key, now_ms: u64) -> BoxFuture<'a, Result<Option<Row>>>;

    /// One page of one partition.
    fn scan<'a>(&'a self, table: &'a str, pk: &'a Key, scan: &'a Scan, now_ms: u64) -> BoxFuture<'a, Result<Page>>;

    /// Applies `batch` atomically and durably (acknowledged = on disk), or not at all. Returns one `u64`
    /// per operation (see [`WriteBatch`]).
    fn commit(&self, batch: WriteBatch, now_ms: u64) -> BoxFuture<'_, Result<Vec<u64>>>;

    /// Stops background work and releases the data (directory lock, connections). Later calls fail with
    /// `Unavailable`.
    fn close(&self) -> BoxFuture<'_, Result<()>>;
}
