//! Inbound: one consumer task per binding. It declares the binding's dead-letter exchange (durable
//! fanout) and durable quorum queue (`x-delivery-limit`, `x-dead-letter-exchange`), binds it, consumes
//! with manual acks and a bounded prefetch, decodes each delivery ([`Payload`]: JSON, envelope or
//! postcard bytes) and hands it to the binding's [`InboundHandler`]. A delivery is acked only after
//! the handler answered `Ok` (its effect is durable); a retryable failure requeues it after a short growing pause; a decode
//! failure, a rejection, or the `max_attempts`-th failure (by the queue's `x-delivery-count`) publishes
//! it to the dead-letter exchange with an `x-troupe-dead-letter-reason` header, then acks it. The
//! broker's delivery limit is the backstop. Redeliveries carry new delivery tags and may repeat a
//! message: handlers must be idempotent by message id.
//!
//! Liveness: a consumer can stop silently after a broker restart, so the task also checks its
//! connection and channel every second and rebuilds everything (connection, topology, consumer)
//! as soon as they are not connected, or when the delivery stream fails or ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use ractor::RpcReplyPort;
use tokio::task::JoinSet;
use troupe_actors::envelope::Envelope;

use crate::AmqpError;
use crate::config::{BindingConfig, BridgeConfig};
use crate::link::{self, DOWN, Status, UP};
use crate::message::{ENVELOPE_CONTENT_TYPE, JSON_CONTENT_TYPE};

/// Header carrying why the bridge dead-lettered a message.
pub const REASON_HEADER: &str = "x-troupe-dead-letter-reason";

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `application/json`.
    Json(serde_json::Value),
    /// `application/vnd.troupe.envelope`.
    Envelope(Envelope),
    /// `application/x-postcard`, `application/octet-stream` or no content type: the bytes as sent.
    Bytes(Bytes),
}

/// One delivery as a handler receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The message id (empty when the publisher set none).
    pub message_id: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// String-valued headers (others are left out).
    pub headers: Vec<(String, String)>,
    /// The content type as sent.
    pub content_type: Option<String>,
    /// The decoded payload.
    pub payload: Payload,
    /// Whether the broker delivered it before (a repeat is possible: be idempotent).
    pub redelivered: bool,
}

/// Why a handler did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Transient: requeued, dead-lettered after the binding's `max_attempts`.
    #[error("{0}")]
    Retry(String),
    /// Never acceptable: dead-lettered at once.
    #[error("rejected: {0}")]
    Reject(String),
}

/// Something that takes inbound messages (a pipeline source, a test probe). `Ok` means the effect is
/// durable: the delivery is acked.
pub trait InboundHandler: Send + Sync + 'static {
    /// Handles one message.
    fn handle(&self, message: InboundMessage) -> BoxFuture<'static, Result<(), InboundError>>;
}

/// The message an actor bound by service name must accept: handle `message`, make its effect durable,
/// then answer on `reply`.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: InboundMessage,
    /// Where to answer.
    pub reply: RpcReplyPort<Result<(), InboundError>>,
}

// Local only: deliveries never cross nodes.
impl ractor::Message for Delivery {}

/// An [`InboundHandler`] that forwards to the actor registered under a service name.
pub(crate) struct ActorHandler {
    pub(crate) registry: troupe_actors::Registry,
    pub(crate) service: String,
    pub(crate) timeout: Duration,
}

impl InboundHandler for ActorHandler {
    fn handle(&self, message: InboundMessage) -> BoxFuture<'static, Result<(), InboundError>> {
        let actor = self.registry.actor_ref::<Delivery>(&self.service);
        let timeout = self.timeout;
        let service = self.service.clone();
        Box::pin(async move {
            let actor = actor.map_err(|e| InboundError::Retry(format!("handler {service}: {e}")))?;
            let (tx, rx) = ractor::concurrency::oneshot();
            actor
                .send_message(Delivery { message, reply: tx.into() })
                .map_err(|e| InboundError::Retry(format!("handler {service}: {e}")))?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(InboundError::Retry(format!("handler {service} dropped the reply"))),
                Err(_) => Err(InboundError::Retry(format!("handler {service} timed out"))),
            }
        })
    }
}

/// Metric handles.
#[derive(Clone)]
struct InMetrics {
    consumed: metrics::Counter,
    acked: metrics::Counter,
    dead_lettered: metrics::Counter,
    reconnects: metrics::Counter,
}

/// Decodes a body by its content type.
pub fn decode(content_type: Option<&str>, body: &[u8]) -> Result<Payload, String> {
    match content_type.map(|c| c.split(';').next().unwrap_or("").trim()) {
        Some(JSON_CONTENT_TYPE) => {
            serde_json::from_slice(body).map(Payload::Json).map_err(|e| format!("bad JSON: {e}"))
        }
        Some(ENVELOPE_CONTENT_TYPE) => Envelope::decode(body).map(Payload::Envelope).map_err(|e| e.to_string()),
        None | Some("" | "application/x-postcard" | "application/postcard" | "application/octet-stream") => {
            Ok(Payload::Bytes(Bytes::copy_from_slice(body)))
        }
        Some(other) => Err(format!("unsupported content type {other:?}")),
    }
}

fn header_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn delivery_count(props: &BasicProperties) -> u64 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
            AMQPValue::LongInt(n) => u64::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(u64::from(n)),
            AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// Runs one binding until aborted.
pub(crate) async fn run(
    config: Arc<BridgeConfig>,
    binding: BindingConfig,
    handler: Arc<dyn InboundHandler>,
    status: Status,
) {
    let metrics = InMetrics {
        consumed: metrics::counter!("troupe_amqp_consumed_total", "queue" => binding.queue.clone()),
        acked: metrics::counter!("troupe_amqp_acked_total", "queue" => binding.queue.clone()),
        dead_lettered: metrics::counter!("troupe_amqp_dead_lettered_total", "queue" => binding.queue.clone()),
        reconnects: metrics::counter!("troupe_amqp_reconnects_total", "link" => binding.queue.clone()),
    };
    let mut failures = 0u32;
    let mut ever = false;
    loop {
        match consume(&config, &binding, &handler, &status, &metrics, &mut ever).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(queue = %binding.queue, error = %e, "rabbitmq: consumer failed; reconnecting");
            }
        }
        status.set(DOWN, format!("consumer of {} reconnecting", binding.queue));
        tokio::time::sleep(link::backoff(config.reconnect_initial, config.reconnect_max, failures.max(1))).await;
    }
}

/// Longest a consumer's (re)connection, topology declaration and `basic.consume` may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often (in 1 s ticks) a consumer asks the broker whether its queue still has a consumer.
const LIVENESS_EVERY_TICKS: u64 = 5;

/// Whether the broker reports at least one consumer on the binding's queue (a passive declare,
/// bounded). `false` on any error or timeout too: the caller rebuilds, which is always safe. In a
/// cluster other nodes' consumers count as well, so this catches a lost consumer only where it
/// was the queue's last one.
async fn has_consumers(channel: &Channel, binding: &BindingConfig) -> bool {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel.queue_declare(binding.queue.as_str().into(), passive, FieldTable::default());
    matches!(tokio::time::timeout(Duration::from_secs(5), declared).await, Ok(Ok(q)) if q.consumer_count() > 0)
}

/// Declares the binding's topology on `channel`.
pub async fn declare(channel: &Channel, binding: &BindingConfig) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(
            binding.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(binding.delivery_limit)));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(binding.dead_letter_exchange.as_str())),
    );
    channel
        .queue_declare(
            binding.queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
            args,
        )
        .await?;
    if !binding.routing_keys.is_empty() {
        channel
            .exchange_declare(binding.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        for key in &binding.routing_keys {
            channel
                .queue_bind(
                    binding.queue.as_str().into(),
                    binding.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    Ok(())
}

/// One connection's life: consume until the stream ends or the link stays down.
async fn consume(
    config: &BridgeConfig,
    binding: &BindingConfig,
    handler: &Arc<dyn InboundHandler>,
    status: &Status,
    metrics: &InMetrics,
    ever: &mut bool,
) -> Result<(), AmqpError> {
    // Setting up can hang while the broker boots (a quorum queue without a leader yet answers its
    // declare late): bounded, then retried with backoff.
    let timed_out = || AmqpError::Timeout(format!("setting up the consumer of {}", binding.queue));
    let conn = tokio::time::timeout(
        SETUP_TIMEOUT,
        link::connect_unrecovered(&config.url, &format!("troupe-consumer-{}", binding.queue)),
    )
    .await
    .map_err(|_| timed_out())??;
    // Connection errors and recoveries (lapin's status can look connected while it recovers).
    let mut events = conn.events_listener();
    let setup = async {
        let channel = conn.create_channel().await?;
        channel.basic_qos(binding.prefetch, BasicQosOptions::default()).await?;
        declare(&channel, binding).await?;
        // Dead letters are published on their own confirm-mode channel.
        let dl_channel = conn.create_channel().await?;
        dl_channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                binding.queue.as_str().into(),
                format!("troupe-{}-{}", binding.queue, uuid::Uuid::now_v7()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, dl_channel, consumer))
    };
    let (channel, dl_channel, mut consumer) = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "reconnecting".into())).await;
            return Err(e.into());
        }
        Err(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "reconnecting".into())).await;
            return Err(timed_out());
        }
    };
    if *ever {
        metrics.reconnects.increment(1);
    }
    *ever = true;
    status.set(UP, "connected");
    tracing::info!(queue = %binding.queue, handler = %binding.handler, "rabbitmq: consuming");
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    let result = loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    metrics.consumed.increment(1);
                    let (handler, binding, metrics, dl) =
                        (Arc::clone(handler), binding.clone(), metrics.clone(), dl_channel.clone());
                    tasks.spawn(async move { process(delivery, &*handler, &binding, &metrics, &dl).await });
                }
                Some(Err(e)) => break Err(AmqpError::from(e)),
                None => break Ok(()),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some(event) = events.next() => {
                if matches!(event, lapin::Event::Error(_) | lapin::Event::Connected) {
                    // Lost, or recovered by lapin: the consumer may be dead silently; rebuild.
                    status.set(DOWN, format!("consumer of {} reconnecting", binding.queue));
                    break Ok(());
                }
            }
            _ = tick.tick() => {
                // A consumer can stop silently after the broker restarts, even once lapin has
                // recovered the connection: on any loss rebuild connection, topology and consumer.
                if !(conn.status().connected() && channel.status().connected()) {
                    status.set(DOWN, format!("consumer of {} reconnecting", binding.queue));
                    break Ok(());
                }
                // And ask the broker: a consumer registered while a restarted broker was still
                // recovering the queue can be gone without any event reaching us.
                ticks += 1;
                if ticks.is_multiple_of(LIVENESS_EVERY_TICKS) && !has_consumers(&channel, binding).await {
                    tracing::warn!(queue = %binding.queue, "rabbitmq: the queue has no consumer; rebuilding ours");
                    status.set(DOWN, format!("consumer of {} reconnecting", binding.queue));
                    break Ok(());
                }
            }
        }
    };
    tasks.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "reconnecting".into())).await;
    result
}

/// Handles one delivery: decode, call the handler, then ack, requeue or dead-letter.
async fn process(
    delivery: lapin::message::Delivery,
    handler: &dyn InboundHandler,
    binding: &BindingConfig,
    metrics: &InMetrics,
    dl: &Channel,
) {
    let props = &delivery.properties;
    let content_type = props.content_type().as_ref().map(|c| c.as_str().to_owned());
    let outcome = match decode(content_type.as_deref(), &delivery.data) {
        Err(reason) => Err(InboundError::Reject(format!("undecodable: {reason}"))),
        Ok(payload) => {
            let message = InboundMessage {
                message_id: props.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default(),
                routing_key: delivery.routing_key.as_str().to_owned(),
                headers: props
                    .headers()
                    .as_ref()
                    .map(|h| {
                        h.inner().iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), header_str(v)?))).collect()
                    })
                    .unwrap_or_default(),
                content_type: content_type.clone(),
                payload,
                redelivered: delivery.redelivered,
            };
            handler.handle(message).await
        }
    };
    let reason = match outcome {
        Ok(()) => {
            if delivery.ack(BasicAckOptions::default()).await.is_ok() {
                metrics.acked.increment(1);
            }
            return;
        }
        Err(InboundError::Retry(e)) => {
            // x-delivery-count counts earlier deliveries: this was attempt count + 1.
            let count = delivery_count(props);
            if count + 1 < u64::from(binding.max_attempts) {
                // A short, growing pause first (the slot stays taken), so a failing handler is not
                // called again at once.
                let pause = Duration::from_millis(50).saturating_mul(1u32 << count.min(6)).min(Duration::from_secs(2));
                tokio::time::sleep(pause).await;
                let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
                return;
            }
            format!("failed {} times: {e}", binding.max_attempts)
        }
        Err(InboundError::Reject(e)) => e,
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(LongString::from(reason.as_str())));
    headers.insert("x-troupe-queue".into(), AMQPValue::LongString(LongString::from(binding.queue.as_str())));
    let published = async {
        dl.basic_publish(
            binding.dead_letter_exchange.as_str().into(),
            delivery.routing_key.clone(),
            BasicPublishOptions::default(),
            &delivery.data,
            props.clone().with_headers(headers),
        )
        .await?
        .await
    }
    .await;
    match published {
        Ok(c) if c.is_ack() => {
            tracing::warn!(queue = %binding.queue, %reason, "rabbitmq: message dead-lettered");
            metrics.dead_lettered.increment(1);
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        _ => {
            // Not dead-lettered: requeue it (the broker's delivery limit is the backstop).
            let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
        }
    }
}
