//! What an outbox entry becomes on the wire: its message id, content type and `traceparent` (read
//! from the payload when it is a [`troupe_actors::envelope::Envelope`] or a JSON domain event), and
//! the packed format that carries many events in one AMQP message.
//!
//! Packed format: content type [`PACKED_CONTENT_TYPE`], body = postcard of [`PackedBatch`] (version 1,
//! then the events in outbox order). Consumers deduplicate by [`PackedEvent::id`].

use serde::{Deserialize, Serialize};
use troupe_actors::bus::BusEvent;
use troupe_actors::envelope::{Envelope, MAGIC};

use crate::AmqpError;

/// Content type of a packed message.
pub const PACKED_CONTENT_TYPE: &str = "application/vnd.troupe.batch+postcard";
/// Content type of a payload that is an encoded envelope.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.troupe.envelope";
/// Content type of a JSON payload.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Content type of other payloads.
pub const BYTES_CONTENT_TYPE: &str = "application/octet-stream";
/// Header with the outbox id of the (first) event.
pub const OUTBOX_ID_HEADER: &str = "x-troupe-outbox-id";
/// Version written in [`PackedBatch::version`].
pub const PACKED_VERSION: u8 = 1;

/// Wire metadata of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The domain event's id when the payload carries one, else the outbox id.
    pub message_id: String,
    /// The W3C `traceparent`, if the payload carries one.
    pub traceparent: Option<String>,
    /// Content type of the payload.
    pub content_type: &'static str,
}

#[derive(Deserialize)]
struct JsonIds {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    traceparent: Option<String>,
}

/// Reads an event's wire metadata (never fails: unknown payloads get the outbox id).
pub fn meta(event: &BusEvent) -> Meta {
    let payload = event.payload.as_ref();
    if payload.starts_with(&MAGIC)
        && let Ok(env) = Envelope::decode(payload)
    {
        return Meta {
            message_id: env.id.to_string(),
            traceparent: env.trace_context.map(|tc| tc.traceparent),
            content_type: ENVELOPE_CONTENT_TYPE,
        };
    }
    if payload.first() == Some(&b'{')
        && let Ok(ids) = serde_json::from_slice::<JsonIds>(payload)
    {
        return Meta {
            message_id: ids.id.filter(|id| !id.is_empty() && id.len() <= 255).unwrap_or_else(|| event.id.to_string()),
            traceparent: ids.traceparent,
            content_type: JSON_CONTENT_TYPE,
        };
    }
    Meta { message_id: event.id.to_string(), traceparent: None, content_type: BYTES_CONTENT_TYPE }
}

/// One event inside a packed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedEvent {
    /// Message id (see [`meta`]): deduplicate by it.
    pub id: String,
    /// Outbox id.
    pub outbox_id: u64,
    /// Topic (event type).
    pub topic: String,
    /// `traceparent`, if any.
    pub traceparent: Option<String>,
    /// The payload, as in unpacked mode.
    pub payload: Vec<u8>,
}

/// The body of a packed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBatch {
    /// [`PACKED_VERSION`].
    pub version: u8,
    /// Events in outbox order.
    pub events: Vec<PackedEvent>,
}

impl PackedBatch {
    /// Packs `events` (in order).
    pub fn pack(events: &[std::sync::Arc<BusEvent>]) -> Self {
        let events = events
            .iter()
            .map(|e| {
                let m = meta(e);
                PackedEvent {
                    id: m.message_id,
                    outbox_id: e.id,
                    topic: e.topic.clone(),
                    traceparent: m.traceparent,
                    payload: e.payload.to_vec(),
                }
            })
            .collect();
        Self { version: PACKED_VERSION, events }
    }

    /// The postcard body.
    pub fn encode(&self) -> Result<Vec<u8>, AmqpError> {
        postcard::to_allocvec(self).map_err(|e| AmqpError::Packed(e.to_string()))
    }

    /// Parses a body (untrusted input: never panics).
    pub fn decode(body: &[u8]) -> Result<Self, AmqpError> {
        let batch: Self = postcard::from_bytes(body).map_err(|e| AmqpError::Packed(e.to_string()))?;
        if batch.version != PACKED_VERSION {
            return Err(AmqpError::Packed(format!("version {} (this build reads {PACKED_VERSION})", batch.version)));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests;
