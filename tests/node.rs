//! End-to-end tests of `troupe run` as an operator uses it: real process, real HTTP, real signals.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::{Node, TempDir, command, eventually, http, token_for};
use serde_json::Value;

#[tokio::test]
async fn node_is_live_and_ready_and_stops_cleanly_on_sigterm() {
    let mut node = Node::start(&[]);
    let c = http();
    let live = c.get(node.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = c.get(node.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let paths: Vec<&str> = body["services"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/troupe/system/sampler"), "{paths:?}");

    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    let logs = node.drain_logs().join("\n");
    assert!(logs.contains("\"graceful\":true"), "shutdown was not graceful: {logs}");
}

#[tokio::test]
async fn sigint_also_stops_with_exit_zero() {
    let mut node = Node::start(&[]);
    node.signal("INT");
    assert!(node.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn supervision_tree_is_visible_and_a_killed_child_is_restarted() {
    let node = Node::start(&[("TROUPE_ADMIN_ALLOW_KILL", "true"), ("TROUPE_AUTH_ADMIN_EMAILS", "ops@example.com")]);
    let c = http();
    let tree: Value = c.get(node.url("/api/v1/system/actors")).send().await.unwrap().json().await.unwrap();
    let actors = tree["actors"].as_array().unwrap();
    let sampler = actors.iter().find(|a| a["path"] == "/troupe/system/sampler").expect("sampler in tree");
    assert_eq!(sampler["status"], "running");
    assert_eq!(sampler["restarts"], 0);
    assert_eq!(sampler["breaker"], "closed");
    assert_eq!(sampler["parent"], "/troupe/system");
    let first_id = sampler["actor_id"].clone();

    // Enabled, but still admin-only: no token is 401, a user's token 403.
    let kill_url = node.url("/api/v1/system/actors/kill?path=/troupe/system/sampler");
    assert_eq!(c.post(&kill_url).send().await.unwrap().status(), 401);
    let user = token_for(&c, &node, "someone@example.com").await;
    assert_eq!(c.post(&kill_url).bearer_auth(&user).send().await.unwrap().status(), 403);
    let admin = token_for(&c, &node, "ops@example.com").await;
    let killed = c.post(&kill_url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(killed.status(), 200);

    let restarted = eventually(Duration::from_secs(10), || async {
        let tree: Value = c.get(node.url("/api/v1/system/actors")).send().await.ok()?.json().await.ok()?;
        let s = tree["actors"].as_array()?.iter().find(|a| a["path"] == "/troupe/system/sampler")?.clone();
        (s["restarts"] == 1 && s["status"] == "running").then_some(s)
    })
    .await
    .expect("sampler restarted once and running again");
    assert_ne!(restarted["actor_id"], first_id, "a new incarnation runs");
    assert_eq!(restarted["last_error"], "killed");

    let metrics = c.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("troupe_actor_restarts_total{")
            && l.contains("path=\"/troupe/system/sampler\"")
            && l.ends_with(" 1")),
        "restart not in /metrics:\n{metrics}"
    );
    let ready = c.get(node.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready again after the restart");
}

#[tokio::test]
async fn killing_actors_is_refused_unless_enabled() {
    let node = Node::start(&[]);
    let resp = http().post(node.url("/api/v1/system/actors/kill?path=/troupe/system/sampler")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 403);
}

#[tokio::test]
async fn unknown_routes_are_problem_json_with_a_request_id() {
    let node = Node::start(&[]);
    let resp = http().get(node.url("/api/v1/nope")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = http().get(node.url("/api/v1/nope")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"), "an id is generated when the client sends none");
}

#[test]
fn a_port_in_use_is_one_clear_error_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = TempDir::new("port");
    let out = command().args(["run", "--http-addr", &addr, "--data-dir"]).arg(data.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(errors[0].to_lowercase().contains("address already in use"), "{stderr}");
}

#[test]
fn an_unusable_data_dir_is_one_clear_error_and_exit_1() {
    let tmp = TempDir::new("datadir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out =
        command().args(["run", "--http-addr", "127.0.0.1:0", "--data-dir"]).arg(file.join("sub")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("data dir"), "{stderr}");
}

#[test]
fn bad_config_names_the_key_and_exits_1() {
    let tmp = TempDir::new("cfg");
    let file = tmp.path().join("troupe.toml");
    std::fs::write(&file, "[http]\naddr = \"nope\"\n[store]\nbackend = \"postgres\"\n").unwrap();
    let out = command().args(["config", "check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.addr"), "{stderr}");
    assert!(stderr.contains("store.url"), "{stderr}");

    let out = command().args(["run", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "run refuses the same config");

    let out = command().args(["config", "check"]).env("TROUPE_HTTP_ADR", "127.0.0.1:1").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TROUPE_HTTP_ADR"));
}

#[test]
fn config_check_prints_the_resolved_config_with_secrets_redacted() {
    let out = command()
        .args(["config", "check"])
        .env("TROUPE_STORE_BACKEND", "postgres")
        .env("TROUPE_STORE_URL", "postgres://troupe:hunter2@127.0.0.1/test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("backend = \"postgres\""), "{stdout}");
    assert!(!stdout.contains("hunter2"), "secret leaked: {stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
}

#[test]
fn version_and_help() {
    let out = command().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("troupe "));
    let out = command().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("config"), "{help}");
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let node = Node::start(&[]);
    let out =
        command().args(["run", "--http-addr", "127.0.0.1:0", "--data-dir"]).arg(node.data.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot open the store") && errors[0].contains("in use"), "{stderr}");
}

/// A binary built without the `scylla` cargo feature refuses `store.backend = "scylla"` at start, naming the
/// setting and the missing feature.
#[cfg(not(feature = "scylla"))]
#[test]
fn backends_not_in_this_build_are_a_clear_error() {
    let data = TempDir::new("scylla");
    let out = command()
        .args(["run", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("TROUPE_STORE_BACKEND", "scylla")
        .env("TROUPE_STORE_URL", "127.0.0.1:9042")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("store.backend") && stderr.contains("without the `scylla` cargo feature"), "{stderr}");
}

/// With the `scylla` feature, an unreachable cluster fails the start with the store error.
#[cfg(feature = "scylla")]
#[test]
fn backends_not_reachable_fail_the_start() {
    let data = TempDir::new("scylla");
    let out = command()
        .args(["run", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("TROUPE_STORE_BACKEND", "scylla")
        .env("TROUPE_STORE_URL", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the store") && stderr.contains("scylla"), "{stderr}");
}
