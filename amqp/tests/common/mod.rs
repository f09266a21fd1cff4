//! Helpers of the bridge's broker tests: the broker (or a skip), unique names, a store with an
//! outbox, a node-like tree (bus + bridge under a supervisor), and a test consumer.
#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr, reason = "tests")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use troupe_actors::bus::{BusConfig, EventBus};
use troupe_actors::{Backoff, Registry, RootHandle, Supervisor, SupervisorSpec};
use troupe_amqp::{Bridge, BridgeConfig};
use troupe_storage::{FjallBackend, Store, SystemClock, WriteBatch};

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection to the test broker, or `None` (skip) when it is unreachable.
pub async fn broker() -> Option<Connection> {
    let url = std::env::var("TROUPE_TEST_RABBITMQ_URL").unwrap_or_else(|_| URL.to_owned());
    match tokio::time::timeout(Duration::from_secs(5), Connection::connect(&url, ConnectionProperties::default())).await
    {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) if troupe_config::require_services() => {
            panic!("RabbitMQ not reachable ({e}) and TROUPE_REQUIRE_SERVICES=1")
        }
        Err(_) if troupe_config::require_services() => panic!("RabbitMQ timed out and TROUPE_REQUIRE_SERVICES=1"),
        Ok(Err(e)) => {
            eprintln!("skipping: RabbitMQ not reachable ({e})");
            None
        }
        Err(_) => {
            eprintln!("skipping: RabbitMQ not reachable (timeout)");
            None
        }
    }
}

pub fn url() -> String {
    std::env::var("TROUPE_TEST_RABBITMQ_URL").unwrap_or_else(|_| URL.to_owned())
}

/// A unique name for exchanges and queues of one test.
pub fn unique(what: &str) -> String {
    format!("troupe.test.{what}.{}", uuid::Uuid::now_v7().simple())
}

pub async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    (Store::new(Arc::new(backend), Arc::new(SystemClock)), dir)
}

/// Appends `n` JSON domain-event-like entries (`id` = `ev-{i}`, a traceparent) with topic `topic`;
/// in commits of up to 500.
pub async fn append(store: &Store, topic: &str, from: usize, n: usize) {
    let mut i = from;
    while i < from + n {
        let mut batch = WriteBatch::new();
        for j in i..(i + 500).min(from + n) {
            let payload = serde_json::json!({
                "id": format!("ev-{j:08}"),
                "type": topic,
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "payload": {"n": j},
            });
            batch.append_outbox(topic, serde_json::to_vec(&payload).unwrap());
        }
        store.commit(batch).await.unwrap();
        i = (i + 500).min(from + n);
    }
}

pub fn bus_config() -> BusConfig {
    BusConfig { poll_interval: Duration::from_millis(20), page_size: 512, max_in_flight: 4096, ..BusConfig::default() }
}

/// Bus + bridge under a root supervisor.
pub struct Node {
    pub root: RootHandle,
    pub registry: Registry,
    pub bus: EventBus,
    pub bridge: Bridge,
}

pub async fn start(store: &Store, config: BridgeConfig, extra: Vec<troupe_actors::ChildSpec>) -> Node {
    start_with(store, config, extra, |b| b).await
}

pub async fn start_with(
    store: &Store,
    config: BridgeConfig,
    extra: Vec<troupe_actors::ChildSpec>,
    setup: impl FnOnce(Bridge) -> Bridge,
) -> Node {
    let registry = Registry::new();
    let bus = EventBus::new(store.clone(), bus_config()).unwrap();
    let bridge = setup(Bridge::new(config, registry.clone()).unwrap());
    bridge.subscribe(&bus).unwrap();
    let mut spec = SupervisorSpec::new("t").backoff(Backoff::NONE);
    for child in extra {
        spec = spec.child(child);
    }
    spec = spec.child(bus.child_spec("bus")).child(bridge.child_spec("rabbitmq"));
    let root = Supervisor::start_root(spec, registry.clone()).await.unwrap();
    Node { root, registry, bus, bridge }
}

pub async fn outbox_len(store: &Store) -> usize {
    store.pending_outbox(100_000).await.unwrap().len()
}

/// Declares the durable topic `exchange` and a durable queue bound to it with `#`.
pub async fn exchange_and_queue(ch: &Channel, exchange: &str, queue: &str) {
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(queue.into(), exchange.into(), "#".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
}

pub async fn delete(ch: &Channel, exchanges: &[&str], queues: &[&str]) {
    for q in queues {
        let _ = ch.queue_delete((*q).into(), QueueDeleteOptions::default()).await;
    }
    for e in exchanges {
        let _ = ch.exchange_delete((*e).into(), ExchangeDeleteOptions::default()).await;
    }
}

/// What a test consumer saw: message ids in arrival order, and the headers of the first delivery.
#[derive(Default)]
pub struct Seen {
    pub ids: Vec<String>,
    pub first_headers: Option<FieldTable>,
    pub content_types: Vec<String>,
}

impl Seen {
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for id in &self.ids {
            *m.entry(id.clone()).or_default() += 1;
        }
        m
    }
}

/// Consumes `queue` (auto-ack off, acks each) until `distinct` different message ids were seen or
/// `limit` passed. Uses its own connection with recovery, rebuilt when it fails.
pub async fn collect(queue: &str, distinct: usize, limit: Duration) -> Seen {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Seen::default();
    let mut set = std::collections::HashSet::new();
    'outer: while tokio::time::Instant::now() < deadline {
        // Each setup step is bounded: while a restarted broker boots, a step can go unanswered.
        let setup = async {
            let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            ch.basic_qos(1000, Default::default()).await?;
            let consumer = ch
                .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            Ok::<_, lapin::Error>((conn, ch, consumer))
        };
        let Ok(Ok((_conn, _ch, mut consumer))) = tokio::time::timeout(Duration::from_secs(5), setup).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            // Idle for 10 s with events still missing: the consumer may have died silently in a broker
            // restart; connect again (unacked deliveries come back, counted once by id).
            let idle_until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(10));
            let next = tokio::time::timeout_at(idle_until, consumer.next()).await;
            match next {
                Err(_) if tokio::time::Instant::now() >= deadline => break 'outer,
                Err(_) => continue 'outer,
                Ok(Some(Ok(d))) => {
                    let id = d.properties.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default();
                    if seen.first_headers.is_none() {
                        seen.first_headers = d.properties.headers().clone();
                    }
                    seen.content_types
                        .push(d.properties.content_type().as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default());
                    set.insert(id.clone());
                    seen.ids.push(id);
                    // Bounded too: on a connection that died under it an ack can stay unanswered.
                    if !matches!(
                        tokio::time::timeout(Duration::from_secs(5), d.ack(BasicAckOptions::default())).await,
                        Ok(Ok(_))
                    ) {
                        continue 'outer;
                    }
                    if set.len() >= distinct {
                        break 'outer;
                    }
                }
                Ok(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'outer;
                }
            }
        }
    }
    seen
}

pub fn header(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Polls `cond` until it holds; fails after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
