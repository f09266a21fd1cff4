//! Dead letters: deliveries that failed on every attempt (or were rejected), one row per (outbox id,
//! subscriber) in the configured table — pk `()`, ck `(outbox_id, subscriber)`, so a redelivered
//! entry that fails again overwrites its own row instead of adding one. Listing pages in outbox-id
//! order; replay delivers once more and removes the row on success; discard removes it.

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use troupe_storage::{Expected, Key, Scan, StoreError, typed};

use super::drain::{Attempt, call_handler};
use super::{BusError, BusEvent, Inner, Subscriber};

/// Largest page of [`super::EventBus::dead_letters`].
const MAX_PAGE: usize = 1000;

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    topic: String,
    payload: Vec<u8>,
    attempts: u32,
    last_error: String,
    first_failure_ms: u64,
    last_failure_ms: u64,
}

/// One dead-lettered delivery, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// `{outbox_id}-{subscriber}`: what [`replay`](super::EventBus::replay) and
    /// [`discard`](super::EventBus::discard) take.
    pub id: String,
    /// The outbox entry's id.
    pub outbox_id: u64,
    /// The subscriber that failed.
    pub subscriber: String,
    /// The entry's topic.
    pub topic: String,
    /// The entry's payload. Serialized as embedded JSON when it is JSON, else as a string when it is
    /// UTF-8, else as an array of bytes.
    #[serde(serialize_with = "payload_json")]
    pub payload: Bytes,
    /// Attempts made (the replays included).
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// First failure (store-clock ms since the Unix epoch).
    pub first_failure_ms: u64,
    /// Last failure (store-clock ms since the Unix epoch).
    pub last_failure_ms: u64,
}

/// One page of dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterPage {
    /// Oldest outbox id first.
    pub items: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; `None` when this was the last.
    pub next: Option<String>,
}

fn payload_json<S: Serializer>(payload: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        return value.serialize(s);
    }
    match std::str::from_utf8(payload) {
        Ok(text) => s.serialize_str(text),
        Err(_) => payload.as_ref().serialize(s),
    }
}

fn ck(outbox_id: u64, subscriber: &str) -> Key {
    Key::empty().u64(outbox_id).str(subscriber)
}

/// `{outbox_id}-{subscriber}` → parts.
pub(super) fn parse_id(id: &str) -> Result<(u64, &str), BusError> {
    let bad = || BusError::BadId(id.to_owned());
    let (num, sub) = id.split_once('-').ok_or_else(bad)?;
    if num.is_empty() || sub.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((num.parse().map_err(|_| bad())?, sub))
}

pub(super) fn format_id(outbox_id: u64, subscriber: &str) -> String {
    format!("{outbox_id}-{subscriber}")
}

fn decode(table: &str, id: &str, value: &[u8]) -> Result<Record, BusError> {
    typed::decode(value).map_err(|reason| {
        BusError::Store(StoreError::CorruptData { table: table.to_owned(), key: id.to_owned(), reason })
    })
}

/// Writes the dead letter of a failed delivery, retrying store failures until it is durable (the
/// entry cannot be acknowledged before); only an abort of the drainer stops it.
pub(super) async fn write(inner: &Inner, sub: &Subscriber, a: &Attempt, now_ms: u64) {
    let table = &inner.config.dead_letter_table;
    let event = a.event();
    let record = Record {
        topic: event.topic.clone(),
        payload: event.payload.to_vec(),
        attempts: a.attempts(),
        last_error: a.last_error().to_owned(),
        first_failure_ms: a.first_failure_ms(),
        last_failure_ms: now_ms,
    };
    let value = typed::encode(&record);
    let key = ck(event.id, &sub.name);
    let mut pause = Duration::from_millis(50);
    loop {
        match inner.store.put(table, &Key::empty(), &key, value.clone()).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, subscriber = %sub.name, id = event.id, "bus: writing a dead letter failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    sub.metrics.dead_letters.increment(1);
}

pub(super) async fn list(inner: &Inner, limit: usize, cursor: Option<&str>) -> Result<DeadLetterPage, BusError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(BusError::BadRequest(format!("limit must be 1..={MAX_PAGE}")));
    }
    let table = &inner.config.dead_letter_table;
    let mut scan = Scan::all().limit(limit);
    if let Some(cursor) = cursor {
        let (outbox_id, sub) = parse_id(cursor)?;
        scan.start = Bound::Excluded(ck(outbox_id, sub).encode());
    }
    let page = inner.store.scan(table, &Key::empty(), &scan).await?;
    let mut items = Vec::with_capacity(page.rows.len());
    for row in page.rows {
        let (outbox_id, subscriber) = match row.ck.0.as_slice() {
            [troupe_storage::KeyPart::U64(n), troupe_storage::KeyPart::Str(s)] => (*n, s.clone()),
            _ => {
                return Err(BusError::Store(StoreError::CorruptData {
                    table: table.clone(),
                    key: row.ck.display(),
                    reason: "dead-letter key is not (outbox_id, subscriber)".to_owned(),
                }));
            }
        };
        let id = format_id(outbox_id, &subscriber);
        let rec = decode(table, &id, &row.value)?;
        items.push(DeadLetter {
            id,
            outbox_id,
            subscriber,
            topic: rec.topic,
            payload: Bytes::from(rec.payload),
            attempts: rec.attempts,
            last_error: rec.last_error,
            first_failure_ms: rec.first_failure_ms,
            last_failure_ms: rec.last_failure_ms,
        });
    }
    let next = if page.next.is_some() && items.len() == limit { items.last().map(|d| d.id.clone()) } else { None };
    Ok(DeadLetterPage { items, next })
}

pub(super) async fn replay(inner: &Inner, id: &str) -> Result<(), BusError> {
    let (outbox_id, sub_name) = parse_id(id)?;
    let table = &inner.config.dead_letter_table;
    let key = ck(outbox_id, sub_name);
    let row =
        inner.store.get(table, &Key::empty(), &key).await?.ok_or_else(|| BusError::NotFound { id: id.to_owned() })?;
    let mut rec = decode(table, id, &row.value)?;
    let sub = inner.subscriber(sub_name).ok_or_else(|| BusError::UnknownSubscriber { name: sub_name.to_owned() })?;
    let event = std::sync::Arc::new(BusEvent {
        id: outbox_id,
        topic: rec.topic.clone(),
        payload: Bytes::from(rec.payload.clone()),
    });
    match call_handler(&sub.handler, &event, inner.config.handler_timeout).await {
        Ok(()) => {
            sub.metrics.delivered.increment(1);
            inner.store.delete(table, &Key::empty(), &key).await?;
            Ok(())
        }
        Err(err) => {
            rec.attempts = rec.attempts.saturating_add(1);
            rec.last_error = err.to_string();
            rec.last_failure_ms = inner.store.now_ms();
            // A concurrent replay or discard got there first: theirs stands.
            match inner
                .store
                .compare_and_set(table, &Key::empty(), &key, Expected::Version(row.version), typed::encode(&rec))
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            Err(BusError::ReplayFailed(err))
        }
    }
}

pub(super) async fn discard(inner: &Inner, id: &str) -> Result<(), BusError> {
    let (outbox_id, sub_name) = parse_id(id)?;
    let table = &inner.config.dead_letter_table;
    let key = ck(outbox_id, sub_name);
    if inner.store.get(table, &Key::empty(), &key).await?.is_none() {
        return Err(BusError::NotFound { id: id.to_owned() });
    }
    inner.store.delete(table, &Key::empty(), &key).await?;
    Ok(())
}
