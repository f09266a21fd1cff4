#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use troupe_actors::ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_actors::{ChildSpec, Registry, Supervisor, SupervisorSpec};

use crate::{ApiError, GatewayConfig, GatewayState, router};

fn cfg(allow_kill: bool) -> GatewayConfig {
    GatewayConfig {
        node_name: "t1".into(),
        version: "0.0.0",
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 1024,
        allow_kill,
    }
}

async fn json(resp: axum::response::Response) -> (StatusCode, axum::http::HeaderMap, Value) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[derive(Clone)]
struct Idle;
impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

#[tokio::test]
async fn unavailable_maps_to_503_with_retry_after_rounded_up() {
    let err = ApiError::from(troupe_actors::Error::Unavailable {
        service: "/a/b".into(),
        retry_after: Duration::from_millis(1500),
    });
    let (status, headers, body) = json(err.into_response()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["type"], "urn:troupe:problem:unavailable");
    assert_eq!(body["retry_after"], 2);
}

#[tokio::test]
async fn timeouts_are_504_and_internal_errors_carry_no_detail() {
    let err = ApiError::from(troupe_actors::Error::Timeout { service: "/a".into(), timeout: Duration::from_secs(1) });
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    let err = ApiError::from(troupe_actors::Error::Spawn { path: "/secret/path".into(), reason: "db password".into() });
    let (status, _, body) = json(err.into_response()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.get("detail").is_none(), "internal detail leaked: {body}");
    assert!(!body.to_string().contains("secret"));
}

#[tokio::test]
async fn readiness_lists_services_and_turns_503_while_draining() {
    let registry = Registry::new();
    let root =
        Supervisor::start_root(SupervisorSpec::new("r").child(ChildSpec::new("idle", Idle, || ())), registry.clone())
            .await
            .unwrap();
    let state = GatewayState::new(&cfg(false), registry, None);
    let app = router(&cfg(false), state.clone());

    let resp = app.clone().oneshot(Request::get("/health/ready").body(Body::empty()).unwrap()).await.unwrap();
    let (status, _, body) = json(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["services"].as_array().unwrap().len(), 2);

    state.start_draining();
    let resp = app.oneshot(Request::get("/health/ready").body(Body::empty()).unwrap()).await.unwrap();
    let (status, _, body) = json(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["draining"], true);
    root.shutdown(Duration::from_secs(1)).await;
}

struct Probe(troupe_actors::ComponentStatus, bool);

impl troupe_actors::HealthProbe for Probe {
    fn health(&self) -> troupe_actors::ComponentHealth {
        troupe_actors::ComponentHealth {
            name: if self.1 { "critical-part".into() } else { "optional-part".into() },
            status: self.0,
            critical: self.1,
            detail: "test".into(),
        }
    }
}

#[tokio::test]
async fn readiness_lists_components_and_only_a_down_critical_one_blocks_it() {
    use troupe_actors::ComponentStatus;
    let registry = Registry::new();
    let root =
        Supervisor::start_root(SupervisorSpec::new("r").child(ChildSpec::new("idle", Idle, || ())), registry.clone())
            .await
            .unwrap();
    registry.register_probe(std::sync::Arc::new(Probe(ComponentStatus::Down, false)));
    let app = router(&cfg(false), GatewayState::new(&cfg(false), registry.clone(), None));
    let resp = app.clone().oneshot(Request::get("/health/ready").body(Body::empty()).unwrap()).await.unwrap();
    let (status, _, body) = json(resp).await;
    assert_eq!(status, StatusCode::OK, "a non-critical component that is down leaves the node ready");
    assert_eq!(body["components"][0]["name"], "optional-part");
    assert_eq!(body["components"][0]["status"], "down");

    registry.register_probe(std::sync::Arc::new(Probe(ComponentStatus::Down, true)));
    let resp = app.oneshot(Request::get("/health/ready").body(Body::empty()).unwrap()).await.unwrap();
    let (status, _, body) = json(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["components"].as_array().unwrap().len(), 2);
    root.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn readiness_is_503_when_a_permanent_child_is_down() {
    let registry = Registry::new();
    let spec = SupervisorSpec::new("r")
        .backoff(troupe_actors::Backoff { initial: Duration::from_secs(60), max: Duration::from_secs(60), jitter: 0.0 })
        .child(ChildSpec::new("idle", Idle, || ()));
    let root = Supervisor::start_root(spec, registry.clone()).await.unwrap();
    let app = router(&cfg(true), GatewayState::new(&cfg(true), registry.clone(), None));

    let kill = Request::post("/api/v1/system/actors/kill?path=/r/idle").body(Body::empty()).unwrap();
    let (status, _, body) = json(app.clone().oneshot(kill).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The restart waits a 60 s backoff: the child shows as restarting and the node as not ready.
    let mut ready = StatusCode::OK;
    for _ in 0..100 {
        let resp = app.clone().oneshot(Request::get("/health/ready").body(Body::empty()).unwrap()).await.unwrap();
        ready = resp.status();
        if ready == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(registry.slot("/r/idle").unwrap().status(), troupe_actors::Status::Restarting);
    root.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn kill_rejects_relative_and_unknown_paths() {
    let app = router(&cfg(true), GatewayState::new(&cfg(true), Registry::new(), None));
    let req = Request::post("/api/v1/system/actors/kill?path=idle").body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let req = Request::post("/api/v1/system/actors/kill?path=/nope").body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_method_is_a_405_problem() {
    let app = router(&cfg(false), GatewayState::new(&cfg(false), Registry::new(), None));
    let resp = app.oneshot(Request::post("/health/live").body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers, body) = json(resp).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["type"], "urn:troupe:problem:method-not-allowed");
}

#[tokio::test(start_paused = true)]
async fn slow_requests_get_a_504_problem() {
    let slow = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }),
    );
    let app = slow.layer(axum::middleware::from_fn(|req, next| {
        crate::error::edge(Duration::from_secs(1), usize::MAX, req, next)
    }));
    let resp = app.oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers, body) = json(resp).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["type"], "urn:troupe:problem:request-timeout");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_on_every_response() {
    let app = router(&cfg(false), GatewayState::new(&cfg(false), Registry::new(), None));
    // A client's id is kept and echoed, also on a problem response (404) and in its body.
    let resp = app
        .clone()
        .oneshot(Request::get("/nope").header("x-request-id", "client-id-1").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers, body) = json(resp).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-request-id"], "client-id-1");
    assert_eq!(body["request_id"], "client-id-1");
    // Without one, each response gets a fresh UUIDv7.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = app.clone().oneshot(Request::get("/health/live").body(Body::empty()).unwrap()).await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 7, "{id}");
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1]);
}

/// Connections that complete the TCP handshake while the server has not yet accepted any: the kernel
/// queues up to about `backlog` of them and drops further SYNs (the client then retries after 1 s).
async fn queued_without_accept(backlog: u32, clients: usize) -> usize {
    let listener = crate::listen("127.0.0.1:0".parse().unwrap(), backlog).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts =
        (0..clients).map(|_| tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)));
    let results = futures::future::join_all(attempts).await;
    let connected: Vec<_> = results.into_iter().filter_map(|r| r.ok().and_then(Result::ok)).collect();
    drop(listener);
    connected.len()
}

#[tokio::test]
async fn listen_applies_the_backlog() {
    // A long queue takes a burst the default of `TcpListener::bind` (128) would drop part of.
    assert_eq!(queued_without_accept(4096, 300).await, 300);
    // The control: the same burst against a short queue leaves clients waiting on SYN retries.
    let short = queued_without_accept(8, 300).await;
    assert!(short < 300, "a backlog of 8 queued {short} of 300 connections");
}
