//! Outbound through a real broker: every event arrives exactly once by id, with its metadata;
//! returned messages are dead-lettered in the bus; packed mode carries many events per message.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use troupe_amqp::{BridgeConfig, PACKED_CONTENT_TYPE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_event_exactly_once_by_id_in_order() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    let (exchange, queue) = (unique("x"), unique("q"));
    exchange_and_queue(&ch, &exchange, &queue).await;
    let (store, _dir) = store().await;
    append(&store, "user.created", 0, 3000).await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    let node = start(&store, config, vec![]).await;

    let seen = collect(&queue, 3000, Duration::from_secs(60)).await;
    assert_eq!(seen.ids.len(), 3000, "every event, none twice");
    let expected: Vec<String> = (0..3000).map(|j| format!("ev-{j:08}")).collect();
    assert_eq!(seen.ids, expected, "message id = domain event id, in outbox order");
    let headers = seen.first_headers.clone().unwrap();
    assert_eq!(
        header(&headers, "traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert!(seen.content_types.iter().all(|c| c == "application/json"));
    eventually("outbox drained", Duration::from_secs(20), || async { outbox_len(&store).await == 0 }).await;
    let health = node.bridge.probe().health();
    assert_eq!(health.status, troupe_actors::ComponentStatus::Up, "{health:?}");
    assert!(!health.critical);
    node.root.shutdown(Duration::from_secs(5)).await;
    delete(&ch, &[&exchange], &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_messages_are_dead_lettered_in_the_bus_by_default() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    // The bridge declares the exchange; no queue is bound, so every message comes back.
    let exchange = unique("x");
    let (store, _dir) = store().await;
    append(&store, "user.created", 0, 3).await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    let node = start(&store, config, vec![]).await;
    eventually("outbox drained", Duration::from_secs(20), || async { outbox_len(&store).await == 0 }).await;
    let dead = node.bus.dead_letters(10, None).await.unwrap().items;
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|d| d.subscriber == "rabbitmq" && d.last_error.contains("returned")), "{dead:?}");
    node.root.shutdown(Duration::from_secs(5)).await;
    delete(&ch, &[&exchange], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_mode_carries_many_events_per_message() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    let (exchange, queue) = (unique("x"), unique("q"));
    exchange_and_queue(&ch, &exchange, &queue).await;
    let (store, _dir) = store().await;
    append(&store, "metric.sampled", 0, 5000).await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    config.packed = true;
    config.packed_max_events = 500;
    let node = start(&store, config, vec![]).await;
    eventually("outbox drained", Duration::from_secs(30), || async { outbox_len(&store).await == 0 }).await;
    // Read the packed messages back.
    let mut events = Vec::new();
    let mut messages = 0;
    while events.len() < 5000 {
        let got = ch.basic_get(queue.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap();
        let Some(msg) = got else { break };
        messages += 1;
        assert_eq!(msg.delivery.properties.content_type().as_ref().unwrap().as_str(), PACKED_CONTENT_TYPE);
        let batch = troupe_amqp::PackedBatch::decode(&msg.delivery.data).unwrap();
        assert!(batch.events.len() <= 500);
        events.extend(batch.events.into_iter().map(|e| e.id));
    }
    let expected: Vec<String> = (0..5000).map(|j| format!("ev-{j:08}")).collect();
    assert_eq!(events, expected, "every event once, in order");
    assert!(messages < 5000 / 10, "many events per message ({messages} messages)");
    node.root.shutdown(Duration::from_secs(5)).await;
    delete(&ch, &[&exchange], &[&queue]).await;
}

/// The confirm window holds across batches: with more handed over than the window, at most
/// `confirm_window` messages are ever unconfirmed, and a batch larger than the window still
/// completes (its own early confirms make room for its later messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirm_window_bounds_unconfirmed_messages_across_batches() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use troupe_actors::Registry;
    use troupe_actors::bus::{BatchHandler, BusEvent};
    use troupe_amqp::Bridge;

    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    let (exchange, queue) = (unique("x"), unique("q"));
    exchange_and_queue(&ch, &exchange, &queue).await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    config.confirm_window = 8;
    let bridge = Bridge::new(config, Registry::new()).unwrap();
    let out = bridge.outbound().clone();
    let task = tokio::spawn(out.run());

    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (out, peak) = (out.clone(), Arc::clone(&peak));
        tokio::spawn(async move {
            loop {
                peak.fetch_max(out.unconfirmed(), Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let event = |i: u64| Arc::new(BusEvent { id: i, topic: "window.test".into(), payload: Bytes::from_static(b"x") });
    // Five calls of 40 events in flight at once: 200 handed over against a window of 8.
    let calls: Vec<_> = (0..5u64).map(|c| out.handle_batch((c * 40 + 1..=c * 40 + 40).map(event).collect())).collect();
    let results = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
        .await
        .expect("batches larger than the window complete");
    sampler.abort();
    assert!(results.iter().flatten().all(Result::is_ok), "{results:?}");
    let peak = peak.load(Ordering::Relaxed);
    assert!((1..=8).contains(&peak), "unconfirmed peaked at {peak}, window 8");
    let seen = collect(&queue, 200, Duration::from_secs(30)).await;
    assert_eq!(seen.ids.len(), 200);
    task.abort();
    delete(&ch, &[&exchange], &[&queue]).await;
}
