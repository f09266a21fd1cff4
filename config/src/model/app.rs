//! The application sections of [`crate::NodeConfig`]: `[auth]`, `[gateway]`, `[ws]`, `[bus]` and
//! `[notifications]`. Each mirrors the settings struct of the crate that consumes it
//! (`troupe_services::auth::AuthSettings`, the gateway's middleware, `troupe_actors::bus::BusConfig`,
//! `troupe_services::notifications::NotificationConfig`); the binary maps one onto the other.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::Secret;
use crate::duration;
use crate::error::ConfigError;

/// Smallest accepted `auth.jwt_secret`, in bytes (RFC 7518 §3.2: a key as long as the hash).
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// OWASP's weakest recommended argon2id memory cost (7 MiB, with 5 iterations), in KiB.
pub const OWASP_MIN_HASH_MEMORY_KIB: u32 = 7 * 1024;
/// OWASP's argon2id rows all spend at least this much memory x iterations (7 MiB x 5), in KiB.
pub const OWASP_MIN_HASH_MEMORY_X_ITERATIONS: u64 = 7 * 1024 * 5;

lowercase_enum!(
    /// JWT signing algorithm (`auth.jwt_algorithm`). Case-insensitive in the config.
    JwtAlgorithm, "JWT algorithm", {
        /// HMAC-SHA256 with the shared `auth.jwt_secret` (default).
        #[default]
        Hs256 = "HS256",
        /// RSA PKCS#1 v1.5 SHA-256 with PEM key files.
        Rs256 = "RS256",
        /// Ed25519 with PEM key files.
        EdDsa = "EdDSA",
    }
);

/// `[auth]`: tokens, admins and password hashing. Maps onto `troupe_services::auth::AuthSettings`.
///
/// Validated invariants: with `HS256`, no key files are set and `jwt_secret`, when set, has at
/// least [`MIN_JWT_SECRET_BYTES`] bytes; with `RS256`/`EdDSA`, `jwt_secret` is unset and both key
/// files are set and were readable PEM files when the config was loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthConfig {
    /// `iss` of issued tokens, required on verify. Default `troupe`.
    pub issuer: String,
    /// `aud` of issued tokens, required on verify. Default `troupe-api`.
    pub audience: String,
    /// Default `HS256`.
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 secret (≥ 32 bytes). `None` with HS256 = a random secret generated at startup:
    /// tokens then do not survive a restart and are not accepted by other nodes (see
    /// [`crate::NodeConfig::warnings`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// PEM private key (PKCS#8, or PKCS#1 for RSA); required for RS256/EdDSA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// PEM public key; required for RS256/EdDSA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Access token lifetime. Default 15m.
    #[serde(serialize_with = "duration::serialize")]
    pub access_token_ttl: Duration,
    /// Refresh token lifetime, longer than `access_token_ttl`. Default 30d.
    #[serde(serialize_with = "duration::serialize")]
    pub refresh_token_ttl: Duration,
    /// Registering with one of these emails grants `admin`. Normalized (trimmed, lowercased),
    /// without duplicates. Default empty.
    pub admin_emails: Vec<String>,
    /// Password hashes computed at once, 1..=64. Default 2.
    pub password_hash_concurrency: usize,
    /// argon2id memory cost in KiB. Default 19456 (19 MiB, OWASP). At least
    /// [`OWASP_MIN_HASH_MEMORY_KIB`] and memory x iterations at least
    /// [`OWASP_MIN_HASH_MEMORY_X_ITERATIONS`] unless `allow_insecure_password_hashing`; at most 1 GiB.
    /// Existing hashes made with other costs keep verifying (the PHC string carries its costs).
    pub password_hash_memory_kib: u32,
    /// argon2id iterations, 1..=100. Default 2.
    pub password_hash_iterations: u32,
    /// argon2id lanes, 1..=16. Default 1.
    pub password_hash_parallelism: u32,
    /// Accept costs below the OWASP minimums (fast tests and demos). Default false.
    pub allow_insecure_password_hashing: bool,
    /// `http://` URL of an external identity provider's JWK Set (RFC 7517). When set, tokens whose
    /// header has a `kid` are verified with the provider's RS256/EdDSA keys. Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Required `iss` of external tokens; required with `jwks_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_issuer: Option<String>,
    /// Required `aud` of external tokens; unset = `audience`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_audience: Option<String>,
    /// Claim of external tokens listing roles (array, or space-separated string). Default `roles`.
    pub jwks_roles_claim: String,
    /// Period of the JWK Set refetch. Default 5m.
    #[serde(serialize_with = "duration::serialize")]
    pub jwks_refresh_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "troupe".to_owned(),
            audience: "troupe-api".to_owned(),
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: None,
            jwt_private_key_file: None,
            jwt_public_key_file: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            admin_emails: Vec::new(),
            password_hash_concurrency: 2,
            password_hash_memory_kib: 19 * 1024,
            password_hash_iterations: 2,
            password_hash_parallelism: 1,
            allow_insecure_password_hashing: false,
            jwks_url: None,
            jwks_issuer: None,
            jwks_audience: None,
            jwks_roles_claim: "roles".to_owned(),
            jwks_refresh_interval: Duration::from_secs(300),
        }
    }
}

/// The token key the node should use, read from the configured files.
///
/// `Debug` never shows a secret or private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeyMaterial {
    /// HS256 with the configured shared secret.
    Hs256 {
        /// `auth.jwt_secret`; use `secret.expose().as_bytes()`.
        secret: Secret,
    },
    /// HS256 with a random secret the node generates at startup (no `auth.jwt_secret`).
    Hs256Ephemeral,
    /// RS256 key pair.
    Rs256 {
        /// Contents of `auth.jwt_private_key_file`.
        private_pem: Secret,
        /// Contents of `auth.jwt_public_key_file`.
        public_pem: String,
    },
    /// Ed25519 key pair.
    EdDsa {
        /// Contents of `auth.jwt_private_key_file`.
        private_pem: Secret,
        /// Contents of `auth.jwt_public_key_file`.
        public_pem: String,
    },
}

impl AuthConfig {
    /// Whether the node will sign tokens with a random per-process secret.
    pub fn uses_ephemeral_secret(&self) -> bool {
        self.jwt_algorithm == JwtAlgorithm::Hs256 && self.jwt_secret.is_none()
    }

    /// Reads the key files (again: they may have changed since the config was loaded) and returns
    /// the key material for [`Self::jwt_algorithm`]. The error names the key and never echoes
    /// file contents.
    pub fn jwt_key_material(&self) -> Result<JwtKeyMaterial, ConfigError> {
        let pair = |this: &Self| -> Result<(Secret, String), ConfigError> {
            let private = required_file(&this.jwt_private_key_file, "auth.jwt_private_key_file", this.jwt_algorithm)?;
            let public = required_file(&this.jwt_public_key_file, "auth.jwt_public_key_file", this.jwt_algorithm)?;
            let private_pem = read_pem(private, PemKind::Private)
                .map_err(|reason| ConfigError::new("auth.jwt_private_key_file", reason))?;
            let public_pem = read_pem(public, PemKind::Public)
                .map_err(|reason| ConfigError::new("auth.jwt_public_key_file", reason))?;
            Ok((Secret::new(private_pem), public_pem))
        };
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => Ok(match &self.jwt_secret {
                Some(secret) => JwtKeyMaterial::Hs256 { secret: secret.clone() },
                None => JwtKeyMaterial::Hs256Ephemeral,
            }),
            JwtAlgorithm::Rs256 => {
                pair(self).map(|(private_pem, public_pem)| JwtKeyMaterial::Rs256 { private_pem, public_pem })
            }
            JwtAlgorithm::EdDsa => {
                pair(self).map(|(private_pem, public_pem)| JwtKeyMaterial::EdDsa { private_pem, public_pem })
            }
        }
    }
}

fn required_file<'a>(
    path: &'a Option<PathBuf>,
    key: &'static str,
    algorithm: JwtAlgorithm,
) -> Result<&'a Path, ConfigError> {
    path.as_deref().ok_or_else(|| ConfigError::new(key, format!("required by auth.jwt_algorithm {algorithm}")))
}

/// Which half of a key pair a PEM file should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PemKind {
    Private,
    Public,
}

/// Largest key file read (a PEM key is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Reads a PEM key file and checks its label. The error is a reason naming the path, never the
/// contents.
pub(crate) fn read_pem(path: &Path, kind: PemKind) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("file {shown} not found"),
        _ => format!("cannot read {shown}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!("{shown} is larger than 1 MiB, not a PEM key"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => format!("{shown} is not a PEM file (not text)"),
        _ => format!("cannot read {shown}: {e}"),
    })?;
    let label = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("-----BEGIN ").and_then(|rest| rest.strip_suffix("-----")))
        .ok_or_else(|| format!("{shown} is not a PEM file (no -----BEGIN ...----- line)"))?;
    match kind {
        PemKind::Private if !label.ends_with("PRIVATE KEY") => {
            Err(format!("{shown} holds a {label:?} PEM block, expected a PRIVATE KEY"))
        }
        PemKind::Public if label.contains("PRIVATE") => {
            Err(format!("{shown} holds a private key; this key wants the public key"))
        }
        _ => Ok(text),
    }
}

/// An IP network: an address and a prefix length (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// Network address (host bits are zero).
    pub addr: IpAddr,
    /// Prefix length, ≤ 32 (IPv4) or ≤ 128 (IPv6).
    pub prefix_len: u8,
}

impl IpNet {
    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4
    /// networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix_len) == mask_v4(u32::from(net), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix_len) == mask_v6(u128::from(net), self.prefix_len)
            }
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix_len: u8) -> u32 {
    bits.checked_shr(32 - u32::from(prefix_len.min(32))).unwrap_or(0)
}

fn mask_v6(bits: u128, prefix_len: u8) -> u128 {
    bits.checked_shr(128 - u32::from(prefix_len.min(128))).unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// Accepts `10.0.0.0/8`, `192.168.1.7`, `fd00::/8`, `::1`. Host bits must be zero.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let invalid = || format!("invalid IP address or CIDR {s:?} (expected e.g. 10.0.0.1 or 10.0.0.0/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(invalid)?,
        };
        let net = IpNet { addr, prefix_len };
        let network = match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let kept = mask_v4(bits, prefix_len).checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
                IpAddr::V4(kept.into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let kept = mask_v6(bits, prefix_len).checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
                IpAddr::V6(kept.into())
            }
        };
        if network != addr {
            return Err(format!("{s:?} has host bits set (did you mean {network}/{prefix_len}?)"));
        }
        Ok(net)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One token bucket: `per_second` tokens refill each second, up to `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Sustained requests per second, ≥ 1.
    pub per_second: NonZeroU32,
    /// Bucket size: requests allowed at once after idling, ≥ 1.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A limit from plain numbers; `None` if either is zero.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self { per_second: NonZeroU32::new(per_second)?, burst: NonZeroU32::new(burst)? })
    }

    const fn of(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_second, burst }
    }
}

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// `[gateway.rate_limit]`: token buckets per route class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    /// Default true. When false no route is rate limited.
    pub enabled: bool,
    /// `/auth/*` routes, per client IP. Default 5/s, burst 10.
    pub auth: RateLimit,
    /// Authenticated reads (GET, HEAD), per user. Default 50/s, burst 100.
    pub read: RateLimit,
    /// Authenticated writes (POST, PATCH, PUT, DELETE), per user. Default 20/s, burst 40.
    pub write: RateLimit,
    /// Anonymous traffic outside `/auth`, per client IP. Default 20/s, burst 40.
    pub per_ip: RateLimit,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: RateLimit::of(nz(5), nz(10)),
            read: RateLimit::of(nz(50), nz(100)),
            write: RateLimit::of(nz(20), nz(40)),
            per_ip: RateLimit::of(nz(20), nz(40)),
        }
    }
}

/// `[gateway]`: HTTP middleware policy (the listener itself is `[http]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GatewayConfig {
    /// Origins allowed by CORS, normalized to lowercase `scheme://host[:port]`; `["*"]` = any
    /// origin; empty (default) = no CORS headers (same-origin clients only).
    pub cors_allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed when finding the client
    /// IP. Default empty: the client IP is the socket's peer address.
    pub trusted_proxies: Vec<IpNet>,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
}

impl GatewayConfig {
    /// Whether CORS allows every origin (`cors_allowed_origins = ["*"]`).
    pub fn cors_allows_any_origin(&self) -> bool {
        self.cors_allowed_origins.iter().any(|o| o == "*")
    }

    /// Whether `peer` is a trusted proxy.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(peer))
    }
}

/// `[ws]`: the WebSocket endpoint and channel history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsConfig {
    /// Server ping interval. Default 25s.
    #[serde(serialize_with = "duration::serialize")]
    pub ping_interval: Duration,
    /// Largest accepted client message, 64..=64 MiB. Default 65536.
    pub max_message_bytes: usize,
    /// Socket read buffer, 256..=1 MiB. Default 4096.
    pub read_buffer_bytes: usize,
    /// Outbound messages queued per connection before it counts as a slow consumer (closed with
    /// 4008), ≥ 1. Default 256.
    pub outbound_queue: usize,
    /// Messages of history kept per channel for `since` replays; 0 = no history. Default 100.
    pub history_messages: usize,
    /// Age after which history messages are dropped. Default 5m.
    #[serde(serialize_with = "duration::serialize")]
    pub history_ttl: Duration,
    /// Channels starting with one of these may be subscribed to by any authenticated user
    /// (`notifications:{user_id}` is always the user's own; admins may subscribe to anything).
    /// Default `["public:"]`.
    pub public_channel_prefixes: Vec<String>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 4096,
            outbound_queue: 256,
            history_messages: 100,
            history_ttl: Duration::from_secs(300),
            public_channel_prefixes: vec!["public:".to_owned()],
        }
    }
}

impl WsConfig {
    /// Whether any authenticated user may subscribe to `channel` by the prefix rule.
    pub fn is_public_channel(&self, channel: &str) -> bool {
        self.public_channel_prefixes.iter().any(|p| channel.starts_with(p.as_str()))
    }
}

/// `[bus]`: the event bus delivering outbox entries to subscribers. Maps onto
/// `troupe_actors::bus::BusConfig` (+ its `RetryPolicy` and `Backoff`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusConfig {
    /// Fallback wake-up when nobody notifies the bus. Default 100ms.
    #[serde(serialize_with = "duration::serialize")]
    pub poll_interval: Duration,
    /// Outbox entries read per page, ≥ 1. Default 256.
    pub page_size: usize,
    /// Most entries held at once (read, not yet acknowledged), ≥ 1. Default 1024.
    pub max_in_flight: usize,
    /// Attempts (the first included) before a delivery is dead-lettered, 1..=1000. Default 12.
    pub max_attempts: u32,
    /// First retry delay. Default 100ms.
    #[serde(serialize_with = "duration::serialize")]
    pub backoff_initial: Duration,
    /// Largest retry delay, ≥ `backoff_initial`. Default 30s.
    #[serde(serialize_with = "duration::serialize")]
    pub backoff_max: Duration,
    /// Jitter fraction in [0, 1]. Default 0.2.
    pub backoff_jitter: f64,
    /// A handler call running longer than this counts as a failed attempt. Default 60s.
    #[serde(serialize_with = "duration::serialize")]
    pub handler_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            page_size: 256,
            max_in_flight: 1024,
            max_attempts: 12,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            backoff_jitter: 0.2,
            handler_timeout: Duration::from_secs(60),
        }
    }
}

/// `[notifications]`: the notification service's fan-out. Maps onto
/// `troupe_services::notifications::NotificationConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationsConfig {
    /// Followers read per page during a fan-out, ≥ 1. Default 256.
    pub fanout_page: usize,
    /// Notification writes in flight at once during a fan-out, 1..=1024. Default 16.
    pub fanout_concurrency: usize,
    /// Deadline of one event delivery, shorter than `bus.handler_timeout`. Default 30s.
    #[serde(serialize_with = "duration::serialize")]
    pub deliver_timeout: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self { fanout_page: 256, fanout_concurrency: 16, deliver_timeout: Duration::from_secs(30) }
    }
}
