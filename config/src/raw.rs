//! The configuration as written (TOML types), before validation.
//!
//! Every field is optional: `None` means "not set by any layer, use the
//! default". Field names must match [`crate::schema::KEYS`] (tested).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub(crate) node: RawNode,
    pub(crate) http: RawHttp,
    pub(crate) cluster: RawCluster,
    pub(crate) store: RawStore,
    pub(crate) rabbitmq: RawRabbitMq,
    pub(crate) log: RawLog,
    pub(crate) shutdown: RawShutdown,
    pub(crate) supervisor: RawSupervisor,
    pub(crate) breaker: RawBreaker,
    pub(crate) calls: RawCalls,
    pub(crate) admin: RawAdmin,
    pub(crate) auth: RawAuth,
    pub(crate) gateway: RawGateway,
    pub(crate) ws: RawWs,
    pub(crate) bus: RawBus,
    pub(crate) notifications: RawNotifications,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) name: Option<String>,
    pub(crate) data_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) addr: Option<String>,
    pub(crate) request_timeout: Option<String>,
    pub(crate) max_body_bytes: Option<i64>,
    pub(crate) listen_backlog: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub(crate) addr: Option<String>,
    pub(crate) seeds: Option<Vec<String>>,
    pub(crate) cookie: Option<String>,
    pub(crate) advertise_addr: Option<String>,
    pub(crate) heartbeat_interval: Option<String>,
    pub(crate) suspect_after: Option<String>,
    pub(crate) down_after: Option<String>,
    pub(crate) shards: Option<i64>,
    pub(crate) shard_lease_ttl: Option<String>,
    pub(crate) link_queue_messages: Option<i64>,
    pub(crate) link_queue_bytes: Option<i64>,
    pub(crate) link_frames_in_flight: Option<i64>,
    pub(crate) tls_cert: Option<String>,
    pub(crate) tls_key: Option<String>,
    pub(crate) tls_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) backend: Option<String>,
    pub(crate) url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRabbitMq {
    pub(crate) url: Option<String>,
    pub(crate) exchange: Option<String>,
    pub(crate) topics: Option<Vec<String>>,
    pub(crate) confirm_window: Option<i64>,
    pub(crate) packed: Option<bool>,
    pub(crate) packed_max_events: Option<i64>,
    pub(crate) returned: Option<String>,
    pub(crate) reconnect_initial: Option<String>,
    pub(crate) reconnect_max: Option<String>,
    pub(crate) prefetch: Option<i64>,
    pub(crate) delivery_limit: Option<i64>,
    pub(crate) max_attempts: Option<i64>,
    pub(crate) bindings: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) format: Option<String>,
    pub(crate) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub(crate) grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSupervisor {
    pub(crate) max_restarts: Option<i64>,
    pub(crate) within: Option<String>,
    pub(crate) backoff_initial: Option<String>,
    pub(crate) backoff_max: Option<String>,
    pub(crate) backoff_jitter: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) consecutive_failures: Option<i64>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) window: Option<String>,
    pub(crate) min_calls: Option<i64>,
    pub(crate) cooldown: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCalls {
    pub(crate) timeout: Option<String>,
    pub(crate) max_in_flight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) allow_kill: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) jwt_algorithm: Option<String>,
    pub(crate) jwt_secret: Option<String>,
    pub(crate) jwt_private_key_file: Option<String>,
    pub(crate) jwt_public_key_file: Option<String>,
    pub(crate) access_token_ttl: Option<String>,
    pub(crate) refresh_token_ttl: Option<String>,
    pub(crate) admin_emails: Option<Vec<String>>,
    pub(crate) password_hash_concurrency: Option<i64>,
    pub(crate) password_hash_memory_kib: Option<i64>,
    pub(crate) password_hash_iterations: Option<i64>,
    pub(crate) password_hash_parallelism: Option<i64>,
    pub(crate) allow_insecure_password_hashing: Option<bool>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) jwks_issuer: Option<String>,
    pub(crate) jwks_audience: Option<String>,
    pub(crate) jwks_roles_claim: Option<String>,
    pub(crate) jwks_refresh_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) cors_allowed_origins: Option<Vec<String>>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) rate_limit: RawRateLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimits {
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) auth: RawRate,
    #[serde(default)]
    pub(crate) read: RawRate,
    #[serde(default)]
    pub(crate) write: RawRate,
    #[serde(default)]
    pub(crate) per_ip: RawRate,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRate {
    pub(crate) per_second: Option<i64>,
    pub(crate) burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWs {
    pub(crate) ping_interval: Option<String>,
    pub(crate) max_message_bytes: Option<i64>,
    pub(crate) read_buffer_bytes: Option<i64>,
    pub(crate) outbound_queue: Option<i64>,
    pub(crate) history_messages: Option<i64>,
    pub(crate) history_ttl: Option<String>,
    pub(crate) public_channel_prefixes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBus {
    pub(crate) poll_interval: Option<String>,
    pub(crate) page_size: Option<i64>,
    pub(crate) max_in_flight: Option<i64>,
    pub(crate) max_attempts: Option<i64>,
    pub(crate) backoff_initial: Option<String>,
    pub(crate) backoff_max: Option<String>,
    pub(crate) backoff_jitter: Option<f64>,
    pub(crate) handler_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifications {
    pub(crate) fanout_page: Option<i64>,
    pub(crate) fanout_concurrency: Option<i64>,
    pub(crate) deliver_timeout: Option<String>,
}
