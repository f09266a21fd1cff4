#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use troupe_actors::Registry;
use troupe_actors::channels::{Hub, HubConfig};

use super::*;
use crate::{GatewayConfig, GatewayState, router};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Tokens: `admin` (admin), `user:<id>` (a user); anything else is invalid.
struct FakeAuth;

impl WsAuthenticator for FakeAuth {
    fn authenticate(&self, token: &str) -> Result<WsIdentity, WsAuthError> {
        if token == "admin" {
            return Ok(WsIdentity { user_id: "root".into(), is_admin: true });
        }
        match token.strip_prefix("user:") {
            Some(id) if !id.is_empty() => Ok(WsIdentity { user_id: id.into(), is_admin: false }),
            _ => Err(WsAuthError::Invalid("unknown token".into())),
        }
    }
}

struct Server {
    addr: SocketAddr,
    ws: WsState,
}

impl Server {
    fn hub(&self) -> &Hub {
        self.ws.hub()
    }

    fn url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    async fn connect(&self, token: &str) -> Client {
        let (mut c, _) = connect_async(self.url(token)).await.unwrap();
        let ack = next_json(&mut c).await;
        assert_eq!(ack["op"], "subscribed", "auto-subscribe ack first: {ack}");
        c
    }
}

async fn start(cfg: WsConfig, hub_cfg: HubConfig) -> Server {
    let hub = Hub::new(hub_cfg, json_encoder());
    let policy = PrefixPolicy { public_prefixes: vec!["public:".into()] };
    let ws = WsState::new(cfg, hub, Arc::new(FakeAuth), Arc::new(policy));
    let gw = GatewayConfig {
        node_name: "t".into(),
        version: "0",
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 256 << 10,
        allow_kill: false,
    };
    let state = GatewayState::new(&gw, Registry::new(), None).with_ws(ws.clone());
    let app = router(&gw, state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { addr, ws }
}

async fn default_server() -> Server {
    start(WsConfig::default(), HubConfig::default()).await
}

async fn next_json(c: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), c.next()).await.expect("a frame within 5 s");
        match msg.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send(c: &mut Client, v: Value) {
    c.send(Message::text(v.to_string())).await.unwrap();
}

/// A ping round trip: everything the server queued before the pong has been read by then.
async fn pong(c: &mut Client) -> Vec<Value> {
    send(c, json!({"op": "ping"})).await;
    let mut before = Vec::new();
    loop {
        let v = next_json(c).await;
        if v["op"] == "pong" {
            return before;
        }
        before.push(v);
    }
}

fn status_of(err: WsError) -> (u16, String) {
    match err {
        WsError::Http(resp) => {
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            (resp.status().as_u16(), ct)
        }
        other => panic!("expected an HTTP rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_or_bad_token_is_401_problem_json_before_the_upgrade() {
    let s = default_server().await;
    let err = connect_async(format!("ws://{}/ws", s.addr)).await.unwrap_err();
    assert_eq!(status_of(err), (401, "application/problem+json".into()));
    let err = connect_async(s.url("forged")).await.unwrap_err();
    assert_eq!(status_of(err).0, 401);
    let mut req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(status_of(connect_async(req).await.unwrap_err()).0, 401);
    assert_eq!(s.ws.connections(), 0);
}

#[tokio::test]
async fn auto_subscribes_to_own_notifications_with_header_auth() {
    let s = default_server().await;
    let mut req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", "Bearer user:7".parse().unwrap());
    let (mut c, _) = connect_async(req).await.unwrap();
    let ack = next_json(&mut c).await;
    assert_eq!(ack["op"], "subscribed");
    assert_eq!(ack["channel"], "notifications:7");
    let offset = s.hub().publish("notifications:7", Bytes::from_static(br#"{"kind":"follow","by":"9"}"#));
    let frame = next_json(&mut c).await;
    assert_eq!(frame, json!({"channel": "notifications:7", "offset": offset, "data": {"kind": "follow", "by": "9"}}));
    assert_eq!(ack["offset"].as_u64().unwrap() + 1, offset);
    let p = s.hub().presence("notifications:7", 10);
    assert_eq!(p.len(), 1);
    assert_eq!(&*p[0].user_id, "7");
}

#[tokio::test]
async fn subscribe_then_unsubscribe_over_the_publish_endpoint() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "subscribe", "channel": "public:news"})).await;
    let ack = next_json(&mut c).await;
    assert_eq!((ack["op"].as_str(), ack["channel"].as_str()), (Some("subscribed"), Some("public:news")));

    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/channels/public:news/publish", s.addr);
    let resp = http.post(&url).bearer_auth("admin").json(&json!({"data": {"headline": "hi"}})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let published: Value = resp.json().await.unwrap();
    let frame = next_json(&mut c).await;
    assert_eq!(frame["data"], json!({"headline": "hi"}));
    assert_eq!(frame["offset"], published["offset"]);

    let presence: Value = http
        .get(format!("http://{}/api/v1/channels/public:news/presence", s.addr))
        .bearer_auth("user:2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(presence["count"], 1);
    assert_eq!(presence["subscribers"][0]["user_id"], "1");

    send(&mut c, json!({"op": "unsubscribe", "channel": "public:news"})).await;
    assert_eq!(next_json(&mut c).await["op"], "unsubscribed");
    s.hub().publish("public:news", Bytes::from_static(b"1"));
    assert!(pong(&mut c).await.is_empty(), "no frame after unsubscribing");
    assert_eq!(s.hub().subscriber_count("public:news"), 0);
}

#[tokio::test]
async fn publish_and_presence_endpoints_check_credentials_and_input() {
    let s = default_server().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/channels/public:x/publish", s.addr);
    let body = json!({"data": 1});
    assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 401);
    let resp = http.post(&url).bearer_auth("user:1").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let bad = http.post(&url).bearer_auth("admin").body("{not json").header("content-type", "application/json");
    assert_eq!(bad.send().await.unwrap().status(), 400);
    let unknown = http.post(&url).bearer_auth("admin").json(&json!({"data": 1, "x": 2})).send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    let big = json!({"data": "x".repeat(70_000)});
    assert_eq!(http.post(&url).bearer_auth("admin").json(&big).send().await.unwrap().status(), 400);
    let bad_name = format!("http://{}/api/v1/channels/a%20b/publish", s.addr);
    assert_eq!(http.post(&bad_name).bearer_auth("admin").json(&body).send().await.unwrap().status(), 400);
    let presence = format!("http://{}/api/v1/channels/notifications:9/presence", s.addr);
    assert_eq!(http.get(&presence).bearer_auth("user:1").send().await.unwrap().status(), 403);
    assert_eq!(http.get(&presence).bearer_auth("user:9").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn denied_channels_and_bad_requests_get_error_frames() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    for (req, code) in [
        (json!({"op": "subscribe", "channel": "notifications:2"}), "forbidden"),
        (json!({"op": "subscribe", "channel": "private:x"}), "forbidden"),
        (json!({"op": "subscribe", "channel": "bad name"}), "invalid_channel"),
        (json!({"op": "subscribe"}), "bad_request"),
        (json!({"op": "dance"}), "bad_request"),
        (json!({"op": "subscribe", "channel": "public:a", "since": -1}), "bad_request"),
    ] {
        send(&mut c, req.clone()).await;
        let frame = next_json(&mut c).await;
        assert_eq!((frame["op"].as_str(), frame["code"].as_str()), (Some("error"), Some(code)), "{req} → {frame}");
        assert!(frame["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    c.send(Message::text("{malformed")).await.unwrap();
    assert_eq!(next_json(&mut c).await["code"], "bad_request");
    c.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut c).await["code"], "bad_request");
    // Still serving after all that.
    assert!(pong(&mut c).await.is_empty());
    assert_eq!(s.hub().subscriber_count("notifications:2"), 0);
    // Admins may subscribe anywhere.
    let mut a = s.connect("admin").await;
    send(&mut a, json!({"op": "subscribe", "channel": "notifications:2"})).await;
    assert_eq!(next_json(&mut a).await["op"], "subscribed");
}

#[tokio::test]
async fn repeated_abuse_closes_with_1008() {
    let s = start(WsConfig { max_bad_requests: 3, ..WsConfig::default() }, HubConfig::default()).await;
    let mut c = s.connect("user:1").await;
    for _ in 0..4 {
        c.send(Message::text("nope")).await.unwrap();
    }
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break f.code,
            Some(Ok(Message::Text(_))) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Policy);
}

#[tokio::test]
async fn reconnect_with_since_replays_what_was_missed() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "subscribe", "channel": "public:feed"})).await;
    next_json(&mut c).await;
    s.hub().publish("public:feed", Bytes::from_static(b"0"));
    let seen = next_json(&mut c).await["offset"].as_u64().unwrap();
    c.close(None).await.unwrap();
    for i in 1..=3 {
        s.hub().publish("public:feed", Bytes::from(i.to_string()));
    }
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "subscribe", "channel": "public:feed", "since": seen})).await;
    let ack = next_json(&mut c).await;
    assert_eq!((ack["op"].as_str(), ack["replayed"].as_u64()), (Some("subscribed"), Some(3)));
    for i in 1..=3u64 {
        let f = next_json(&mut c).await;
        assert_eq!((f["offset"].as_u64().unwrap(), f["data"].as_u64().unwrap()), (seen + i, i));
    }
    s.hub().publish("public:feed", Bytes::from_static(b"4"));
    assert_eq!(next_json(&mut c).await["offset"].as_u64().unwrap(), seen + 4, "then live, no gap");
}

#[tokio::test]
async fn since_older_than_history_gets_resync() {
    let s = start(WsConfig::default(), HubConfig { history_len: 2, ..HubConfig::default() }).await;
    let first = s.hub().publish("public:r", Bytes::from_static(b"0"));
    for _ in 0..4 {
        s.hub().publish("public:r", Bytes::from_static(b"0"));
    }
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "subscribe", "channel": "public:r", "since": first})).await;
    let resync = next_json(&mut c).await;
    assert_eq!(resync, json!({"op": "resync", "channel": "public:r", "offset": first + 4}));
    let ack = next_json(&mut c).await;
    assert_eq!((ack["op"].as_str(), ack["replayed"].as_u64()), (Some("subscribed"), Some(0)));
    assert!(pong(&mut c).await.is_empty(), "nothing replayed on resync");
}

#[tokio::test]
async fn ping_gets_pong() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "ping"})).await;
    assert_eq!(next_json(&mut c).await, json!({"op": "pong"}));
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_4008_and_released() {
    for direct_writes in [false, true] {
        slow_consumer_closed(direct_writes).await;
    }
}

async fn slow_consumer_closed(direct_writes: bool) {
    let cfg = WsConfig { queue_capacity: 8, direct_writes, ..WsConfig::default() };
    let s = start(cfg, HubConfig { history_len: 0, ..HubConfig::default() }).await;
    let mut slow = s.connect("user:slow").await;
    let mut fast = s.connect("user:fast").await;
    for c in [&mut slow, &mut fast] {
        send(c, json!({"op": "subscribe", "channel": "public:flood"})).await;
        next_json(c).await;
    }
    let payload = Bytes::from(format!("\"{}\"", "x".repeat(60_000)));
    let mut published = 0;
    while s.hub().slow_consumers() == 0 {
        assert!(published < 5_000, "never declared slow after {published} publishes");
        s.hub().publish("public:flood", payload.clone());
        published += 1;
        // Keep the fast client drained.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_millis(1), fast.next()).await {}
    }
    assert_eq!(s.hub().slow_consumers(), 1, "only the client that stopped reading");
    assert_eq!(s.hub().subscriber_count("public:flood"), 1);
    assert!(s.hub().presence("notifications:slow", 10).is_empty(), "removed from every channel");
    // Now read: everything the kernel buffered, then the close frame.
    let mut frames = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => frames += 1,
            other => panic!("no close frame after {frames} frames: {other:?}"),
        }
    };
    let close = close.unwrap();
    assert_eq!(u16::from(close.code), 4008);
    assert!(close.reason.contains("slow"), "{}", close.reason);
    assert!(frames < published, "the server dropped what it could not send ({frames} of {published})");
    // Complete the close handshake.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), slow.next()).await {}
    tokio::time::timeout(Duration::from_secs(5), async {
        while s.ws.connections() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow connection is released");
    assert!(pong(&mut fast).await.iter().all(|f| f["channel"] == "public:flood"), "the fast client is still served");
}

#[tokio::test]
async fn a_client_that_ignores_pings_is_closed() {
    let cfg = WsConfig { ping_interval: Duration::from_millis(100), ..WsConfig::default() };
    let s = start(cfg, HubConfig::default()).await;
    // Never polled: pings go unanswered.
    let _silent = s.connect("user:1").await;
    let mut chatty = s.connect("user:2").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pong(&mut chatty).await.is_empty(), "a client that answers pings stays");
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while s.ws.connections() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the silent connection is closed after missing a pong");
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    s.ws.shutdown();
    match tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn drain_closes_connections_with_1012_and_a_later_shutdown_keeps_it() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    s.ws.drain();
    s.ws.shutdown();
    match tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1012);
            assert!(f.reason.contains("reconnect"), "{}", f.reason);
        }
        other => panic!("{other:?}"),
    }
    // A connection upgraded after the drain is closed the same way at once.
    let (mut late, _) = connect_async(s.url("user:2")).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = late.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1012));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ops_are_served_while_frames_stream_continuously() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "subscribe", "channel": "public:stream"})).await;
    next_json(&mut c).await;
    let hub = s.hub().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // A steady stream the client can keep up with (an unthrottled loop outruns any reader on a
            // busy machine, and the client would rightly be closed as a slow consumer).
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..8 {
                    hub.publish("public:stream", Bytes::from_static(b"1"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    for _ in 0..3 {
        let before = pong(&mut c).await;
        assert!(before.iter().all(|f| f["channel"] == "public:stream"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
}

/// Poll `cond` (a server-side state the client cannot observe directly) for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not within 5 s: {what}"));
}

fn raw(c: &mut Client) -> &mut TcpStream {
    match c.get_mut() {
        MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain ws://"),
    }
}

#[tokio::test]
async fn idle_connections_hold_no_read_buffer() {
    use tokio::io::AsyncWriteExt;
    let s = default_server().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = s.connect(&format!("user:{i}")).await;
        pong(&mut c).await;
        clients.push(c);
    }
    eventually("every read buffer freed", || s.ws.read_buffer_bytes() == 0).await;
    // A frame arriving in pieces: the buffer exists while its bytes are pending, then goes.
    let payload = br#"{"op":"ping"}"#;
    let mask = [7u8, 1, 2, 3];
    let mut wire = vec![0x81, 0x80 | payload.len() as u8];
    wire.extend_from_slice(&mask);
    wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let c = &mut clients[0];
    raw(c).write_all(&wire[..9]).await.unwrap();
    eventually("a partial frame is buffered", || s.ws.read_buffer_bytes() > 0).await;
    assert!(s.ws.read_buffer_bytes() <= WsConfig::default().read_buffer_bytes, "one read chunk at most");
    raw(c).write_all(&wire[9..]).await.unwrap();
    assert_eq!(next_json(c).await, json!({"op": "pong"}));
    eventually("freed once the frame is complete", || s.ws.read_buffer_bytes() == 0).await;
}

#[tokio::test]
async fn direct_writes_partial_writes_and_queued_frames_keep_one_order() {
    for direct_writes in [true, false] {
        written_in_order(direct_writes).await;
    }
}

async fn written_in_order(direct_writes: bool) {
    let cfg = WsConfig { queue_capacity: 100_000, direct_writes, ..WsConfig::default() };
    let s = start(cfg, HubConfig { history_len: 0, ..HubConfig::default() }).await;
    let mut c = s.connect("user:1").await;
    send(&mut c, json!({"op": "subscribe", "channel": "public:order"})).await;
    next_json(&mut c).await;
    // The client reads nothing meanwhile: the first frames go straight to the socket, the kernel
    // buffers fill (a frame is cut by a partial write), the rest is queued and flushed later.
    let data = Bytes::from(format!("\"{}\"", "o".repeat(2_000)));
    let n = 3_000;
    let first = s.hub().publish("public:order", data.clone());
    for _ in 1..n {
        s.hub().publish("public:order", data.clone());
    }
    for i in 0..n {
        let f = next_json(&mut c).await;
        assert_eq!(f["offset"].as_u64(), Some(first + i), "frame {i} in order and whole");
        assert_eq!(f["data"].as_str().map(str::len), Some(2_000));
    }
    assert_eq!(s.hub().slow_consumers(), 0);
    assert!(pong(&mut c).await.is_empty(), "nothing more, nothing duplicated");
}

#[tokio::test]
async fn a_message_over_64_kib_is_refused_with_1009() {
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    c.send(Message::text("x".repeat((64 << 10) + 1))).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break assert_eq!(f.code, CloseCode::Size),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    eventually("released", || s.ws.connections() == 0).await;
}

#[tokio::test]
async fn fragmented_client_messages_are_joined() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    c.send(Message::Frame(Frame::message(&b"{\"op\""[..], OpCode::Data(Data::Text), false))).await.unwrap();
    c.send(Message::Ping(Bytes::from_static(b"mid"))).await.unwrap();
    c.send(Message::Frame(Frame::message(&b":\"pi"[..], OpCode::Data(Data::Continue), false))).await.unwrap();
    c.send(Message::Frame(Frame::message(&b"ng\"}"[..], OpCode::Data(Data::Continue), true))).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap().unwrap().unwrap() {
            Message::Pong(p) => got.push(format!("pong frame {}", String::from_utf8_lossy(&p))),
            Message::Text(t) => got.push(t.to_string()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, ["pong frame mid", r#"{"op":"pong"}"#], "a ping between fragments is answered first");
}

#[tokio::test]
async fn client_close_is_answered_and_the_connection_released() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let s = default_server().await;
    let mut c = s.connect("user:1").await;
    c.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("{other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap().is_none(), "then the stream ends");
    eventually("released", || s.ws.connections() == 0).await;
    assert!(s.hub().presence("notifications:1", 10).is_empty());
}

#[tokio::test]
async fn upgrade_requests_are_checked() {
    let s = default_server().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/ws?token=user:1", s.addr);
    let plain = http.get(&url).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 400, "a plain GET is not an upgrade");
    let old = http
        .get(&url)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status().as_u16(), 400, "only version 13");
    // RFC 6455's sample key and accept value, on a raw connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let req = "GET /ws?token=user:1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\
               Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    // The connection is served: its first frame is the auto-subscribe ack, unmasked text.
    assert_eq!(tcp.read_u8().await.unwrap(), 0x81);
}
