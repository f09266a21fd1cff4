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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub(crate) addr: Option<String>,
    pub(crate) seeds: Option<Vec<String>>,
    pub(crate) cookie: Option<String>,
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
