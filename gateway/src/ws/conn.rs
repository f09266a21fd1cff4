//! One WebSocket connection over the TCP stream it owns after the upgrade: a single task that reads
//! client frames, pings every `ping_interval`, flushes what the hub queued and closes with a code and
//! a reason. The hub's queue is its mailbox. A plain task rather than a ractor actor, by measurement
//! (`wsload mem-probe`): an idle tokio task costs 0.46 KiB of RSS, an idle ractor actor 10.6 KiB.
//!
//! Writes: the [`Subscriber`] holds the stream as a [`DirectWrite`]; this task drains the queue with
//! [`Subscriber::flush`] (everything queued in vectored writes) when woken or when the socket is
//! writable again. With `WsConfig::direct_writes` a publisher also writes a frame straight to the
//! socket while nothing is queued (no task wake-up) and only what the socket does not take is queued.
//! Every write happens under the subscriber's queue lock, so frames keep one order.
//! Reads: the task waits for readability with no buffer; the read buffer (at most `read_buffer_bytes`,
//! more only to complete one larger frame) exists only while bytes are pending.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use troupe_actors::channels::{CloseReason, DirectWrite, Flush, Subscriber};

use super::frame::{self, Incoming, Reader};
use super::{WsIdentity, WsState, notifications_channel, valid_channel};

/// Close code for a consumer that could not keep up.
pub(crate) const CLOSE_SLOW: u16 = 4008;
/// Close code for a connection that kept sending bad requests.
pub(crate) const CLOSE_POLICY: u16 = 1008;
/// Close code for keepalive timeouts and server shutdown.
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a node draining out of its cluster: "service restart", reconnect (elsewhere).
pub(crate) const CLOSE_RECONNECT: u16 = 1012;
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

/// The connection's socket, shared with its subscriber (which writes to it directly).
pub(crate) struct Wire(pub(crate) TcpStream);

impl DirectWrite for Wire {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
}

/// How the serve loop ended.
enum Ending {
    /// The server closes: send this close frame, then wait for the client's.
    Close(u16, &'static str),
    /// The client sent a close frame: answer it.
    Reply(Option<u16>),
    /// The socket is gone (EOF or an error).
    Gone,
}

struct Conn {
    ws: WsState,
    who: WsIdentity,
    sub: Subscriber,
    wire: Arc<Wire>,
    reader: Reader,
    /// What `reader` held at the last report to the state's read-buffer counter.
    reported: usize,
    bad: u32,
}

fn control(v: &serde_json::Value) -> Bytes {
    frame::text(&serde_json::to_vec(v).unwrap_or_default())
}

/// The connection's task. Setup runs before the future is built, so the future holds only what the
/// connection keeps.
pub(super) fn run(ws: WsState, who: WsIdentity, stream: TcpStream, pre_read: Bytes) -> impl Future<Output = ()> + Send {
    let id = ws.inner.next_id.fetch_add(1, Ordering::Relaxed);
    ws.inner.live.fetch_add(1, Ordering::Relaxed);
    ws.inner.connections.increment(1.0);
    let cfg = &ws.inner.cfg;
    let wire = Arc::new(Wire(stream));
    let sub = Subscriber::with_writer(id, who.user_id.as_str(), cfg.queue_capacity, wire.clone(), cfg.direct_writes);
    let mut reader = Reader::new(cfg.max_message_bytes, cfg.read_buffer_bytes);
    reader.extend(&pre_read);
    let mut conn = Conn { ws, who, sub, wire, reader, reported: 0, bad: 0 };
    conn.report();
    let own = notifications_channel(&conn.who.user_id);
    conn.subscribe(&own, None);
    connection(conn)
}

async fn connection(mut conn: Conn) {
    let ending = conn.serve().await;
    let ws = conn.ws.clone();
    conn.finish(ending).await;
    drop(conn);
    ws.inner.live.fetch_sub(1, Ordering::Relaxed);
    ws.inner.connections.decrement(1.0);
}

/// Write all of `buf` to the stream (waiting for writability).
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Conn {
    /// Run until the connection ends.
    async fn serve(&mut self) -> Ending {
        let period = self.ws.inner.cfg.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = self.ws.inner.shutdown.subscribe();
        if let Some((code, reason)) = *shutdown.borrow_and_update() {
            return Ending::Close(code, reason);
        }
        // Bytes hyper read past the upgrade request.
        if let Some(end) = self.parse() {
            return end;
        }
        let mut alive = true;
        // The socket refused queued bytes: wait for it to be writable (or for the queue to close).
        let mut blocked = false;
        loop {
            // Unbiased: under a steady stream of frames the reads (client ops, pongs) still get their turn.
            tokio::select! {
                r = self.wire.0.readable() => {
                    if r.is_err() {
                        return Ending::Gone;
                    }
                    match self.wire.0.try_read_buf(self.reader.buffer()) {
                        Ok(0) => return Ending::Gone,
                        Ok(_) => {
                            alive = true;
                            if let Some(end) = self.parse() {
                                return end;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.parse_done(),
                        Err(_) => return Ending::Gone,
                    }
                },
                () = self.sub.wait(), if !blocked => match self.flush() {
                    Ok(b) => blocked = b,
                    Err(end) => return end,
                },
                r = self.wire.0.writable(), if blocked => {
                    if r.is_err() {
                        return Ending::Gone;
                    }
                    match self.flush() {
                        Ok(b) => blocked = b,
                        Err(end) => return end,
                    }
                },
                reason = self.sub.wait_closed(), if blocked => return close_for(reason),
                _ = ping.tick() => {
                    if !alive {
                        return Ending::Close(CLOSE_GOING_AWAY, KEEPALIVE_TIMEOUT);
                    }
                    alive = false;
                    // A full queue closes the subscriber as slow; the loop sees it next.
                    let _ = self.sub.push_control(frame::ping());
                },
                Ok(()) = shutdown.changed() => {
                    if let Some((code, reason)) = *shutdown.borrow_and_update() {
                        return Ending::Close(code, reason);
                    }
                },
            }
        }
    }

    /// Write what is queued; `Ok(true)` when the socket would block with bytes left.
    fn flush(&self) -> Result<bool, Ending> {
        match self.sub.flush() {
            Flush::Drained => Ok(false),
            Flush::Blocked => Ok(true),
            Flush::Closed(reason) => Err(close_for(reason)),
            Flush::Failed(_) => Err(Ending::Gone),
        }
    }

    /// Handle every complete frame read so far; `Some` ends the connection.
    fn parse(&mut self) -> Option<Ending> {
        let end = loop {
            match self.reader.next() {
                Ok(None) => break None,
                Ok(Some(msg)) => {
                    if let Some(end) = self.incoming(msg) {
                        break Some(end);
                    }
                }
                Err(v) => break Some(Ending::Close(v.code, v.reason)),
            }
        };
        self.parse_done();
        end
    }

    fn parse_done(&mut self) {
        self.reader.compact();
        self.report();
    }

    /// Keep the state's count of read-buffer bytes current.
    fn report(&mut self) {
        let now = self.reader.allocated();
        if now != self.reported {
            let counter = &self.ws.inner.read_buffers;
            if now > self.reported {
                counter.fetch_add(now - self.reported, Ordering::Relaxed);
            } else {
                counter.fetch_sub(self.reported - now, Ordering::Relaxed);
            }
            self.reported = now;
        }
    }

    fn incoming(&mut self, msg: Incoming) -> Option<Ending> {
        match msg {
            Incoming::Text(text) => self.handle(&text),
            Incoming::Binary => self.bad("bad_request", "binary messages are not supported".into()),
            Incoming::Ping(payload) => {
                let _ = self.sub.push_control(frame::pong(&payload));
                None
            }
            Incoming::Pong => None,
            Incoming::Close(code) => Some(Ending::Reply(code)),
        }
    }

    /// Handle one text message; `Some` closes the connection.
    fn handle(&mut self, text: &str) -> Option<Ending> {
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

    fn push(&self, v: serde_json::Value) -> Option<Ending> {
        // A full queue closes the subscriber as slow; the serve loop sees it next.
        let _ = self.sub.push_control(control(&v));
        None
    }

    fn bad(&mut self, code: &str, message: String) -> Option<Ending> {
        self.bad += 1;
        self.push(json!({"op": "error", "code": code, "message": message}));
        (self.bad > self.ws.inner.cfg.max_bad_requests).then_some(Ending::Close(CLOSE_POLICY, "too many bad requests"))
    }

    /// Leave the hub, finish a partly written frame, then the close handshake (within the close
    /// timeout), and release the socket.
    async fn finish(&mut self, ending: Ending) {
        let id = self.sub.connection_id();
        self.ws.inner.hub.disconnect(&self.sub);
        let (close, wait_reply) = match ending {
            Ending::Gone => (None, false),
            Ending::Reply(code) => (Some(frame::close(code, "")), false),
            Ending::Close(code, reason) => {
                tracing::debug!(connection = id, code, reason, "closing websocket");
                // A peer that missed its pongs is presumably gone: send the close frame, do not wait.
                (Some(frame::close(Some(code), reason)), reason != KEEPALIVE_TIMEOUT)
            }
        };
        if let Some(close) = close {
            let _ =
                tokio::time::timeout(self.ws.inner.cfg.close_timeout, self.close_handshake(&close, wait_reply)).await;
        }
        self.sub.detach_writer();
        self.reader = Reader::new(0, 0);
        self.report();
    }

    async fn close_handshake(&mut self, close: &[u8], wait_reply: bool) {
        // The queue is closed: only the rest of a partly written frame may remain.
        loop {
            match self.sub.flush() {
                Flush::Blocked => {
                    if self.wire.0.writable().await.is_err() {
                        return;
                    }
                }
                Flush::Failed(_) => return,
                Flush::Drained | Flush::Closed(_) => break,
            }
        }
        if write_all(&self.wire.0, close).await.is_err() || !wait_reply {
            return;
        }
        // Read (and drop) until the client's close frame or the end of the stream.
        loop {
            if self.wire.0.readable().await.is_err() {
                return;
            }
            match self.wire.0.try_read_buf(self.reader.buffer()) {
                Ok(0) => return,
                Ok(_) => loop {
                    match self.reader.next() {
                        Ok(Some(Incoming::Close(_))) | Err(_) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            self.parse_done();
        }
    }
}

fn close_for(reason: CloseReason) -> Ending {
    match reason {
        CloseReason::Slow => Ending::Close(CLOSE_SLOW, "slow consumer: outbound queue full"),
        CloseReason::Disconnected => Ending::Close(CLOSE_GOING_AWAY, "disconnected"),
    }
}
