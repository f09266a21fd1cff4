//! Bridge benchmarks against the local broker (plain `harness = false` main printing medians of
//! `TROUPE_BENCH_RUNS` runs, default 3; every comparison is measured in the same run):
//!
//! - publish with confirms, 256-byte persistent messages, window 1000: raw lapin (sliding window)
//!   (minimal properties, and the bridge's properties: the same message on the wire) vs the bridge's
//!   outbound (`Outbound` driven like the bus drives it, `BridgeConfig::batching`) vs the whole path
//!   (fjall outbox → event bus → bridge); each path into its own fresh queue, the order rotating
//!   from run to run; CPU per message of this process and (with `TROUPE_BENCH_BROKER_PID`) the broker's;
//! - consume with manual acks, prefetch 256, from a quorum queue: raw lapin vs the bridge's inbound
//!   consumer with a no-op handler;
//! - packed mode (1000 events per message), driven directly and through the bus;
//! - the bus alone (outbox → no-op batch subscriber).
//!
//! Run: `cargo bench -p troupe-amqp --bench bridge` (RabbitMQ at 127.0.0.1:5672, guest/guest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr, reason = "bench")]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use troupe_actors::bus::{BatchHandler, BatchResults, BusConfig, BusEvent, EventBus, Subscription};
use troupe_actors::{Backoff, Registry, Supervisor, SupervisorSpec};
use troupe_amqp::{BindingConfig, Bridge, BridgeConfig, InboundError, InboundHandler, InboundMessage};
use troupe_storage::{FjallBackend, Store, SystemClock, WriteBatch};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const N: usize = 50_000;
const PACKED_N: usize = 300_000;
const WINDOW: usize = 1000;
const PREFETCH: u16 = 256;

fn unique(what: &str) -> String {
    format!("troupe.bench.{what}.{}", uuid::Uuid::now_v7().simple())
}

async fn exchange_with_queue(ch: &Channel, exchange: &str, queue: &str) {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(queue.into(), exchange.into(), "#".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
}

async fn drop_all(ch: &Channel, exchange: &str, queue: &str) {
    let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    let _ = ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
}

fn payload() -> Vec<u8> {
    vec![b'x'; 256]
}

/// Raw lapin: publish N with confirms, at most WINDOW unconfirmed; `same_message`: with the properties
/// the bridge sets (content type, type), so both put the same message on the wire.
async fn raw_publish(conn: &Connection, exchange: &str, same_message: bool) -> f64 {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let body = payload();
    let t0 = Instant::now();
    let mut inflight = VecDeque::with_capacity(WINDOW);
    for i in 0..N {
        if inflight.len() >= WINDOW {
            let c: lapin::PublisherConfirm = inflight.pop_front().unwrap();
            assert!(c.await.unwrap().is_ack());
        }
        let mut headers = FieldTable::default();
        headers.insert("x-troupe-outbox-id".into(), AMQPValue::LongLongInt(i as i64));
        let props = BasicProperties::default()
            .with_message_id(i.to_string().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        // The bridge's message also carries a content type and `type` = the event type.
        let props = if same_message {
            props.with_content_type("application/octet-stream".into()).with_type("bench.event".into())
        } else {
            props
        };
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        inflight.push_back(ch.basic_publish(exchange.into(), "bench.event".into(), opts, &body, props).await.unwrap());
    }
    for c in inflight {
        assert!(c.await.unwrap().is_ack());
    }
    N as f64 / t0.elapsed().as_secs_f64()
}

fn events(n: usize) -> Vec<Arc<BusEvent>> {
    let body = Bytes::from(payload());
    (0..n)
        .map(|i| Arc::new(BusEvent { id: i as u64 + 1, topic: "bench.event".into(), payload: body.clone() }))
        .collect()
}

/// The bridge's outbound driven like the bus drives it: `batch` events per call, 4 calls in flight.
async fn bridge_publish(exchange: &str, packed: bool, n: usize) -> f64 {
    let mut config = BridgeConfig::new(URL);
    config.exchange = exchange.to_owned();
    config.packed = packed;
    config.confirm_window = WINDOW;
    let bridge = Bridge::new(config.clone(), Registry::new()).unwrap();
    let out = bridge.outbound().clone();
    let task = tokio::spawn(out.run());
    // Warm up: connect.
    let warm = out.handle_batch(events(1)).await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    let all = events(n);
    // The batch size and calls in flight the bridge subscribes to the bus with.
    let (batch, calls) = config.batching();
    let t0 = Instant::now();
    let mut inflight: FuturesOrdered<BoxFuture<'static, BatchResults>> = FuturesOrdered::new();
    for chunk in all.chunks(batch) {
        if inflight.len() >= calls {
            let r = inflight.next().await.unwrap();
            assert!(r.iter().all(Result::is_ok));
        }
        inflight.push_back(out.handle_batch(chunk.to_vec()));
    }
    while let Some(r) = inflight.next().await {
        assert!(r.iter().all(Result::is_ok));
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    task.abort();
    rate
}

async fn store_with(n: usize) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    let store = Store::new(Arc::new(backend), Arc::new(SystemClock));
    let body = payload();
    let mut i = 0;
    while i < n {
        let mut batch = WriteBatch::new();
        for _ in i..(i + 5000).min(n) {
            batch.append_outbox("bench.event", body.clone());
        }
        store.commit(batch).await.unwrap();
        i += 5000;
    }
    (store, dir)
}

fn bus_config() -> BusConfig {
    BusConfig {
        poll_interval: Duration::from_millis(5),
        page_size: 4096,
        max_in_flight: 16_384,
        ..BusConfig::default()
    }
}

/// Waits until the outbox is empty. The store is asked only while the bus holds nothing: a scan from
/// the outbox's start walks every acknowledged entry's tombstone, and polling it every few ms during the
/// run cost the bus a third of its CPU (measured) — the harness must not slow down what it measures.
async fn drained(store: &Store, bus: &EventBus) {
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if bus.in_flight() == 0 && store.pending_outbox(1).await.unwrap().is_empty() {
            return;
        }
    }
}

/// Outbox → bus → bridge, `n` entries appended beforehand.
async fn through_bus(exchange: &str, packed: bool, n: usize) -> f64 {
    let (store, _dir) = store_with(n).await;
    let mut config = BridgeConfig::new(URL);
    config.exchange = exchange.to_owned();
    config.packed = packed;
    let registry = Registry::new();
    let bus = EventBus::new(store.clone(), bus_config()).unwrap();
    let bridge = Bridge::new(config, registry.clone()).unwrap();
    bridge.subscribe(&bus).unwrap();
    let t0 = Instant::now();
    let spec = SupervisorSpec::new("b")
        .backoff(Backoff::NONE)
        .child(bridge.child_spec("rabbitmq"))
        .child(bus.child_spec("bus"));
    let root = Supervisor::start_root(spec, registry).await.unwrap();
    drained(&store, &bus).await;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    root.shutdown(Duration::from_secs(5)).await;
    rate
}

struct Noop;
impl BatchHandler for Noop {
    fn handle_batch(&self, events: Vec<Arc<BusEvent>>) -> BoxFuture<'static, BatchResults> {
        let n = events.len();
        Box::pin(async move { vec![Ok(()); n] })
    }
}

/// The bus alone: outbox → a no-op batch subscriber.
async fn bus_alone(n: usize) -> f64 {
    let (store, _dir) = store_with(n).await;
    let registry = Registry::new();
    let bus = EventBus::new(store.clone(), bus_config()).unwrap();
    bus.subscribe_with(Subscription::batched("noop", &["*"], Arc::new(Noop), 1000, 4).unwrap()).unwrap();
    let t0 = Instant::now();
    let root = Supervisor::start_root(SupervisorSpec::new("b").child(bus.child_spec("bus")), registry).await.unwrap();
    drained(&store, &bus).await;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    root.shutdown(Duration::from_secs(5)).await;
    rate
}

/// Fills a quorum queue (declared like the bridge declares it) with N messages.
async fn fill_quorum(conn: &Connection, binding: &BindingConfig) {
    let ch = conn.create_channel().await.unwrap();
    troupe_amqp::inbound::declare(&ch, binding).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let body = payload();
    let mut inflight = VecDeque::new();
    for i in 0..N {
        if inflight.len() >= WINDOW {
            let c: lapin::PublisherConfirm = inflight.pop_front().unwrap();
            c.await.unwrap();
        }
        let props = BasicProperties::default().with_message_id(i.to_string().into()).with_delivery_mode(2);
        inflight.push_back(
            ch.basic_publish("".into(), binding.queue.as_str().into(), Default::default(), &body, props).await.unwrap(),
        );
    }
    for c in inflight {
        c.await.unwrap();
    }
}

fn binding() -> BindingConfig {
    let queue = unique("in");
    let mut b = BindingConfig::new(&queue, "noop");
    b.prefetch = PREFETCH;
    b
}

async fn cleanup_binding(conn: &Connection, b: &BindingConfig) {
    let ch = conn.create_channel().await.unwrap();
    let _ = ch.queue_delete(b.queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = ch.exchange_delete(b.dead_letter_exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
}

async fn raw_consume(conn: &Connection) -> f64 {
    let b = binding();
    fill_quorum(conn, &b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await.unwrap();
    let t0 = Instant::now();
    let mut consumer = ch
        .basic_consume(b.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut n = 0;
    while n < N {
        let d = consumer.next().await.unwrap().unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        n += 1;
    }
    let rate = N as f64 / t0.elapsed().as_secs_f64();
    drop(consumer);
    let _ = ch.close(200, "done".into()).await;
    cleanup_binding(conn, &b).await;
    rate
}

struct Count(Arc<AtomicUsize>);
impl InboundHandler for Count {
    fn handle(&self, _: InboundMessage) -> BoxFuture<'static, Result<(), InboundError>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

async fn bridge_consume(conn: &Connection) -> f64 {
    let b = binding();
    fill_quorum(conn, &b).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let mut config = BridgeConfig::new(URL);
    config.bindings = vec![b.clone()];
    let bridge = Bridge::new(config, Registry::new()).unwrap().with_handler("noop", Arc::new(Count(acked.clone())));
    let t0 = Instant::now();
    let root = Supervisor::start_root(SupervisorSpec::new("b").child(bridge.child_spec("rabbitmq")), Registry::new())
        .await
        .unwrap();
    // Handled counts before the ack; wait for the queue to be empty of unacked messages too.
    while acked.load(Ordering::Relaxed) < N {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ch = conn.create_channel().await.unwrap();
    loop {
        let q = ch
            .queue_declare(
                b.queue.as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = N as f64 / t0.elapsed().as_secs_f64();
    root.shutdown(Duration::from_secs(5)).await;
    cleanup_binding(conn, &b).await;
    rate
}

/// CPU time (user + system) of this process so far, in seconds (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU time of the broker when `TROUPE_BENCH_BROKER_PID` names its process (e.g. `pgrep beam.smp`).
fn broker_cpu_seconds() -> Option<f64> {
    std::env::var("TROUPE_BENCH_BROKER_PID").ok().map(|pid| cpu_seconds_of(&pid))
}

fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One publish path's measurements, a value per run.
#[derive(Default)]
struct Samples {
    /// Messages per second.
    rate: Vec<f64>,
    /// CPU µs per message of this process.
    cpu: Vec<f64>,
    /// CPU µs per message of the broker (with `TROUPE_BENCH_BROKER_PID`).
    broker: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, v: Vec<f64>) -> f64 {
    let runs: Vec<String> = v.iter().map(|r| format!("{:.0}", r)).collect();
    let m = median(v);
    println!("{name:<48} median {m:>10.0} /s   runs [{}]", runs.join(", "));
    m
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let _ = LongString::from("");
    let conn = match Connection::connect(URL, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping: RabbitMQ not reachable ({e})");
            return;
        }
    };
    let ch = conn.create_channel().await.unwrap();
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |s: &str| only.as_deref().is_none_or(|o| s.contains(o));
    let (mut raw_c, mut bridge_c) = (Vec::new(), Vec::new());
    let (mut packed, mut packed_bus, mut bus) = (Vec::new(), Vec::new(), Vec::new());
    // Publish paths, in report order: raw lapin, raw lapin with the bridge's message, bridge, via bus.
    let mut publish: [Samples; 4] = Default::default();
    let runs: usize = std::env::var("TROUPE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for run in 0..runs {
        if want("publish") {
            // Each path publishes into its own fresh queue (a queue that already holds the previous
            // path's 50,000 messages is slower to append to), and the order rotates from run to run,
            // so no path always goes first on a cold broker or last on a warm one.
            for k in 0..4 {
                let path = (k + run) % 4;
                let (x, q) = (unique("x"), unique("q"));
                exchange_with_queue(&ch, &x, &q).await;
                let (cpu0, broker0) = (cpu_seconds(), broker_cpu_seconds());
                let rate = match path {
                    0 => raw_publish(&conn, &x, false).await,
                    1 => raw_publish(&conn, &x, true).await,
                    2 => bridge_publish(&x, false, N).await,
                    _ => through_bus(&x, false, N).await,
                };
                let samples = &mut publish[path];
                samples.rate.push(rate);
                samples.cpu.push((cpu_seconds() - cpu0) * 1e6 / N as f64);
                if let (Some(b0), Some(b1)) = (broker0, broker_cpu_seconds()) {
                    samples.broker.push((b1 - b0) * 1e6 / N as f64);
                }
                drop_all(&ch, &x, &q).await;
            }
        }
        if want("consume") {
            raw_c.push(raw_consume(&conn).await);
            bridge_c.push(bridge_consume(&conn).await);
        }
        if want("packed") {
            let (x, q) = (unique("x"), unique("q"));
            exchange_with_queue(&ch, &x, &q).await;
            packed.push(bridge_publish(&x, true, PACKED_N).await);
            packed_bus.push(through_bus(&x, true, PACKED_N).await);
            drop_all(&ch, &x, &q).await;
        }
        if want("bus") {
            bus.push(bus_alone(PACKED_N).await);
        }
    }
    println!("messages/events per second, {runs} runs, 256-byte payloads");
    if !publish[0].rate.is_empty() {
        let [raw, raw_same, bridged, bused] = publish;
        let r = report("publish+confirm raw lapin (window 1000)", raw.rate.clone());
        let s = report("publish+confirm raw lapin, bridge's properties", raw_same.rate.clone());
        let b = report("publish+confirm bridge outbound", bridged.rate.clone());
        let t = report("publish+confirm outbox -> bus -> bridge", bused.rate.clone());
        println!("  bridge / raw = {:.2}, via bus / raw = {:.2}", b / r, t / r);
        println!("  same message: bridge / raw = {:.2}, via bus / raw = {:.2}", b / s, t / s);
        // Ratios within each run (the paths of one run ran back to back), then their median.
        let per_run = |a: &[f64], base: &[f64]| median(a.iter().zip(base).map(|(a, b)| a / b).collect());
        println!(
            "  per-run ratio medians: bridge / raw {:.2}, via bus / raw {:.2}, bridge / same {:.2}, via bus / same {:.2}",
            per_run(&bridged.rate, &raw.rate),
            per_run(&bused.rate, &raw.rate),
            per_run(&bridged.rate, &raw_same.rate),
            per_run(&bused.rate, &raw_same.rate)
        );
        let paths = [raw, raw_same, bridged, bused];
        let cpu = paths.each_ref().map(|p| median(p.cpu.clone()));
        println!(
            "  bench process CPU per message (median, us): raw {:.1}, raw same message {:.1}, bridge {:.1}, via bus {:.1} (includes filling the outbox)",
            cpu[0], cpu[1], cpu[2], cpu[3]
        );
        if !paths[0].broker.is_empty() {
            let b = paths.map(|p| median(p.broker));
            println!(
                "  broker CPU per message (median, us): raw {:.1}, raw same message {:.1}, bridge {:.1}, via bus {:.1}",
                b[0], b[1], b[2], b[3]
            );
        }
    }
    if !raw_c.is_empty() {
        let r = report("consume+ack raw lapin (quorum, prefetch 256)", raw_c);
        let b = report("consume+ack bridge inbound (no-op handler)", bridge_c);
        println!("  bridge / raw = {:.2}", b / r);
    }
    if !packed.is_empty() {
        report("packed (1000/msg) bridge outbound, events", packed);
        report("packed (1000/msg) outbox -> bus -> bridge", packed_bus);
    }
    if !bus.is_empty() {
        report("bus alone: outbox -> no-op batch subscriber", bus);
    }
}
