//! Domain events: the one shape every service emits (appended to the aggregate's event log and to the
//! outbox in the same atomic write) and every subscriber receives.
//!
//! On the outbox the topic is the event type (`user.created`, …) and the payload is the JSON of
//! [`DomainEvent`] (JSON, not postcard: the same bytes go to external consumers over RabbitMQ).

use serde::{Deserialize, Serialize};

/// `{id, type, aggregate_id, payload, timestamp, version}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainEvent {
    /// UUIDv7; consumers deduplicate by it.
    pub id: String,
    /// Event type, e.g. `content.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The aggregate the event belongs to (user id, content id).
    pub aggregate_id: String,
    /// Type-specific payload (see the constants below for the fields each type carries).
    pub payload: serde_json::Value,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The aggregate's version after this event (1-based, gap-free).
    pub version: u64,
    /// W3C `traceparent` of the request that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Payload `{user_id, email, display_name}`.
pub const USER_CREATED: &str = "user.created";
/// Payload `{user_id, fields: [..]}`.
pub const USER_UPDATED: &str = "user.updated";
/// Payload `{user_id}`.
pub const USER_DELETED: &str = "user.deleted";
/// Aggregate = follower. Payload `{follower_id, followed_id}`.
pub const USER_FOLLOWED: &str = "user.followed";
/// Aggregate = follower. Payload `{follower_id, followed_id}`.
pub const USER_UNFOLLOWED: &str = "user.unfollowed";
/// Payload `{content_id, author_id, title, tags}`.
pub const CONTENT_CREATED: &str = "content.created";
/// Payload `{content_id, author_id, fields: [..]}`.
pub const CONTENT_UPDATED: &str = "content.updated";
/// Payload `{content_id, author_id}`.
pub const CONTENT_DELETED: &str = "content.deleted";
/// Aggregate = the notification (`{user_id}/{notification_id}`, version 1). Payload = the stored
/// notification (`notifications::Notification`). Emitted by the notification service in the batch that
/// stores it; the push to the user's channel follows from it.
pub const NOTIFICATION_CREATED: &str = "notification.created";
