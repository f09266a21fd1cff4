//! The list of config keys and the TOML type each one is written as.
//!
//! This is what the file, environment and override layers are checked
//! against before serde sees them, so every problem can be reported with
//! its dotted key (and all of them at once, not just serde's first).

use toml::Value;

/// How a key is written in TOML (and how an env/override string is converted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Duration,
    Int,
    Float,
    Bool,
    /// Array of strings in TOML; comma-separated in env vars and overrides.
    List,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Duration => "a duration string such as \"5s\"",
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::Bool => "true or false",
            Kind::List => "an array of strings",
        }
    }

    /// Checks a value from the TOML file; the error never echoes the value
    /// (it may be a secret).
    pub(crate) fn check(self, value: &Value) -> Result<(), String> {
        let ok = match (self, value) {
            (Kind::Str | Kind::Duration, Value::String(_))
            | (Kind::Int, Value::Integer(_))
            | (Kind::Float, Value::Integer(_) | Value::Float(_))
            | (Kind::Bool, Value::Boolean(_)) => true,
            (Kind::List, Value::Array(items)) => items.iter().all(Value::is_str),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let found = match value {
                Value::Array(items) if items.iter().any(|v| !v.is_str()) => "an array with non-string items",
                other => other.type_str(),
            };
            Err(format!("expected {}, found {found}", self.expected()))
        }
    }

    /// Converts an env var / override string to a TOML value of this kind.
    /// `raw` is already trimmed and non-empty.
    pub(crate) fn convert(self, raw: &str) -> Result<Value, String> {
        match self {
            Kind::Str | Kind::Duration => Ok(Value::String(raw.to_owned())),
            Kind::Int => raw.parse::<i64>().map(Value::Integer).map_err(|_| format!("invalid integer {raw:?}")),
            Kind::Float => raw.parse::<f64>().map(Value::Float).map_err(|_| format!("invalid number {raw:?}")),
            Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
                _ => Err(format!("invalid boolean {raw:?} (expected true/false, 1/0, yes/no or on/off)")),
            },
            Kind::List => Ok(Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            )),
        }
    }
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// Dotted path, e.g. `http.addr` or `gateway.rate_limit.auth.burst`.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

impl Key {
    /// The last path segment (`burst`).
    pub(crate) fn leaf(&self) -> &'static str {
        self.name.rsplit_once('.').map_or(self.name, |(_, l)| l)
    }
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

/// Every config key, in the order they appear in `troupe.example.toml`.
pub(crate) const KEYS: &[Key] = &[
    key("node.name", Kind::Str),
    key("node.data_dir", Kind::Str),
    key("http.addr", Kind::Str),
    key("http.request_timeout", Kind::Duration),
    key("http.max_body_bytes", Kind::Int),
    key("http.listen_backlog", Kind::Int),
    key("cluster.addr", Kind::Str),
    key("cluster.seeds", Kind::List),
    key("cluster.cookie", Kind::Str),
    key("cluster.advertise_addr", Kind::Str),
    key("cluster.heartbeat_interval", Kind::Duration),
    key("cluster.suspect_after", Kind::Duration),
    key("cluster.down_after", Kind::Duration),
    key("cluster.shards", Kind::Int),
    key("cluster.shard_lease_ttl", Kind::Duration),
    key("cluster.link_queue_messages", Kind::Int),
    key("cluster.link_queue_bytes", Kind::Int),
    key("cluster.link_frames_in_flight", Kind::Int),
    key("cluster.tls_cert", Kind::Str),
    key("cluster.tls_key", Kind::Str),
    key("cluster.tls_ca", Kind::Str),
    key("store.backend", Kind::Str),
    key("store.url", Kind::Str),
    key("rabbitmq.url", Kind::Str),
    key("rabbitmq.exchange", Kind::Str),
    key("rabbitmq.topics", Kind::List),
    key("rabbitmq.confirm_window", Kind::Int),
    key("rabbitmq.packed", Kind::Bool),
    key("rabbitmq.packed_max_events", Kind::Int),
    key("rabbitmq.returned", Kind::Str),
    key("rabbitmq.reconnect_initial", Kind::Duration),
    key("rabbitmq.reconnect_max", Kind::Duration),
    key("rabbitmq.prefetch", Kind::Int),
    key("rabbitmq.delivery_limit", Kind::Int),
    key("rabbitmq.max_attempts", Kind::Int),
    key("rabbitmq.bindings", Kind::List),
    key("log.format", Kind::Str),
    key("log.level", Kind::Str),
    key("shutdown.grace", Kind::Duration),
    key("supervisor.max_restarts", Kind::Int),
    key("supervisor.within", Kind::Duration),
    key("supervisor.backoff_initial", Kind::Duration),
    key("supervisor.backoff_max", Kind::Duration),
    key("supervisor.backoff_jitter", Kind::Float),
    key("breaker.consecutive_failures", Kind::Int),
    key("breaker.failure_rate", Kind::Float),
    key("breaker.window", Kind::Duration),
    key("breaker.min_calls", Kind::Int),
    key("breaker.cooldown", Kind::Duration),
    key("calls.timeout", Kind::Duration),
    key("calls.max_in_flight", Kind::Int),
    key("admin.allow_kill", Kind::Bool),
    key("auth.issuer", Kind::Str),
    key("auth.audience", Kind::Str),
    key("auth.jwt_algorithm", Kind::Str),
    key("auth.jwt_secret", Kind::Str),
    key("auth.jwt_private_key_file", Kind::Str),
    key("auth.jwt_public_key_file", Kind::Str),
    key("auth.access_token_ttl", Kind::Duration),
    key("auth.refresh_token_ttl", Kind::Duration),
    key("auth.admin_emails", Kind::List),
    key("auth.password_hash_concurrency", Kind::Int),
    key("auth.password_hash_memory_kib", Kind::Int),
    key("auth.password_hash_iterations", Kind::Int),
    key("auth.password_hash_parallelism", Kind::Int),
    key("auth.allow_insecure_password_hashing", Kind::Bool),
    key("auth.jwks_url", Kind::Str),
    key("auth.jwks_issuer", Kind::Str),
    key("auth.jwks_audience", Kind::Str),
    key("auth.jwks_roles_claim", Kind::Str),
    key("auth.jwks_refresh_interval", Kind::Duration),
    key("gateway.cors_allowed_origins", Kind::List),
    key("gateway.trusted_proxies", Kind::List),
    key("gateway.rate_limit.enabled", Kind::Bool),
    key("gateway.rate_limit.auth.per_second", Kind::Int),
    key("gateway.rate_limit.auth.burst", Kind::Int),
    key("gateway.rate_limit.read.per_second", Kind::Int),
    key("gateway.rate_limit.read.burst", Kind::Int),
    key("gateway.rate_limit.write.per_second", Kind::Int),
    key("gateway.rate_limit.write.burst", Kind::Int),
    key("gateway.rate_limit.per_ip.per_second", Kind::Int),
    key("gateway.rate_limit.per_ip.burst", Kind::Int),
    key("ws.ping_interval", Kind::Duration),
    key("ws.max_message_bytes", Kind::Int),
    key("ws.read_buffer_bytes", Kind::Int),
    key("ws.outbound_queue", Kind::Int),
    key("ws.history_messages", Kind::Int),
    key("ws.history_ttl", Kind::Duration),
    key("ws.public_channel_prefixes", Kind::List),
    key("bus.poll_interval", Kind::Duration),
    key("bus.page_size", Kind::Int),
    key("bus.max_in_flight", Kind::Int),
    key("bus.max_attempts", Kind::Int),
    key("bus.backoff_initial", Kind::Duration),
    key("bus.backoff_max", Kind::Duration),
    key("bus.backoff_jitter", Kind::Float),
    key("bus.handler_timeout", Kind::Duration),
    key("notifications.fanout_page", Kind::Int),
    key("notifications.fanout_concurrency", Kind::Int),
    key("notifications.deliver_timeout", Kind::Duration),
];

pub(crate) fn lookup(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Whether `name` is a table of the schema at any depth (`http`,
/// `gateway.rate_limit`, `gateway.rate_limit.auth`).
pub(crate) fn is_section(name: &str) -> bool {
    tables().contains(&name)
}

/// Every table path (all proper prefixes of keys), in schema order,
/// without duplicates.
pub(crate) fn tables() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        for (i, _) in k.name.match_indices('.') {
            let table = &k.name[..i];
            if !out.contains(&table) {
                out.push(table);
            }
        }
    }
    out
}

/// Best "did you mean" candidate for an unknown dotted key or table.
pub(crate) fn suggest_key(unknown: &str) -> Option<&'static str> {
    if let Some((_, leaf)) = unknown.rsplit_once('.') {
        // Right key, wrong section (e.g. `http.data_dir`).
        let mut same_leaf = KEYS.iter().filter(|k| k.leaf() == leaf);
        if let (Some(only), None) = (same_leaf.next(), same_leaf.next()) {
            return Some(only.name);
        }
        suggest(unknown, KEYS.iter().map(|k| k.name).chain(tables()))
    } else {
        suggest(unknown, tables().into_iter().filter(|t| !t.contains('.')))
    }
}

/// The closest candidate by edit distance (case-insensitive), if close enough.
pub(crate) fn suggest<'a>(unknown: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let unknown = unknown.to_lowercase();
    let len = unknown.chars().count();
    if len > 128 {
        return None;
    }
    let limit = (len / 4).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&unknown, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
