//! End-to-end tests of cross-node channel fan-out with three real `troupe` processes on
//! 127.0.0.1/2/3 sharing a PostgreSQL store: a WebSocket client on one node receives what an admin
//! publishes on another node (`POST /api/v1/channels/{name}/publish`), and a user's notification reaches
//! their WebSocket on every node, whichever node's bus produced it. Skipped (with a printed reason) when
//! PostgreSQL is unreachable, unless `TROUPE_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(clippy::print_stderr, reason = "tests explain why they skip and what they saw")]

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::{Node, eventually, http};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(node: &Node, token: &str) -> Ws {
    let url = format!("ws://{}/ws?token={token}", node.addr);
    tokio_tungstenite::connect_async(url).await.expect("ws connect").0
}

/// The next JSON text frame matching `pred`, within `limit`.
async fn next_matching(ws: &mut Ws, limit: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    tokio::time::timeout(limit, async {
        while let Some(msg) = ws.next().await {
            let Ok(Message::Text(text)) = msg else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            if pred(&v) {
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

async fn subscribe(ws: &mut Ws, channel: &str) {
    ws.send(Message::Text(json!({"op": "subscribe", "channel": channel}).to_string().into())).await.unwrap();
    let ack = next_matching(ws, Duration::from_secs(10), |v| v["op"] == "subscribed" && v["channel"] == channel).await;
    assert!(ack.is_some(), "no subscribe ack for {channel}");
}

fn data_on(channel: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["channel"] == channel && v.get("data").is_some()
}

async fn publish(c: &reqwest::Client, node: &Node, token: &str, channel: &str, data: Value) {
    let r = c
        .post(node.url(&format!("/api/v1/channels/{channel}/publish")))
        .bearer_auth(token)
        .json(&json!({ "data": data }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "publish on {channel}: {}", r.status());
}

/// Starts three nodes and waits until every node lists three `up` members.
async fn three_nodes(pg: &Pg, c: &reqwest::Client) -> (Vec<Node>, String) {
    let specs = [Spec::new("127.0.0.1"), Spec::new("127.0.0.2"), Spec::new("127.0.0.3")];
    let seeds = specs[0].cluster_addr.clone();
    // Tight link bounds (one frame in flight, small queues) still carry every relayed message.
    let links = [
        ("TROUPE_CLUSTER_LINK_FRAMES_IN_FLIGHT", "1"),
        ("TROUPE_CLUSTER_LINK_QUEUE_MESSAGES", "1000"),
        ("TROUPE_CLUSTER_LINK_QUEUE_BYTES", "65536"),
    ];
    let nodes: Vec<Node> = specs.iter().map(|s| s.start_env(pg, &seeds, COOKIE, &links)).collect();
    let token = common::token_for(c, &nodes[0], ADMIN).await;
    let formed = eventually(Duration::from_secs(30), || async {
        for n in &nodes {
            let v = view(c, n, &token).await?;
            let s = statuses(&v);
            if s.len() != 3 || s.iter().any(|s| s != "up") {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(formed.is_some(), "the three nodes did not form a cluster");
    (nodes, token)
}

/// Waits (up to 30 s) until what an admin publishes on `nodes[from]` reaches a WebSocket on every other
/// node: the links from that node are up.
async fn links_up(c: &reqwest::Client, nodes: &[Node], from: usize, admin: &str) {
    let channel = format!("public:probe-{from}");
    let mut probes = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if i != from {
            let mut ws = ws_connect(n, admin).await;
            subscribe(&mut ws, &channel).await;
            probes.push(ws);
        }
    }
    let t0 = Instant::now();
    for ws in &mut probes {
        loop {
            publish(c, &nodes[from], admin, &channel, json!({})).await;
            if next_matching(ws, Duration::from_millis(500), data_on(&channel)).await.is_some() {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "the links from node {from} never came up");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_node_reaches_websocket_clients_on_the_others() {
    let Some(pg) = fresh_schema().await else { return };
    let c = http();
    let (nodes, admin) = three_nodes(&pg, &c).await;
    let user = common::token_for(&c, &nodes[0], "fan@example.com").await;
    let channel = "public:fanout";
    let mut on_a = ws_connect(&nodes[0], &user).await;
    let mut on_b = ws_connect(&nodes[1], &user).await;
    subscribe(&mut on_a, channel).await;
    subscribe(&mut on_b, channel).await;

    // The links come up with the mesh sessions: publish until the first message crosses (bounded).
    let t0 = Instant::now();
    let mut seq = 0;
    let first = loop {
        seq += 1;
        publish(&c, &nodes[2], &admin, channel, json!({"seq": seq})).await;
        if let Some(v) = next_matching(&mut on_a, Duration::from_millis(500), data_on(channel)).await {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "nothing published on C reached A's WebSocket");
    };
    assert!(first["data"]["seq"].as_u64().is_some_and(|s| s >= 1 && s <= seq), "{first}");

    // Steady state: one more publish on C reaches both A and B, with its data.
    publish(&c, &nodes[2], &admin, channel, json!({"last": "from C"})).await;
    let last = |v: &Value| v["channel"] == channel && v["data"]["last"] == "from C";
    assert!(next_matching(&mut on_a, Duration::from_secs(10), last).await.is_some(), "A missed the publish");
    assert!(next_matching(&mut on_b, Duration::from_secs(10), last).await.is_some(), "B missed the publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_the_users_websocket_on_every_node() {
    let Some(pg) = fresh_schema().await else { return };
    let c = http();
    let (nodes, admin) = three_nodes(&pg, &c).await;
    links_up(&c, &nodes, 2, &admin).await;

    let alice = common::token_for(&c, &nodes[2], "alice@example.com").await;
    let bob = common::token_for(&c, &nodes[0], "bob@example.com").await;
    let me = |token: &str| {
        let c = c.clone();
        let url = nodes[0].url("/api/v1/users/me");
        let token = token.to_owned();
        async move {
            let v: Value = c.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            v["id"].as_str().expect("user id").to_owned()
        }
    };
    let (alice_id, bob_id) = (me(&alice).await, me(&bob).await);
    let channel = format!("notifications:{bob_id}");
    // Bob listens on every node; his own channel is subscribed on connect.
    let mut sockets = Vec::new();
    for n in &nodes {
        let mut ws = ws_connect(n, &bob).await;
        let ack = next_matching(&mut ws, Duration::from_secs(10), |v| {
            v["op"] == "subscribed" && v["channel"] == channel.as_str()
        })
        .await;
        assert!(ack.is_some(), "no auto-subscribe to {channel}");
        sockets.push(ws);
    }
    let r = c.post(nodes[1].url(&format!("/api/v1/users/{alice_id}/follow"))).bearer_auth(&bob).send().await.unwrap();
    assert!(r.status().is_success(), "follow: {}", r.status());
    let r = c
        .post(nodes[2].url("/api/v1/content"))
        .bearer_auth(&alice)
        .json(&json!({"title": "Hello followers", "body": "first post", "tags": ["intro"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let content: Value = r.json().await.unwrap();
    let content_id = content["id"].as_str().unwrap().to_owned();
    // Whichever node's bus produced the notification, it reaches bob's socket on all three nodes (so on
    // at least two through the relay).
    for (i, ws) in sockets.iter_mut().enumerate() {
        let got = next_matching(ws, Duration::from_secs(15), |v| {
            v["channel"] == channel.as_str() && v["data"]["content_id"] == content_id.as_str()
        })
        .await;
        assert!(got.is_some(), "bob's socket on node {i} missed the notification");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_node_revokes_the_session_on_the_others() {
    let Some(pg) = fresh_schema().await else { return };
    let c = http();
    let (nodes, admin) = three_nodes(&pg, &c).await;
    let body = json!({"email": "leaver@example.com", "password": "correct horse battery staple", "display_name": "l"});
    let r = c.post(nodes[0].url("/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let body = json!({"email": "leaver@example.com", "password": "correct horse battery staple"});
    let login: Value =
        c.post(nodes[0].url("/api/v1/auth/login")).json(&body).send().await.unwrap().json().await.unwrap();
    let (access, refresh) = (login["access_token"].as_str().unwrap(), login["refresh_token"].as_str().unwrap());
    let me = |n: &Node| c.get(n.url("/api/v1/users/me")).bearer_auth(access).send();
    for n in &nodes {
        assert_eq!(me(n).await.unwrap().status(), 200, "the fresh token works everywhere");
    }
    // A logout is a one-shot broadcast: wait until node B's links to both peers are up.
    links_up(&c, &nodes, 1, &admin).await;

    let r = c.post(nodes[1].url("/api/v1/auth/logout")).json(&json!({"refresh_token": refresh})).send().await.unwrap();
    assert!(r.status().is_success(), "logout: {}", r.status());
    for (i, n) in nodes.iter().enumerate() {
        let refused =
            eventually(Duration::from_secs(10), || async { (me(n).await.ok()?.status() == 401).then_some(()) }).await;
        assert!(refused.is_some(), "node {i} still accepts the logged-out session's token");
    }
}
