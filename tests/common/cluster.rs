//! Helpers for tests of real `troupe` processes forming a cluster on 127.0.0.x over a fresh
//! PostgreSQL schema: launch specs, the cluster view, waiting for a member's status.

#![allow(clippy::print_stderr, reason = "tests explain why they skip")]

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Node, TempDir};

pub const SECRET: &str = "a-cluster-e2e-test-secret-of-32-bytes+";
pub const ADMIN: &str = "ops@example.com";
pub const COOKIE: &str = "cluster-e2e-cookie";
/// The bound for marking a dead or frozen node down.
pub const DETECTION_BOUND: Duration = Duration::from_secs(5);

/// A fresh schema on the test server, dropped on drop.
pub struct Pg {
    admin: tokio_postgres::Config,
    schema: String,
    /// The store URL (search_path set to the fresh schema).
    pub url: String,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let (config, schema) = (self.admin.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async move {
                if let Ok((client, conn)) = config.connect(tokio_postgres::NoTls).await {
                    let task = tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}

pub async fn fresh_schema() -> Option<Pg> {
    let base = std::env::var("TROUPE_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://root@127.0.0.1:5432/test".to_owned());
    let mut admin: tokio_postgres::Config = base.parse().expect("TROUPE_TEST_POSTGRES_URL is not a PostgreSQL URL");
    admin.connect_timeout(Duration::from_secs(3));
    let (client, conn) = match admin.connect(tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) if troupe_config::require_services() => {
            panic!("PostgreSQL not reachable at {base} ({e}) and TROUPE_REQUIRE_SERVICES=1")
        }
        Err(e) => {
            eprintln!("skipping: PostgreSQL not reachable at {base} ({e})");
            return None;
        }
    };
    let task = tokio::spawn(conn);
    let schema = format!("troupe_cluster_test_{:016x}", fastrand_u64());
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    drop(client);
    let _ = task.await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    Some(Pg { admin, schema, url })
}

pub fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(29)
}

/// A free TCP port on `ip` (bound and released; the node binds it right after).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).expect("bind a free port").local_addr().expect("addr").port()
}

/// A cluster node's launch parameters, kept so it can be restarted.
pub struct Spec {
    pub ip: &'static str,
    pub cluster_addr: String,
}

impl Spec {
    pub fn new(ip: &'static str) -> Self {
        Self { ip, cluster_addr: format!("{ip}:{}", free_port(ip)) }
    }

    pub fn start(&self, pg: &Pg, join: &str, cookie: &str) -> Node {
        self.start_env(pg, join, cookie, &[])
    }

    pub fn start_env(&self, pg: &Pg, join: &str, cookie: &str, extra: &[(&str, &str)]) -> Node {
        self.start_wrapped(&[], &pg.url, join, cookie, extra)
    }

    /// Start through `wrapper` (e.g. `ip netns exec NS`) with the store at `store_url`.
    pub fn start_wrapped(
        &self,
        wrapper: &[&str],
        store_url: &str,
        join: &str,
        cookie: &str,
        extra: &[(&str, &str)],
    ) -> Node {
        let mut envs = vec![
            ("TROUPE_STORE_BACKEND", "postgres"),
            ("TROUPE_STORE_URL", store_url),
            ("TROUPE_CLUSTER_COOKIE", cookie),
            ("TROUPE_AUTH_JWT_SECRET", SECRET),
            ("TROUPE_AUTH_ADMIN_EMAILS", ADMIN),
            ("TROUPE_LOG_LEVEL", "info"),
        ];
        envs.extend_from_slice(extra);
        let http_addr = format!("{}:0", self.ip);
        let args = ["--cluster-addr", self.cluster_addr.as_str(), "--join", join];
        Node::start_wrapped(wrapper, TempDir::new("cluster"), &http_addr, &args, &envs)
    }
}

/// A node's `GET /api/v1/cluster/nodes`, or `None` if it does not answer 200.
pub async fn view(c: &reqwest::Client, node: &Node, token: &str) -> Option<Value> {
    let r = c.get(node.url("/api/v1/cluster/nodes")).bearer_auth(token).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// `(status, incarnation)` of `id` in a view.
pub fn member(view: &Value, id: &str) -> Option<(String, u64)> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| (m["status"].as_str().unwrap_or_default().to_owned(), m["incarnation"].as_u64().unwrap_or_default()))
}

pub fn statuses(view: &Value) -> Vec<String> {
    view["members"]
        .as_array()
        .map_or_else(Vec::new, |ms| ms.iter().map(|m| m["status"].as_str().unwrap_or_default().to_owned()).collect())
}

/// Polls `nodes` until each lists `id` with `status` (and an incarnation satisfying `inc`); returns how
/// long it took, or panics after `limit` with the last views.
pub async fn wait_for(
    c: &reqwest::Client,
    nodes: &[&Node],
    token: &str,
    id: &str,
    status: &str,
    inc: impl Fn(u64) -> bool,
    limit: Duration,
) -> Duration {
    let t0 = Instant::now();
    let mut last = Vec::new();
    loop {
        last.clear();
        let mut all = true;
        for n in nodes {
            let v = view(c, n, token).await;
            let ok = v.as_ref().and_then(|v| member(v, id)).is_some_and(|(s, i)| s == status && inc(i));
            all &= ok;
            last.push(v);
        }
        if all {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{id} not {status} on every node within {limit:?}; views: {last:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
