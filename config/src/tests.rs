#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use crate::schema::{KEYS, Kind};
use crate::*;

mod app;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn from_toml(text: &str) -> Result<NodeConfig, ConfigErrors> {
    ConfigLoader::new().toml_str("troupe.toml", text).load()
}

/// A shared store section (a cluster needs one).
const PG: &str = "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/troupe\"\n";

fn errors_of(result: Result<NodeConfig, ConfigErrors>) -> ConfigErrors {
    match result {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors,
    }
}

/// The single error, asserting its key and that the reason contains `needle`.
#[track_caller]
fn assert_one_error(result: Result<NodeConfig, ConfigErrors>, key: &str, needle: &str) {
    let errors = errors_of(result);
    assert_eq!(errors.len(), 1, "expected one error, got:\n{errors}");
    let e = errors.iter().next().unwrap();
    assert_eq!(e.key, key, "wrong key in: {e}");
    assert!(e.reason.contains(needle), "{needle:?} not in: {e}");
}

fn temp_file(text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "troupe-config-test-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- defaults and precedence ----

#[test]
fn defaults_load_with_no_file_env_or_overrides() {
    let config = ConfigLoader::new().load().unwrap();
    assert_eq!(config, NodeConfig::default());
    assert_eq!(config.node.name, "troupe-1");
    assert_eq!(config.node.data_dir, PathBuf::from("./data"));
    assert_eq!(config.http.addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.http.request_timeout, Duration::from_secs(30));
    assert_eq!(config.http.max_body_bytes, 1 << 20);
    assert_eq!(config.http.listen_backlog, 4096);
    assert_eq!(config.cluster.addr, None);
    assert!(config.cluster.seeds.is_empty());
    assert!(config.cluster.cookie.is_none());
    assert_eq!(config.store.backend, StoreBackend::Fjall);
    assert!(config.store.url.is_none());
    assert!(config.rabbitmq.url.is_none());
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.shutdown.grace, Duration::from_secs(10));
    assert_eq!(config.supervisor.max_restarts, 5);
    assert_eq!(config.supervisor.within, Duration::from_secs(10));
    assert_eq!(config.supervisor.backoff_initial, Duration::from_millis(100));
    assert_eq!(config.supervisor.backoff_max, Duration::from_secs(5));
    assert!((config.supervisor.backoff_jitter - 0.2).abs() < f64::EPSILON);
    assert_eq!(config.breaker.consecutive_failures, 5);
    assert!((config.breaker.failure_rate - 0.5).abs() < f64::EPSILON);
    assert_eq!(config.breaker.window, Duration::from_secs(30));
    assert_eq!(config.breaker.min_calls, 20);
    assert_eq!(config.breaker.cooldown, Duration::from_secs(5));
    assert_eq!(config.calls.timeout, Duration::from_secs(5));
    assert_eq!(config.calls.max_in_flight, 1024);
    assert!(!config.admin.allow_kill);
}

#[test]
fn file_then_env_then_overrides() {
    let path = temp_file(
        r#"
[node]
name = "from-file"
data_dir = "/var/lib/troupe"

[http]
addr = "10.0.0.1:1000"
max_body_bytes = 2048

[log]
format = "json"
"#,
    );
    let config = ConfigLoader::new()
        .file(&path)
        .env(vars(&[
            ("TROUPE_NODE_NAME", "from-env"),
            ("TROUPE_HTTP_ADDR", "10.0.0.2:2000"),
            ("TROUPE_SUPERVISOR_MAX_RESTARTS", "9"),
            ("TROUPE_ADMIN_ALLOW_KILL", "yes"),
            ("TROUPE_CLUSTER_SEEDS", "a.example:4000, [::1]:4001"),
            ("TROUPE_CLUSTER_ADDR", "0.0.0.0:4000"),
            ("TROUPE_CLUSTER_ADVERTISE_ADDR", "node-1.example:4000"),
            ("TROUPE_CLUSTER_COOKIE", "s3cret"),
            ("TROUPE_STORE_BACKEND", "postgres"),
            ("TROUPE_STORE_URL", "postgres://db/troupe"),
            ("PATH", "/usr/bin"),
        ]))
        .set("http.addr", "127.0.0.1:0")
        .set("supervisor.within", "1m30s")
        .load()
        .unwrap();
    std::fs::remove_file(&path).unwrap();

    assert_eq!(config.node.name, "from-env"); // env beats file
    assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/troupe")); // file beats default
    assert_eq!(config.http.addr, "127.0.0.1:0".parse().unwrap()); // override beats env
    assert_eq!(config.http.max_body_bytes, 2048);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.supervisor.max_restarts, 9);
    assert_eq!(config.supervisor.within, Duration::from_secs(90));
    assert!(config.admin.allow_kill);
    assert_eq!(
        config.cluster.seeds,
        vec![HostPort { host: "a.example".into(), port: 4000 }, HostPort { host: "::1".into(), port: 4001 },]
    );
    assert_eq!(config.cluster.cookie.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(config.breaker, BreakerConfig::default()); // untouched
}

#[test]
fn empty_env_value_restores_default() {
    let config = ConfigLoader::new()
        .toml_str("t.toml", "[store]\nbackend = \"fjall\"\n[log]\nlevel = \"debug\"")
        .env(vars(&[("TROUPE_LOG_LEVEL", "  ")]))
        .load()
        .unwrap();
    assert_eq!(config.log.level, "info");
}

#[test]
fn later_override_wins() {
    let config = ConfigLoader::new().set("log.format", "pretty").set("log.format", "JSON").load().unwrap();
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn non_config_troupe_vars_are_accepted() {
    let config = ConfigLoader::new()
        .env(vars(&[("TROUPE_CONFIG", "/etc/troupe.toml"), ("TROUPE_REQUIRE_SERVICES", "1")]))
        .load()
        .unwrap();
    assert_eq!(config, NodeConfig::default());
    assert_eq!(
        env::config_file(vars(&[("TROUPE_CONFIG", "/etc/troupe.toml")])),
        Some(PathBuf::from("/etc/troupe.toml"))
    );
    assert_eq!(env::config_file(vars(&[("TROUPE_CONFIG", "")])), None);
}

// ---- file problems ----

#[test]
fn missing_file_names_the_path() {
    let path = std::env::temp_dir().join("troupe-config-definitely-missing.toml");
    let errors = errors_of(ConfigLoader::new().file(&path).load());
    assert_eq!(errors.len(), 1);
    let e = errors.iter().next().unwrap();
    assert_eq!(e.key, path.display().to_string());
    assert!(e.reason.contains("not found"), "{e}");
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    assert_one_error(from_toml("[http]\naddr = \"127.0.0.1:80\"\nrequest_timeout = \n"), "troupe.toml", "line 3");
}

#[test]
fn unknown_key_in_file_is_named_with_a_hint() {
    let errors = errors_of(from_toml("[http]\nadr = \"127.0.0.1:80\"\n"));
    assert_eq!(errors.len(), 1);
    let line = errors.to_string();
    assert!(line.starts_with("troupe.toml: "), "{line}");
    assert!(line.contains(r#"unknown key "http.adr""#), "{line}");
    assert!(line.contains("line 2"), "{line}");
    assert!(line.contains(r#"did you mean "http.addr"?"#), "{line}");
}

#[test]
fn unknown_section_and_key_in_wrong_section() {
    let errors = errors_of(from_toml("[htp]\naddr = \"127.0.0.1:80\"\n[http]\ndata_dir = \"x\"\n"));
    let text = errors.to_string();
    assert_eq!(errors.len(), 2, "{text}");
    assert!(text.contains(r#"unknown key "htp""#), "{text}");
    assert!(text.contains(r#"did you mean "http"?"#), "{text}");
    assert!(text.contains(r#"did you mean "node.data_dir"?"#), "{text}");
}

#[test]
fn section_that_is_not_a_table() {
    assert_one_error(from_toml("http = 5\n"), "http", "expected a table");
}

#[test]
fn wrong_toml_type_names_key_and_line() {
    assert_one_error(
        from_toml("[http]\n\nmax_body_bytes = \"1MiB\"\n"),
        "http.max_body_bytes",
        "expected an integer, found string (set in troupe.toml:3)",
    );
    assert_one_error(from_toml("[supervisor]\nwithin = 10\n"), "supervisor.within", "expected a duration string");
    assert_one_error(from_toml("[cluster]\nseeds = [\"a:1\", 2]\n"), "cluster.seeds", "non-string");
    // An integer is fine where a float is expected.
    let config = from_toml("[supervisor]\nbackoff_jitter = 1\n").unwrap();
    assert!((config.supervisor.backoff_jitter - 1.0).abs() < f64::EPSILON);
}

#[test]
fn dotted_keys_at_top_level_work() {
    let config = from_toml("http.addr = \"127.0.0.1:9\"\n").unwrap();
    assert_eq!(config.http.addr.port(), 9);
}

// ---- environment and override problems ----

#[test]
fn unknown_troupe_var_is_an_error_with_a_hint() {
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_HTTP_ADR", "127.0.0.1:1"), ("HOME", "/root")])).load(),
        "TROUPE_HTTP_ADR",
        "did you mean TROUPE_HTTP_ADDR?",
    );
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_NODE_DATA_DIR", "/x")])).load(),
        "TROUPE_NODE_DATA_DIR",
        "did you mean TROUPE_DATA_DIR?",
    );
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_WHATEVER_ELSE_ENTIRELY", "1")])).load(),
        "TROUPE_WHATEVER_ELSE_ENTIRELY",
        "unknown Troupe environment variable",
    );
}

#[test]
fn bad_env_value_names_key_and_variable() {
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_SUPERVISOR_MAX_RESTARTS", "lots")])).load(),
        "supervisor.max_restarts",
        "invalid integer \"lots\" (set by TROUPE_SUPERVISOR_MAX_RESTARTS)",
    );
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_ADMIN_ALLOW_KILL", "maybe")])).load(),
        "admin.allow_kill",
        "invalid boolean",
    );
}

#[test]
fn unknown_override_key() {
    assert_one_error(ConfigLoader::new().set("http.adr", "x").load(), "http.adr", r#"did you mean "http.addr"?"#);
}

// ---- value validation ----

#[test]
fn bad_socket_address() {
    let expected = r#"invalid socket address "x:y" (expected ip:port such as 127.0.0.1:8080)"#;
    assert_one_error(from_toml("[http]\naddr = \"x:y\"\n"), "http.addr", expected);
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_HTTP_ADDR", "x:y")])).load(),
        "http.addr",
        "(set by TROUPE_HTTP_ADDR)",
    );
    assert_one_error(ConfigLoader::new().set("http.addr", "x:y").load(), "http.addr", "(set by override)");
}

#[test]
fn bad_node_name_and_data_dir() {
    for bad in ["Upper", "-lead", "has space", &"a".repeat(64), "é"] {
        assert_one_error(ConfigLoader::new().set("node.name", bad).load(), "node.name", "invalid node name");
    }
    for good in ["a", "node-2", "n.1_x", &"a".repeat(63)] {
        assert_eq!(ConfigLoader::new().set("node.name", good).load().unwrap().node.name, good);
    }
    assert_one_error(from_toml("[node]\ndata_dir = \"\"\n"), "node.data_dir", "must not be empty");
}

#[test]
fn postgres_without_url() {
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_STORE_BACKEND", "postgres")])).load(),
        "store.url",
        "required by the postgres backend",
    );
}

#[test]
fn postgres_url_scheme_checked_without_echoing_it() {
    let errors = errors_of(
        ConfigLoader::new().set("store.backend", "postgres").set("store.url", "mysql://root:hunter2@db/x").load(),
    );
    assert_eq!(errors.len(), 1);
    let text = errors.to_string();
    assert!(text.starts_with("store.url: must start with postgres://"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let config = ConfigLoader::new()
        .set("store.backend", "postgres")
        .set("store.url", "postgresql://u:p@localhost/troupe")
        .load()
        .unwrap();
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    assert_eq!(config.store.url.unwrap().expose(), "postgresql://u:p@localhost/troupe");
}

#[test]
fn fjall_with_url() {
    assert_one_error(from_toml("[store]\nurl = \"postgres://x@y/z\"\n"), "store.url", "not used by the fjall backend");
}

#[test]
fn scylla_url_is_a_host_port_list() {
    let config =
        ConfigLoader::new().set("store.backend", "scylla").set("store.url", "db-1:9042, 10.0.0.5:9042").load().unwrap();
    assert_eq!(config.store.scylla_nodes().len(), 2);
    assert_one_error(
        ConfigLoader::new().set("store.backend", "scylla").set("store.url", "db-1:9042,db-2").load(),
        "store.url",
        "item 2 is not host:port",
    );
    assert_one_error(
        ConfigLoader::new().set("store.backend", "scylla").load(),
        "store.url",
        "required by the scylla backend",
    );
    assert_one_error(
        ConfigLoader::new().set("store.backend", "mongo").load(),
        "store.backend",
        r#"unknown store backend "mongo" (expected one of fjall, postgres, scylla)"#,
    );
}

#[test]
fn rabbitmq_url_scheme() {
    assert_one_error(
        ConfigLoader::new().set("rabbitmq.url", "http://guest:guest@localhost").load(),
        "rabbitmq.url",
        "amqp:// or amqps://",
    );
    let config = ConfigLoader::new().set("rabbitmq.url", "amqps://guest:guest@localhost:5671/%2f").load().unwrap();
    assert!(config.rabbitmq.url.is_some());
}

#[test]
fn rabbitmq_bridge_settings_and_bindings() {
    let config = ConfigLoader::new()
        .set("rabbitmq.url", "amqp://guest:guest@localhost:5672/%2f")
        .set("rabbitmq.exchange", "domain.events")
        .set("rabbitmq.topics", "user.*,content.created")
        .set("rabbitmq.packed", "true")
        .set("rabbitmq.prefetch", "16")
        .set("rabbitmq.bindings", "orders.in=orders, billing=billing;prefetch=4;dlx=billing.dead;keys=order.*|refund")
        .load()
        .unwrap();
    let r = &config.rabbitmq;
    assert_eq!(r.exchange, "domain.events");
    assert_eq!(r.topics, vec!["user.*".to_owned(), "content.created".to_owned()]);
    assert!(r.packed);
    assert_eq!((r.confirm_window, r.returned), (1000, crate::ReturnedMessages::DeadLetter));
    assert_eq!(r.bindings.len(), 2);
    let (a, b) = (&r.bindings[0], &r.bindings[1]);
    assert_eq!(
        (a.queue.as_str(), a.handler.as_str(), a.prefetch, a.dead_letter_exchange.as_str()),
        ("orders.in", "orders", 16, "orders.in.dlx")
    );
    assert_eq!(a.exchange, "domain.events");
    assert_eq!(
        (b.prefetch, b.dead_letter_exchange.as_str(), b.delivery_limit, b.max_attempts),
        (4, "billing.dead", 10, 5)
    );
    assert_eq!(b.routing_keys, vec!["order.*".to_owned(), "refund".to_owned()]);
    // Off by default.
    assert!(ConfigLoader::new().load().unwrap().rabbitmq.url.is_none());
}

#[test]
fn rabbitmq_bad_values_are_named() {
    for (key, value, reason) in [
        ("rabbitmq.confirm_window", "0", "from 1 to 65535"),
        ("rabbitmq.returned", "keep", "dead_letter, drop or retry"),
        ("rabbitmq.exchange", "bad name", "is not a name"),
        ("rabbitmq.topics", "a*b", "bad topic filter"),
        ("rabbitmq.bindings", "just-a-queue", "queue=handler"),
        ("rabbitmq.bindings", "q=h;prefetch=0", "prefetch must be"),
        ("rabbitmq.bindings", "q=h;colour=red", "unknown option"),
        ("rabbitmq.bindings", "q=h,q=i", "bound twice"),
    ] {
        assert_one_error(ConfigLoader::new().set(key, value).load(), key, reason);
    }
    assert_one_error(
        ConfigLoader::new().set("rabbitmq.reconnect_initial", "5s").set("rabbitmq.reconnect_max", "1s").load(),
        "rabbitmq.reconnect_max",
        "at least rabbitmq.reconnect_initial",
    );
}

#[test]
fn seeds_without_cookie() {
    assert_one_error(
        from_toml(&format!("{PG}[cluster]\naddr = \"10.0.0.1:4000\"\nseeds = [\"node-1:4000\"]\n")),
        "cluster.cookie",
        "required when cluster.seeds is set (cluster.seeds set in troupe.toml:6)",
    );
}

#[test]
fn seeds_without_addr_and_addr_without_cookie() {
    assert_one_error(
        from_toml("[cluster]\nseeds = [\"node-1:4000\"]\ncookie = \"c\"\n"),
        "cluster.addr",
        "required when cluster.seeds is set",
    );
    // Both problems at once are both reported.
    let errors = errors_of(from_toml("[cluster]\nseeds = [\"node-1:4000\"]\n"));
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["cluster.cookie", "cluster.addr"], "{errors}");
    assert_one_error(
        ConfigLoader::new()
            .set("cluster.addr", "10.0.0.1:4000")
            .set("store.backend", "postgres")
            .set("store.url", "postgres://db/troupe")
            .load(),
        "cluster.cookie",
        "required when cluster.addr is set",
    );
}

#[test]
fn cluster_needs_a_shared_store_and_a_dialable_address() {
    assert_one_error(
        ConfigLoader::new().set("cluster.addr", "10.0.0.1:4000").set("cluster.cookie", "c").load(),
        "cluster.addr",
        "needs a shared store",
    );
    assert_one_error(
        from_toml(&format!("{PG}[cluster]\naddr = \"0.0.0.0:4000\"\ncookie = \"c\"\n")),
        "cluster.advertise_addr",
        "required when cluster.addr is a wildcard address",
    );
    let config =
        from_toml(&format!("{PG}[cluster]\naddr = \"0.0.0.0:4000\"\ncookie = \"c\"\nadvertise_addr = \"n1:4000\"\n"))
            .unwrap();
    assert_eq!(config.cluster.advertise_addr, Some(HostPort { host: "n1".into(), port: 4000 }));
    assert!(config.cluster.enabled());
    assert!(!NodeConfig::default().cluster.enabled());
}

#[test]
fn cluster_tls_needs_all_three_files() {
    let errors = errors_of(ConfigLoader::new().set("cluster.tls_cert", "/etc/troupe/node.pem").load());
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["cluster.tls_key", "cluster.tls_ca"], "{errors}");
    assert!(errors.to_string().contains("mutual TLS needs all three"), "{errors}");
    let config = ConfigLoader::new()
        .env(vars(&[
            ("TROUPE_CLUSTER_TLS_CERT", "/n.pem"),
            ("TROUPE_CLUSTER_TLS_KEY", "/n.key"),
            ("TROUPE_CLUSTER_TLS_CA", "/ca.pem"),
        ]))
        .load()
        .unwrap();
    assert_eq!(config.cluster.tls_ca, Some(PathBuf::from("/ca.pem")));
}

#[test]
fn cluster_timing_defaults_and_order() {
    let d = NodeConfig::default().cluster;
    assert_eq!(
        (d.heartbeat_interval, d.suspect_after, d.down_after),
        (Duration::from_millis(500), Duration::from_millis(1500), Duration::from_secs(3))
    );
    let config = ConfigLoader::new()
        .env(vars(&[("TROUPE_CLUSTER_DOWN_AFTER", "10s"), ("TROUPE_CLUSTER_HEARTBEAT_INTERVAL", "1s")]))
        .set("cluster.suspect_after", "2s")
        .load()
        .unwrap();
    assert_eq!(config.cluster.down_after, Duration::from_secs(10));
    assert_eq!(config.cluster.heartbeat_interval, Duration::from_secs(1));
    assert_one_error(
        ConfigLoader::new().set("cluster.suspect_after", "400ms").load(),
        "cluster.suspect_after",
        "must be longer than cluster.heartbeat_interval",
    );
    assert_one_error(
        ConfigLoader::new().set("cluster.down_after", "1s").load(),
        "cluster.down_after",
        "must be longer than cluster.suspect_after",
    );
    assert_one_error(
        ConfigLoader::new().set("cluster.down_after", "0s").load(),
        "cluster.down_after",
        "greater than 0",
    );
}

#[test]
fn bad_seed_is_named() {
    assert_one_error(
        ConfigLoader::new()
            .set("cluster.addr", "10.0.0.1:4000")
            .set("store.backend", "postgres")
            .set("store.url", "postgres://db/troupe")
            .set("cluster.cookie", "c")
            .set("cluster.seeds", "good:1,bad_host:1,noport")
            .load(),
        "cluster.seeds",
        r#"invalid host:port "bad_host:1" (expected e.g. node-2.example:4000); invalid host:port "noport""#,
    );
}

#[test]
fn jitter_and_failure_rate_ranges() {
    assert_one_error(
        ConfigLoader::new().set("supervisor.backoff_jitter", "1.5").load(),
        "supervisor.backoff_jitter",
        "must be between 0 and 1 inclusive, got 1.5",
    );
    assert_one_error(
        ConfigLoader::new().set("supervisor.backoff_jitter", "NaN").load(),
        "supervisor.backoff_jitter",
        "must be between 0 and 1",
    );
    assert_one_error(from_toml("[breaker]\nfailure_rate = 0.0\n"), "breaker.failure_rate", "must be greater than 0");
    let config =
        ConfigLoader::new().set("supervisor.backoff_jitter", "0").set("breaker.failure_rate", "1").load().unwrap();
    assert!(config.supervisor.backoff_jitter.abs() < f64::EPSILON);
}

#[test]
fn integer_ranges() {
    assert_one_error(
        from_toml("[breaker]\nconsecutive_failures = 0\n"),
        "breaker.consecutive_failures",
        "must be an integer from 1 to 4294967295, got 0",
    );
    assert_one_error(from_toml("[supervisor]\nmax_restarts = -1\n"), "supervisor.max_restarts", "got -1");
    assert_one_error(from_toml("[calls]\nmax_in_flight = 0\n"), "calls.max_in_flight", "from 1");
    assert_one_error(from_toml("[http]\nmax_body_bytes = 0\n"), "http.max_body_bytes", "from 1");
    assert_one_error(from_toml("[http]\nlisten_backlog = 0\n"), "http.listen_backlog", "from 1 to 65535, got 0");
    assert_one_error(from_toml("[http]\nlisten_backlog = 65536\n"), "http.listen_backlog", "got 65536");
    assert_eq!(from_toml("[http]\nlisten_backlog = 128\n").unwrap().http.listen_backlog, 128);
    assert_one_error(from_toml("[cluster]\nlink_queue_messages = 0\n"), "cluster.link_queue_messages", "from 1");
    assert_one_error(from_toml("[cluster]\nlink_queue_bytes = 1000\n"), "cluster.link_queue_bytes", "from 65536");
    assert_one_error(
        from_toml("[cluster]\nlink_frames_in_flight = 65\n"),
        "cluster.link_frames_in_flight",
        "must be an integer from 1 to 64, got 65",
    );
    let c = from_toml("[cluster]\nlink_queue_messages = 10\nlink_frames_in_flight = 1\n").unwrap().cluster;
    assert_eq!((c.link_queue_messages, c.link_queue_bytes, c.link_frames_in_flight), (10, 16 << 20, 1));
    assert_eq!(from_toml("[supervisor]\nmax_restarts = 0\n").unwrap().supervisor.max_restarts, 0);
}

#[test]
fn bad_durations() {
    assert_one_error(from_toml("[calls]\ntimeout = \"5 sec\"\n"), "calls.timeout", r#"invalid duration "5 sec""#);
    assert_one_error(
        ConfigLoader::new().set("http.request_timeout", "10").load(),
        "http.request_timeout",
        "invalid duration",
    );
    assert_one_error(
        ConfigLoader::new().set("breaker.cooldown", "0s").load(),
        "breaker.cooldown",
        "must be greater than 0",
    );
    assert_one_error(
        ConfigLoader::new().set("shutdown.grace", "11m").load(),
        "shutdown.grace",
        "must be at most 10m (got 11m)",
    );
    assert_one_error(
        ConfigLoader::new().set("supervisor.backoff_initial", "2s").set("supervisor.backoff_max", "1s").load(),
        "supervisor.backoff_max",
        "must be at least supervisor.backoff_initial (1s < 2s)",
    );
    assert_eq!(
        ConfigLoader::new().set("shutdown.grace", "10m").load().unwrap().shutdown.grace,
        Duration::from_secs(600)
    );
}

#[test]
fn log_level_directives() {
    for good in ["info", "WARN", "info,troupe_actors=debug", "tower_http::trace=off, warn"] {
        ConfigLoader::new().set("log.level", good).load().unwrap();
    }
    assert_one_error(
        ConfigLoader::new().set("log.level", "info,troupe=verbose").load(),
        "log.level",
        r#"invalid directive "troupe=verbose""#,
    );
    assert_one_error(ConfigLoader::new().set("log.level", "loud").load(), "log.level", r#"invalid directive "loud""#);
    assert_one_error(ConfigLoader::new().set("log.level", "info,,debug").load(), "log.level", "empty directive");
    assert_one_error(ConfigLoader::new().set("log.format", "xml").load(), "log.format", "expected one of pretty, json");
}

#[test]
fn multiple_errors_are_collected() {
    let errors = errors_of(
        ConfigLoader::new()
            .toml_str("troupe.toml", "[http]\naddr = \"nope\"\nbogus = 1\n[supervisor]\nbackoff_jitter = 2.0\n")
            .env(vars(&[("TROUPE_CALLS_TIMEOUT", "soon"), ("TROUPE_STORE_BACKEND", "postgres"), ("TROUPE_TYPO", "1")]))
            .set("log.level", "chatty")
            .load(),
    );
    let keys: BTreeSet<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "troupe.toml",
        "http.addr",
        "supervisor.backoff_jitter",
        "calls.timeout",
        "store.url",
        "TROUPE_TYPO",
        "log.level",
    ]
    .into();
    assert_eq!(keys, expected, "{errors}");
    let display = errors.to_string();
    assert_eq!(display.lines().count(), errors.len());
    for (line, e) in display.lines().zip(errors.iter()) {
        assert_eq!(line, format!("{}: {}", e.key, e.reason));
    }
}

#[test]
fn bad_type_does_not_cascade() {
    // store.backend is malformed; no extra "store.url not used by fjall" error.
    assert_one_error(
        from_toml("[store]\nbackend = 1\nurl = \"postgres://x@y/z\"\n"),
        "store.backend",
        "expected a string",
    );
}

// ---- secrets ----

#[test]
fn secrets_are_redacted_everywhere() {
    let config = ConfigLoader::new()
        .env(vars(&[
            ("TROUPE_CLUSTER_COOKIE", "cookie-XYZZY"),
            ("TROUPE_CLUSTER_ADDR", "10.0.0.1:4000"),
            ("TROUPE_STORE_BACKEND", "postgres"),
            ("TROUPE_STORE_URL", "postgres://u:pw-XYZZY@db/troupe"),
            ("TROUPE_RABBITMQ_URL", "amqp://u:mq-XYZZY@mq"),
        ]))
        .load()
        .unwrap();
    let rendered = config.to_redacted_toml();
    let debug = format!("{config:?} {config:#?}");
    for text in [&rendered, &debug] {
        assert!(!text.contains("XYZZY"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    assert_eq!(rendered.matches("<redacted>").count(), 3, "{rendered}");
    let secret = Secret::new("XYZZY");
    assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
    assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
    assert_eq!(secret.expose(), "XYZZY");
}

#[test]
fn errors_never_echo_secret_values() {
    let errors = errors_of(
        ConfigLoader::new()
            .toml_str("t.toml", "[cluster]\ncookie = 123\n[rabbitmq]\nurl = \"x-XYZZY\"\n")
            .env(vars(&[("TROUPE_STORE_BACKEND", "scylla"), ("TROUPE_STORE_URL", "XYZZY")]))
            .load(),
    );
    assert_eq!(errors.len(), 3, "{errors}");
    assert!(!errors.to_string().contains("XYZZY"), "{errors}");
}

#[test]
fn redacted_toml_round_trips() {
    let config = ConfigLoader::new()
        .set("cluster.addr", "10.1.2.3:4000")
        .set("cluster.seeds", "a:1,[fe80::1]:2")
        .set("cluster.cookie", "XYZZY")
        .set("cluster.down_after", "4s")
        .set("store.backend", "postgres")
        .set("store.url", "postgres://db/troupe")
        .set("supervisor.within", "90s")
        .set("calls.timeout", "1500ms")
        .set("log.format", "json")
        .load()
        .unwrap();
    let rendered = config.to_redacted_toml();
    assert!(rendered.contains("within = \"1m30s\""), "{rendered}");
    assert!(rendered.contains("timeout = \"1s500ms\""), "{rendered}");
    // The placeholder is refused as a real secret value...
    assert_one_error(
        ConfigLoader::new()
            .toml_str("rendered.toml", rendered.clone())
            .env(vars(&[("TROUPE_STORE_URL", "postgres://db/troupe")]))
            .load(),
        "cluster.cookie",
        "placeholder",
    );
    // ... and with the secret supplied again everything else survives.
    let reloaded = ConfigLoader::new()
        .toml_str("rendered.toml", rendered.clone())
        .env(vars(&[("TROUPE_CLUSTER_COOKIE", "XYZZY"), ("TROUPE_STORE_URL", "postgres://db/troupe")]))
        .load()
        .unwrap();
    assert_eq!(reloaded.cluster.cookie.as_ref().unwrap().expose(), "XYZZY");
    assert_eq!(reloaded.cluster.addr, config.cluster.addr);
    let defaults = NodeConfig::default().to_redacted_toml();
    assert_eq!(ConfigLoader::new().toml_str("defaults.toml", defaults).load().unwrap(), NodeConfig::default());
    assert_eq!(reloaded.cluster, config.cluster);
    assert_eq!(reloaded.supervisor, config.supervisor);
    assert_eq!(reloaded.calls, config.calls);
    assert_eq!(reloaded.log, config.log);
}

// ---- example file, schema, env table, README ----

#[test]
fn example_file_loads_and_matches_defaults() {
    let path = manifest_dir().join("troupe.example.toml");
    let config = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(config, NodeConfig::default());
}

#[test]
fn example_file_documents_every_key() {
    let text = std::fs::read_to_string(manifest_dir().join("troupe.example.toml")).unwrap();
    let mut section = String::new();
    let mut documented = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((leaf, _)) = line.trim_start_matches(['#', ' ']).split_once(" = ") {
            documented.insert(format!("{section}.{leaf}"));
        }
    }
    for key in KEYS {
        assert!(documented.contains(key.name), "{} missing from example", key.name);
    }
}

#[test]
fn every_schema_key_is_a_raw_field_and_has_one_env_var() {
    let mut loader = ConfigLoader::new();
    for key in KEYS {
        let value = match key.kind {
            Kind::Str | Kind::Duration => "x",
            Kind::Int => "1",
            Kind::Float => "0.5",
            Kind::Bool => "true",
            Kind::List => "a:1",
        };
        loader = loader.set(key.name, value);
        let vars: Vec<&EnvVar> = ENV_VARS.iter().filter(|v| v.key == Some(key.name)).collect();
        assert_eq!(vars.len(), 1, "{} needs exactly one env var", key.name);
        let general = format!("TROUPE_{}", key.name.replace('.', "_").to_uppercase());
        if key.name == "node.data_dir" {
            assert_eq!(vars[0].name, "TROUPE_DATA_DIR");
        } else {
            assert_eq!(vars[0].name, general);
        }
    }
    // Every key reached serde and validation: no "unknown field" backstop error.
    let errors = errors_of(loader.load());
    for e in &errors {
        assert!(KEYS.iter().any(|k| k.name == e.key), "unexpected: {e}");
    }
    for var in ENV_VARS {
        assert!(var.name.starts_with(env::PREFIX));
        if let Some(key) = var.key {
            assert!(crate::schema::lookup(key).is_some(), "{key} not a config key");
        }
        assert!(!var.description.contains('\n'));
    }
    let names: BTreeSet<&str> = ENV_VARS.iter().map(|v| v.name).collect();
    assert_eq!(names.len(), ENV_VARS.len(), "duplicate env var");
}

#[test]
fn markdown_table_lists_every_var() {
    let table = env_markdown_table();
    assert!(table.starts_with("| Variable | Config key | Description |"));
    assert_eq!(table.lines().count(), ENV_VARS.len() + 2);
    for var in ENV_VARS {
        assert!(table.contains(&format!("`{}`", var.name)));
    }
}

#[test]
#[allow(clippy::print_stderr, reason = "explains a skipped check")]
fn readme_lists_every_env_var() {
    let readme = manifest_dir().join("../README.md");
    let Ok(text) = std::fs::read_to_string(&readme) else {
        eprintln!("note: {} not found; skipping the env var listing check", readme.display());
        return;
    };
    let missing: Vec<&str> = ENV_VARS.iter().map(|v| v.name).filter(|name| !text.contains(name)).collect();
    assert!(
        missing.is_empty(),
        "README.md does not mention {missing:?}; paste troupe_config::env_markdown_table() into it"
    );
}

#[test]
fn require_services_values() {
    assert!(env::require_services_value(Some("1")));
    assert!(env::require_services_value(Some("true")));
    assert!(!env::require_services_value(Some("0")));
    assert!(!env::require_services_value(Some("")));
    assert!(!env::require_services_value(None));
}

// ---- durations and host:port ----

#[test]
fn duration_syntax() {
    use crate::duration::{format, parse};
    assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse("1us5ns"), Ok(Duration::from_nanos(1005)));
    assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(format(Duration::from_secs(30 * 86_400 + 3600)), "30d1h");
    for bad in ["", "s", "5", "5x", "1.5s", "-1s", "99999999999999999999h", "999999999999999999d"] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(format(Duration::ZERO), "0s");
    assert_eq!(format(Duration::from_millis(100)), "100ms");
    assert_eq!(format(Duration::from_secs(3661)), "1h1m1s");
}

#[test]
fn host_port_syntax() {
    for good in ["a:1", "node-2.example.com:4000", "10.0.0.1:9042", "[::1]:80"] {
        let hp: HostPort = good.parse().unwrap();
        assert_eq!(hp.to_string(), good);
    }
    for bad in ["a", "a:0", "a:70000", ":80", "a b:1", "::1:80", "[::1]80", "-a:1"] {
        assert!(bad.parse::<HostPort>().is_err(), "{bad:?} accepted");
    }
}

// ---- robustness ----

proptest! {
    #[test]
    fn arbitrary_env_values_never_panic(
        picks in proptest::collection::vec((0..ENV_VARS.len(), ".*"), 0..8),
        stray in "TROUPE_[A-Z_]{0,20}",
        stray_value in ".*",
    ) {
        let mut env: Vec<(String, String)> = picks
            .into_iter()
            .map(|(i, value)| (ENV_VARS[i].name.to_owned(), value))
            .collect();
        env.push((stray, stray_value));
        let result = ConfigLoader::new().env(env).load();
        if let Err(errors) = result {
            prop_assert!(!errors.is_empty());
            prop_assert_eq!(errors.to_string().lines().count(), errors.len());
        }
    }

    #[test]
    fn arbitrary_overrides_never_panic(key in "[a-z_.]{0,30}", value in ".*") {
        let _ = ConfigLoader::new().set(&key, value).load();
    }

    #[test]
    fn arbitrary_toml_never_panics(text in ".*(\n.*){0,5}") {
        let _ = ConfigLoader::new().toml_str("fuzz.toml", text).load();
    }

    #[test]
    fn duration_format_round_trips(nanos in any::<u64>()) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(crate::duration::parse(&crate::duration::format(d)), Ok(d));
    }
}
