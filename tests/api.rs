//! End-to-end tests of the multi-service API on the real `troupe` binary (fjall store, real HTTP and a
//! real WebSocket client): the issue's user journey, tokens, rate limits, malformed input, and service
//! outages.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::{Node, eventually, http};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "an-e2e-test-secret-of-at-least-32-bytes!";

fn start(extra: &[(&str, &str)]) -> Node {
    let mut envs = vec![
        ("TROUPE_AUTH_JWT_SECRET", SECRET),
        ("TROUPE_AUTH_ADMIN_EMAILS", "admin@example.com"),
        // Fast argon2 is not configurable; keep the default. Generous limits unless a test lowers them.
        ("TROUPE_GATEWAY_RATE_LIMIT_AUTH_PER_SECOND", "1000"),
        ("TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURST", "1000"),
    ];
    envs.extend_from_slice(extra);
    Node::start(&envs)
}

struct User {
    id: String,
    token: String,
    refresh: String,
}

async fn register_and_login(c: &reqwest::Client, node: &Node, email: &str) -> User {
    let r = c
        .post(node.url("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": "correct horse battery staple", "display_name": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register {email}: {}", r.text().await.unwrap_or_default());
    let user: Value = r.json().await.unwrap();
    let r = c
        .post(node.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    User {
        id: user["id"].as_str().unwrap().to_owned(),
        token: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
    }
}

async fn is_problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "{:?}", r.headers());
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(ct.starts_with("application/problem+json"), "content-type {ct}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string() && body["title"].is_string(), "{body}");
    body
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(node: &Node, token: &str) -> Ws {
    let url = format!("ws://{}/ws?token={token}", node.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
    ws
}

/// The next data frame on `channel` (skipping control frames), within `limit`.
async fn next_frame(ws: &mut Ws, channel: &str, limit: Duration) -> Option<Value> {
    tokio::time::timeout(limit, async {
        while let Some(msg) = ws.next().await {
            let Ok(Message::Text(text)) = msg else { continue };
            let v: Value = serde_json::from_str(&text).ok()?;
            if v["channel"] == channel && v.get("data").is_some() {
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn follow_then_post_notifies_the_follower_over_websocket_and_rest() {
    let node = start(&[]);
    let c = http();
    let alice = register_and_login(&c, &node, "alice@example.com").await;
    let bob = register_and_login(&c, &node, "bob@example.com").await;

    let r = c.post(node.url(&format!("/api/v1/users/{}/follow", alice.id))).bearer_auth(&bob.token).send().await;
    assert!(r.unwrap().status().is_success());
    let mut ws = ws_connect(&node, &bob.token).await;
    let channel = format!("notifications:{}", bob.id);

    let r = c
        .post(node.url("/api/v1/content"))
        .bearer_auth(&alice.token)
        .json(&json!({"title": "Hello followers", "body": "first post", "tags": ["intro"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let content: Value = r.json().await.unwrap();
    let content_id = content["id"].as_str().unwrap().to_owned();

    let frame = next_frame(&mut ws, &channel, Duration::from_secs(10)).await.expect("notification over WebSocket");
    assert_eq!(frame["data"]["content_id"], content_id.as_str(), "{frame}");
    assert!(frame["offset"].is_u64());

    let r = c.get(node.url("/api/v1/notifications?unread=true")).bearer_auth(&bob.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["content_id"], content_id.as_str());

    // The author was not notified of her own post; the follow notified her.
    let r = c.get(node.url("/api/v1/notifications")).bearer_auth(&alice.token).send().await.unwrap();
    let page: Value = r.json().await.unwrap();
    let kinds: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|n| n["type"].as_str()).collect();
    assert_eq!(kinds, vec!["user.followed"], "{page}");
}

#[tokio::test]
async fn refresh_rotates_and_logout_revokes() {
    let node = start(&[]);
    let c = http();
    let u = register_and_login(&c, &node, "carol@example.com").await;
    let r = c.post(node.url("/api/v1/auth/refresh")).json(&json!({"refresh_token": u.refresh})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let pair: Value = r.json().await.unwrap();
    let next = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, u.refresh);
    // The old refresh token is spent.
    let r = c.post(node.url("/api/v1/auth/refresh")).json(&json!({"refresh_token": u.refresh})).send().await.unwrap();
    is_problem(r, 401).await;
    let r = c.post(node.url("/api/v1/auth/logout")).json(&json!({"refresh_token": next})).send().await.unwrap();
    assert!(r.status().is_success());
    let r = c.post(node.url("/api/v1/auth/refresh")).json(&json!({"refresh_token": next})).send().await.unwrap();
    is_problem(r, 401).await;
    // Logout ended the session: its access tokens (from the login and the refresh) are refused too.
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&u.token).send().await.unwrap();
    is_problem(r, 401).await;
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(pair["access_token"].as_str().unwrap()).send().await;
    is_problem(r.unwrap(), 401).await;
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn missing_forged_and_alg_none_tokens_are_401_problems() {
    let node = start(&[]);
    let c = http();
    let u = register_and_login(&c, &node, "dave@example.com").await;
    let r = c.get(node.url("/api/v1/users/me")).send().await.unwrap();
    let www = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    is_problem(r, 401).await;
    assert!(www.is_some_and(|v| v.starts_with("Bearer")));

    // Same claims, signature bytes flipped.
    let mut parts: Vec<String> = u.token.split('.').map(str::to_owned).collect();
    parts[2] = b64url(b"not the signature at all, not at all");
    let forged = parts.join(".");
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&forged).send().await.unwrap();
    is_problem(r, 401).await;

    // alg: none with the original claims.
    let none = format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&none).send().await.unwrap();
    is_problem(r, 401).await;

    // WebSocket upgrade with a bad token is refused before the upgrade.
    let url = format!("ws://{}/ws?token={forged}", node.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn rate_limited_requests_get_429_with_headers() {
    let node =
        start(&[("TROUPE_GATEWAY_RATE_LIMIT_READ_PER_SECOND", "1"), ("TROUPE_GATEWAY_RATE_LIMIT_READ_BURST", "5")]);
    let c = http();
    let u = register_and_login(&c, &node, "erin@example.com").await;
    let mut limited = None;
    for _ in 0..20 {
        let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&u.token).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = limited.expect("a burst of 20 past a burst allowance of 5 must be limited");
    let h = r.headers().clone();
    assert!(h.get("retry-after").is_some(), "{h:?}");
    assert!(h.get("ratelimit").is_some() && h.get("ratelimit-policy").is_some(), "{h:?}");
    is_problem(r, 429).await;
}

#[tokio::test]
async fn malformed_input_is_a_4xx_problem_never_a_5xx() {
    let node = start(&[("TROUPE_HTTP_MAX_BODY_BYTES", "4096")]);
    let c = http();
    let u = register_and_login(&c, &node, "frank@example.com").await;
    let post = |path: &str, body: &'static str| {
        c.post(node.url(path)).bearer_auth(&u.token).header("content-type", "application/json").body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("bad json", post("/api/v1/content", "{\"title\": ")),
        ("unknown field", post("/api/v1/content", r#"{"title":"t","body":"b","tags":[],"admin":true}"#)),
        ("wrong type", post("/api/v1/content", r#"{"title":5,"body":"b","tags":[]}"#)),
        ("register bad email", post("/api/v1/auth/register", r#"{"email":"x","password":"p","display_name":"d"}"#)),
        ("not json", c.post(node.url("/api/v1/content")).bearer_auth(&u.token).body("title=t")),
        ("bad uuid", c.get(node.url("/api/v1/content/not-a-uuid")).bearer_auth(&u.token)),
        ("bad limit", c.get(node.url("/api/v1/content?limit=100000")).bearer_auth(&u.token)),
        ("bad cursor", c.get(node.url("/api/v1/content?cursor=%%%")).bearer_auth(&u.token)),
        (
            "oversized",
            c.post(node.url("/api/v1/content"))
                .bearer_auth(&u.token)
                .header("content-type", "application/json")
                .body(format!(r#"{{"title":"t","body":"{}","tags":[]}}"#, "x".repeat(10_000))),
        ),
        ("unknown route", c.get(node.url("/api/v1/nope")).bearer_auth(&u.token)),
    ];
    for (name, req) in cases {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{name}: {status}");
        is_problem(r, status).await;
    }
}

async fn kill(c: &reqwest::Client, node: &Node, path: &str) {
    let admin = register_and_login(c, node, "admin@example.com").await;
    let r = c
        .post(node.url(&format!("/api/v1/system/actors/kill?path={path}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "kill {path}: {}", r.status());
}

#[tokio::test]
async fn a_route_whose_service_is_down_answers_503_with_retry_after() {
    let node = start(&[("TROUPE_ADMIN_ALLOW_KILL", "true"), ("TROUPE_SUPERVISOR_BACKOFF_INITIAL", "3s")]);
    let c = http();
    let u = register_and_login(&c, &node, "gina@example.com").await;
    let r = c
        .post(node.url("/api/v1/content"))
        .bearer_auth(&u.token)
        .json(&json!({"title": "t", "body": "b", "tags": []}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    kill(&c, &node, "/troupe/services/content").await;
    let r = c.get(node.url(&format!("/api/v1/content/{id}"))).bearer_auth(&u.token).send().await.unwrap();
    assert!(r.headers().get("retry-after").is_some(), "{:?}", r.headers());
    is_problem(r, 503).await;
    // Other services still answer.
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // And the content service comes back.
    let back = eventually(Duration::from_secs(15), || async {
        let r = c.get(node.url(&format!("/api/v1/content/{id}"))).bearer_auth(&u.token).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "the content service did not come back");
}

#[tokio::test]
async fn content_created_while_notifications_are_down_is_notified_after_recovery() {
    let node = start(&[("TROUPE_ADMIN_ALLOW_KILL", "true"), ("TROUPE_SUPERVISOR_BACKOFF_INITIAL", "2s")]);
    let c = http();
    let author = register_and_login(&c, &node, "hana@example.com").await;
    let fan = register_and_login(&c, &node, "ivan@example.com").await;
    let r = c.post(node.url(&format!("/api/v1/users/{}/follow", author.id))).bearer_auth(&fan.token).send().await;
    assert!(r.unwrap().status().is_success());

    kill(&c, &node, "/troupe/services/notifications").await;
    for i in 0..5 {
        let r = c
            .post(node.url("/api/v1/content"))
            .bearer_auth(&author.token)
            .json(&json!({"title": format!("post {i}"), "body": "while notifications are down", "tags": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "creating content must not depend on the notification service");
    }
    let all = eventually(Duration::from_secs(30), || async {
        let r = c.get(node.url("/api/v1/notifications?limit=50")).bearer_auth(&fan.token).send().await.ok()?;
        let page: Value = r.json().await.ok()?;
        let n = page["items"].as_array()?.iter().filter(|n| n["type"] == "content.created").count();
        (n == 5).then_some(n)
    })
    .await;
    assert_eq!(all, Some(5), "every notification arrives once the service is back, none twice");
}

/// Cheap argon2id costs for a test node (below OWASP: needs the explicit switch).
const FAST_HASHES: [(&str, &str); 3] = [
    ("TROUPE_AUTH_PASSWORD_HASH_MEMORY_KIB", "64"),
    ("TROUPE_AUTH_PASSWORD_HASH_ITERATIONS", "1"),
    ("TROUPE_AUTH_ALLOW_INSECURE_PASSWORD_HASHING", "true"),
];

#[tokio::test]
async fn after_logout_the_sessions_access_token_is_401_and_other_sessions_are_not() {
    let node = start(&FAST_HASHES);
    let c = http();
    let me = register_and_login(&c, &node, "leaving@example.com").await;
    let r = c
        .post(node.url("/api/v1/auth/login"))
        .json(&json!({"email": "leaving@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    let other: Value = r.json().await.unwrap();
    let other_token = other["access_token"].as_str().unwrap().to_owned();
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&me.token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = c.post(node.url("/api/v1/auth/logout")).json(&json!({"refresh_token": me.refresh})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&me.token).send().await.unwrap();
    let body = is_problem(r, 401).await;
    assert!(body["detail"].as_str().unwrap_or_default().contains("session ended"), "{body}");
    // The WebSocket refuses it too.
    let url = format!("ws://{}/ws?token={}", node.addr, me.token);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // The user's other login is unaffected.
    let r = c.get(node.url("/api/v1/users/me")).bearer_auth(&other_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_node_refuses_password_hash_costs_below_owasp_without_the_switch() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["config", "check"])
        .env_remove("TROUPE_CONFIG")
        .env("TROUPE_AUTH_PASSWORD_HASH_MEMORY_KIB", "64")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("auth.password_hash_memory_kib"), "{text}");
}
