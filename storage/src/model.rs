//! The data shapes every backend speaks: rows, scans and pages, and [`WriteBatch`], the one atomic write
//! (conditional puts/deletes, event appends, outbox entries) a backend commits all-or-nothing.

use std::ops::Bound;

use crate::key::Key;

/// Internal table holding aggregate event logs (pk = aggregate, ck = `()` head row or `(version)`).
pub const EVENTS_TABLE: &str = "_troupe_events";
/// Internal table holding the latest snapshot per aggregate (pk = aggregate, ck = `()`).
pub const SNAPSHOTS_TABLE: &str = "_troupe_snapshots";
/// Internal table holding leases (pk = name, ck = `()`).
pub const LEASES_TABLE: &str = "_troupe_leases";
/// Internal table holding the outbox (pk = `()`, ck = `(id)`); ids are assigned by the backend at commit.
pub const OUTBOX_TABLE: &str = "_troupe_outbox";

/// One stored row as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Clustering key.
    pub ck: Key,
    /// The opaque value.
    pub value: Vec<u8>,
    /// Row version: 1 on first write, +1 on every write (reset by a delete).
    pub version: u64,
    /// When the row stops being visible (clock ms), if ever.
    pub expires_at_ms: Option<u64>,
}

/// Scan direction over clustering keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Smallest clustering key first.
    #[default]
    Ascending,
    /// Largest clustering key first.
    Descending,
}

/// Opaque resume point: the encoded clustering key of the last row returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub Vec<u8>);

/// A scan of one partition: clustering-key range (bounds are encoded keys), direction, limit, cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Lower bound (encoded clustering key).
    pub start: Bound<Vec<u8>>,
    /// Upper bound (encoded clustering key).
    pub end: Bound<Vec<u8>>,
    /// Order of the rows returned.
    pub direction: Direction,
    /// Most rows per page (≥ 1).
    pub limit: usize,
    /// Continue after this row (from [`Page::next`]).
    pub cursor: Option<Cursor>,
}

impl Default for Scan {
    fn default() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            direction: Direction::Ascending,
            limit: 1000,
            cursor: None,
        }
    }
}

impl Scan {
    /// The whole partition, ascending, 1000 rows a page.
    pub fn all() -> Self {
        Self::default()
    }

    /// Clustering keys in `[from, to)`.
    pub fn between(from: &Key, to: &Key) -> Self {
        Self { start: Bound::Included(from.encode()), end: Bound::Excluded(to.encode()), ..Self::default() }
    }

    /// Clustering keys `≥ from`.
    pub fn from(from: &Key) -> Self {
        Self { start: Bound::Included(from.encode()), ..Self::default() }
    }

    /// Clustering keys equal to or extending `prefix` (e.g. `("a")` matches `("a")` and `("a", 1)`).
    pub fn prefix(prefix: &Key) -> Self {
        let lo = prefix.encode();
        let mut hi = lo.clone();
        hi.push(0xFF);
        Self { start: Bound::Included(lo), end: Bound::Excluded(hi), ..Self::default() }
    }

    /// Sets the direction.
    #[must_use]
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Descending order.
    #[must_use]
    pub fn rev(self) -> Self {
        self.direction(Direction::Descending)
    }

    /// Sets the page size.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Resumes after a previous page.
    #[must_use]
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.cursor = cursor;
        self
    }

    /// The bounds with the cursor applied (what a backend actually reads).
    pub fn effective_bounds(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        match (&self.cursor, self.direction) {
            (None, _) => (self.start.clone(), self.end.clone()),
            (Some(c), Direction::Ascending) => (Bound::Excluded(c.0.clone()), self.end.clone()),
            (Some(c), Direction::Descending) => (self.start.clone(), Bound::Excluded(c.0.clone())),
        }
    }
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Rows in scan order.
    pub rows: Vec<Row>,
    /// Where to resume; `None` when the range is exhausted.
    pub next: Option<Cursor>,
}

/// What must hold for a write in a [`WriteBatch`] to apply. Expired rows count as absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    /// Always.
    #[default]
    None,
    /// The row is absent.
    Absent,
    /// The row is present with this version.
    Version(u64),
    /// The row is present with exactly this value.
    Value(Vec<u8>),
}

/// What `compare_and_set` expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The row's current version.
    Version(u64),
    /// The row's current value.
    Value(Vec<u8>),
}

impl From<Expected> for Condition {
    fn from(e: Expected) -> Self {
        match e {
            Expected::Version(v) => Condition::Version(v),
            Expected::Value(v) => Condition::Value(v),
        }
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write a row.
    Put {
        /// Table.
        table: String,
        /// Partition key.
        pk: Key,
        /// Clustering key.
        ck: Key,
        /// Value.
        value: Vec<u8>,
        /// Expiry (clock ms), if any.
        expires_at_ms: Option<u64>,
        /// Precondition.
        condition: Condition,
    },
    /// Remove a row.
    Delete {
        /// Table.
        table: String,
        /// Partition key.
        pk: Key,
        /// Clustering key.
        ck: Key,
        /// Precondition.
        condition: Condition,
    },
    /// Add an outbox entry to [`OUTBOX_TABLE`]; the backend assigns the next id at commit.
    Outbox {
        /// Encoded entry (see `crate::typed`).
        value: Vec<u8>,
    },
}

/// Writes applied atomically: either every condition holds and every operation applies, or nothing does
/// and the commit fails with [`crate::StoreError::Conflict`] for the first failed condition.
///
/// The commit result has one `u64` per operation: the new row version for a put, 0 for a delete, the
/// assigned id for an outbox entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The operations in order; later operations see earlier ones.
    pub ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unconditional put.
    pub fn put(&mut self, table: &str, pk: &Key, ck: &Key, value: impl Into<Vec<u8>>) -> &mut Self {
        self.put_with(table, pk, ck, value, None, Condition::None)
    }

    /// Put with an expiry and a condition.
    pub fn put_with(
        &mut self,
        table: &str,
        pk: &Key,
        ck: &Key,
        value: impl Into<Vec<u8>>,
        expires_at_ms: Option<u64>,
        condition: Condition,
    ) -> &mut Self {
        self.ops.push(Op::Put {
            table: table.to_owned(),
            pk: pk.clone(),
            ck: ck.clone(),
            value: value.into(),
            expires_at_ms,
            condition,
        });
        self
    }

    /// Delete (with a condition; `Condition::None` for unconditional).
    pub fn delete(&mut self, table: &str, pk: &Key, ck: &Key, condition: Condition) -> &mut Self {
        self.ops.push(Op::Delete { table: table.to_owned(), pk: pk.clone(), ck: ck.clone(), condition });
        self
    }

    /// Appends events to an aggregate's log if its version is `expected_version` (0 = new aggregate).
    /// The new version is `expected_version + events.len()`.
    pub fn append_events(&mut self, aggregate: &str, expected_version: u64, events: Vec<Vec<u8>>) -> &mut Self {
        let pk = Key::from(aggregate);
        let new_version = expected_version + events.len() as u64;
        let condition = if expected_version == 0 {
            Condition::Absent
        } else {
            Condition::Value(expected_version.to_be_bytes().to_vec())
        };
        self.put_with(EVENTS_TABLE, &pk, &Key::empty(), new_version.to_be_bytes().to_vec(), None, condition);
        for (i, event) in events.into_iter().enumerate() {
            let ck = Key::empty().u64(expected_version + 1 + i as u64);
            self.put_with(EVENTS_TABLE, &pk, &ck, event, None, Condition::Absent);
        }
        self
    }

    /// Adds an outbox entry, published by a drainer once this batch commits.
    pub fn append_outbox(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> &mut Self {
        let value =
            crate::typed::encode(&crate::typed::OutboxRecord { topic: topic.to_owned(), payload: payload.into() });
        self.ops.push(Op::Outbox { value });
        self
    }

    /// Total bytes of the values this batch writes.
    pub fn payload_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { value, .. } | Op::Outbox { value } => value.len(),
                Op::Delete { .. } => 0,
            })
            .sum()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
