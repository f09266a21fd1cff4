//! Every environment variable Troupe reads, in one table.
//!
//! Config overrides follow `TROUPE_<SECTION>_<KEY>` (upper-cased dotted key),
//! except `TROUPE_DATA_DIR` for `node.data_dir`. Any other `TROUPE_*`
//! variable is rejected by the loader so typos do not go unnoticed: a crate
//! that wants a new variable adds it here.

/// One environment variable Troupe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// Variable name, e.g. `TROUPE_HTTP_ADDR`.
    pub name: &'static str,
    /// Dotted config key it overrides, or `None` for non-config variables.
    pub key: Option<&'static str>,
    /// One-line description (used for the README table).
    pub description: &'static str,
}

/// Prefix of every Troupe variable; the loader only looks at these.
pub const PREFIX: &str = "TROUPE_";

/// Path of the config file, used by the binary when `--config` is absent.
pub const CONFIG_FILE_VAR: &str = "TROUPE_CONFIG";

/// ScyllaDB cluster for the storage tests (`host:port[,host:port…][/keyspace]`); unset = those tests skip.
/// The storage tests also accept [`SCYLLA_URI_ALIAS`] (the ScyllaDB driver examples' name).
pub const SCYLLA_URI_VAR: &str = "TROUPE_TEST_SCYLLA_URI";

/// Alias of [`SCYLLA_URI_VAR`] read by the storage tests when that is unset (not a `TROUPE_*` variable).
pub const SCYLLA_URI_ALIAS: &str = "SCYLLA_URI";

/// When `1`, tests that need PostgreSQL/RabbitMQ fail instead of skipping.
pub const REQUIRE_SERVICES_VAR: &str = "TROUPE_REQUIRE_SERVICES";

const fn config(name: &'static str, key: &'static str, description: &'static str) -> EnvVar {
    EnvVar { name, key: Some(key), description }
}

/// Every environment variable Troupe reads.
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: CONFIG_FILE_VAR,
        key: None,
        description: "Path of the TOML config file (used when --config is not given).",
    },
    EnvVar {
        name: REQUIRE_SERVICES_VAR,
        key: None,
        description: "Test harness: when 1, tests needing PostgreSQL/RabbitMQ fail instead of being skipped.",
    },
    EnvVar {
        name: "TROUPE_TEST_POSTGRES_URL",
        key: None,
        description: "Test harness: PostgreSQL URL for storage tests (default postgres://root@127.0.0.1:5432/test).",
    },
    EnvVar {
        name: SCYLLA_URI_VAR,
        key: None,
        description: "Test harness: ScyllaDB host:port[,host:port…][/keyspace] for the storage tests with the \
                      scylla feature (or SCYLLA_URI); unset = skipped.",
    },
    config("TROUPE_NODE_NAME", "node.name", "Node name ([a-z0-9][a-z0-9._-]{0,62})."),
    config("TROUPE_DATA_DIR", "node.data_dir", "Directory for the embedded store and other node state."),
    config("TROUPE_HTTP_ADDR", "http.addr", "HTTP listen address (ip:port)."),
    config("TROUPE_HTTP_REQUEST_TIMEOUT", "http.request_timeout", "Per-request HTTP timeout (duration, e.g. 30s)."),
    config("TROUPE_HTTP_MAX_BODY_BYTES", "http.max_body_bytes", "Largest accepted HTTP request body, in bytes."),
    config("TROUPE_CLUSTER_ADDR", "cluster.addr", "Cluster listen address (ip:port); unset = single node."),
    config("TROUPE_CLUSTER_SEEDS", "cluster.seeds", "Comma-separated host:port list of nodes to join."),
    config("TROUPE_CLUSTER_COOKIE", "cluster.cookie", "Shared cluster secret (required when clustering)."),
    config("TROUPE_STORE_BACKEND", "store.backend", "Storage backend: fjall, postgres or scylla."),
    config(
        "TROUPE_STORE_URL",
        "store.url",
        "Store connection URL (postgres://… or host:port list for scylla; secret).",
    ),
    config("TROUPE_RABBITMQ_URL", "rabbitmq.url", "RabbitMQ URL (amqp:// or amqps://; secret); unset = no RabbitMQ."),
    config("TROUPE_LOG_FORMAT", "log.format", "Log output format: pretty or json."),
    config("TROUPE_LOG_LEVEL", "log.level", "Log filter, e.g. info or info,troupe_actors=debug."),
    config("TROUPE_SHUTDOWN_GRACE", "shutdown.grace", "Graceful shutdown budget (duration, max 10m)."),
    config(
        "TROUPE_SUPERVISOR_MAX_RESTARTS",
        "supervisor.max_restarts",
        "Restarts allowed within supervisor.within before escalating.",
    ),
    config("TROUPE_SUPERVISOR_WITHIN", "supervisor.within", "Window for counting restarts (duration)."),
    config("TROUPE_SUPERVISOR_BACKOFF_INITIAL", "supervisor.backoff_initial", "First restart delay (duration)."),
    config("TROUPE_SUPERVISOR_BACKOFF_MAX", "supervisor.backoff_max", "Largest restart delay (duration)."),
    config(
        "TROUPE_SUPERVISOR_BACKOFF_JITTER",
        "supervisor.backoff_jitter",
        "Random jitter fraction applied to restart delays, 0 to 1.",
    ),
    config(
        "TROUPE_BREAKER_CONSECUTIVE_FAILURES",
        "breaker.consecutive_failures",
        "Consecutive failures that open the circuit breaker.",
    ),
    config(
        "TROUPE_BREAKER_FAILURE_RATE",
        "breaker.failure_rate",
        "Failure rate within the window that opens the breaker, (0, 1].",
    ),
    config("TROUPE_BREAKER_WINDOW", "breaker.window", "Window for the failure rate (duration)."),
    config(
        "TROUPE_BREAKER_MIN_CALLS",
        "breaker.min_calls",
        "Calls needed in the window before the failure rate applies.",
    ),
    config(
        "TROUPE_BREAKER_COOLDOWN",
        "breaker.cooldown",
        "Time the breaker stays open before a trial call (duration).",
    ),
    config("TROUPE_CALLS_TIMEOUT", "calls.timeout", "Default actor call timeout (duration)."),
    config(
        "TROUPE_CALLS_MAX_IN_FLIGHT",
        "calls.max_in_flight",
        "Most concurrent in-flight calls per supervised actor (more get Overloaded).",
    ),
    config("TROUPE_ADMIN_ALLOW_KILL", "admin.allow_kill", "Allow operators to kill an actor over HTTP (true/false)."),
];

/// The entry for a variable name, if Troupe knows it.
pub fn lookup(name: &str) -> Option<&'static EnvVar> {
    ENV_VARS.iter().find(|v| v.name == name)
}

/// The variable overriding a dotted config key.
pub fn for_key(key: &str) -> Option<&'static EnvVar> {
    ENV_VARS.iter().find(|v| v.key == Some(key))
}

/// A markdown table (`| Variable | Config key | Description |`) of [`ENV_VARS`].
pub fn env_markdown_table() -> String {
    let mut out = String::from("| Variable | Config key | Description |\n|---|---|---|\n");
    for var in ENV_VARS {
        let key = var.key.map_or_else(|| "—".to_owned(), |k| format!("`{k}`"));
        out.push_str(&format!("| `{}` | {} | {} |\n", var.name, key, var.description.replace('|', "\\|")));
    }
    out
}

/// Whether `TROUPE_REQUIRE_SERVICES=1` is set: tests needing external
/// services (PostgreSQL, RabbitMQ) should then fail instead of skipping.
pub fn require_services() -> bool {
    require_services_value(std::env::var(REQUIRE_SERVICES_VAR).ok().as_deref())
}

pub(crate) fn require_services_value(value: Option<&str>) -> bool {
    matches!(value.map(str::trim), Some("1" | "true"))
}

/// The config file named by `TROUPE_CONFIG` in `vars`, if set and non-empty.
pub fn config_file<I: IntoIterator<Item = (String, String)>>(vars: I) -> Option<std::path::PathBuf> {
    vars.into_iter()
        .find(|(name, value)| name == CONFIG_FILE_VAR && !value.trim().is_empty())
        .map(|(_, value)| value.into())
}
