//! `troupe-amqp`: the RabbitMQ bridge. Outbound, it is an event-bus subscriber that publishes outbox
//! entries to a topic exchange and lets the bus acknowledge them only after the broker confirms;
//! inbound, it feeds quorum-queue deliveries to actors and acks only after their effect is durable.
//!
//! Collaborators: lapin (AMQP 0.9.1), `troupe-actors` (event bus, supervision), `troupe-storage`.
//! Lands with the RabbitMQ bridge issue.
