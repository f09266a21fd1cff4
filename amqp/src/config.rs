//! The bridge's settings, built from the `[rabbitmq]` configuration section (or by hand in tests).

use std::time::Duration;

use crate::AmqpError;

/// What happens to a message the broker returns as unroutable (`mandatory` publish, no queue bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnedPolicy {
    /// The event is rejected to the bus, which writes it to its dead-letter table (default).
    #[default]
    DeadLetter,
    /// Counted and logged, then acknowledged like a confirmed event.
    Drop,
    /// Published again after the bus's backoff, until a queue is bound.
    Retry,
}

impl ReturnedPolicy {
    /// Parses `dead_letter`, `drop` or `retry`.
    pub fn parse(s: &str) -> Result<Self, AmqpError> {
        match s {
            "dead_letter" => Ok(Self::DeadLetter),
            "drop" => Ok(Self::Drop),
            "retry" => Ok(Self::Retry),
            other => Err(AmqpError::Config(format!("returned policy {other:?}: use dead_letter, drop or retry"))),
        }
    }
}

/// One inbound binding: a durable quorum queue whose deliveries go to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingConfig {
    /// Queue name (declared durable, `x-queue-type = quorum`).
    pub queue: String,
    /// The handler: a service (actor) name in the registry, or a name given to
    /// [`Bridge::with_handler`](crate::Bridge::with_handler).
    pub handler: String,
    /// Unacknowledged deliveries at most (basic.qos).
    pub prefetch: u16,
    /// `x-delivery-limit` of the queue: the broker dead-letters a message redelivered more often.
    pub delivery_limit: u32,
    /// Handler rejections (retryable failures) before the bridge dead-letters the message itself.
    pub max_attempts: u32,
    /// Dead-letter exchange (declared durable, fanout) of the queue.
    pub dead_letter_exchange: String,
    /// Routing keys binding the queue to `exchange` (none: the queue is only declared).
    pub routing_keys: Vec<String>,
    /// Exchange the routing keys bind to (declared durable, topic).
    pub exchange: String,
}

impl BindingConfig {
    /// A binding of `queue` to `handler` with defaults: prefetch 64, delivery limit 10, 5 attempts,
    /// dead-letter exchange `{queue}.dlx`, no routing keys, exchange `troupe.events`.
    pub fn new(queue: &str, handler: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            handler: handler.to_owned(),
            prefetch: 64,
            delivery_limit: 10,
            max_attempts: 5,
            dead_letter_exchange: format!("{queue}.dlx"),
            routing_keys: Vec::new(),
            exchange: "troupe.events".to_owned(),
        }
    }
}

/// The bridge's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `amqp://user:pass@host:port/vhost` (a secret: never logged).
    pub url: String,
    /// Durable topic exchange events are published to (default `troupe.events`).
    pub exchange: String,
    /// Bus topic filters the bridge subscribes to (default `*`).
    pub topics: Vec<String>,
    /// Most published, unconfirmed messages (default 1000).
    pub confirm_window: usize,
    /// Packed mode: many events per AMQP message ([`crate::PackedBatch`]).
    pub packed: bool,
    /// Most events per packed message (default 1000).
    pub packed_max_events: usize,
    /// Returned (unroutable) messages.
    pub returned: ReturnedPolicy,
    /// First delay after a failed publish or connect.
    pub reconnect_initial: Duration,
    /// Longest delay between attempts.
    pub reconnect_max: Duration,
    /// How long to wait for lapin's automatic recovery before connecting afresh.
    pub recovery_wait: Duration,
    /// Inbound bindings.
    pub bindings: Vec<BindingConfig>,
}

impl BridgeConfig {
    /// Defaults for `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            exchange: "troupe.events".to_owned(),
            topics: vec!["*".to_owned()],
            confirm_window: 1000,
            packed: false,
            packed_max_events: 1000,
            returned: ReturnedPolicy::default(),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            recovery_wait: Duration::from_secs(5),
            bindings: Vec::new(),
        }
    }

    /// The bridge the `[rabbitmq]` section describes, or `None` when `rabbitmq.url` is unset (off).
    pub fn from_section(r: &troupe_config::RabbitMqConfig) -> Option<Self> {
        let url = r.url.as_ref()?;
        let mut c = Self::new(url.expose());
        c.exchange.clone_from(&r.exchange);
        c.topics.clone_from(&r.topics);
        c.confirm_window = r.confirm_window;
        c.packed = r.packed;
        c.packed_max_events = r.packed_max_events;
        c.returned = match r.returned {
            troupe_config::ReturnedMessages::DeadLetter => ReturnedPolicy::DeadLetter,
            troupe_config::ReturnedMessages::Drop => ReturnedPolicy::Drop,
            troupe_config::ReturnedMessages::Retry => ReturnedPolicy::Retry,
        };
        c.reconnect_initial = r.reconnect_initial;
        c.reconnect_max = r.reconnect_max;
        c.bindings = r
            .bindings
            .iter()
            .map(|b| BindingConfig {
                queue: b.queue.clone(),
                handler: b.handler.clone(),
                prefetch: b.prefetch,
                delivery_limit: b.delivery_limit,
                max_attempts: b.max_attempts,
                dead_letter_exchange: b.dead_letter_exchange.clone(),
                routing_keys: b.routing_keys.clone(),
                exchange: b.exchange.clone(),
            })
            .collect();
        Some(c)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), AmqpError> {
        if self.confirm_window == 0 || self.confirm_window > 65_535 {
            return Err(AmqpError::Config("confirm_window must be 1..=65535".to_owned()));
        }
        if self.packed_max_events == 0 {
            return Err(AmqpError::Config("packed_max_events must be at least 1".to_owned()));
        }
        if self.exchange.is_empty() || self.exchange.len() > 255 {
            return Err(AmqpError::Config("exchange must be 1..=255 bytes".to_owned()));
        }
        if self.topics.is_empty() {
            return Err(AmqpError::Config("at least one topic filter".to_owned()));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return Err(AmqpError::Config("reconnect backoff: 0 < initial <= max".to_owned()));
        }
        for b in &self.bindings {
            if b.queue.is_empty() || b.handler.is_empty() || b.prefetch == 0 || b.max_attempts == 0 {
                return Err(AmqpError::Config(format!(
                    "binding {:?}: queue and handler set, prefetch and max_attempts at least 1",
                    b.queue
                )));
            }
        }
        Ok(())
    }

    /// Events per bus call and calls in flight, as the bridge subscribes to the bus. Unpacked, the
    /// window is split into ~10 calls plus 2 more, so the publisher holds the next events when a
    /// confirm frees room: the window slides message by message (the publisher itself keeps at most
    /// `confirm_window` unconfirmed) instead of refilling a whole call at a time.
    pub fn batching(&self) -> (usize, usize) {
        if self.packed {
            // One packed message per call; a few calls in flight.
            (self.packed_max_events, 4)
        } else {
            let calls = 10.min(self.confirm_window);
            (self.confirm_window.div_ceil(calls), calls + 2)
        }
    }
}
