//! Inbound through a real broker: poison messages land in the dead-letter exchange with a reason
//! header; a message drives an actor and is acked only after the actor stored its effect.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::future::BoxFuture;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_actors::ChildSpec;
use troupe_amqp::inbound::REASON_HEADER;
use troupe_amqp::{BindingConfig, BridgeConfig, Delivery, InboundError, InboundHandler, InboundMessage, Payload};
use troupe_storage::{Key, Store};

/// Accepts JSON without `bad`, rejects `{"bad": true}`, fails `{"flaky": true}` every time.
#[derive(Default)]
struct Probe {
    ok: Mutex<Vec<String>>,
    calls: AtomicUsize,
}

impl InboundHandler for Probe {
    fn handle(&self, m: InboundMessage) -> BoxFuture<'static, Result<(), InboundError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result = match &m.payload {
            Payload::Json(v) if v.get("bad").is_some() => Err(InboundError::Reject("bad order".into())),
            Payload::Json(v) if v.get("flaky").is_some() => Err(InboundError::Retry("downstream down".into())),
            _ => {
                self.ok.lock().unwrap().push(m.message_id.clone());
                Ok(())
            }
        };
        Box::pin(async move { result })
    }
}

async fn publish(ch: &Channel, queue: &str, id: &str, content_type: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
            .with_message_id(id.into())
            .with_content_type(content_type.into())
            .with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Declares `dlx` (as the bridge does) and a queue bound to it.
async fn dead_letter_queue(ch: &Channel, dlx: &str, dq: &str) {
    ch.exchange_declare(
        dlx.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(dq.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(dq.into(), dlx.into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.unwrap();
}

fn binding(queue: &str, dlx: &str, handler: &str) -> BindingConfig {
    let mut b = BindingConfig::new(queue, handler);
    b.dead_letter_exchange = dlx.to_owned();
    b.max_attempts = 3;
    b.prefetch = 8;
    b
}

async fn wait_up(node: &Node) {
    eventually("bridge up", Duration::from_secs(20), || async {
        node.bridge.probe().health().status == troupe_actors::ComponentStatus::Up
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_land_in_the_dead_letter_exchange_with_a_reason() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let (queue, dlx, dq, exchange) = (unique("in"), unique("dlx"), unique("dq"), unique("x"));
    dead_letter_queue(&ch, &dlx, &dq).await;
    let (store, _dir) = store().await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    config.bindings = vec![binding(&queue, &dlx, "probe")];
    let probe = Arc::new(Probe::default());
    let p = Arc::clone(&probe);
    let node = start_with(&store, config, vec![], move |b| b.with_handler("probe", p)).await;
    wait_up(&node).await;

    publish(&ch, &queue, "good", "application/json", br#"{"order": 1}"#).await;
    publish(&ch, &queue, "garbled", "application/json", b"{not json").await;
    publish(&ch, &queue, "bad", "application/json", br#"{"bad": true}"#).await;
    publish(&ch, &queue, "flaky", "application/json", br#"{"flaky": true}"#).await;
    publish(&ch, &queue, "pc", "application/x-postcard", &postcard::to_allocvec(&(1u32, "x")).unwrap()).await;

    let mut reasons = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < 3 && tokio::time::Instant::now() < deadline {
        match ch.basic_get(dq.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(m) => {
                let id = m.delivery.properties.message_id().as_ref().unwrap().to_string();
                let headers = m.delivery.properties.headers().clone().unwrap();
                reasons.insert(id, header(&headers, REASON_HEADER).unwrap());
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(reasons["garbled"].contains("undecodable"), "{reasons:?}");
    assert!(reasons["bad"].contains("bad order"), "{reasons:?}");
    assert!(reasons["flaky"].contains("failed 3 times"), "{reasons:?}");
    assert_eq!(reasons.len(), 3, "only the poison ones: {reasons:?}");
    let mut ok = probe.ok.lock().unwrap().clone();
    ok.sort();
    assert_eq!(ok, vec!["good".to_owned(), "pc".to_owned()]);
    node.root.shutdown(Duration::from_secs(5)).await;
    // Everything was acked: nothing is left in the queue.
    assert!(ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().is_none());
    delete(&ch, &[&dlx, &exchange], &[&queue, &dq]).await;
}

/// A service actor: fails the first delivery of each message (before storing anything), stores the
/// second one's id in the store, then answers `Ok`.
#[derive(Clone)]
struct Sink {
    store: Store,
    tries: Arc<Mutex<std::collections::HashMap<String, u32>>>,
    redelivered: Arc<AtomicUsize>,
}

impl Actor for Sink {
    type Msg = Delivery;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Delivery>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Delivery>, msg: Delivery, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let id = msg.message.message_id.clone();
        if msg.message.redelivered {
            self.redelivered.fetch_add(1, Ordering::SeqCst);
        }
        let n = {
            let mut tries = self.tries.lock().unwrap();
            let n = tries.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        if n == 1 {
            let _ = msg.reply.send(Err(InboundError::Retry("not yet".into())));
            return Ok(());
        }
        self.store.put("orders", &Key::empty(), &Key::empty().str(&id), b"stored".to_vec()).await?;
        let _ = msg.reply.send(Ok(()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_message_drives_an_actor_and_is_acked_after_its_effect_is_stored() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let (queue, dlx, dq, exchange) = (unique("in"), unique("dlx"), unique("dq"), unique("x"));
    dead_letter_queue(&ch, &dlx, &dq).await;
    let (store, _dir) = store().await;
    let mut config = BridgeConfig::new(&url());
    config.exchange = exchange.clone();
    config.bindings = vec![binding(&queue, &dlx, "sink")];
    let sink = Sink { store: store.clone(), tries: Arc::default(), redelivered: Arc::default() };
    let node = start(&store, config, vec![ChildSpec::new("sink", sink.clone(), || ())]).await;
    wait_up(&node).await;

    for i in 0..5 {
        publish(&ch, &queue, &format!("order-{i}"), "application/json", br#"{"qty": 2}"#).await;
    }
    eventually("all stored", Duration::from_secs(30), || async {
        let mut n = 0;
        for i in 0..5 {
            if store.get("orders", &Key::empty(), &Key::empty().str(format!("order-{i}"))).await.unwrap().is_some() {
                n += 1;
            }
        }
        n == 5
    })
    .await;
    // Each first attempt failed before the effect was stored: not acked, so the broker delivered it again.
    assert_eq!(sink.redelivered.load(Ordering::SeqCst), 5);
    node.root.shutdown(Duration::from_secs(5)).await;
    assert!(
        ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().is_none(),
        "acked once stored"
    );
    assert!(ch.basic_get(dq.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().is_none());
    delete(&ch, &[&dlx, &exchange], &[&queue, &dq]).await;
}
