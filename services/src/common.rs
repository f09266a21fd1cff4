//! What every domain operation shares: the caller context ([`Ctx`]), result pages ([`Page`]), and the
//! store plumbing of the services — stored-value decoding, opaque cursors, input checks, and the one
//! staging path that puts a domain event into the aggregate's log and the outbox in the same batch as the
//! state rows.
//!
//! Collaborators: `troupe-storage` (`WriteBatch`, `typed`), `events` (the `DomainEvent` shape).

use serde::{Deserialize, Serialize};
use troupe_storage::{Key, KeyPart, Row, StoreError, WriteBatch};

use crate::error::{Result, ServiceError};
use crate::events::DomainEvent;
use crate::policy::Principal;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size accepted.
pub const MAX_LIMIT: usize = 100;
/// Attempts an optimistic read-modify-write makes before answering `Conflict`.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// Who is calling and the trace the call belongs to. Built by the gateway from the verified bearer token
/// (`Tokens::verify`) and the request's `traceparent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctx {
    /// The signed-in caller; `None` for anonymous requests (register, login, refresh, logout).
    pub principal: Option<Principal>,
    /// W3C `traceparent`, copied into the domain events the call emits.
    pub traceparent: Option<String>,
}

impl Ctx {
    /// An anonymous caller.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A signed-in caller.
    pub fn user(principal: Principal) -> Self {
        Self { principal: Some(principal), traceparent: None }
    }

    /// The same caller within a trace.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The principal, if signed in.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }
}

/// One page of a list. `next_cursor` is opaque; pass it back as `cursor` for the next page. `None` means
/// the end was reached. A page may hold fewer than `limit` items (filters apply to a bounded number of
/// index rows per page) and still have a `next_cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// Items in list order.
    pub items: Vec<T>,
    /// Where to continue, if anywhere.
    pub next_cursor: Option<String>,
}

/// `limit` or the default; `Invalid` outside `1..=MAX_LIMIT`.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ServiceError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// Checks an id from a request (UUID, canonical lowercase form); `Invalid` otherwise.
pub(crate) fn check_id(field: &'static str, id: &str) -> Result<()> {
    match uuid::Uuid::try_parse(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        _ => Err(ServiceError::invalid(field, "not a valid id")),
    }
}

/// A new UUIDv7 id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Decodes a `typed` value read from `table`; corrupt bytes are an internal error.
pub(crate) fn decode_row<T: serde::de::DeserializeOwned>(table: &str, row: &Row) -> Result<T> {
    troupe_storage::typed::decode(&row.value)
        .map_err(|reason| ServiceError::internal(format!("corrupt {table} row {}: {reason}", row.ck.display())))
}

/// `Ok(true)` when the batch committed, `Ok(false)` when a condition failed (the caller re-reads and
/// retries), other store errors as service errors.
pub(crate) fn committed(result: std::result::Result<Vec<u64>, StoreError>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits before optimistic attempt `attempt` (0-based): nothing first, then 1, 2, 4, … ms (max 32) plus
/// up to as much again of jitter, so racing writers spread out.
pub(crate) async fn backoff(attempt: u32) {
    if attempt == 0 {
        return;
    }
    let base = 1u64 << (attempt - 1).min(5);
    let jitter = {
        use argon2::password_hash::rand_core::{OsRng, RngCore as _};
        u64::from(OsRng.next_u32()) % (base + 1)
    };
    tokio::time::sleep(std::time::Duration::from_millis(base + jitter)).await;
}

/// The answer when optimistic retries ran out.
pub(crate) fn too_contended() -> ServiceError {
    ServiceError::Conflict { reason: "concurrent updates; retry" }
}

/// A domain event about to be staged.
pub(crate) struct NewEvent<'a> {
    /// Event log (store aggregate) name, e.g. `user-<id>`.
    pub log: &'a str,
    /// The log's current version (0 = new aggregate); the commit fails with `Conflict` if it moved.
    pub expected_version: u64,
    /// Event type (`events::USER_CREATED`, …).
    pub kind: &'static str,
    /// `aggregate_id` of the event.
    pub aggregate_id: &'a str,
    /// Type-specific payload.
    pub payload: serde_json::Value,
}

/// Adds the event to its aggregate's log (conditional on the expected version) and to the outbox (topic =
/// event type, payload = the JSON of the [`DomainEvent`]) in `batch`. The log entry holds the same JSON.
pub(crate) fn stage_event(batch: &mut WriteBatch, event: NewEvent<'_>, now_ms: u64, ctx: &Ctx) -> Result<DomainEvent> {
    let domain = DomainEvent {
        id: new_id(),
        kind: event.kind.to_owned(),
        aggregate_id: event.aggregate_id.to_owned(),
        payload: event.payload,
        timestamp: now_ms,
        version: event.expected_version + 1,
        traceparent: ctx.traceparent.clone(),
    };
    let bytes = serde_json::to_vec(&domain).map_err(ServiceError::internal)?;
    batch.append_events(event.log, event.expected_version, vec![bytes.clone()]);
    batch.append_outbox(event.kind, bytes);
    Ok(domain)
}

/// Event log name of a user.
pub(crate) fn user_log(user_id: &str) -> String {
    format!("user-{user_id}")
}

/// Event log name of a content item.
pub(crate) fn content_log(content_id: &str) -> String {
    format!("content-{content_id}")
}

/// The opaque form of a clustering key (hex of its order-preserving encoding).
pub(crate) fn encode_cursor(ck: &Key) -> String {
    crate::tokens::hex(&ck.encode())
}

/// Parses a cursor made by [`encode_cursor`] whose key is a tuple of the given kinds (`'s'` string, `'u'`
/// u64); anything else is `Invalid { field: "cursor" }`.
pub(crate) fn decode_cursor(cursor: &str, shape: &[char]) -> Result<Key> {
    let bad = || ServiceError::invalid("cursor", "malformed cursor");
    if cursor.len() > 1024 || !cursor.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| cursor.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let key = Key::decode(&bytes).map_err(|_| bad())?;
    let fits = key.0.len() == shape.len()
        && key
            .0
            .iter()
            .zip(shape)
            .all(|(part, kind)| matches!((part, kind), (KeyPart::Str(_), 's') | (KeyPart::U64(_), 'u')));
    if fits { Ok(key) } else { Err(bad()) }
}

/// Trims and checks a free-text field: 1..=max characters, no control characters.
pub(crate) fn check_text(field: &'static str, value: &str, max_chars: usize, multiline: bool) -> Result<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n == 0 {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    if n > max_chars {
        return Err(ServiceError::invalid(field, format!("at most {max_chars} characters")));
    }
    if v.chars().any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t'))) {
        return Err(ServiceError::invalid(field, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests;
