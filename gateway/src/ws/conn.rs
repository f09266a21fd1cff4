//! One WebSocket connection: a single task that reads client ops, drains its [`Subscriber`] queue into
//! the socket in batches (`feed` every queued frame, then one `flush`), pings every
//! `ping_interval`, and closes with a code and a reason. The hub's queue is its mailbox. A plain task
//! rather than a ractor actor, by measurement (`wsload mem-probe`): an idle tokio task costs 0.46 KiB
//! of RSS, an idle ractor actor 10.6 KiB — more than the whole 6 KB budget of an idle connection.

use std::sync::atomic::Ordering;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use troupe_actors::channels::{Batch, CloseReason, Subscriber};

use super::{WsIdentity, WsState, notifications_channel, valid_channel};

/// Close code for a consumer that could not keep up.
pub(crate) const CLOSE_SLOW: u16 = 4008;
/// Close code for a connection that kept sending bad requests.
pub(crate) const CLOSE_POLICY: u16 = 1008;
/// Close code for keepalive timeouts and server shutdown.
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
/// Close reason for a peer that missed its pong.
const KEEPALIVE_TIMEOUT: &str = "keepalive timeout";

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    Subscribe {
        channel: String,
        #[serde(default)]
        since: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    Ping,
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

struct Conn {
    ws: WsState,
    who: WsIdentity,
    sub: Subscriber,
    bad: u32,
}

fn control(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason: Utf8Bytes::from_static(reason) }
}

/// The connection's task. Setup runs before the future is built, so the future holds only what the
/// connection keeps (an async fn would also keep its `WebSocket` argument: 368 bytes per idle
/// connection).
pub(super) fn run(ws: WsState, who: WsIdentity, socket: WebSocket) -> impl Future<Output = ()> + Send {
    let id = ws.inner.next_id.fetch_add(1, Ordering::Relaxed);
    ws.inner.live.fetch_add(1, Ordering::Relaxed);
    ws.inner.connections.increment(1.0);
    let sub = Subscriber::new(id, who.user_id.as_str(), ws.inner.cfg.queue_capacity);
    let conn = Conn { ws, who, sub, bad: 0 };
    let own = notifications_channel(&conn.who.user_id);
    conn.subscribe(&own, None);
    let (sink, stream) = socket.split();
    connection(conn, sink, stream)
}

async fn connection(mut conn: Conn, mut sink: Sink, mut stream: Stream) {
    let ending = conn.serve(&mut sink, &mut stream).await;
    let (ws, sub, id) = (conn.ws.clone(), conn.sub.clone(), conn.sub.connection_id());
    let close_timeout = ws.inner.cfg.close_timeout;
    ws.inner.hub.disconnect(&sub);
    drop(conn);
    if let Some(frame) = ending {
        tracing::debug!(connection = id, code = frame.code, reason = %frame.reason, "closing websocket");
        // A peer that missed its pongs is presumably gone: try the close frame, do not wait for a reply.
        let dead_peer = frame.reason.as_str() == KEEPALIVE_TIMEOUT;
        // Deliver the close frame and wait for the client's reply, within the close timeout.
        let _ = tokio::time::timeout(close_timeout, async {
            if sink.send(Message::Close(Some(frame))).await.is_ok() && !dead_peer {
                while let Some(Ok(_)) = stream.next().await {}
            }
        })
        .await;
    } else {
        let _ = tokio::time::timeout(close_timeout, sink.close()).await;
    }
    ws.inner.live.fetch_sub(1, Ordering::Relaxed);
    ws.inner.connections.decrement(1.0);
}

impl Conn {
    /// Run until the connection ends; `Some(frame)` when the server closes it.
    async fn serve(&mut self, sink: &mut Sink, stream: &mut Stream) -> Option<CloseFrame> {
        let period = self.ws.inner.cfg.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = self.ws.inner.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return Some(close(CLOSE_GOING_AWAY, "server shutting down"));
        }
        let mut alive = true;
        let mut batch: Vec<Bytes> = Vec::new();
        loop {
            // Unbiased: under a steady stream of frames the reads (client ops, pongs) still get their turn.
            tokio::select! {
                b = self.sub.next_batch(&mut batch) => match b {
                    Batch::Frames(_) => {
                        tokio::select! {
                            r = write_batch(sink, &mut batch) => if r.is_err() { return None },
                            reason = self.sub.wait_closed() => return Some(close_for(reason)),
                        }
                        if batch.capacity() > 1024 {
                            batch = Vec::new();
                        }
                    }
                    Batch::Closed(reason) => return Some(close_for(reason)),
                },
                msg = stream.next() => {
                    alive = true;
                    match msg {
                        None | Some(Err(_)) => return None,
                        Some(Ok(Message::Text(text))) => {
                            if let Some(frame) = self.handle(text.as_str()) {
                                return Some(frame);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            if let Some(frame) = self.bad("bad_request", "binary messages are not supported".into()) {
                                return Some(frame);
                            }
                        }
                        Some(Ok(Message::Close(_))) => return None,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                },
                _ = ping.tick() => {
                    if !alive {
                        return Some(close(CLOSE_GOING_AWAY, KEEPALIVE_TIMEOUT));
                    }
                    alive = false;
                    tokio::select! {
                        r = sink.send(Message::Ping(Bytes::new())) => if r.is_err() { return None },
                        reason = self.sub.wait_closed() => return Some(close_for(reason)),
                    }
                },
                Ok(()) = shutdown.changed() => {
                    return Some(close(CLOSE_GOING_AWAY, "server shutting down"));
                },
            }
        }
    }

    /// Handle one text message; `Some(frame)` closes the connection.
    fn handle(&mut self, text: &str) -> Option<CloseFrame> {
        let op = match serde_json::from_str::<ClientOp>(text) {
            Ok(op) => op,
            Err(e) => return self.bad("bad_request", format!("malformed request: {e}")),
        };
        match op {
            ClientOp::Ping => self.push(json!({"op": "pong"})),
            ClientOp::Subscribe { channel, since } => {
                if !valid_channel(&channel) {
                    return self
                        .bad("invalid_channel", "channel names are 1-128 characters of A-Z a-z 0-9 : _ . @ -".into());
                }
                if !self.ws.inner.policy.may_subscribe(&self.who, &channel) {
                    return self.bad("forbidden", format!("not allowed to subscribe to {channel}"));
                }
                if self.sub.subscriptions() >= self.ws.inner.cfg.max_subscriptions {
                    let max = self.ws.inner.cfg.max_subscriptions;
                    return self.bad("too_many_subscriptions", format!("at most {max} subscriptions per connection"));
                }
                self.subscribe(&channel, since);
                None
            }
            ClientOp::Unsubscribe { channel } => {
                self.ws.inner.hub.unsubscribe(&channel, &self.sub);
                self.push(json!({"op": "unsubscribed", "channel": channel}))
            }
        }
    }

    fn subscribe(&self, channel: &str, since: Option<u64>) {
        self.ws.inner.hub.subscribe_with(channel, &self.sub, since, |o| {
            let subscribed = control(&json!({
                "op": "subscribed", "channel": channel, "offset": o.offset, "replayed": o.replayed
            }));
            let resync = o.resync.then(|| control(&json!({"op": "resync", "channel": channel, "offset": o.offset})));
            resync.into_iter().chain([subscribed])
        });
    }

    fn push(&self, v: serde_json::Value) -> Option<CloseFrame> {
        // A full queue closes the subscriber as slow; the serve loop sees it next.
        let _ = self.sub.push_control(control(&v));
        None
    }

    fn bad(&mut self, code: &str, message: String) -> Option<CloseFrame> {
        self.bad += 1;
        self.push(json!({"op": "error", "code": code, "message": message}));
        (self.bad > self.ws.inner.cfg.max_bad_requests).then(|| close(CLOSE_POLICY, "too many bad requests"))
    }
}

fn close_for(reason: CloseReason) -> CloseFrame {
    match reason {
        CloseReason::Slow => close(CLOSE_SLOW, "slow consumer: outbound queue full"),
        CloseReason::Disconnected => close(CLOSE_GOING_AWAY, "disconnected"),
    }
}

/// Feed every queued frame, then flush once.
async fn write_batch(sink: &mut Sink, batch: &mut Vec<Bytes>) -> Result<(), axum::Error> {
    for frame in batch.drain(..) {
        match Utf8Bytes::try_from(frame) {
            Ok(text) => sink.feed(Message::Text(text)).await?,
            Err(_) => tracing::warn!("dropped a frame that is not UTF-8"),
        }
    }
    sink.flush().await
}
