//! End-to-end tests of the RabbitMQ bridge on the real `troupe` binary and a real broker: a user
//! registered over REST shows up as `user.created` on the exchange; a node SIGKILLed in the middle of
//! a stream of events publishes every committed event after its restart. Skipped (with a reason) when
//! the broker is unreachable, unless `TROUPE_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr, reason = "tests")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Node, http, token_for};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SECRET: &str = "an-e2e-test-secret-of-at-least-32-bytes!";

async fn broker() -> Option<Connection> {
    match tokio::time::timeout(Duration::from_secs(5), Connection::connect(URL, ConnectionProperties::default())).await
    {
        Ok(Ok(c)) => Some(c),
        other => {
            let reason = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timeout".to_owned(),
            };
            assert!(!troupe_config_require(), "RabbitMQ not reachable ({reason}) and TROUPE_REQUIRE_SERVICES=1");
            eprintln!("skipping: RabbitMQ not reachable ({reason})");
            None
        }
    }
}

fn troupe_config_require() -> bool {
    std::env::var("TROUPE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn unique(what: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("troupe.e2e.{what}.{t}.{}", std::process::id())
}

/// Declares the exchange (as the node does) and a queue bound to every routing key.
async fn queue_on(ch: &Channel, exchange: &str, queue: &str) {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(queue.into(), exchange.into(), "#".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
}

async fn cleanup(ch: &Channel, exchange: &str, queue: &str) {
    let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    let _ = ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
}

/// Consumes `queue` until `done` says so or `limit` passes; returns (routing key, message id, JSON body).
async fn consume_until(
    conn: &Connection,
    queue: &str,
    limit: Duration,
    mut done: impl FnMut(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    let ch = conn.create_channel().await.unwrap();
    let mut consumer =
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let id = d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
                let body: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                got.push((d.routing_key.to_string(), id, body));
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            _ => break,
        }
    }
    got
}

fn envs(exchange: &str) -> Vec<(&str, &str)> {
    vec![
        ("TROUPE_AUTH_JWT_SECRET", SECRET),
        ("TROUPE_RABBITMQ_URL", URL),
        ("TROUPE_RABBITMQ_EXCHANGE", exchange),
        ("TROUPE_GATEWAY_RATE_LIMIT_WRITE_PER_SECOND", "100000"),
        ("TROUPE_GATEWAY_RATE_LIMIT_WRITE_BURST", "100000"),
        ("TROUPE_GATEWAY_RATE_LIMIT_AUTH_PER_SECOND", "1000"),
        ("TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURST", "1000"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_user_arrives_as_user_created_on_the_exchange() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    let (exchange, queue) = (unique("x"), unique("q"));
    queue_on(&ch, &exchange, &queue).await;
    let node = Node::start(&envs(&exchange));
    let c = http();
    let r = c
        .post(node.url("/api/v1/auth/register"))
        .json(&json!({"email": "amqp@example.com", "password": "correct horse battery staple", "display_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    let got = consume_until(&conn, &queue, Duration::from_secs(20), |got| {
        got.iter().any(|(key, _, _)| key == "user.created")
    })
    .await;
    let (_, id, body) = got.iter().find(|(key, _, _)| key == "user.created").expect("user.created on the exchange");
    assert_eq!(body["aggregate_id"], user["id"], "{body}");
    assert_eq!(id, body["id"].as_str().unwrap(), "message id = domain event id");
    // Readiness lists the broker connection.
    let ready: Value = c.get(node.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert!(ready.to_string().contains("rabbitmq"), "{ready}");
    drop(node);
    cleanup(&ch, &exchange, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_publishes_every_committed_event_after_restart() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.unwrap();
    let (exchange, queue) = (unique("x"), unique("q"));
    queue_on(&ch, &exchange, &queue).await;
    let env = envs(&exchange);
    let mut node = Node::start(&env);
    let c = http();
    let token = token_for(&c, &node, "writer@example.com").await;

    // Post content concurrently; SIGKILL the node while posts are still going.
    let committed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut posters = Vec::new();
    for w in 0..4 {
        let (c, url, token, committed) = (c.clone(), node.url("/api/v1/content"), token.clone(), committed.clone());
        posters.push(tokio::spawn(async move {
            for i in 0..1000 {
                let body = json!({"title": format!("t{w}-{i}"), "body": "b", "tags": []});
                let Ok(r) = c.post(&url).bearer_auth(&token).json(&body).send().await else { return };
                if r.status() != 201 {
                    return;
                }
                let v: Value = r.json().await.unwrap();
                committed.lock().unwrap().push(v["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    while committed.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(10));
    for p in posters {
        let _ = p.await;
    }
    let committed: HashSet<String> = committed.lock().unwrap().iter().cloned().collect();
    eprintln!("{} posts committed before the kill", committed.len());

    let node = Node::start_in(node.take_data(), &env);
    let got = consume_until(&conn, &queue, Duration::from_secs(60), |got| {
        let seen: HashSet<&str> = got
            .iter()
            .filter(|(key, _, _)| key == "content.created")
            .filter_map(|(_, _, b)| b["aggregate_id"].as_str())
            .collect();
        committed.iter().all(|id| seen.contains(id.as_str()))
    })
    .await;
    let seen: HashSet<&str> = got
        .iter()
        .filter(|(key, _, _)| key == "content.created")
        .filter_map(|(_, _, b)| b["aggregate_id"].as_str())
        .collect();
    let missing: Vec<&String> = committed.iter().filter(|id| !seen.contains(id.as_str())).collect();
    assert!(missing.is_empty(), "{} committed events never arrived", missing.len());
    // Repeats only by id: every delivery of an id carries the same event.
    let ids: HashSet<&str> = got.iter().map(|(_, id, _)| id.as_str()).collect();
    assert!(ids.len() <= got.len());
    drop(node);
    cleanup(&ch, &exchange, &queue).await;
}
