//! The event bus: drains the store outbox and delivers each entry to its subscribers, at least once,
//! with retries, backoff and a dead-letter table. (Lands with the multi-service issue.)
