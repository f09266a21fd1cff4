//! WebSocket fan-out: `GET /ws` upgrades an authenticated client into one connection task that
//! subscribes it to channels of the [`Hub`] and writes the hub's frames to its socket; plus the
//! channel endpoints `GET /api/v1/channels/{name}/presence` and `POST /api/v1/channels/{name}/publish`
//! (admin). This module owns the JSON protocol:
//!
//! - client: `{"op":"subscribe","channel":"…","since":N?}`, `{"op":"unsubscribe","channel":"…"}`,
//!   `{"op":"ping"}`;
//! - server: `{"channel":"…","offset":N,"data":…}` (the published JSON, embedded raw),
//!   `{"op":"subscribed","channel":"…","offset":N,"replayed":K}`, `{"op":"resync","channel":"…","offset":N}`,
//!   `{"op":"unsubscribed","channel":"…"}`, `{"op":"pong"}`, `{"op":"error","code":"…","message":"…"}`.
//!
//! A client is auto-subscribed to `notifications:{user_id}`. Close codes: 4008 slow consumer, 1008 too
//! many bad requests, 1001 keepalive timeout or server shutdown, 1012 the node is draining out of its
//! cluster (reconnect, to another node).
//!
//! The handshake is answered here and each connection then owns its TCP stream (taken back from hyper):
//! `ws/frame.rs` encodes server frames once, whole, and parses client frames with tungstenite's frame
//! header; `ws/conn.rs` runs the connection. A broadcast's frame (header included) is encoded once by
//! [`json_encoder`] and the same bytes are written to every socket, directly by the publisher while a
//! connection has nothing queued.
//!
//! Collaborators: the [`Hub`] (`troupe_actors::channels`, transport-agnostic), a [`WsAuthenticator`]
//! (the node wires JWT verification to it), a [`ChannelPolicy`], hyper / hyper-util (the upgrade and
//! the stream behind it), tungstenite (accept key, frame headers), and `error.rs` (every HTTP error is
//! an [`ApiError`]).

mod conn;
mod frame;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use troupe_actors::channels::{Encoder, Hub};

use crate::ApiError;

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsIdentity {
    /// The user's id (channels `notifications:{user_id}` are theirs).
    pub user_id: String,
    /// Admins may subscribe to any channel and publish.
    pub is_admin: bool,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsAuthError {
    /// No token in `Authorization: Bearer` nor `?token=`.
    #[error("missing bearer token")]
    Missing,
    /// The token is invalid, expired or forged (the reason is safe to show).
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl From<WsAuthError> for ApiError {
    fn from(e: WsAuthError) -> Self {
        match e {
            WsAuthError::Missing => ApiError::Unauthorized("a bearer token is required"),
            WsAuthError::Invalid(_) => ApiError::InvalidToken("the token is invalid or expired"),
        }
    }
}

/// Verifies bearer tokens for the WebSocket and channel endpoints (the node plugs in JWT verification).
pub trait WsAuthenticator: Send + Sync + 'static {
    /// The identity behind `token`, or why not.
    fn authenticate(&self, token: &str) -> Result<WsIdentity, WsAuthError>;
}

/// Who may subscribe to (and see the presence of) which channel.
pub trait ChannelPolicy: Send + Sync + 'static {
    /// True if `who` may subscribe to `channel` (a valid channel name).
    fn may_subscribe(&self, who: &WsIdentity, channel: &str) -> bool;
}

/// The default policy: admins may subscribe to anything, a user to their own `notifications:{id}`,
/// everyone to channels starting with one of the public prefixes (e.g. `public:`).
#[derive(Clone, Debug, Default)]
pub struct PrefixPolicy {
    /// Prefixes of channels anyone authenticated may subscribe to.
    pub public_prefixes: Vec<String>,
}

impl ChannelPolicy for PrefixPolicy {
    fn may_subscribe(&self, who: &WsIdentity, channel: &str) -> bool {
        who.is_admin
            || channel.strip_prefix(NOTIFICATIONS_PREFIX) == Some(who.user_id.as_str())
            || self.public_prefixes.iter().any(|p| channel.starts_with(p.as_str()))
    }
}

/// Subscribers past which a publish from the HTTP endpoint fans out on the blocking pool.
const BLOCKING_FANOUT: usize = 1024;

/// Prefix of each user's own notification channel.
pub const NOTIFICATIONS_PREFIX: &str = "notifications:";

/// The notification channel of `user_id`.
pub fn notifications_channel(user_id: &str) -> String {
    format!("{NOTIFICATIONS_PREFIX}{user_id}")
}

/// Settings of the WebSocket layer.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Frames a connection may have waiting before it is a slow consumer (closed with 4008).
    pub queue_capacity: usize,
    /// Keepalive: a ping every interval; a connection silent for a whole interval after a ping is closed.
    pub ping_interval: Duration,
    /// Largest message (and frame) accepted from a client.
    pub max_message_bytes: usize,
    /// Most bytes one read takes from a client's socket; the buffer exists only while a client's bytes
    /// are pending (it grows past this only to complete one larger frame, up to `max_message_bytes`).
    pub read_buffer_bytes: usize,
    /// Unused since connections write frames straight from the hub's queue (no write buffer); kept so
    /// existing configurations still build.
    pub write_buffer_bytes: usize,
    /// Unused (see `write_buffer_bytes`): the outbound bound is `queue_capacity` frames.
    pub max_write_buffer_bytes: usize,
    /// Time allowed to deliver a close frame (and read the client's) before the socket is dropped.
    pub close_timeout: Duration,
    /// Channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Bad requests (malformed, denied, unknown) a connection may send before it is closed with 1008.
    pub max_bad_requests: u32,
    /// Most presence entries one request returns.
    pub max_presence: usize,
    /// Publishers write a frame straight to an idle connection's socket (no task wake-up) instead of
    /// queueing it for the connection's batched flush. Off by default: on loopback with 15,000
    /// subscribers the per-frame syscalls cost more than the wake-ups they save (DOCS-ws.md).
    pub direct_writes: bool,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            ping_interval: Duration::from_secs(25),
            max_message_bytes: 64 << 10,
            read_buffer_bytes: 4 << 10,
            write_buffer_bytes: 8 << 10,
            max_write_buffer_bytes: 256 << 10,
            close_timeout: Duration::from_secs(5),
            max_subscriptions: 64,
            max_bad_requests: 32,
            max_presence: 1000,
            direct_writes: false,
        }
    }
}

struct WsInner {
    cfg: WsConfig,
    hub: Hub,
    auth: Arc<dyn WsAuthenticator>,
    policy: Arc<dyn ChannelPolicy>,
    next_id: AtomicU64,
    live: AtomicU64,
    read_buffers: AtomicUsize,
    connections: metrics::Gauge,
    /// Set once: the close code and reason every connection ends with.
    shutdown: tokio::sync::watch::Sender<Option<(u16, &'static str)>>,
}

/// Everything the WebSocket routes need. Cheap to clone.
#[derive(Clone)]
pub struct WsState {
    inner: Arc<WsInner>,
}

impl std::fmt::Debug for WsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsState").field("cfg", &self.inner.cfg).finish_non_exhaustive()
    }
}

impl WsState {
    /// State over `hub` (build it with [`json_encoder`]), an authenticator and a channel policy.
    pub fn new(cfg: WsConfig, hub: Hub, auth: Arc<dyn WsAuthenticator>, policy: Arc<dyn ChannelPolicy>) -> Self {
        let (shutdown, _) = tokio::sync::watch::channel(None);
        Self {
            inner: Arc::new(WsInner {
                cfg,
                hub,
                auth,
                policy,
                next_id: AtomicU64::new(1),
                live: AtomicU64::new(0),
                read_buffers: AtomicUsize::new(0),
                connections: metrics::gauge!("troupe_ws_connections"),
                shutdown,
            }),
        }
    }

    /// The hub connections subscribe to.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> u64 {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Bytes the open connections hold in read buffers right now (0 when every connection is idle: a
    /// connection allocates its read buffer only while a client's bytes are pending).
    pub fn read_buffer_bytes(&self) -> usize {
        self.inner.read_buffers.load(Ordering::Relaxed)
    }

    /// Close every connection with 1001 ("server shutting down"); connections upgraded afterwards are
    /// closed the same way at once. Each finishes its close handshake within `close_timeout`.
    pub fn shutdown(&self) {
        self.close_all(conn::CLOSE_GOING_AWAY, "server shutting down");
    }

    /// Close every connection with 1012 ("service restart": reconnect, and the load balancer picks
    /// another node), as [`shutdown`](Self::shutdown) does otherwise: the node is draining out of its
    /// cluster and clients should not wait for it.
    pub fn drain(&self) {
        self.close_all(conn::CLOSE_RECONNECT, "node draining: reconnect to another node");
    }

    fn close_all(&self, code: u16, reason: &'static str) {
        // The first reason wins: a drain that turns into a shutdown keeps telling clients to reconnect.
        self.inner.shutdown.send_if_modified(|now| {
            let first = now.is_none();
            if first {
                *now = Some((code, reason));
            }
            first
        });
    }

    fn authenticate(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<WsIdentity, WsAuthError> {
        let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let token = bearer.or(query_token).filter(|t| !t.is_empty()).ok_or(WsAuthError::Missing)?;
        self.inner.auth.authenticate(token)
    }
}

/// The frame encoder the hub must use for WebSocket clients: a complete WebSocket text frame
/// (header included, unmasked) carrying `{"channel":…,"offset":N,"data":…}` with `data` embedded raw
/// (it must be a JSON document; bytes that are not UTF-8 are sent as a JSON string instead). Runs
/// once per publish; the same bytes go to every socket.
pub fn json_encoder() -> Encoder {
    Arc::new(|channel: &str, offset: u64, data: &[u8]| {
        frame::encode(frame::TEXT, data.len() + channel.len() + 48, |out| {
            out.extend_from_slice(b"{\"channel\":");
            write_json_str(out, channel);
            // Writing into a Vec cannot fail.
            let _ = write!(out, ",\"offset\":{offset}");
            out.extend_from_slice(b",\"data\":");
            match std::str::from_utf8(data) {
                Ok(s) if !s.trim().is_empty() => out.extend_from_slice(data),
                Ok(_) => out.extend_from_slice(b"null"),
                Err(_) => write_json_str(out, &String::from_utf8_lossy(data)),
            }
            out.push(b'}');
        })
    })
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A valid channel name: 1–128 characters of `A-Z a-z 0-9 : _ . @ -`.
pub fn valid_channel(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-'))
}

/// The WebSocket and channel routes over `ws`, to merge into the node's router.
pub fn routes<S: Clone + Send + Sync + 'static>(ws: WsState) -> Router<S> {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/api/v1/channels/{name}/presence", get(presence))
        .route("/api/v1/channels/{name}/publish", post(publish))
        .with_state(ws)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
    limit: Option<usize>,
}

fn query_token(q: &Result<Query<TokenQuery>, QueryRejection>) -> Option<&str> {
    q.as_ref().ok().and_then(|q| q.0.token.as_deref())
}

/// True if the comma-separated header `name` has the token `token` (case-insensitive).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The RFC 6455 handshake, answered here: the connection then takes its TCP stream back from hyper
/// (`conn::run`), so it holds no HTTP or WebSocket library buffers while idle.
async fn upgrade(State(ws): State<WsState>, mut req: Request) -> Result<Response, ApiError> {
    let query = Query::<TokenQuery>::try_from_uri(req.uri());
    let who = ws.authenticate(req.headers(), query_token(&query))?;
    let headers = req.headers();
    if req.version() != Version::HTTP_11 {
        return Err(ApiError::BadRequest("WebSocket upgrades need HTTP/1.1".into()));
    }
    if !header_has(headers, header::CONNECTION, "upgrade") || !header_has(headers, header::UPGRADE, "websocket") {
        return Err(ApiError::BadRequest("`Connection: upgrade` and `Upgrade: websocket` are required".into()));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(ApiError::BadRequest("`Sec-WebSocket-Version: 13` is required".into()));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::BadRequest("`Sec-WebSocket-Key` is missing".into()));
    };
    let accept = derive_accept_key(key.as_bytes());
    if req.extensions().get::<hyper::upgrade::OnUpgrade>().is_none() {
        return Err(ApiError::BadRequest("this connection cannot be upgraded".into()));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
        };
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => conn::run(ws, who, parts.io.into_inner(), parts.read_buf).await,
            // Only a server other than axum::serve over a TcpListener gets here (TLS, a custom
            // connection builder): the connection is dropped rather than served without its socket.
            Err(_) => tracing::warn!("websocket upgrade over a connection that is not a plain TCP stream; dropped"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(resp)
}

#[derive(Serialize)]
struct PresenceEntry {
    user_id: String,
    connection_id: u64,
}

#[derive(Serialize)]
struct PresenceBody {
    channel: String,
    count: usize,
    subscribers: Vec<PresenceEntry>,
}

/// Who is subscribed to a channel; visible to whoever may subscribe to it.
async fn presence(
    State(ws): State<WsState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<PresenceBody>, ApiError> {
    let who = ws.authenticate(&headers, query_token(&query))?;
    if !valid_channel(&name) {
        return Err(ApiError::BadRequest("invalid channel name".into()));
    }
    if !ws.inner.policy.may_subscribe(&who, &name) {
        return Err(ApiError::Forbidden(format!("no access to channel {name}")));
    }
    let limit = query.ok().and_then(|q| q.0.limit).unwrap_or(ws.inner.cfg.max_presence).min(ws.inner.cfg.max_presence);
    let subscribers: Vec<PresenceEntry> = ws
        .inner
        .hub
        .presence(&name, limit)
        .into_iter()
        .map(|p| PresenceEntry { user_id: p.user_id.to_string(), connection_id: p.connection_id })
        .collect();
    let count = ws.inner.hub.subscriber_count(&name);
    Ok(Json(PresenceBody { channel: name, count, subscribers }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    data: serde_json::Value,
}

#[derive(Serialize)]
struct Published {
    channel: String,
    offset: u64,
}

/// Publish `{data}` on a channel (admins only).
async fn publish(
    State(ws): State<WsState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let who = ws.authenticate(&headers, query_token(&query))?;
    if !who.is_admin {
        return Err(ApiError::Forbidden("publishing requires the admin role".into()));
    }
    if !valid_channel(&name) {
        return Err(ApiError::BadRequest("invalid channel name".into()));
    }
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let data = serde_json::to_vec(&body.data).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = ws.inner.cfg.max_message_bytes.saturating_sub(name.len() + 64);
    if data.len() > limit {
        return Err(ApiError::BadRequest(format!("data is {} bytes; at most {limit} fit in one frame", data.len())));
    }
    let hub = ws.inner.hub.clone();
    let data = Bytes::from(data);
    // A fan-out to thousands of queues takes milliseconds: keep it off the async workers.
    let offset = if hub.subscriber_count(&name) > BLOCKING_FANOUT {
        let channel = name.clone();
        tokio::task::spawn_blocking(move || hub.publish(&channel, data))
            .await
            .map_err(|_| ApiError::Actors(troupe_actors::Error::Stopped { service: "channels".into() }))?
    } else {
        hub.publish(&name, data)
    };
    Ok(Json(Published { channel: name, offset }))
}

#[cfg(test)]
mod tests;
