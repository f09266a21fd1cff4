//! Rate limits: keyed GCRA token buckets (governor) per route class. Classes: `auth` (register, login,
//! refresh, logout — always keyed by client IP, tight), `read` (GET/HEAD) and `write` (everything else),
//! both keyed by the signed-in user when the request carries a valid bearer token and by client IP
//! otherwise. Each class has its own limiter, so a burst of writes does not use up reads.
//!
//! Every answered `/api/v1` request carries the IETF headers of draft-ietf-httpapi-ratelimit-headers
//! (draft 09/10 syntax, Structured Fields):
//! `RateLimit-Policy: "<class>";q=<burst>;w=<seconds to refill the bucket>` and
//! `RateLimit: "<class>";r=<requests left now>;t=<seconds until the bucket is full again>`. A refused
//! request gets 429, `r=0`, `t` = the wait, and `Retry-After` (whole seconds, rounded up).
//!
//! Client IP: the socket peer (`ConnectInfo<SocketAddr>`, so the server must be started with
//! `into_make_service_with_connect_info::<SocketAddr>()`); when the peer is a trusted proxy, the
//! rightmost `X-Forwarded-For` entry that is not itself trusted. Without `ConnectInfo` all anonymous
//! clients share the key of `0.0.0.0`.
//!
//! Memory: a keyed limiter holds one cell per key seen; [`start_pruning`] runs `retain_recent` every 30 s
//! so keys whose buckets are full again are dropped.
//!
//! Collaborators: governor, `crate::auth` (the principal to key on), `crate::api` (trusted proxies).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::api::SettingsError;
use crate::auth::{AuthOutcome, outcome};
use crate::{ApiError, GatewayState};

/// Set once the missing-`ConnectInfo` warning was logged.
static NO_PEER_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How often idle keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A token bucket: `per_second` requests replenish each second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Bucket size (requests allowed at once).
    pub burst: u32,
}

impl Rate {
    /// `per_second` with a bucket of `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// Rate limits per route class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Off: no limits and no headers.
    pub enabled: bool,
    /// Register, login, refresh, logout; per client IP. Default 2/s, burst 10.
    pub auth: Rate,
    /// GET and HEAD; per user (or IP when anonymous). Default 50/s, burst 100.
    pub read: Rate,
    /// Every other method; per user (or IP when anonymous). Default 20/s, burst 50.
    pub write: Rate,
    /// Reads and writes without a valid token; per client IP. Default 20/s, burst 40.
    pub anonymous: Rate,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: Rate::new(2, 10),
            read: Rate::new(50, 100),
            write: Rate::new(20, 50),
            anonymous: Rate::new(20, 40),
        }
    }
}

/// The route classes, each with its own limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Auth,
    Read,
    Write,
    /// Read or write without a valid token (keyed by IP).
    Anonymous,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Read => "read",
            Self::Write => "write",
            Self::Anonymous => "anonymous",
        }
    }

    fn of(method: &Method, path: &str) -> Self {
        if path.starts_with("/api/v1/auth/") {
            Self::Auth
        } else if method == Method::GET || method == Method::HEAD {
            Self::Read
        } else {
            Self::Write
        }
    }
}

/// Who a bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    User(String),
    Ip(IpAddr),
}

type Keyed = RateLimiter<Key, DashMapStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// One class's limiter and its precomputed policy header.
struct Limiter {
    rate: Rate,
    limiter: Keyed,
    policy: HeaderValue,
}

impl Limiter {
    fn new(class: Class, rate: Rate) -> Result<Self, SettingsError> {
        let bad = || SettingsError::BadRate(class.name());
        let per_second = NonZeroU32::new(rate.per_second).ok_or_else(bad)?;
        let burst = NonZeroU32::new(rate.burst).ok_or_else(bad)?;
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let limiter = RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>();
        let window = rate.burst.div_ceil(rate.per_second).max(1);
        let policy =
            HeaderValue::from_str(&format!("\"{}\";q={};w={window}", class.name(), rate.burst)).map_err(|_| bad())?;
        Ok(Self { rate, limiter, policy })
    }

    /// Seconds until `remaining` tokens become a full bucket again (rounded up).
    fn refill_secs(&self, remaining: u32) -> u64 {
        u64::from(self.rate.burst.saturating_sub(remaining)).div_ceil(u64::from(self.rate.per_second))
    }
}

/// The limiters of all classes (or none, when disabled).
pub(crate) struct RateLimits {
    classes: Option<[Limiter; 4]>,
}

impl Default for RateLimits {
    fn default() -> Self {
        // The defaults are valid, so this never falls back to "disabled" in practice.
        Self::new(&RateLimitSettings::default()).unwrap_or(Self { classes: None })
    }
}

impl RateLimits {
    pub(crate) fn new(s: &RateLimitSettings) -> Result<Self, SettingsError> {
        if !s.enabled {
            return Ok(Self { classes: None });
        }
        Ok(Self {
            classes: Some([
                Limiter::new(Class::Auth, s.auth)?,
                Limiter::new(Class::Read, s.read)?,
                Limiter::new(Class::Write, s.write)?,
                Limiter::new(Class::Anonymous, s.anonymous)?,
            ]),
        })
    }

    fn limiter(&self, class: Class) -> Option<&Limiter> {
        let all = self.classes.as_ref()?;
        Some(match class {
            Class::Auth => &all[0],
            Class::Read => &all[1],
            Class::Write => &all[2],
            Class::Anonymous => &all[3],
        })
    }

    /// Drops keys whose buckets are full again.
    pub(crate) fn prune(&self) {
        for l in self.classes.iter().flatten() {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }

    /// Keys currently held (all classes).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.classes.iter().flatten().map(|l| l.limiter.len()).sum()
    }
}

/// Starts the pruning timer of `state`'s limiters (ends when the limiters are dropped). Needs a tokio
/// runtime; without one, nothing is pruned.
pub(crate) fn start_pruning(state: &GatewayState) {
    let weak: Weak<RateLimits> = Arc::downgrade(&state.api().limits);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limits) = weak.upgrade() else { return };
                limits.prune();
            }
        });
    }
}

/// An IP address or CIDR block (`10.0.0.0/8`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpCidr {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().map_err(|_| ())?, Some(p.parse::<u8>().map_err(|_| ())?)),
            None => (s.trim().parse::<IpAddr>().map_err(|_| ())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(());
        }
        Ok(Self { addr, prefix })
    }
}

impl IpCidr {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's IP: the peer, or — when the peer is a trusted proxy — the rightmost untrusted
/// `X-Forwarded-For` entry (the peer when the header is missing, unparsable or all trusted).
pub(crate) fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpCidr]) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    for entry in hops.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else { return peer };
        if !is_trusted(ip) {
            return ip;
        }
    }
    peer
}

/// Middleware on every `/api/v1` route: takes a token from the caller's bucket of the route's class and
/// adds the `RateLimit-Policy` / `RateLimit` headers, or answers 429 with `Retry-After`.
pub(crate) async fn middleware(State(state): State<GatewayState>, req: Request, next: Next) -> Response {
    let limits = Arc::clone(&state.api().limits);
    let mut class = Class::of(req.method(), req.uri().path());
    if limits.limiter(class).is_none() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let key = match (class, outcome(&mut parts, &state)) {
        (Class::Read | Class::Write, AuthOutcome::Valid(p)) => Key::User(p.user_id),
        (c, _) => {
            if c != Class::Auth {
                class = Class::Anonymous;
            }
            let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            if peer.is_none() && !NO_PEER_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "no ConnectInfo<SocketAddr> on requests: serve with into_make_service_with_connect_info; until \
                     then all anonymous clients share one rate-limit bucket"
                );
            }
            Key::Ip(client_ip(peer, &parts.headers, &state.api().trusted_proxies))
        }
    };
    let req = Request::from_parts(parts, body);
    let Some(limiter) = limits.limiter(class) else { return next.run(req).await };
    match limiter.limiter.check_key(&key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let mut resp = next.run(req).await;
            let value = format!("\"{}\";r={remaining};t={}", class.name(), limiter.refill_secs(remaining));
            let headers = resp.headers_mut();
            headers.insert("ratelimit-policy", limiter.policy.clone());
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert("ratelimit", v);
            }
            resp
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(limiter.limiter.clock().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            metrics::counter!("troupe_http_rate_limited_total", "class" => class.name()).increment(1);
            let mut resp = ApiError::RateLimited { retry_after: Duration::from_secs(secs) }.into_response();
            let headers = resp.headers_mut();
            headers.insert("ratelimit-policy", limiter.policy.clone());
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r=0;t={secs}", class.name())) {
                headers.insert("ratelimit", v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests;
