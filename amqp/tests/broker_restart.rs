//! The broker restarts (`rabbitmqctl stop_app` / `start_app`) in the middle of a 50,000-event stream:
//! every event arrives, repeats only by id. This stops the broker for everyone, so it is the only test
//! of this binary (cargo runs test binaries one at a time); the broker is started again even when the
//! test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr, reason = "tests")]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures::future::BoxFuture;
use troupe_amqp::{BindingConfig, BridgeConfig, InboundError, InboundHandler, InboundMessage};

/// Counts inbound messages.
struct Count(Arc<AtomicUsize>);

impl InboundHandler for Count {
    fn handle(&self, _: InboundMessage) -> BoxFuture<'static, Result<(), InboundError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl").args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Starts the broker app again when dropped (also on a failed assertion).
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

const N: usize = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    // `RUST_LOG=troupe_amqp=debug` shows the bridge's reconnections when this test is investigated.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    }
    let Some(conn) = broker().await else { return };
    // A broker just started (by an earlier run) can take a moment to answer rabbitmqctl.
    let ctl_works = (0..5).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        rabbitmqctl(&["status"])
    });
    if !ctl_works {
        assert!(!troupe_config::require_services(), "rabbitmqctl does not work and TROUPE_REQUIRE_SERVICES=1");
        eprintln!("skipping: rabbitmqctl does not work here");
        return;
    }
    let ch = conn.create_channel().await.unwrap();
    let (exchange, queue) = (unique("x"), unique("q"));
    exchange_and_queue(&ch, &exchange, &queue).await;
    drop(ch);
    drop(conn);
    let (store, _dir) = store().await;
    append(&store, "order.placed", 0, N).await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    config.reconnect_max = Duration::from_secs(2);
    // An inbound binding too: its consumer must come back after the restart.
    let inbound = unique("in");
    let mut binding = BindingConfig::new(&inbound, "count");
    binding.dead_letter_exchange = unique("dlx");
    config.bindings = vec![binding.clone()];
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let node = start_with(&store, config, vec![], move |b| b.with_handler("count", Arc::new(Count(h)))).await;
    let q = queue.clone();
    let consumer = tokio::spawn(async move { collect(&q, N, Duration::from_secs(240)).await });

    // Stop the broker once part of the stream is out.
    eventually("a fifth published", Duration::from_secs(60), || async { outbox_len(&store).await < N * 4 / 5 }).await;
    let left_before = outbox_len(&store).await;
    let guard = Restart;
    assert!(rabbitmqctl(&["stop_app"]), "stop_app");
    // Readiness shows the broker down (within a few seconds: a confirm timeout or a closed link).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut health = node.bridge.probe().health();
    while health.status == troupe_actors::ComponentStatus::Up && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = node.bridge.probe().health();
    }
    drop(guard); // start_app + await_startup
    eprintln!("stopped with {left_before} left; health while down: {health:?}");
    assert!(left_before > 0, "the broker stopped mid-stream");
    assert_ne!(health.status, troupe_actors::ComponentStatus::Up, "readiness shows the broker down");
    assert!(!health.critical, "non-critical: events wait in the outbox");

    let seen = consumer.await.unwrap();
    let distinct: HashSet<&String> = seen.ids.iter().collect();
    let expected: HashSet<String> = (0..N).map(|j| format!("ev-{j:08}")).collect();
    let missing = expected.iter().filter(|id| !distinct.contains(id)).count();
    assert_eq!(missing, 0, "every event arrived ({} deliveries, {} distinct)", seen.ids.len(), distinct.len());
    assert!(distinct.iter().all(|id| expected.contains(*id)), "nothing but the events");
    eprintln!("{} deliveries for {N} events ({} repeats)", seen.ids.len(), seen.ids.len() - N);
    eventually("outbox drained", Duration::from_secs(60), || async { outbox_len(&store).await == 0 }).await;
    assert!(node.bus.dead_letters(10, None).await.unwrap().items.is_empty(), "nothing dead-lettered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut health = node.bridge.probe().health();
    while health.status != troupe_actors::ComponentStatus::Up && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = node.bridge.probe().health();
    }
    assert_eq!(health.status, troupe_actors::ComponentStatus::Up, "health up again: {health:?}");
    // The inbound consumer is back: a message published now is handled.
    let conn = broker().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let before = handled.load(Ordering::SeqCst);
    ch.basic_publish(
        "".into(),
        inbound.as_str().into(),
        Default::default(),
        b"{}",
        lapin::BasicProperties::default().with_content_type("application/json".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    eventually("inbound consumer recreated", Duration::from_secs(30), || async {
        handled.load(Ordering::SeqCst) > before
    })
    .await;
    node.root.shutdown(Duration::from_secs(5)).await;
    delete(&ch, &[&exchange, &binding.dead_letter_exchange], &[&queue, &inbound]).await;
}
