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
    config(
        "TROUPE_HTTP_LISTEN_BACKLOG",
        "http.listen_backlog",
        "Pending connections queued for accept (1-65535, capped by net.core.somaxconn).",
    ),
    config("TROUPE_CLUSTER_ADDR", "cluster.addr", "Cluster listen address (ip:port); unset = single node."),
    config("TROUPE_CLUSTER_SEEDS", "cluster.seeds", "Comma-separated host:port list of nodes to join."),
    config("TROUPE_CLUSTER_COOKIE", "cluster.cookie", "Shared cluster secret (required when clustering)."),
    config(
        "TROUPE_CLUSTER_ADVERTISE_ADDR",
        "cluster.advertise_addr",
        "host:port peers dial to reach this node (default: cluster.addr).",
    ),
    config(
        "TROUPE_CLUSTER_HEARTBEAT_INTERVAL",
        "cluster.heartbeat_interval",
        "Membership heartbeat and ping interval (duration, default 500ms).",
    ),
    config("TROUPE_CLUSTER_SUSPECT_AFTER", "cluster.suspect_after", "Silence before a peer is suspect (default 1.5s)."),
    config("TROUPE_CLUSTER_DOWN_AFTER", "cluster.down_after", "Silence before a peer is down (default 3s)."),
    config(
        "TROUPE_CLUSTER_SHARDS",
        "cluster.shards",
        "Shards sharded entities are spread over (default 64; same on every node).",
    ),
    config(
        "TROUPE_CLUSTER_SHARD_LEASE_TTL",
        "cluster.shard_lease_ttl",
        "Shard and singleton lease time-to-live (duration, default 3s).",
    ),
    config(
        "TROUPE_CLUSTER_LINK_QUEUE_MESSAGES",
        "cluster.link_queue_messages",
        "Messages queued toward one peer before sends to it fail fast (default 100000).",
    ),
    config(
        "TROUPE_CLUSTER_LINK_QUEUE_BYTES",
        "cluster.link_queue_bytes",
        "Bytes queued toward one peer before sends to it fail fast (default 16 MiB, at least 64 KiB).",
    ),
    config(
        "TROUPE_CLUSTER_LINK_FRAMES_IN_FLIGHT",
        "cluster.link_frames_in_flight",
        "Frames sent to one peer and not yet acknowledged (1-64, default 4).",
    ),
    config("TROUPE_CLUSTER_TLS_CERT", "cluster.tls_cert", "Node certificate chain (PEM file) for mesh mutual TLS."),
    config("TROUPE_CLUSTER_TLS_KEY", "cluster.tls_key", "Node private key (PEM file) for mesh mutual TLS."),
    config("TROUPE_CLUSTER_TLS_CA", "cluster.tls_ca", "CA certificate (PEM file) every node's certificate chains to."),
    config("TROUPE_STORE_BACKEND", "store.backend", "Storage backend: fjall, postgres or scylla."),
    config(
        "TROUPE_STORE_URL",
        "store.url",
        "Store connection URL (postgres://… or host:port list for scylla; secret).",
    ),
    config("TROUPE_RABBITMQ_URL", "rabbitmq.url", "RabbitMQ URL (amqp:// or amqps://; secret); unset = no RabbitMQ."),
    config("TROUPE_RABBITMQ_EXCHANGE", "rabbitmq.exchange", "Durable topic exchange domain events are published to."),
    config(
        "TROUPE_RABBITMQ_TOPICS",
        "rabbitmq.topics",
        "Event topics published to RabbitMQ (comma-separated filters).",
    ),
    config(
        "TROUPE_RABBITMQ_CONFIRM_WINDOW",
        "rabbitmq.confirm_window",
        "Most published, unconfirmed RabbitMQ messages.",
    ),
    config("TROUPE_RABBITMQ_PACKED", "rabbitmq.packed", "Packed mode: many events per RabbitMQ message (true/false)."),
    config(
        "TROUPE_RABBITMQ_PACKED_MAX_EVENTS",
        "rabbitmq.packed_max_events",
        "Most events per packed RabbitMQ message.",
    ),
    config(
        "TROUPE_RABBITMQ_RETURNED",
        "rabbitmq.returned",
        "Returned (unroutable) messages: dead_letter, drop or retry.",
    ),
    config("TROUPE_RABBITMQ_RECONNECT_INITIAL", "rabbitmq.reconnect_initial", "First RabbitMQ retry delay (duration)."),
    config("TROUPE_RABBITMQ_RECONNECT_MAX", "rabbitmq.reconnect_max", "Largest RabbitMQ retry delay (duration)."),
    config("TROUPE_RABBITMQ_PREFETCH", "rabbitmq.prefetch", "Default prefetch of inbound bindings."),
    config("TROUPE_RABBITMQ_DELIVERY_LIMIT", "rabbitmq.delivery_limit", "Default x-delivery-limit of inbound queues."),
    config("TROUPE_RABBITMQ_MAX_ATTEMPTS", "rabbitmq.max_attempts", "Default handler attempts before dead-lettering."),
    config(
        "TROUPE_RABBITMQ_BINDINGS",
        "rabbitmq.bindings",
        "Inbound bindings: queue=handler[;option=value...], comma-separated.",
    ),
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
    config("TROUPE_AUTH_ISSUER", "auth.issuer", "JWT `iss` of issued tokens, required on verify (default troupe)."),
    config(
        "TROUPE_AUTH_AUDIENCE",
        "auth.audience",
        "JWT `aud` of issued tokens, required on verify (default troupe-api).",
    ),
    config("TROUPE_AUTH_JWT_ALGORITHM", "auth.jwt_algorithm", "JWT signing algorithm: HS256, RS256 or EdDSA."),
    config(
        "TROUPE_AUTH_JWT_SECRET",
        "auth.jwt_secret",
        "HS256 secret, at least 32 bytes (secret); unset = random per process (tokens die on restart, fail on other nodes).",
    ),
    config("TROUPE_AUTH_JWT_PRIVATE_KEY_FILE", "auth.jwt_private_key_file", "PEM private key file for RS256/EdDSA."),
    config("TROUPE_AUTH_JWT_PUBLIC_KEY_FILE", "auth.jwt_public_key_file", "PEM public key file for RS256/EdDSA."),
    config("TROUPE_AUTH_ACCESS_TOKEN_TTL", "auth.access_token_ttl", "Access token lifetime (duration, default 15m)."),
    config(
        "TROUPE_AUTH_REFRESH_TOKEN_TTL",
        "auth.refresh_token_ttl",
        "Refresh token lifetime (duration, default 30d; longer than the access token's).",
    ),
    config(
        "TROUPE_AUTH_ADMIN_EMAILS",
        "auth.admin_emails",
        "Comma-separated emails that get the admin role when they register.",
    ),
    config(
        "TROUPE_AUTH_PASSWORD_HASH_CONCURRENCY",
        "auth.password_hash_concurrency",
        "Password hashes (argon2id) computed at once, 1 to 64.",
    ),
    config(
        "TROUPE_AUTH_PASSWORD_HASH_MEMORY_KIB",
        "auth.password_hash_memory_kib",
        "argon2id memory cost in KiB (default 19456 = 19 MiB; at least 7168, and memory x iterations >= 35840).",
    ),
    config("TROUPE_AUTH_PASSWORD_HASH_ITERATIONS", "auth.password_hash_iterations", "argon2id iterations (default 2)."),
    config(
        "TROUPE_AUTH_PASSWORD_HASH_PARALLELISM",
        "auth.password_hash_parallelism",
        "argon2id lanes, 1 to 16 (default 1).",
    ),
    config(
        "TROUPE_AUTH_ALLOW_INSECURE_PASSWORD_HASHING",
        "auth.allow_insecure_password_hashing",
        "Accept argon2id costs below the OWASP minimums (tests and demos only; true/false).",
    ),
    config(
        "TROUPE_AUTH_JWKS_URL",
        "auth.jwks_url",
        "http:// URL of an external identity provider's JWK Set; its RS256/EdDSA tokens are accepted too.",
    ),
    config(
        "TROUPE_AUTH_JWKS_ISSUER",
        "auth.jwks_issuer",
        "Required `iss` of external tokens (required with auth.jwks_url).",
    ),
    config(
        "TROUPE_AUTH_JWKS_AUDIENCE",
        "auth.jwks_audience",
        "Required `aud` of external tokens (default auth.audience).",
    ),
    config(
        "TROUPE_AUTH_JWKS_ROLES_CLAIM",
        "auth.jwks_roles_claim",
        "Claim of external tokens that lists roles (default roles); admin in it grants admin.",
    ),
    config(
        "TROUPE_AUTH_JWKS_REFRESH_INTERVAL",
        "auth.jwks_refresh_interval",
        "How often the JWK Set is refetched (duration, default 5m; also refetched on an unknown kid).",
    ),
    config(
        "TROUPE_GATEWAY_CORS_ALLOWED_ORIGINS",
        "gateway.cors_allowed_origins",
        "Comma-separated CORS origins (scheme://host[:port]) or *; unset = no CORS.",
    ),
    config(
        "TROUPE_GATEWAY_TRUSTED_PROXIES",
        "gateway.trusted_proxies",
        "Comma-separated IPs/CIDRs whose X-Forwarded-For is believed for the client IP.",
    ),
    config("TROUPE_GATEWAY_RATE_LIMIT_ENABLED", "gateway.rate_limit.enabled", "Rate limiting on/off (true/false)."),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_AUTH_PER_SECOND",
        "gateway.rate_limit.auth.per_second",
        "Auth routes: requests per second per client IP.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURST",
        "gateway.rate_limit.auth.burst",
        "Auth routes: burst per client IP.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_READ_PER_SECOND",
        "gateway.rate_limit.read.per_second",
        "Authenticated reads: requests per second per user.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_READ_BURST",
        "gateway.rate_limit.read.burst",
        "Authenticated reads: burst per user.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_WRITE_PER_SECOND",
        "gateway.rate_limit.write.per_second",
        "Authenticated writes: requests per second per user.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_WRITE_BURST",
        "gateway.rate_limit.write.burst",
        "Authenticated writes: burst per user.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_PER_IP_PER_SECOND",
        "gateway.rate_limit.per_ip.per_second",
        "Anonymous traffic: requests per second per client IP.",
    ),
    config(
        "TROUPE_GATEWAY_RATE_LIMIT_PER_IP_BURST",
        "gateway.rate_limit.per_ip.burst",
        "Anonymous traffic: burst per client IP.",
    ),
    config("TROUPE_WS_PING_INTERVAL", "ws.ping_interval", "WebSocket ping interval (duration)."),
    config("TROUPE_WS_MAX_MESSAGE_BYTES", "ws.max_message_bytes", "Largest WebSocket client message, in bytes."),
    config("TROUPE_WS_READ_BUFFER_BYTES", "ws.read_buffer_bytes", "WebSocket read buffer per connection, in bytes."),
    config(
        "TROUPE_WS_OUTBOUND_QUEUE",
        "ws.outbound_queue",
        "Messages queued per connection before it is closed as a slow consumer (4008).",
    ),
    config("TROUPE_WS_HISTORY_MESSAGES", "ws.history_messages", "Messages of history kept per channel (0 = none)."),
    config("TROUPE_WS_HISTORY_TTL", "ws.history_ttl", "Age after which channel history is dropped (duration)."),
    config(
        "TROUPE_WS_PUBLIC_CHANNEL_PREFIXES",
        "ws.public_channel_prefixes",
        "Comma-separated channel prefixes any signed-in user may subscribe to.",
    ),
    config("TROUPE_BUS_POLL_INTERVAL", "bus.poll_interval", "Event bus fallback outbox poll (duration)."),
    config("TROUPE_BUS_PAGE_SIZE", "bus.page_size", "Outbox entries the event bus reads per page."),
    config(
        "TROUPE_BUS_MAX_IN_FLIGHT",
        "bus.max_in_flight",
        "Outbox entries the event bus holds at once (read, not yet acknowledged).",
    ),
    config(
        "TROUPE_BUS_MAX_ATTEMPTS",
        "bus.max_attempts",
        "Delivery attempts before an event is dead-lettered, 1 to 1000.",
    ),
    config("TROUPE_BUS_BACKOFF_INITIAL", "bus.backoff_initial", "First event redelivery delay (duration)."),
    config("TROUPE_BUS_BACKOFF_MAX", "bus.backoff_max", "Largest event redelivery delay (duration)."),
    config("TROUPE_BUS_BACKOFF_JITTER", "bus.backoff_jitter", "Random jitter fraction on redelivery delays, 0 to 1."),
    config(
        "TROUPE_BUS_HANDLER_TIMEOUT",
        "bus.handler_timeout",
        "An event handler running longer than this fails the attempt (duration).",
    ),
    config(
        "TROUPE_NOTIFICATIONS_FANOUT_PAGE",
        "notifications.fanout_page",
        "Followers read per page when fanning out a notification.",
    ),
    config(
        "TROUPE_NOTIFICATIONS_FANOUT_CONCURRENCY",
        "notifications.fanout_concurrency",
        "Notification writes in flight at once during a fan-out, 1 to 1024.",
    ),
    config(
        "TROUPE_NOTIFICATIONS_DELIVER_TIMEOUT",
        "notifications.deliver_timeout",
        "Deadline of one event delivery to the notification service (duration, < bus.handler_timeout).",
    ),
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
