//! Validation of the application sections: `[auth]`, `[gateway]`, `[ws]`, `[bus]`,
//! `[notifications]`. Same rules as the rest of [`super`]: every problem is recorded against its
//! dotted key, a key that already failed is skipped by cross-key checks, secrets are never echoed.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;

use super::{Checker, int_at_least, non_empty_secret, positive_duration};
use crate::duration;
use crate::model::{
    AuthConfig, BusConfig, GatewayConfig, IpNet, JwtAlgorithm, MIN_JWT_SECRET_BYTES, NotificationsConfig,
    OWASP_MIN_HASH_MEMORY_KIB, OWASP_MIN_HASH_MEMORY_X_ITERATIONS, PemKind, RateLimit, RateLimitConfig, WsConfig,
    is_hostname, read_pem,
};
use crate::raw::{RawAuth, RawBus, RawGateway, RawNotifications, RawRate, RawWs};

/// The channel every user is auto-subscribed to (`notifications:{user_id}`): never public.
const PRIVATE_CHANNEL_PREFIX: &str = "notifications:";

pub(super) fn auth(c: &mut Checker<'_>, raw: RawAuth) -> AuthConfig {
    let d = AuthConfig::default();
    let auth = AuthConfig {
        issuer: c.field("auth.issuer", raw.issuer, d.issuer, non_blank),
        audience: c.field("auth.audience", raw.audience, d.audience, non_blank),
        jwt_algorithm: c
            .field("auth.jwt_algorithm", raw.jwt_algorithm, d.jwt_algorithm, |s| JwtAlgorithm::from_str(&s)),
        jwt_secret: c.field("auth.jwt_secret", raw.jwt_secret, None, |s| {
            let secret = non_empty_secret(s)?;
            if secret.expose().len() < MIN_JWT_SECRET_BYTES {
                Err(format!(
                    "must be at least {MIN_JWT_SECRET_BYTES} bytes long (HS256 needs a key as long as its hash; \
                     e.g. the output of `openssl rand -base64 48`)"
                ))
            } else {
                Ok(Some(secret))
            }
        }),
        jwt_private_key_file: c
            .field("auth.jwt_private_key_file", raw.jwt_private_key_file, None, |s| path(s).map(Some)),
        jwt_public_key_file: c.field("auth.jwt_public_key_file", raw.jwt_public_key_file, None, |s| path(s).map(Some)),
        access_token_ttl: c
            .field("auth.access_token_ttl", raw.access_token_ttl, d.access_token_ttl, |s| positive_duration(&s)),
        refresh_token_ttl: c
            .field("auth.refresh_token_ttl", raw.refresh_token_ttl, d.refresh_token_ttl, |s| positive_duration(&s)),
        admin_emails: c.field("auth.admin_emails", raw.admin_emails, d.admin_emails, emails),
        password_hash_concurrency: c.field(
            "auth.password_hash_concurrency",
            raw.password_hash_concurrency,
            d.password_hash_concurrency,
            |v| int_in(v, 1usize, 64),
        ),
        password_hash_memory_kib: c.field(
            "auth.password_hash_memory_kib",
            raw.password_hash_memory_kib,
            d.password_hash_memory_kib,
            |v| int_in(v, 8u32, 1024 * 1024),
        ),
        password_hash_iterations: c.field(
            "auth.password_hash_iterations",
            raw.password_hash_iterations,
            d.password_hash_iterations,
            |v| int_in(v, 1u32, 100),
        ),
        password_hash_parallelism: c.field(
            "auth.password_hash_parallelism",
            raw.password_hash_parallelism,
            d.password_hash_parallelism,
            |v| int_in(v, 1u32, 16),
        ),
        allow_insecure_password_hashing: c.field(
            "auth.allow_insecure_password_hashing",
            raw.allow_insecure_password_hashing,
            d.allow_insecure_password_hashing,
            Ok,
        ),
        jwks_url: c.field("auth.jwks_url", raw.jwks_url, None, |s| jwks_url(&s).map(Some)),
        jwks_issuer: c.field("auth.jwks_issuer", raw.jwks_issuer, None, |s| non_blank(s).map(Some)),
        jwks_audience: c.field("auth.jwks_audience", raw.jwks_audience, None, |s| non_blank(s).map(Some)),
        jwks_roles_claim: c.field("auth.jwks_roles_claim", raw.jwks_roles_claim, d.jwks_roles_claim, non_blank),
        jwks_refresh_interval: c.field(
            "auth.jwks_refresh_interval",
            raw.jwks_refresh_interval,
            d.jwks_refresh_interval,
            |s| positive_duration(&s),
        ),
    };

    if c.ok(&["auth.access_token_ttl", "auth.refresh_token_ttl"]) && auth.refresh_token_ttl <= auth.access_token_ttl {
        c.fail(
            "auth.refresh_token_ttl",
            format!(
                "must be longer than auth.access_token_ttl ({} <= {})",
                duration::format(auth.refresh_token_ttl),
                duration::format(auth.access_token_ttl)
            ),
        );
    }
    check_jwt_keys(c, &auth);
    check_hash_costs(c, &auth);
    if c.ok(&["auth.jwks_url", "auth.jwks_issuer"]) {
        match (&auth.jwks_url, &auth.jwks_issuer) {
            (Some(_), None) => c.fail_because(
                "auth.jwks_issuer",
                "required by auth.jwks_url (the `iss` the identity provider puts in its tokens)",
                "auth.jwks_url",
            ),
            (None, Some(_)) => c.fail("auth.jwks_issuer", "only used with auth.jwks_url"),
            _ => {}
        }
    }
    if c.ok(&["auth.jwks_url", "auth.jwks_audience"]) && auth.jwks_url.is_none() && auth.jwks_audience.is_some() {
        c.fail("auth.jwks_audience", "only used with auth.jwks_url");
    }
    auth
}

/// argon2id costs: argon2's own rule (memory >= 8 x lanes) always; the OWASP floor unless
/// `auth.allow_insecure_password_hashing`.
fn check_hash_costs(c: &mut Checker<'_>, auth: &AuthConfig) {
    const KEYS: [&str; 4] = [
        "auth.password_hash_memory_kib",
        "auth.password_hash_iterations",
        "auth.password_hash_parallelism",
        "auth.allow_insecure_password_hashing",
    ];
    if !c.ok(&KEYS) {
        return;
    }
    let (m, t, p) = (auth.password_hash_memory_kib, auth.password_hash_iterations, auth.password_hash_parallelism);
    if u64::from(m) < 8 * u64::from(p) {
        c.fail(KEYS[0], format!("must be at least 8 KiB per lane (auth.password_hash_parallelism = {p}), got {m}"));
        return;
    }
    if auth.allow_insecure_password_hashing {
        return;
    }
    if m < OWASP_MIN_HASH_MEMORY_KIB {
        c.fail(
            KEYS[0],
            format!(
                "must be at least {OWASP_MIN_HASH_MEMORY_KIB} KiB (OWASP's argon2id minimum), got {m}; set \
                 auth.allow_insecure_password_hashing = true only for tests"
            ),
        );
    } else if u64::from(m) * u64::from(t) < OWASP_MIN_HASH_MEMORY_X_ITERATIONS {
        c.fail(
            KEYS[1],
            format!(
                "memory x iterations must be at least {OWASP_MIN_HASH_MEMORY_X_ITERATIONS} KiB (OWASP's argon2id \
                 minimum, e.g. 19456 KiB x 2 or 7168 KiB x 5), got {m} x {t}; set \
                 auth.allow_insecure_password_hashing = true only for tests"
            ),
        );
    }
}

/// Algorithm-dependent key rules: HS256 takes a secret and no files; RS256/EdDSA take two
/// readable PEM files and no secret.
fn check_jwt_keys(c: &mut Checker<'_>, auth: &AuthConfig) {
    if !c.ok(&["auth.jwt_algorithm"]) {
        return;
    }
    let algorithm = auth.jwt_algorithm;
    let files = [
        ("auth.jwt_private_key_file", &auth.jwt_private_key_file, PemKind::Private),
        ("auth.jwt_public_key_file", &auth.jwt_public_key_file, PemKind::Public),
    ];
    match algorithm {
        JwtAlgorithm::Hs256 => {
            for (key, file, _) in files {
                if c.ok(&[key]) && file.is_some() {
                    c.fail(
                        key,
                        "only used with auth.jwt_algorithm RS256 or EdDSA (auth.jwt_algorithm is HS256; set it, or \
                         remove the key files and set auth.jwt_secret)",
                    );
                }
            }
        }
        JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa => {
            if c.ok(&["auth.jwt_secret"]) && auth.jwt_secret.is_some() {
                c.fail(
                    "auth.jwt_secret",
                    format!("only used with auth.jwt_algorithm HS256 (auth.jwt_algorithm is {algorithm})"),
                );
            }
            for (key, file, kind) in files {
                if !c.ok(&[key]) {
                    continue;
                }
                match file {
                    None => {
                        c.fail_because(key, format!("required by auth.jwt_algorithm {algorithm}"), "auth.jwt_algorithm")
                    }
                    Some(path) => {
                        if let Err(reason) = read_pem(path, kind) {
                            c.fail(key, reason);
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn gateway(c: &mut Checker<'_>, raw: RawGateway) -> GatewayConfig {
    let d = GatewayConfig::default();
    let r = raw.rate_limit;
    let dr = d.rate_limit;
    GatewayConfig {
        cors_allowed_origins: c.field(
            "gateway.cors_allowed_origins",
            raw.cors_allowed_origins,
            d.cors_allowed_origins,
            cors_origins,
        ),
        trusted_proxies: c.field("gateway.trusted_proxies", raw.trusted_proxies, d.trusted_proxies, |items| {
            collect(items.iter().map(|s| s.parse::<IpNet>()))
        }),
        rate_limit: RateLimitConfig {
            enabled: c.field("gateway.rate_limit.enabled", r.enabled, dr.enabled, Ok),
            auth: rate(c, ["gateway.rate_limit.auth.per_second", "gateway.rate_limit.auth.burst"], r.auth, dr.auth),
            read: rate(c, ["gateway.rate_limit.read.per_second", "gateway.rate_limit.read.burst"], r.read, dr.read),
            write: rate(
                c,
                ["gateway.rate_limit.write.per_second", "gateway.rate_limit.write.burst"],
                r.write,
                dr.write,
            ),
            per_ip: rate(
                c,
                ["gateway.rate_limit.per_ip.per_second", "gateway.rate_limit.per_ip.burst"],
                r.per_ip,
                dr.per_ip,
            ),
        },
    }
}

/// One token bucket; `keys` are its `per_second` and `burst` keys.
fn rate(c: &mut Checker<'_>, keys: [&'static str; 2], raw: RawRate, default: RateLimit) -> RateLimit {
    let [per_second_key, burst_key] = keys;
    RateLimit {
        per_second: c.field(per_second_key, raw.per_second, default.per_second, non_zero_u32),
        burst: c.field(burst_key, raw.burst, default.burst, non_zero_u32),
    }
}

pub(super) fn ws(c: &mut Checker<'_>, raw: RawWs) -> WsConfig {
    let d = WsConfig::default();
    WsConfig {
        ping_interval: c.field("ws.ping_interval", raw.ping_interval, d.ping_interval, |s| positive_duration(&s)),
        max_message_bytes: c.field("ws.max_message_bytes", raw.max_message_bytes, d.max_message_bytes, |v| {
            int_in(v, 64usize, 64 << 20)
        }),
        read_buffer_bytes: c.field("ws.read_buffer_bytes", raw.read_buffer_bytes, d.read_buffer_bytes, |v| {
            int_in(v, 256usize, 1 << 20)
        }),
        outbound_queue: c.field("ws.outbound_queue", raw.outbound_queue, d.outbound_queue, |v| int_at_least(v, 1usize)),
        history_messages: c
            .field("ws.history_messages", raw.history_messages, d.history_messages, |v| int_at_least(v, 0usize)),
        history_ttl: c.field("ws.history_ttl", raw.history_ttl, d.history_ttl, |s| positive_duration(&s)),
        public_channel_prefixes: c.field(
            "ws.public_channel_prefixes",
            raw.public_channel_prefixes,
            d.public_channel_prefixes,
            |items| collect(items.iter().map(|p| public_prefix(p))),
        ),
    }
}

pub(super) fn bus(c: &mut Checker<'_>, raw: RawBus) -> BusConfig {
    let d = BusConfig::default();
    let bus = BusConfig {
        poll_interval: c.field("bus.poll_interval", raw.poll_interval, d.poll_interval, |s| positive_duration(&s)),
        page_size: c.field("bus.page_size", raw.page_size, d.page_size, |v| int_at_least(v, 1usize)),
        max_in_flight: c.field("bus.max_in_flight", raw.max_in_flight, d.max_in_flight, |v| int_at_least(v, 1usize)),
        max_attempts: c.field("bus.max_attempts", raw.max_attempts, d.max_attempts, |v| int_in(v, 1u32, 1000)),
        backoff_initial: c
            .field("bus.backoff_initial", raw.backoff_initial, d.backoff_initial, |s| positive_duration(&s)),
        backoff_max: c.field("bus.backoff_max", raw.backoff_max, d.backoff_max, |s| positive_duration(&s)),
        backoff_jitter: c.field("bus.backoff_jitter", raw.backoff_jitter, d.backoff_jitter, |v| {
            if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("must be between 0 and 1 inclusive, got {v}")) }
        }),
        handler_timeout: c
            .field("bus.handler_timeout", raw.handler_timeout, d.handler_timeout, |s| positive_duration(&s)),
    };
    if c.ok(&["bus.backoff_initial", "bus.backoff_max"]) && bus.backoff_max < bus.backoff_initial {
        c.fail(
            "bus.backoff_max",
            format!(
                "must be at least bus.backoff_initial ({} < {})",
                duration::format(bus.backoff_max),
                duration::format(bus.backoff_initial)
            ),
        );
    }
    bus
}

pub(super) fn notifications(c: &mut Checker<'_>, raw: RawNotifications, bus: &BusConfig) -> NotificationsConfig {
    let d = NotificationsConfig::default();
    let n = NotificationsConfig {
        fanout_page: c.field("notifications.fanout_page", raw.fanout_page, d.fanout_page, |v| int_at_least(v, 1usize)),
        fanout_concurrency: c.field(
            "notifications.fanout_concurrency",
            raw.fanout_concurrency,
            d.fanout_concurrency,
            |v| int_in(v, 1usize, 1024),
        ),
        deliver_timeout: c
            .field("notifications.deliver_timeout", raw.deliver_timeout, d.deliver_timeout, |s| positive_duration(&s)),
    };
    if c.ok(&["notifications.deliver_timeout", "bus.handler_timeout"]) && n.deliver_timeout >= bus.handler_timeout {
        c.fail(
            "notifications.deliver_timeout",
            format!(
                "must be shorter than bus.handler_timeout, so the service's own deadline answers before the bus \
                 gives up ({} >= {})",
                duration::format(n.deliver_timeout),
                duration::format(bus.handler_timeout)
            ),
        );
    }
    n
}

// ---- value parsers ----

fn non_blank(s: String) -> Result<String, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        Err("must not be empty".to_owned())
    } else if trimmed.chars().any(char::is_control) {
        Err(format!("must not contain control characters, got {s:?}"))
    } else {
        Ok(trimmed.to_owned())
    }
}

/// `http://host[:port]/path`: the JWKS fetch has no TLS in this build, so `https://` is refused
/// with an explanation rather than failing at the first fetch.
fn jwks_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces".to_owned());
    }
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err("https:// is not supported: this build's HTTP client has no TLS; serve the JWK Set over \
                    http:// on a trusted network (e.g. a local proxy to the identity provider)"
            .to_owned());
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!("expected an http:// URL, got {s:?}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("expected http://host[:port]/path, got {s:?}"));
    }
    Ok(s.to_owned())
}

fn path(s: String) -> Result<PathBuf, String> {
    if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { Ok(PathBuf::from(s)) }
}

fn int_in<T>(v: i64, min: T, max: T) -> Result<T, String>
where
    T: TryFrom<i64> + PartialOrd + std::fmt::Display + Copy,
{
    T::try_from(v)
        .ok()
        .filter(|n| *n >= min && *n <= max)
        .ok_or_else(|| format!("must be an integer from {min} to {max}, got {v}"))
}

fn non_zero_u32(v: i64) -> Result<NonZeroU32, String> {
    u32::try_from(v)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("must be an integer from 1 to {}, got {v}", u32::MAX))
}

/// Every item parsed, or every item's error joined by `; `.
fn collect<T>(items: impl Iterator<Item = Result<T, String>>) -> Result<Vec<T>, String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in items {
        match item {
            Ok(v) => good.push(v),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() { Ok(good) } else { Err(bad.join("; ")) }
}

/// Normalized (trimmed, lowercased), deduplicated admin emails.
fn emails(items: Vec<String>) -> Result<Vec<String>, String> {
    let parsed = collect(items.iter().map(|raw| {
        let email = raw.trim().to_lowercase();
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }) && !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',');
        if valid { Ok(email) } else { Err(format!("invalid email {raw:?} (expected name@domain)")) }
    }))?;
    let mut out: Vec<String> = Vec::with_capacity(parsed.len());
    for email in parsed {
        if !out.contains(&email) {
            out.push(email);
        }
    }
    Ok(out)
}

/// `["*"]`, or origins `scheme://host[:port]` normalized to lowercase.
fn cors_origins(items: Vec<String>) -> Result<Vec<String>, String> {
    if items.iter().any(|o| o.trim() == "*") {
        return if items.len() == 1 {
            Ok(vec!["*".to_owned()])
        } else {
            Err("\"*\" allows every origin and must be the only item".to_owned())
        };
    }
    let mut out = collect(items.iter().map(|o| origin(o)))?;
    out.dedup();
    Ok(out)
}

fn origin(raw: &str) -> Result<String, String> {
    let invalid = |why: &str| {
        format!("invalid origin {raw:?} ({why}expected scheme://host[:port], e.g. https://app.example.com)")
    };
    let lower = raw.trim().to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or_else(|| invalid(""))?;
    let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(invalid("bad scheme; "));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(invalid("an origin has no path or trailing slash; "));
    }
    if rest.contains('@') {
        return Err(invalid("an origin has no user info; "));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid(""))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("bad IPv6 address; "));
        }
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or_else(|| invalid(""))?),
        };
        (None, port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(rest), None),
        }
    };
    if let Some(host) = host
        && host.parse::<std::net::Ipv4Addr>().is_err()
        && !is_hostname(host)
    {
        return Err(invalid("bad host; "));
    }
    if let Some(port) = port
        && port.parse::<u16>().ok().filter(|p| *p != 0).is_none()
    {
        return Err(invalid("bad port; "));
    }
    Ok(lower)
}

fn public_prefix(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err("an empty prefix would make every channel public (use [] for no public channels)".to_owned());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("prefix {raw:?} contains whitespace"));
    }
    if PRIVATE_CHANNEL_PREFIX.starts_with(raw) || raw.starts_with(PRIVATE_CHANNEL_PREFIX) {
        return Err(format!(
            "prefix {raw:?} would make users' private {PRIVATE_CHANNEL_PREFIX}{{user_id}} channels public"
        ));
    }
    Ok(raw.to_owned())
}
