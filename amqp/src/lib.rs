//! `troupe-amqp`: the RabbitMQ bridge. Outbound, it is an event-bus subscriber ([`Outbound`], a
//! batched, strictly ordered subscription) that publishes outbox entries to a durable topic exchange
//! with publisher confirms and lets the bus acknowledge an entry only after the broker confirmed it;
//! inbound ([`inbound`]), it feeds quorum-queue deliveries to actors (or any [`InboundHandler`]) and
//! acks only after their effect is durable. [`Bridge`] ties both to a supervised actor and a health
//! probe.
//!
//! Collaborators: lapin (AMQP 0.9.1, auto-recovery on), `troupe-actors` (event bus, supervision,
//! registry, envelopes, health), `troupe-config` (the `[rabbitmq]` section), the `metrics` facade
//! (`troupe_amqp_*`).

pub mod bridge;
pub mod config;
pub mod inbound;
mod link;
pub mod message;
pub mod outbound;

pub use bridge::{Bridge, BridgeActor, BridgeHealth};
pub use config::{BindingConfig, BridgeConfig, ReturnedPolicy};
pub use inbound::{Delivery, InboundError, InboundHandler, InboundMessage, Payload};
pub use message::{PACKED_CONTENT_TYPE, PackedBatch, PackedEvent};
pub use outbound::Outbound;

/// What the bridge can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The broker or the connection failed.
    #[error("rabbitmq: {0}")]
    Broker(#[from] lapin::Error),
    /// A setting is out of range.
    #[error("bad rabbitmq configuration: {0}")]
    Config(String),
    /// The event bus refused the subscription.
    #[error(transparent)]
    Bus(#[from] troupe_actors::bus::BusError),
    /// A packed batch does not decode.
    #[error("bad packed batch: {0}")]
    Packed(String),
    /// Timed out waiting for the broker.
    #[error("timed out: {0}")]
    Timeout(String),
}
