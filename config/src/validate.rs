//! Raw (as written) → validated [`NodeConfig`], collecting every error.

mod app;
mod rabbitmq;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::duration;
use crate::error::ConfigError;
use crate::layers::Layers;
use crate::model::{
    AdminConfig, BreakerConfig, CallsConfig, ClusterConfig, HostPort, HttpConfig, LogConfig, LogFormat, NodeConfig,
    NodeSettings, Secret, ShutdownConfig, StoreBackend, StoreConfig, SupervisorConfig,
};
use crate::raw::RawConfig;

/// Longest accepted `shutdown.grace`.
const MAX_GRACE: Duration = Duration::from_secs(600);

/// Levels accepted in `log.level` directives.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

struct Checker<'a> {
    layers: &'a Layers,
    errors: Vec<ConfigError>,
    /// Keys that failed (here or in the layers): cross-key checks skip them.
    bad: BTreeSet<&'static str>,
}

impl Checker<'_> {
    /// Parses one key: `default` when unset, or when invalid (after recording
    /// the error, so the config is never returned).
    fn field<R, T>(
        &mut self,
        key: &'static str,
        raw: Option<R>,
        default: T,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) -> T {
        if self.layers.is_poisoned(key) {
            self.bad.insert(key);
            return default;
        }
        match raw.map(parse) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(reason)) => {
                self.fail(key, reason);
                default
            }
        }
    }

    fn fail(&mut self, key: &'static str, reason: impl Display) {
        self.bad.insert(key);
        let reason = match self.layers.origin(key) {
            Some(origin) => format!("{reason} ({origin})"),
            None => reason.to_string(),
        };
        self.errors.push(ConfigError::new(key, reason));
    }

    /// Like [`Self::fail`], but the value at fault was set through `cause`.
    fn fail_because(&mut self, key: &'static str, reason: impl Display, cause: &'static str) {
        self.bad.insert(key);
        let reason = match self.layers.origin(cause) {
            Some(origin) => format!("{reason} ({cause} {origin})"),
            None => reason.to_string(),
        };
        self.errors.push(ConfigError::new(key, reason));
    }

    fn ok(&self, keys: &[&str]) -> bool {
        keys.iter().all(|k| !self.bad.contains(k))
    }
}

pub(crate) fn validate(raw: RawConfig, layers: &Layers) -> Result<NodeConfig, Vec<ConfigError>> {
    let d = NodeConfig::default();
    let mut c = Checker { layers, errors: Vec::new(), bad: BTreeSet::new() };

    let node = NodeSettings {
        name: c.field("node.name", raw.node.name, d.node.name, node_name),
        data_dir: c.field("node.data_dir", raw.node.data_dir, d.node.data_dir, |s| {
            if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { Ok(PathBuf::from(s)) }
        }),
    };

    let http = HttpConfig {
        addr: c.field("http.addr", raw.http.addr, d.http.addr, |s| socket_addr(&s)),
        request_timeout: c
            .field("http.request_timeout", raw.http.request_timeout, d.http.request_timeout, |s| positive_duration(&s)),
        max_body_bytes: c
            .field("http.max_body_bytes", raw.http.max_body_bytes, d.http.max_body_bytes, |v| int_at_least(v, 1usize)),
        listen_backlog: c.field("http.listen_backlog", raw.http.listen_backlog, d.http.listen_backlog, |v| {
            int_at_least(v, 1u32)
                .ok()
                .filter(|n| *n <= 65535)
                .ok_or_else(|| format!("must be an integer from 1 to 65535, got {v}"))
        }),
    };

    let cluster = ClusterConfig {
        addr: c.field("cluster.addr", raw.cluster.addr, None, |s| socket_addr(&s).map(Some)),
        seeds: c.field("cluster.seeds", raw.cluster.seeds, Vec::new(), |seeds| {
            host_port_list(seeds.iter().map(String::as_str), true)
        }),
        cookie: c.field("cluster.cookie", raw.cluster.cookie, None, |s| non_empty_secret(s).map(Some)),
        advertise_addr: c.field("cluster.advertise_addr", raw.cluster.advertise_addr, None, |s| {
            s.trim().parse::<HostPort>().map(Some)
        }),
        heartbeat_interval: c.field(
            "cluster.heartbeat_interval",
            raw.cluster.heartbeat_interval,
            d.cluster.heartbeat_interval,
            |s| positive_duration(&s),
        ),
        suspect_after: c.field("cluster.suspect_after", raw.cluster.suspect_after, d.cluster.suspect_after, |s| {
            positive_duration(&s)
        }),
        down_after: c
            .field("cluster.down_after", raw.cluster.down_after, d.cluster.down_after, |s| positive_duration(&s)),
        shards: c.field("cluster.shards", raw.cluster.shards, d.cluster.shards, |v| {
            int_at_least(v, 1u32).and_then(|n| if n <= 65_536 { Ok(n) } else { Err("at most 65536".to_owned()) })
        }),
        shard_lease_ttl: c.field(
            "cluster.shard_lease_ttl",
            raw.cluster.shard_lease_ttl,
            d.cluster.shard_lease_ttl,
            |s| {
                positive_duration(&s).and_then(|d| {
                    if d >= Duration::from_millis(300) { Ok(d) } else { Err("at least 300ms".to_owned()) }
                })
            },
        ),
        link_queue_messages: c.field(
            "cluster.link_queue_messages",
            raw.cluster.link_queue_messages,
            d.cluster.link_queue_messages,
            |v| int_at_least(v, 1usize),
        ),
        link_queue_bytes: c.field(
            "cluster.link_queue_bytes",
            raw.cluster.link_queue_bytes,
            d.cluster.link_queue_bytes,
            |v| int_at_least(v, 64usize << 10),
        ),
        link_frames_in_flight: c.field(
            "cluster.link_frames_in_flight",
            raw.cluster.link_frames_in_flight,
            d.cluster.link_frames_in_flight,
            |v| {
                int_at_least(v, 1u32)
                    .ok()
                    .filter(|n| *n <= 64)
                    .ok_or_else(|| format!("must be an integer from 1 to 64, got {v}"))
            },
        ),
        tls_cert: c.field("cluster.tls_cert", raw.cluster.tls_cert, None, |s| non_empty_path(&s).map(Some)),
        tls_key: c.field("cluster.tls_key", raw.cluster.tls_key, None, |s| non_empty_path(&s).map(Some)),
        tls_ca: c.field("cluster.tls_ca", raw.cluster.tls_ca, None, |s| non_empty_path(&s).map(Some)),
    };
    let tls_keys = ["cluster.tls_cert", "cluster.tls_key", "cluster.tls_ca"];
    let tls_set = [cluster.tls_cert.is_some(), cluster.tls_key.is_some(), cluster.tls_ca.is_some()];
    if c.ok(&tls_keys) && tls_set.contains(&true) && tls_set.contains(&false) {
        let set = tls_keys.iter().zip(tls_set).find(|(_, s)| *s).map_or("cluster.tls_cert", |(k, _)| *k);
        for (key, _) in tls_keys.iter().zip(tls_set).filter(|(_, s)| !*s) {
            c.fail_because(key, "required with the other cluster.tls_* keys (mutual TLS needs all three)", set);
        }
    }
    check_cluster_timing(&mut c, &cluster);
    if c.ok(&["cluster.seeds", "cluster.cookie"]) && cluster.cookie.is_none() && !cluster.seeds.is_empty() {
        c.fail_because("cluster.cookie", "required when cluster.seeds is set", "cluster.seeds");
    } else if c.ok(&["cluster.addr", "cluster.cookie"]) && cluster.cookie.is_none() && cluster.addr.is_some() {
        c.fail_because("cluster.cookie", "required when cluster.addr is set", "cluster.addr");
    }
    if c.ok(&["cluster.addr", "cluster.seeds"]) && !cluster.seeds.is_empty() && cluster.addr.is_none() {
        c.fail_because(
            "cluster.addr",
            "required when cluster.seeds is set (the address this node listens on for the cluster)",
            "cluster.seeds",
        );
    }

    let store = StoreConfig {
        backend: c.field("store.backend", raw.store.backend, d.store.backend, |s| StoreBackend::from_str(&s)),
        url: c.field("store.url", raw.store.url, None, |s| non_empty_secret(s).map(Some)),
    };
    if c.ok(&["store.backend", "store.url"]) {
        check_store_url(&mut c, &store);
    }
    if c.ok(&["cluster.addr", "store.backend"]) && cluster.addr.is_some() && store.backend == StoreBackend::Fjall {
        c.fail_because(
            "cluster.addr",
            "needs a shared store for the membership table: set store.backend to postgres or scylla \
             (the embedded fjall store is one node's)",
            "store.backend",
        );
    }
    if c.ok(&["cluster.addr", "cluster.advertise_addr"])
        && cluster.advertise_addr.is_none()
        && cluster.addr.is_some_and(|a| a.ip().is_unspecified())
    {
        c.fail_because(
            "cluster.advertise_addr",
            "required when cluster.addr is a wildcard address (peers need an address they can dial)",
            "cluster.addr",
        );
    }

    let rabbitmq = rabbitmq::rabbitmq(&mut c, raw.rabbitmq);

    let log = LogConfig {
        format: c.field("log.format", raw.log.format, d.log.format, |s| LogFormat::from_str(&s)),
        level: c.field("log.level", raw.log.level, d.log.level, |s| log_directives(&s)),
    };

    let shutdown = ShutdownConfig {
        grace: c.field("shutdown.grace", raw.shutdown.grace, d.shutdown.grace, |s| {
            let grace = positive_duration(&s)?;
            if grace > MAX_GRACE {
                Err(format!("must be at most {} (got {})", duration::format(MAX_GRACE), duration::format(grace)))
            } else {
                Ok(grace)
            }
        }),
    };

    let s = raw.supervisor;
    let supervisor = SupervisorConfig {
        max_restarts: c
            .field("supervisor.max_restarts", s.max_restarts, d.supervisor.max_restarts, |v| int_at_least(v, 0u32)),
        within: c.field("supervisor.within", s.within, d.supervisor.within, |s| positive_duration(&s)),
        backoff_initial: c.field("supervisor.backoff_initial", s.backoff_initial, d.supervisor.backoff_initial, |s| {
            positive_duration(&s)
        }),
        backoff_max: c
            .field("supervisor.backoff_max", s.backoff_max, d.supervisor.backoff_max, |s| positive_duration(&s)),
        backoff_jitter: c.field("supervisor.backoff_jitter", s.backoff_jitter, d.supervisor.backoff_jitter, |v| {
            if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("must be between 0 and 1 inclusive, got {v}")) }
        }),
    };
    if c.ok(&["supervisor.backoff_initial", "supervisor.backoff_max"])
        && supervisor.backoff_max < supervisor.backoff_initial
    {
        c.fail(
            "supervisor.backoff_max",
            format!(
                "must be at least supervisor.backoff_initial ({} < {})",
                duration::format(supervisor.backoff_max),
                duration::format(supervisor.backoff_initial)
            ),
        );
    }

    let b = raw.breaker;
    let breaker = BreakerConfig {
        consecutive_failures: c.field(
            "breaker.consecutive_failures",
            b.consecutive_failures,
            d.breaker.consecutive_failures,
            |v| int_at_least(v, 1u32),
        ),
        failure_rate: c.field("breaker.failure_rate", b.failure_rate, d.breaker.failure_rate, |v| {
            if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(format!("must be greater than 0 and at most 1, got {v}")) }
        }),
        window: c.field("breaker.window", b.window, d.breaker.window, |s| positive_duration(&s)),
        min_calls: c.field("breaker.min_calls", b.min_calls, d.breaker.min_calls, |v| int_at_least(v, 0u32)),
        cooldown: c.field("breaker.cooldown", b.cooldown, d.breaker.cooldown, |s| positive_duration(&s)),
    };

    let calls = CallsConfig {
        timeout: c.field("calls.timeout", raw.calls.timeout, d.calls.timeout, |s| positive_duration(&s)),
        max_in_flight: c
            .field("calls.max_in_flight", raw.calls.max_in_flight, d.calls.max_in_flight, |v| int_at_least(v, 1usize)),
    };

    let admin = AdminConfig { allow_kill: c.field("admin.allow_kill", raw.admin.allow_kill, false, Ok) };

    let auth = app::auth(&mut c, raw.auth);
    let gateway = app::gateway(&mut c, raw.gateway);
    let ws = app::ws(&mut c, raw.ws);
    let bus = app::bus(&mut c, raw.bus);
    let notifications = app::notifications(&mut c, raw.notifications, &bus);

    if c.errors.is_empty() {
        Ok(NodeConfig {
            node,
            http,
            cluster,
            store,
            rabbitmq,
            log,
            shutdown,
            supervisor,
            breaker,
            calls,
            admin,
            auth,
            gateway,
            ws,
            bus,
            notifications,
        })
    } else {
        Err(c.errors)
    }
}

/// Backend-dependent `store.url` rules. Never echoes the URL (a secret).
/// `heartbeat_interval` < `suspect_after` < `down_after`.
fn check_cluster_timing(c: &mut Checker<'_>, cluster: &ClusterConfig) {
    let keys = ["cluster.heartbeat_interval", "cluster.suspect_after", "cluster.down_after"];
    if !c.ok(&keys) {
        return;
    }
    if cluster.suspect_after <= cluster.heartbeat_interval {
        c.fail_because(
            "cluster.suspect_after",
            "must be longer than cluster.heartbeat_interval (a peer gets several heartbeats before suspicion)",
            "cluster.heartbeat_interval",
        );
    } else if cluster.down_after <= cluster.suspect_after {
        c.fail_because("cluster.down_after", "must be longer than cluster.suspect_after", "cluster.suspect_after");
    }
}

fn check_store_url(c: &mut Checker<'_>, store: &StoreConfig) {
    match (store.backend, &store.url) {
        (StoreBackend::Fjall, None) => {}
        (StoreBackend::Fjall, Some(_)) => {
            c.fail("store.url", "not used by the fjall backend (remove it, or set store.backend to postgres or scylla)")
        }
        (StoreBackend::Postgres, None) => c.fail_because(
            "store.url",
            "required by the postgres backend (e.g. postgres://user:password@localhost:5432/troupe)",
            "store.backend",
        ),
        (StoreBackend::Postgres, Some(url)) => {
            let lower = url.expose().to_ascii_lowercase();
            let rest = lower.strip_prefix("postgres://").or_else(|| lower.strip_prefix("postgresql://"));
            if rest.is_none_or(str::is_empty) {
                c.fail("store.url", "must start with postgres:// or postgresql:// for the postgres backend");
            }
        }
        (StoreBackend::Scylla, None) => c.fail_because(
            "store.url",
            "required by the scylla backend (comma-separated host:port list, e.g. db-1:9042,db-2:9042)",
            "store.backend",
        ),
        (StoreBackend::Scylla, Some(url)) => {
            if let Err(which) = host_port_list(url.expose().split(','), false) {
                c.fail(
                    "store.url",
                    format!(
                        "must be a comma-separated host:port list for the scylla backend, e.g. db-1:9042,db-2:9042 ({which})"
                    ),
                );
            }
        }
    }
}

fn node_name(s: String) -> Result<String, String> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if first_ok && rest_ok && s.len() <= 63 {
        Ok(s)
    } else {
        Err(format!(
            "invalid node name {s:?} (1-63 characters: lowercase letters, digits, '.', '_', '-'; starting with a letter or digit)"
        ))
    }
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { Ok(PathBuf::from(s.trim())) }
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| format!("invalid socket address {s:?} (expected ip:port such as 127.0.0.1:8080)"))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    if d.is_zero() { Err("must be greater than 0".to_owned()) } else { Ok(d) }
}

fn int_at_least<T>(v: i64, min: T) -> Result<T, String>
where
    T: TryFrom<i64> + PartialOrd + Display + Copy + MaxValue,
{
    T::try_from(v)
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| format!("must be an integer from {min} to {}, got {v}", T::MAX_VALUE))
}

/// Upper bound used in range error messages.
trait MaxValue {
    const MAX_VALUE: Self;
}

impl MaxValue for u32 {
    const MAX_VALUE: Self = u32::MAX;
}

impl MaxValue for usize {
    const MAX_VALUE: Self = usize::MAX;
}

/// Parses every item; the error names the bad items unless `echo` is false
/// (secret-bearing values).
fn host_port_list<'a>(items: impl Iterator<Item = &'a str>, echo: bool) -> Result<Vec<HostPort>, String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, item) in items.enumerate() {
        match item.trim().parse::<HostPort>() {
            Ok(hp) => good.push(hp),
            Err(reason) if echo => bad.push(reason),
            Err(_) => bad.push(format!("item {} is not host:port", i + 1)),
        }
    }
    if bad.is_empty() { Ok(good) } else { Err(bad.join("; ")) }
}

fn non_empty_secret(s: String) -> Result<Secret, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if s.trim() == Secret::REDACTED {
        Err(format!("is the {:?} placeholder printed by to_redacted_toml, not a real value", Secret::REDACTED))
    } else {
        Ok(Secret::new(s))
    }
}

/// A plausible `tracing_subscriber::EnvFilter` directive list:
/// comma-separated `level` or `target=level` items.
fn log_directives(s: &str) -> Result<String, String> {
    let expected = "expected LEVEL or target=LEVEL, LEVEL one of trace, debug, info, warn, error, off";
    if s.trim().is_empty() {
        return Err(format!("must not be empty ({expected})"));
    }
    let mut items = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("empty directive in {s:?} (stray comma?)"));
        }
        let (target, level) = match item.split_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, item),
        };
        let target_ok =
            target.is_none_or(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "_:-.".contains(c)));
        let level_ok = LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level));
        if !target_ok || !level_ok {
            return Err(format!("invalid directive {item:?} ({expected})"));
        }
        items.push(item);
    }
    Ok(items.join(","))
}
