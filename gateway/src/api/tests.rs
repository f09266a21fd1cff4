#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
//! REST API tests against a real node in-process: the gateway served on 127.0.0.1:0 (with `ConnectInfo`),
//! a fjall store in a temp dir, the domain services, the notification service and the event bus under a
//! real supervisor, and reqwest as the client. Time is real (the fjall writer is a thread); every wait
//! polls with a generous upper bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use troupe_actors::bus::{BusConfig, BusEvent, EventBus, Handler, HandlerError};
use troupe_actors::{Backoff, ChildSpec, Registry, RootHandle, Supervisor, SupervisorSpec};
use troupe_services::content::ContentMsg;
use troupe_services::notifications::{
    NoopSink, NotificationClient, NotificationConfig, NotificationHandler, NotificationMsg, NotificationService,
};
use troupe_services::password::HashParams;
use troupe_services::{AuthSettings, Clients, DomainServices, JwtKey, Role, Tokens};
use troupe_storage::{FjallBackend, Store, SystemClock};

use super::parse_traceparent;
use crate::{GatewayConfig, GatewayState, HttpSettings, Rate, RateLimitSettings, router};

const ADMIN: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery";
const MAX_BODY: usize = 16 * 1024;

/// How a test node differs from the default one.
#[derive(Default)]
struct Opts {
    http: HttpSettings,
    /// Restart delay of the domain services and of the notification service.
    restart_after: Option<Duration>,
}

struct Node {
    base: String,
    http: reqwest::Client,
    tokens: Tokens,
    registry: Registry,
    root: RootHandle,
    _dir: tempfile::TempDir,
}

/// A handler that refuses every event: its deliveries are dead-lettered at once.
struct Refuse;

impl Handler for Refuse {
    fn handle<'a>(&'a self, _: &'a BusEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async { Err(HandlerError::reject("audit sink refuses everything")) })
    }
}

fn generous_limits() -> RateLimitSettings {
    RateLimitSettings { auth: Rate::new(1000, 1000), ..RateLimitSettings::default() }
}

async fn node(opts: Opts) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    let store = Store::new(Arc::new(backend), Arc::new(SystemClock));
    let settings = AuthSettings {
        admin_emails: vec![ADMIN.into()],
        hash_params: HashParams::insecure_fast(),
        ..AuthSettings::default()
    };
    let svc = DomainServices::new(store.clone(), settings).unwrap();
    let registry = Registry::new();
    let bus = EventBus::new(store.clone(), BusConfig::default()).unwrap();
    troupe_services::notifications::subscribe(&bus, NotificationHandler::from_registry(registry.clone())).unwrap();
    bus.subscribe("audit", &["content.created"], Arc::new(Refuse)).unwrap();
    let backoff = opts.restart_after.map_or(Backoff::NONE, |d| Backoff { initial: d, max: d, jitter: 0.0 });
    let notifications = NotificationService::new(store.clone(), Arc::new(NoopSink), NotificationConfig::default());
    let spec = SupervisorSpec::new("troupe")
        .backoff(Backoff::NONE)
        .child(ChildSpec::supervisor(svc.supervisor_spec().backoff(backoff)))
        .child(ChildSpec::supervisor(SupervisorSpec::new("notify").backoff(backoff).child(notifications.child_spec())))
        .child(bus.child_spec("bus"));
    let root = Supervisor::start_root(spec, registry.clone()).await.unwrap();

    let cfg = GatewayConfig {
        node_name: "t1".into(),
        version: "0.0.0",
        request_timeout: Duration::from_secs(10),
        max_body_bytes: MAX_BODY,
        allow_kill: false,
    };
    let state = GatewayState::new(&cfg, registry.clone(), None)
        .with_services(Clients::from_registry(&registry).unwrap(), svc.tokens())
        .with_notifications(NotificationClient::from_registry(&registry).unwrap())
        .with_bus(bus)
        .with_http(&opts.http)
        .unwrap();
    let app = router(&cfg, state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    Node {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        tokens: svc.tokens(),
        registry,
        root,
        _dir: dir,
    }
}

async fn default_node() -> Node {
    node(Opts { http: HttpSettings { rate_limits: generous_limits(), ..HttpSettings::default() }, ..Opts::default() })
        .await
}

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts a problem document with this status and type kind.
    #[track_caller]
    fn problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(self.body["type"], format!("urn:troupe:problem:{kind}"), "{}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string());
        assert!(self.body["request_id"].is_string(), "no request id: {}", self.body);
        assert_eq!(self.body["request_id"], self.header("x-request-id"));
        assert!(self.body["instance"].as_str().unwrap().starts_with('/'));
    }
}

impl Node {
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    fn req(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    /// Registers `email` and logs in; returns (user id, access token, refresh token).
    async fn user(&self, email: &str) -> (String, String, String) {
        let body = json!({"email": email, "password": PASSWORD, "display_name": email.split('@').next()});
        let reg = self.call(Method::POST, "/api/v1/auth/register", None, Some(body)).await;
        assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
        let login = self.login(email).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        assert_eq!(login.body["token_type"], "Bearer");
        let id = reg.body["id"].as_str().unwrap().to_owned();
        (id, login.body["access_token"].as_str().unwrap().into(), login.body["refresh_token"].as_str().unwrap().into())
    }

    async fn login(&self, email: &str) -> Answer {
        self.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": email, "password": PASSWORD}))).await
    }

    async fn post(&self, token: &str, title: &str) -> Answer {
        let body = json!({"title": title, "body": "words of the body", "tags": ["rust"]});
        self.call(Method::POST, "/api/v1/content", Some(token), Some(body)).await
    }
}

/// Polls `f` until it returns `Some`; fails after 10 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_follow_post_and_the_follower_is_notified() {
    let n = default_node().await;
    let (alice_id, alice, _) = n.user("alice@example.com").await;
    let (bob_id, bob, _) = n.user("bob@example.com").await;

    let me = n.call(Method::GET, "/api/v1/users/me", Some(&alice), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], alice_id.as_str());
    assert_eq!(me.body["email"], "alice@example.com");

    let follow = n.call(Method::POST, &format!("/api/v1/users/{bob_id}/follow"), Some(&alice), None).await;
    assert_eq!(follow.status, StatusCode::NO_CONTENT);

    // The write carries the caller's trace; the response continues it with the gateway's own span id.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = json!({"title": "Hello followers", "body": "first post", "tags": ["intro"]});
    let created =
        n.send(n.req(Method::POST, "/api/v1/content", Some(&bob)).header("traceparent", trace).json(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let echoed = created.header("traceparent");
    assert!(echoed.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && echoed.ends_with("-01"), "{echoed}");
    assert_ne!(echoed, trace, "the gateway's span has its own id");
    let item_id = created.body["id"].as_str().unwrap().to_owned();

    let got = n.call(Method::GET, &format!("/api/v1/content/{item_id}"), Some(&alice), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, created.body);
    let feed = n.call(Method::GET, "/api/v1/feed", Some(&alice), None).await;
    assert_eq!(feed.body["items"][0]["id"], item_id.as_str());
    let found = n.call(Method::GET, "/api/v1/content?tag=intro&q=first", Some(&alice), None).await;
    assert_eq!(found.body["items"][0]["id"], item_id.as_str(), "{}", found.body);

    // The bus delivers content.created to the notification service: alice's list shows it.
    let note = eventually("alice's notification", || async {
        let list = n.call(Method::GET, "/api/v1/notifications?unread=true", Some(&alice), None).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.body["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(note["type"], "content.created");
    assert_eq!(note["content_id"], item_id.as_str());
    assert_eq!(note["actor_id"], bob_id.as_str());
    // Bob was told about the follow.
    eventually("bob's follow notification", || async {
        let list = n.call(Method::GET, "/api/v1/notifications", Some(&bob), None).await;
        list.body["items"].as_array().unwrap().iter().any(|i| i["type"] == "user.followed").then_some(())
    })
    .await;

    let id = note["id"].as_str().unwrap();
    let read = n.call(Method::POST, &format!("/api/v1/notifications/{id}/read"), Some(&alice), None).await;
    assert_eq!(read.status, StatusCode::NO_CONTENT);
    let unread = n.call(Method::GET, "/api/v1/notifications?unread=true", Some(&alice), None).await;
    assert_eq!(unread.body["items"], json!([]));
    let all = n.call(Method::POST, "/api/v1/notifications/read-all", Some(&bob), None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["marked"], 1);

    // Without a traceparent the gateway starts a trace.
    assert!(parse_traceparent(got.header("traceparent")).is_some(), "{}", got.header("traceparent"));

    // Updates and deletes by the author.
    let item_path = format!("/api/v1/content/{item_id}");
    let patch = n.call(Method::PATCH, &item_path, Some(&bob), Some(json!({"title": "Hi"}))).await;
    assert_eq!(patch.body["title"], "Hi");
    let del = n.call(Method::DELETE, &format!("/api/v1/content/{item_id}"), Some(&bob), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    n.call(Method::GET, &format!("/api/v1/content/{item_id}"), Some(&bob), None).await.problem(404, "not-found");
    let unfollow = n.call(Method::DELETE, &format!("/api/v1/users/{bob_id}/follow"), Some(&alice), None).await;
    assert_eq!(unfollow.status, StatusCode::NO_CONTENT);
    assert!(n.root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_logout_revokes() {
    let n = default_node().await;
    let (_, _, refresh) = n.user("carol@example.com").await;
    let first = n.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let rotated = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, refresh);
    let me = n.call(Method::GET, "/api/v1/users/me", first.body["access_token"].as_str(), None).await;
    assert_eq!(me.status, StatusCode::OK);

    // A spent token is refused (and revokes its family).
    let again = n.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    again.problem(401, "unauthorized");
    assert!(again.header("www-authenticate").starts_with("Bearer"));

    let (_, _, refresh) = n.user("dave@example.com").await;
    let out = n.call(Method::POST, "/api/v1/auth/logout", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    n.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh})))
        .await
        .problem(401, "unauthorized");
    n.login("dave@example.com").await;
    let wrong = json!({"email": "dave@example.com", "password": "not the password"});
    n.call(Method::POST, "/api/v1/auth/login", None, Some(wrong)).await.problem(401, "unauthorized");
    let dup = json!({"email": "dave@example.com", "password": PASSWORD, "display_name": "d"});
    n.call(Method::POST, "/api/v1/auth/register", None, Some(dup)).await.problem(409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_denials_are_403_and_unknown_ids_404() {
    let n = default_node().await;
    let (alice_id, alice, _) = n.user("alice@example.com").await;
    let (bob_id, bob, _) = n.user("bob@example.com").await;
    let (_, admin, _) = n.user(ADMIN).await;
    let item = n.post(&bob, "bob's").await.body["id"].as_str().unwrap().to_owned();

    // Someone else's resources: 403 (their existence is not secret to signed-in users).
    let path = format!("/api/v1/content/{item}");
    n.call(Method::DELETE, &path, Some(&alice), None).await.problem(403, "forbidden");
    n.call(Method::PATCH, &path, Some(&alice), Some(json!({"title": "mine"}))).await.problem(403, "forbidden");
    let bob_path = format!("/api/v1/users/{bob_id}");
    n.call(Method::PATCH, &bob_path, Some(&alice), Some(json!({"display_name": "x"}))).await.problem(403, "forbidden");
    n.call(Method::DELETE, &bob_path, Some(&alice), None).await.problem(403, "forbidden");
    // Admin-only collections: 403 for users.
    n.call(Method::GET, "/api/v1/users", Some(&alice), None).await.problem(403, "forbidden");
    n.call(Method::GET, "/api/v1/system/dead-letters", Some(&alice), None).await.problem(403, "forbidden");
    n.call(Method::DELETE, "/api/v1/system/dead-letters/1-audit", Some(&alice), None).await.problem(403, "forbidden");
    // Unknown ids: 404.
    let unknown = uuid::Uuid::now_v7();
    n.call(Method::GET, &format!("/api/v1/content/{unknown}"), Some(&alice), None).await.problem(404, "not-found");
    n.call(Method::GET, &format!("/api/v1/users/{unknown}"), Some(&alice), None).await.problem(404, "not-found");
    // Anonymous: 401 with a Bearer challenge.
    let anon = n.call(Method::GET, "/api/v1/users/me", None, None).await;
    anon.problem(401, "unauthorized");
    assert_eq!(anon.header("www-authenticate"), "Bearer");

    // The admin may do all of it.
    let page = n.call(Method::GET, "/api/v1/users?limit=10", Some(&admin), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 3);
    let alice_path = format!("/api/v1/users/{alice_id}");
    let patched = n.call(Method::PATCH, &alice_path, Some(&admin), Some(json!({"display_name": "A"}))).await;
    assert_eq!(patched.body["display_name"], "A");
    assert_eq!(n.call(Method::DELETE, &path, Some(&admin), None).await.status, StatusCode::NO_CONTENT);

    // Dead letters: the refusing `audit` subscriber dead-letters every content.created.
    let dead = eventually("a dead letter", || async {
        let list = n.call(Method::GET, "/api/v1/system/dead-letters", Some(&admin), None).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.body["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(dead["subscriber"], "audit");
    assert_eq!(dead["payload"]["type"], "content.created");
    let id = dead["id"].as_str().unwrap();
    let replay = n.call(Method::POST, &format!("/api/v1/system/dead-letters/{id}/replay"), Some(&admin), None).await;
    replay.problem(502, "replay-failed");
    assert!(!replay.body.to_string().contains("refuses"), "handler detail leaked: {}", replay.body);
    let gone = n.call(Method::DELETE, &format!("/api/v1/system/dead-letters/{id}"), Some(&admin), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    n.call(Method::DELETE, &format!("/api/v1/system/dead-letters/{id}"), Some(&admin), None)
        .await
        .problem(404, "not-found");
    let roles = n.tokens.verify(&admin).unwrap().roles;
    assert!(roles.contains(&Role::Admin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_alg_none_tokens_are_401() {
    let n = default_node().await;
    let (id, good, _) = n.user("erin@example.com").await;
    let now = troupe_services::tokens::now_secs();
    let expired = n.tokens.issue_at(&id, &[Role::User], now - 3 * 3600).unwrap().token;
    let other = Tokens::new(&JwtKey::random_hs256(), "troupe", "troupe-api", Duration::from_secs(900)).unwrap();
    let forged = other.issue(&id, &[Role::User, Role::Admin]).unwrap().token;
    let payload = good.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"}
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    for (what, token) in [("expired", expired), ("forged", forged), ("alg none", none), ("garbage", "abc".into())] {
        let a = n.call(Method::GET, "/api/v1/users/me", Some(&token), None).await;
        a.problem(401, "invalid-token");
        assert_eq!(a.header("www-authenticate"), "Bearer error=\"invalid_token\"", "{what}");
        if what == "expired" {
            assert_eq!(a.body["detail"], "unauthorized: token expired");
        }
    }
    let basic = n.send(n.req(Method::GET, "/api/v1/users/me", None).header("authorization", "Basic dTpw")).await;
    basic.problem(401, "invalid-token");
    assert_eq!(n.call(Method::GET, "/api/v1/users/me", Some(&good), None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_trips_the_rate_limit_with_headers() {
    let limits =
        RateLimitSettings { auth: Rate::new(1000, 1000), read: Rate::new(1, 5), ..RateLimitSettings::default() };
    let n =
        node(Opts { http: HttpSettings { rate_limits: limits, ..HttpSettings::default() }, ..Opts::default() }).await;
    let (_, alice, _) = n.user("alice@example.com").await;
    let (_, bob, _) = n.user("bob@example.com").await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let a = n.call(Method::GET, "/api/v1/users/me", Some(&alice), None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("ratelimit-policy"), "\"read\";q=5;w=5");
        remaining.push(a.header("ratelimit").to_owned());
    }
    assert_eq!(remaining[0], "\"read\";r=4;t=1");
    assert!(remaining[4].starts_with("\"read\";r=0;"), "{remaining:?}");
    let limited = n.call(Method::GET, "/api/v1/users/me", Some(&alice), None).await;
    limited.problem(429, "rate-limited");
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(limited.header("ratelimit"), format!("\"read\";r=0;t={retry}"));
    assert_eq!(limited.header("ratelimit-policy"), "\"read\";q=5;w=5");
    // Buckets are per user: bob is unaffected; writes have their own class.
    assert_eq!(n.call(Method::GET, "/api/v1/users/me", Some(&bob), None).await.status, StatusCode::OK);
    let post = n.post(&alice, "still allowed").await;
    assert_eq!(post.status, StatusCode::CREATED);
    assert!(post.header("ratelimit-policy").starts_with("\"write\";"));
    // Operator endpoints are not limited.
    let live = n.send(n.req(Method::GET, "/health/live", None)).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.headers.get("ratelimit").is_none());

    // The auth class is per client IP and tight.
    let tight = RateLimitSettings { auth: Rate::new(1, 2), ..RateLimitSettings::default() };
    let n =
        node(Opts { http: HttpSettings { rate_limits: tight, ..HttpSettings::default() }, ..Opts::default() }).await;
    let bad = json!({"email": "x@example.com", "password": "wrong password"});
    for _ in 0..2 {
        let a = n.call(Method::POST, "/api/v1/auth/login", None, Some(bad.clone())).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    n.call(Method::POST, "/api/v1/auth/login", None, Some(bad)).await.problem(429, "rate-limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_4xx_problem_json_never_5xx() {
    let n = default_node().await;
    let (_, alice, _) = n.user("alice@example.com").await;
    let (_, admin, _) = n.user(ADMIN).await;
    let raw = |method: Method, path: &str, ctype: Option<&str>, body: Vec<u8>| {
        let mut r = n.req(method, path, Some(&alice)).body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("bad json", raw(Method::POST, "/api/v1/content", json_ct, b"{\"title\":".to_vec()), 400, "malformed-json"),
        ("not json at all", raw(Method::POST, "/api/v1/content", json_ct, b"hello".to_vec()), 400, "malformed-json"),
        (
            "unknown field",
            raw(Method::POST, "/api/v1/content", json_ct, br#"{"title":"t","body":"b","x":1}"#.to_vec()),
            422,
            "invalid-body",
        ),
        (
            "wrong type",
            raw(Method::POST, "/api/v1/content", json_ct, br#"{"title":5,"body":"b"}"#.to_vec()),
            422,
            "invalid-body",
        ),
        (
            "missing field",
            raw(Method::POST, "/api/v1/content", json_ct, br#"{"title":"t"}"#.to_vec()),
            422,
            "invalid-body",
        ),
        (
            "no content type",
            raw(Method::POST, "/api/v1/content", None, br#"{"title":"t"}"#.to_vec()),
            415,
            "unsupported-media-type",
        ),
        (
            "oversized body",
            raw(Method::POST, "/api/v1/content", json_ct, vec![b' '; MAX_BODY + 1]),
            413,
            "payload-too-large",
        ),
        (
            "empty title",
            raw(Method::POST, "/api/v1/content", json_ct, br#"{"title":" ","body":"b"}"#.to_vec()),
            400,
            "invalid",
        ),
        ("bad uuid", n.req(Method::GET, "/api/v1/content/not-a-uuid", Some(&alice)), 400, "invalid"),
        (
            "wrong method on follow",
            n.req(Method::GET, "/api/v1/users/1234/follow", Some(&alice)),
            405,
            "method-not-allowed",
        ),
        ("bad uuid (follow)", n.req(Method::POST, "/api/v1/users/1234/follow", Some(&alice)), 400, "invalid"),
        ("limit not a number", n.req(Method::GET, "/api/v1/content?limit=abc", Some(&alice)), 400, "invalid-query"),
        ("limit too large", n.req(Method::GET, "/api/v1/content?limit=1000", Some(&alice)), 400, "invalid"),
        ("negative limit", n.req(Method::GET, "/api/v1/feed?limit=-1", Some(&alice)), 400, "invalid-query"),
        ("bad cursor", n.req(Method::GET, "/api/v1/content?cursor=zz", Some(&alice)), 400, "invalid"),
        ("unknown query param", n.req(Method::GET, "/api/v1/content?sort=asc", Some(&alice)), 400, "invalid-query"),
        (
            "bad notification limit",
            n.req(Method::GET, "/api/v1/notifications?limit=0", Some(&alice)),
            400,
            "bad-request",
        ),
        (
            "bad notification cursor",
            n.req(Method::GET, "/api/v1/notifications?cursor=%00", Some(&alice)),
            400,
            "bad-request",
        ),
        (
            "bad unread flag",
            n.req(Method::GET, "/api/v1/notifications?unread=maybe", Some(&alice)),
            400,
            "invalid-query",
        ),
        (
            "bad notification id",
            n.req(Method::POST, "/api/v1/notifications/nope/read", Some(&alice)),
            400,
            "bad-request",
        ),
        (
            "bad dead-letter cursor",
            n.req(Method::GET, "/api/v1/system/dead-letters?cursor=x", Some(&admin)),
            400,
            "bad-request",
        ),
        (
            "bad dead-letter limit",
            n.req(Method::GET, "/api/v1/system/dead-letters?limit=0", Some(&admin)),
            400,
            "bad-request",
        ),
        (
            "bad dead-letter id",
            n.req(Method::POST, "/api/v1/system/dead-letters/x/replay", Some(&admin)),
            400,
            "bad-request",
        ),
        ("no route", n.req(Method::GET, "/api/v1/nothing-here", Some(&alice)), 404, "not-found"),
        ("wrong method", n.req(Method::PUT, "/api/v1/content", Some(&alice)), 405, "method-not-allowed"),
    ];
    for (what, req, status, kind) in cases {
        let a = n.send(req).await;
        assert!(a.status.is_client_error(), "{what}: {} {}", a.status, a.body);
        assert_eq!(a.status.as_u16(), status, "{what}: {}", a.body);
        a.problem(status, kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_configured_origins_only() {
    let http = HttpSettings {
        cors_origins: vec!["https://app.example.com".into()],
        rate_limits: generous_limits(),
        ..HttpSettings::default()
    };
    let n = node(Opts { http, ..Opts::default() }).await;
    let preflight = |origin: &str| {
        n.req(Method::OPTIONS, "/api/v1/content", None)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
    };
    let ok = n.send(preflight("https://app.example.com")).await;
    assert!(ok.status.is_success(), "{}", ok.status);
    assert_eq!(ok.header("access-control-allow-origin"), "https://app.example.com");
    assert!(ok.header("access-control-allow-methods").contains("POST"));
    assert!(ok.header("access-control-allow-headers").contains("authorization"));
    let other = n.send(preflight("https://evil.example.com")).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    // Actual requests expose the correlation and rate-limit headers.
    let get = n.send(n.req(Method::GET, "/api/v1/users/me", None).header("origin", "https://app.example.com")).await;
    assert_eq!(get.header("access-control-allow-origin"), "https://app.example.com");
    assert!(get.header("access-control-expose-headers").contains("ratelimit"));

    // No origins configured: same-origin only, no CORS headers at all.
    let n = default_node().await;
    let a = n
        .send(
            n.req(Method::OPTIONS, "/api/v1/content", None)
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST"),
        )
        .await;
    assert!(a.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_the_docs_ui_is_served() {
    let n = default_node().await;
    let doc = n.call(Method::GET, "/api/docs/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/users/me", "get"),
        ("/api/v1/users", "get"),
        ("/api/v1/users/{id}", "get"),
        ("/api/v1/users/{id}", "patch"),
        ("/api/v1/users/{id}", "delete"),
        ("/api/v1/users/{id}/follow", "post"),
        ("/api/v1/users/{id}/follow", "delete"),
        ("/api/v1/content", "post"),
        ("/api/v1/content", "get"),
        ("/api/v1/content/{id}", "get"),
        ("/api/v1/content/{id}", "patch"),
        ("/api/v1/content/{id}", "delete"),
        ("/api/v1/feed", "get"),
        ("/api/v1/notifications", "get"),
        ("/api/v1/notifications/{id}/read", "post"),
        ("/api/v1/notifications/read-all", "post"),
        ("/api/v1/system/dead-letters", "get"),
        ("/api/v1/system/dead-letters/{id}/replay", "post"),
        ("/api/v1/system/dead-letters/{id}", "delete"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    assert!(doc.body["components"]["schemas"]["ContentItem"].is_object());
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());

    let ui = n.http.get(format!("{}/api/docs", n.base)).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(ui.text().await.unwrap().contains("swagger"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_is_503_with_retry_after_and_notifications_survive_an_outage() {
    let n = node(Opts {
        http: HttpSettings { rate_limits: generous_limits(), ..HttpSettings::default() },
        restart_after: Some(Duration::from_millis(1500)),
    })
    .await;
    let (_, alice, _) = n.user("alice@example.com").await;
    let (bob_id, bob, _) = n.user("bob@example.com").await;
    n.call(Method::POST, &format!("/api/v1/users/{bob_id}/follow"), Some(&alice), None).await;
    let item = n.post(&bob, "before").await.body["id"].as_str().unwrap().to_owned();

    // Content down (restart in 1.5 s): its routes answer 503 + Retry-After; other services still answer.
    n.registry.actor_ref::<ContentMsg>("content").unwrap().kill();
    let path = format!("/api/v1/content/{item}");
    let a = eventually("content 503", || async {
        let a = n.call(Method::GET, &path, Some(&alice), None).await;
        (a.status == StatusCode::SERVICE_UNAVAILABLE).then_some(a)
    })
    .await;
    a.problem(503, "unavailable");
    assert!(a.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(!a.body.to_string().contains("/troupe"), "actor path leaked: {}", a.body);
    assert_eq!(n.call(Method::GET, "/api/v1/users/me", Some(&alice), None).await.status, StatusCode::OK);
    eventually("content back", || async {
        (n.call(Method::GET, &path, Some(&alice), None).await.status == StatusCode::OK).then_some(())
    })
    .await;

    // Notifications down: posting still succeeds; the notification arrives after the restart.
    let seen_before =
        n.call(Method::GET, "/api/v1/notifications", Some(&alice), None).await.body["items"].as_array().unwrap().len();
    n.registry.actor_ref::<NotificationMsg>("notifications").unwrap().kill();
    let down = eventually("notifications 503", || async {
        let a = n.call(Method::GET, "/api/v1/notifications", Some(&alice), None).await;
        (a.status == StatusCode::SERVICE_UNAVAILABLE).then_some(a)
    })
    .await;
    let kind = down.body["type"].as_str().unwrap().trim_start_matches("urn:troupe:problem:").to_owned();
    assert!(["stopped", "unavailable"].contains(&kind.as_str()), "{}", down.body);
    down.problem(503, &kind);
    assert!(down.header("retry-after").parse::<u64>().unwrap() >= 1);
    let during = n.post(&bob, "during the outage").await;
    assert_eq!(during.status, StatusCode::CREATED);
    let during_id = during.body["id"].as_str().unwrap().to_owned();
    eventually("the outage's notification", || async {
        let a = n.call(Method::GET, "/api/v1/notifications", Some(&alice), None).await;
        let items = a.body["items"].as_array()?.clone();
        (items.len() > seen_before && items.iter().any(|i| i["content_id"] == during_id.as_str())).then_some(())
    })
    .await;
    assert!(n.root.shutdown(Duration::from_secs(5)).await);
}

#[test]
fn traceparent_parsing_follows_the_w3c_format() {
    let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(parse_traceparent(ok), Some(("4bf92f3577b34da6a3ce929d0e0e4736", "01")));
    for bad in [
        "",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad}");
    }
}

proptest::proptest! {
    /// The gateway continues any valid incoming trace: same trace id and flags, a fresh valid span id.
    #[test]
    fn begin_trace_continues_valid_traces(trace in "[0-9a-f]{31}[1-9a-f]", parent in "[1-9a-f][0-9a-f]{15}", flags in "[0-9a-f]{2}") {
        let incoming = format!("00-{trace}-{parent}-{flags}");
        let mut req = axum::http::Request::builder()
            .header("traceparent", &incoming)
            .body(axum::body::Body::empty())
            .unwrap();
        let out = super::begin_trace(&mut req).unwrap();
        let out = out.to_str().unwrap();
        let (t, f) = parse_traceparent(out).unwrap();
        proptest::prop_assert_eq!(t, trace.as_str());
        proptest::prop_assert_eq!(f, flags.as_str());
        proptest::prop_assert_eq!(&req.extensions().get::<super::TraceContext>().unwrap().0, out);
    }

    /// Anything that is not a valid traceparent starts a new, valid trace.
    #[test]
    fn begin_trace_replaces_garbage(garbage in "\\PC{0,80}") {
        let mut req = axum::http::Request::builder().body(axum::body::Body::empty()).unwrap();
        if let Ok(v) = axum::http::HeaderValue::from_str(&garbage) {
            req.headers_mut().insert("traceparent", v);
        }
        let out = super::begin_trace(&mut req).unwrap();
        let out = out.to_str().unwrap();
        proptest::prop_assert!(parse_traceparent(out).is_some(), "{}", out);
        proptest::prop_assert!(parse_traceparent(&garbage).is_none() || out.get(3..35) == garbage.get(3..35));
    }
}
