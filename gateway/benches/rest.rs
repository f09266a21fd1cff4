//! REST benchmark: authenticated `GET /api/v1/content/{id}` through the full gateway (request id, trace
//! context, CORS off, body limit, deadline, bearer verification, rate limiter with a quota it never
//! reaches, typed client → content actor → fjall store) against a bare axum handler returning the same
//! bytes. Both servers run in this process on 127.0.0.1; a keep-alive reqwest client drives each at fixed
//! concurrency for a fixed time, alternating full/bare, and the medians and their ratio are printed.
//!
//! Run: `cargo bench -p troupe-gateway --bench rest` (env: `CONCURRENCY`, default 32; `SECS` per run,
//! default 3; `RUNS` per server, default 5; `ONLY=full|bare|domain` drives one server, for profiling).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "benchmark binary")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::routing::get;
use bytes::Bytes;
use troupe_actors::bus::{BusConfig, EventBus};
use troupe_actors::{Backoff, ChildSpec, Registry, Supervisor, SupervisorSpec};
use troupe_gateway::{GatewayConfig, GatewayState, HttpSettings, Rate, RateLimitSettings, router};
use troupe_services::password::HashParams;
use troupe_services::{AuthSettings, Clients, Ctx, DomainServices, LoginRequest, NewContent, RegisterRequest};
use troupe_storage::{FjallBackend, Store, SystemClock};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    format!("http://{addr}")
}

/// Requests per second over `secs` at `concurrency`, and the number of non-200 answers.
async fn drive(client: &reqwest::Client, url: &str, token: &str, concurrency: u64, secs: u64) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        let (done, bad) = (Arc::clone(&done), Arc::clone(&bad));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
                let ok = resp.status() == reqwest::StatusCode::OK;
                let _ = resp.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(), bad.load(Ordering::Relaxed))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let (concurrency, secs, runs) = (env("CONCURRENCY", 32), env("SECS", 3), env("RUNS", 5));
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    let store = Store::new(Arc::new(backend), Arc::new(SystemClock));
    let settings = AuthSettings { hash_params: HashParams::insecure_fast(), ..AuthSettings::default() };
    let svc = DomainServices::new(store.clone(), settings).unwrap();
    let registry = Registry::new();
    let bus = EventBus::new(store.clone(), BusConfig::default()).unwrap();
    let spec = SupervisorSpec::new("troupe")
        .backoff(Backoff::NONE)
        .child(ChildSpec::supervisor(svc.supervisor_spec()))
        .child(bus.child_spec("bus"));
    let root = Supervisor::start_root(spec, registry.clone()).await.unwrap();
    let clients = Clients::from_registry(&registry).unwrap();

    let reg = RegisterRequest {
        email: "bench@example.com".into(),
        password: "bench password".into(),
        display_name: "b".into(),
    };
    clients.auth.register(Ctx::anonymous(), reg).await.unwrap();
    let login = LoginRequest { email: "bench@example.com".into(), password: "bench password".into() };
    let token = clients.auth.login(Ctx::anonymous(), login).await.unwrap().access_token;
    let ctx = Ctx::user(svc.tokens().verify(&token).unwrap());
    let new = NewContent { title: "Benchmark item".into(), body: "x ".repeat(200), tags: vec!["bench".into()] };
    let item = clients.content.create(ctx.clone(), new).await.unwrap();
    let direct_clients = clients.clone();

    let cfg = GatewayConfig {
        node_name: "bench".into(),
        version: "0.0.0",
        request_timeout: Duration::from_secs(10),
        max_body_bytes: 64 * 1024,
        allow_kill: false,
    };
    // The limiter runs on every request but with a quota this run never reaches.
    let unlimited = Rate::new(10_000_000, 10_000_000);
    let http = HttpSettings {
        rate_limits: RateLimitSettings { read: unlimited, ..RateLimitSettings::default() },
        ..HttpSettings::default()
    };
    let state = GatewayState::new(&cfg, registry.clone(), None)
        .with_services(clients, svc.tokens())
        .with_bus(bus)
        .with_http(&http)
        .unwrap();
    let full = serve(router(&cfg, state)).await;
    let path = format!("/api/v1/content/{}", item.id);

    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency as usize).build().unwrap();
    let full_url = format!("{full}{path}");
    let body = client.get(&full_url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
    let same: Bytes = body.clone();
    let bare_app = Router::new().route(
        "/api/v1/content/{id}",
        get(move || {
            let b = same.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], b) }
        }),
    );
    let bare_url = format!("{}{path}", serve(bare_app).await);
    // Bare axum plus the same domain call (no gateway middleware, no token check): separates the
    // gateway's own cost from the content service's.
    let (dc, dctx) = (direct_clients.clone(), ctx.clone());
    let domain_app = Router::new().route(
        "/api/v1/content/{id}",
        get(move |axum::extract::Path(id): axum::extract::Path<String>| {
            let (c, ctx) = (dc.clone(), dctx.clone());
            async move { axum::Json(c.content.get(ctx, id).await.unwrap()) }
        }),
    );
    let domain_url = format!("{}{path}", serve(domain_app).await);

    println!(
        "REST GET /api/v1/content/{{id}}: {} byte body, concurrency {concurrency}, {secs} s x {runs} runs each",
        body.len()
    );
    // Profiling aid: `ONLY=full|bare|domain` drives just that server for `SECS` and exits (run it under
    // `perf record`).
    if let Ok(only) = std::env::var("ONLY") {
        let url = match only.as_str() {
            "bare" => &bare_url,
            "domain" => &domain_url,
            _ => &full_url,
        };
        let (r, bad) = drive(&client, url, &token, concurrency, secs).await;
        println!("{only}: {r:.0} req/s ({bad} non-200)");
        root.shutdown(Duration::from_secs(5)).await;
        return;
    }
    // Warm-up of both (connections, caches).
    drive(&client, &full_url, &token, concurrency, 1).await;
    drive(&client, &bare_url, &token, concurrency, 1).await;
    let (mut f, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (rf, bad_f) = drive(&client, &full_url, &token, concurrency, secs).await;
        let (rb, bad_b) = drive(&client, &bare_url, &token, concurrency, secs).await;
        let (rd, bad_d) = drive(&client, &domain_url, &token, concurrency, secs).await;
        assert_eq!(bad_f + bad_b + bad_d, 0, "non-200 answers");
        println!(
            "run {run}: full {rf:>9.0} req/s   bare {rb:>9.0} req/s   ratio {:.2}   (bare + domain call {rd:>9.0} req/s)",
            rf / rb
        );
        f.push(rf);
        b.push(rb);
        d.push(rd);
    }
    let (mf, mb, md) = (median(f), median(b), median(d));
    println!("median: full {mf:.0} req/s, bare {mb:.0} req/s, ratio {:.2} (target >= 0.60)", mf / mb);
    println!(
        "median: bare axum + ContentClient::get {md:.0} req/s; full / that = {:.2} (the gateway's own share)",
        mf / md
    );

    // Where the time goes: the same read through the typed client alone (no HTTP, no middleware).
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, ctx, id, done) = (direct_clients.clone(), ctx.clone(), item.id.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                c.content.get(ctx.clone(), id.clone()).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let direct = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("direct ContentClient::get (no HTTP): {direct:.0} calls/s");
    root.shutdown(Duration::from_secs(5)).await;
}
