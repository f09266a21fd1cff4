//! The validated, strongly typed configuration handed to the rest of Troupe.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::duration;
use crate::error::ConfigWarning;

/// A secret string (passwords, cookies, URLs with credentials).
///
/// `Debug`, `Display` and `Serialize` all print `<redacted>`; call
/// [`Secret::expose`] where the real value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// What `Debug`/`Display`/`Serialize` print instead of the value.
    pub const REDACTED: &'static str = "<redacted>";

    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::REDACTED)
    }
}

/// A `host:port` pair where the host may be a DNS name (cluster seeds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, never 0.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    /// Accepts `name:port`, `1.2.3.4:port` and `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = || format!("invalid host:port {s:?} (expected e.g. node-2.example:4000)");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest.split_once("]:").ok_or_else(invalid)?;
            host.parse::<Ipv6Addr>().map_err(|_| invalid())?;
            (host, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
            if host.parse::<Ipv4Addr>().is_err() && !is_hostname(host) {
                return Err(invalid());
            }
            (host, port)
        };
        let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(invalid)?;
        Ok(Self { host: host.to_owned(), port })
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

pub(crate) fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Generates a unit enum with a TOML name per variant and `FromStr` (case-insensitive), `Display`, `Serialize`.
macro_rules! lowercase_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in TOML (parsing ignores case).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Case-insensitive.
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| {
                        let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        format!(concat!("unknown ", $what, " {:?} (expected one of {})"), s, names.join(", "))
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

mod app;

pub use app::{
    AuthConfig, BusConfig, GatewayConfig, IpNet, JwtAlgorithm, JwtKeyMaterial, MIN_JWT_SECRET_BYTES,
    NotificationsConfig, OWASP_MIN_HASH_MEMORY_KIB, OWASP_MIN_HASH_MEMORY_X_ITERATIONS, RateLimit, RateLimitConfig,
    WsConfig,
};
pub(crate) use app::{PemKind, read_pem};

lowercase_enum!(
    /// Which storage backend holds actor state and event logs.
    StoreBackend, "store backend", {
        /// Embedded fjall store under `node.data_dir` (default; no server).
        #[default]
        Fjall = "fjall",
        /// PostgreSQL at `store.url`.
        Postgres = "postgres",
        /// ScyllaDB/Cassandra nodes listed in `store.url`.
        Scylla = "scylla",
    }
);

lowercase_enum!(
    /// Log output format.
    LogFormat, "log format", {
        /// Human-readable, multi-colour output (default).
        #[default]
        Pretty = "pretty",
        /// One JSON object per line.
        Json = "json",
    }
);

/// The fully resolved, validated configuration of one Troupe node.
///
/// Build it with [`crate::ConfigLoader`]; `NodeConfig::default()` is the
/// built-in defaults (one node, embedded store, no external servers).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct NodeConfig {
    /// `[node]`
    pub node: NodeSettings,
    /// `[http]`
    pub http: HttpConfig,
    /// `[cluster]`
    pub cluster: ClusterConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[rabbitmq]`
    pub rabbitmq: RabbitMqConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[shutdown]`
    pub shutdown: ShutdownConfig,
    /// `[supervisor]`
    pub supervisor: SupervisorConfig,
    /// `[breaker]`
    pub breaker: BreakerConfig,
    /// `[calls]`
    pub calls: CallsConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[gateway]`
    pub gateway: GatewayConfig,
    /// `[ws]`
    pub ws: WsConfig,
    /// `[bus]`
    pub bus: BusConfig,
    /// `[notifications]`
    pub notifications: NotificationsConfig,
}

impl NodeConfig {
    /// The resolved configuration as TOML, with secrets shown as `<redacted>`.
    /// Unset optional keys are omitted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Settings that are valid but probably not what a production node wants; the binary logs
    /// each at `warn` on startup (and `troupe config check` may print them).
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        if self.auth.uses_ephemeral_secret() {
            let mut message = "not set: a random HS256 secret is generated at startup, so tokens do not survive a \
                               restart and are not accepted by other nodes; set auth.jwt_secret (32+ bytes) or use \
                               RS256/EdDSA key files"
                .to_owned();
            if self.cluster.addr.is_some() || !self.cluster.seeds.is_empty() {
                message.push_str(" (this node is clustered: tokens will fail on the other nodes)");
            }
            out.push(ConfigWarning { key: "auth.jwt_secret", message });
        }
        if !self.gateway.rate_limit.enabled {
            out.push(ConfigWarning {
                key: "gateway.rate_limit.enabled",
                message: "false: no request is rate limited".to_owned(),
            });
        }
        out
    }
}

/// `[node]`: identity and local state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSettings {
    /// Node name, `[a-z0-9][a-z0-9._-]{0,62}`. Default `troupe-1`.
    pub name: String,
    /// Directory for the embedded store and node state. Default `./data`.
    pub data_dir: PathBuf,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self { name: "troupe-1".to_owned(), data_dir: PathBuf::from("./data") }
    }
}

/// `[http]`: the HTTP gateway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// Per-request timeout. Default 30s.
    #[serde(serialize_with = "duration::serialize")]
    pub request_timeout: Duration,
    /// Largest request body in bytes, > 0. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Pending connections the kernel queues for `accept` (1–65535; Linux caps it at
    /// `net.core.somaxconn`). Default 4096: a burst of WebSocket clients reconnecting at once
    /// overflows a short queue into SYN retransmits of 1, 3, 7… seconds.
    pub listen_backlog: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            listen_backlog: 4096,
        }
    }
}

/// `[cluster]`: joining other nodes. All unset = single node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// Cluster listen address; `None` = clustering disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// Nodes to join. Non-empty requires `addr` and `cookie`.
    pub seeds: Vec<HostPort>,
    /// Shared secret; required whenever `addr` is set or `seeds` is non-empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<Secret>,
    /// The `host:port` peers dial to reach this node; `None` = `addr` (which must then not be a
    /// wildcard address such as 0.0.0.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<HostPort>,
    /// How often the node writes its membership heartbeat and pings its peers (default 500ms).
    #[serde(serialize_with = "duration::serialize")]
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is marked `suspect` (default 1.5s).
    #[serde(serialize_with = "duration::serialize")]
    pub suspect_after: Duration,
    /// Silence after which a peer is marked `down` (default 3s; a dead peer is down within
    /// `down_after` + `heartbeat_interval` + one store round trip).
    #[serde(serialize_with = "duration::serialize")]
    pub down_after: Duration,
    /// Number of shards sharded entities are spread over (default 64). Every node of a cluster must
    /// use the same value; changing it moves every key.
    pub shards: u32,
    /// Time-to-live of shard and singleton leases (default 3s; renewed every third of it). A dead
    /// node's shards are owned elsewhere at most this long after its last renewal (and once it is
    /// `down`).
    #[serde(serialize_with = "duration::serialize")]
    pub shard_lease_ttl: Duration,
    /// Messages queued toward one peer before sends to it fail fast (default 100,000): a slow or
    /// dead peer costs at most this much memory per node.
    pub link_queue_messages: usize,
    /// Bytes queued toward one peer before sends to it fail fast (default 16 MiB).
    pub link_queue_bytes: usize,
    /// Frames (each up to 64 KiB of messages) sent to one peer and not yet acknowledged (default 4).
    pub link_frames_in_flight: u32,
    /// This node's certificate chain (PEM). With `tls_key` and `tls_ca`: mutual TLS on every mesh
    /// connection, accepted and dialed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs every node's certificate; peers must present one it signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            addr: None,
            seeds: Vec::new(),
            cookie: None,
            advertise_addr: None,
            heartbeat_interval: Duration::from_millis(500),
            suspect_after: Duration::from_millis(1500),
            down_after: Duration::from_secs(3),
            shards: 64,
            shard_lease_ttl: Duration::from_secs(3),
            link_queue_messages: 100_000,
            link_queue_bytes: 16 << 20,
            link_frames_in_flight: 4,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs clustered (`addr` is set).
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }
}

/// `[store]`: where state lives.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct StoreConfig {
    /// Default `fjall` (embedded).
    pub backend: StoreBackend,
    /// Connection string: `postgres://…` for postgres, comma-separated
    /// `host:port` list for scylla; always `None` for fjall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
}

impl StoreConfig {
    /// For the scylla backend: the validated contact points from `url`.
    pub fn scylla_nodes(&self) -> Vec<HostPort> {
        match (&self.backend, &self.url) {
            (StoreBackend::Scylla, Some(url)) => {
                url.expose().split(',').filter_map(|item| item.trim().parse().ok()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// `[rabbitmq]`: optional message broker (the RabbitMQ bridge). Off when `url` is unset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RabbitMqConfig {
    /// `amqp://` or `amqps://` URL; `None` = no RabbitMQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Durable topic exchange domain events are published to.
    pub exchange: String,
    /// Event-bus topic filters published (`*`, `user.*`, `user.created`).
    pub topics: Vec<String>,
    /// Most published, unconfirmed messages.
    pub confirm_window: usize,
    /// Packed mode: many events per AMQP message.
    pub packed: bool,
    /// Most events per packed message.
    pub packed_max_events: usize,
    /// What happens to returned (unroutable) messages.
    pub returned: ReturnedMessages,
    /// First delay after a failed publish or connect.
    #[serde(serialize_with = "duration::serialize")]
    pub reconnect_initial: Duration,
    /// Longest delay between attempts.
    #[serde(serialize_with = "duration::serialize")]
    pub reconnect_max: Duration,
    /// Inbound bindings: queue → handler.
    pub bindings: Vec<RabbitMqBinding>,
}

impl Default for RabbitMqConfig {
    /// Off; exchange `troupe.events`, every topic, window 1000, not packed (1000 events per packed
    /// message), returned messages dead-lettered, reconnect 100 ms to 10 s, no bindings.
    fn default() -> Self {
        Self {
            url: None,
            exchange: "troupe.events".to_owned(),
            topics: vec!["*".to_owned()],
            confirm_window: 1000,
            packed: false,
            packed_max_events: 1000,
            returned: ReturnedMessages::DeadLetter,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            bindings: Vec::new(),
        }
    }
}

/// `rabbitmq.returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnedMessages {
    /// Dead-lettered in the event bus (default).
    DeadLetter,
    /// Counted, logged and dropped.
    Drop,
    /// Published again after a backoff.
    Retry,
}

/// One `rabbitmq.bindings` item: `queue=handler` plus `;key=value` options (`prefetch`,
/// `delivery_limit`, `max_attempts`, `dlx`, `exchange`, `keys` as `a|b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RabbitMqBinding {
    /// Durable quorum queue.
    pub queue: String,
    /// Service (actor) name or pipeline source name.
    pub handler: String,
    /// Unacknowledged deliveries at most.
    pub prefetch: u16,
    /// `x-delivery-limit` of the queue.
    pub delivery_limit: u32,
    /// Handler failures before the bridge dead-letters a message.
    pub max_attempts: u32,
    /// Dead-letter exchange (default `{queue}.dlx`).
    pub dead_letter_exchange: String,
    /// Exchange the routing keys bind to (default `rabbitmq.exchange`).
    pub exchange: String,
    /// Routing keys binding the queue to `exchange` (none: only declared).
    pub routing_keys: Vec<String>,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogConfig {
    /// Default `pretty`.
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".to_owned() }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShutdownConfig {
    /// Time allowed for a graceful shutdown, in (0, 10m]. Default 10s.
    #[serde(serialize_with = "duration::serialize")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace: Duration::from_secs(10) }
    }
}

/// `[supervisor]`: restart policy for supervised actors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisorConfig {
    /// Restarts allowed within `within` before escalating. Default 5.
    pub max_restarts: u32,
    /// Restart counting window. Default 10s.
    #[serde(serialize_with = "duration::serialize")]
    pub within: Duration,
    /// First restart delay. Default 100ms.
    #[serde(serialize_with = "duration::serialize")]
    pub backoff_initial: Duration,
    /// Largest restart delay, ≥ `backoff_initial`. Default 5s.
    #[serde(serialize_with = "duration::serialize")]
    pub backoff_max: Duration,
    /// Jitter fraction in [0, 1]. Default 0.2.
    pub backoff_jitter: f64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            backoff_jitter: 0.2,
        }
    }
}

/// `[breaker]`: circuit breaker around calls to failing actors/services.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker, ≥ 1. Default 5.
    pub consecutive_failures: u32,
    /// Failure rate in (0, 1] that opens the breaker. Default 0.5.
    pub failure_rate: f64,
    /// Window for the failure rate. Default 30s.
    #[serde(serialize_with = "duration::serialize")]
    pub window: Duration,
    /// Calls needed in the window before the rate applies. Default 20.
    pub min_calls: u32,
    /// Open time before a trial call. Default 5s.
    #[serde(serialize_with = "duration::serialize")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 20,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// `[calls]`: actor call limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallsConfig {
    /// Default call timeout. Default 5s.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Most concurrent in-flight calls, ≥ 1. Default 1024.
    pub max_in_flight: usize,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5), max_in_flight: 1024 }
    }
}

/// `[admin]`: operator powers over HTTP.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AdminConfig {
    /// Allow killing an actor over HTTP. Default false.
    pub allow_kill: bool,
}
