//! Channels: named fan-out streams with per-channel offsets, bounded history and presence. The [`Hub`]
//! creates a channel on first use; [`Hub::publish`] gives each message the channel's next offset,
//! encodes the outbound frame **once** through the injected [`Encoder`], keeps it in the channel's
//! history and hands the same [`Bytes`] to every [`Subscriber`]'s bounded queue. A subscriber whose
//! queue is full is a slow consumer: it is removed from every channel and its queue is closed with
//! [`CloseReason::Slow`] (the transport then closes the connection, WebSocket code 4008).
//!
//! The hub is transport-agnostic: it knows neither JSON nor HTTP; the gateway supplies the encoder and
//! drains each subscriber's queue into its socket. A subscriber may carry a [`DirectWrite`] (a
//! non-blocking write to its socket, [`Subscriber::with_writer`]): then a frame published while its
//! queue is empty is written by the publisher at once, under the queue lock, and only what the socket
//! does not take is queued (the connection drains it with [`Subscriber::flush`]); a partly written
//! frame stays at the head of the queue, even when the subscriber is closed as slow, so the stream is
//! never cut inside a frame. Concurrency: the channel map is sharded; each channel
//! has a small `state` lock (offsets, history, the subscriber set) and a `fanout` lock that orders
//! deliveries. A publisher takes the fan-out lock before releasing the state lock, so deliveries happen
//! in offset order while subscribes, unsubscribes and presence reads of the same channel never wait for
//! a fan-out. Deliveries go to an immutable snapshot (`Arc<[Subscriber]>`) rebuilt only when the set
//! changed since the previous publish. A subscribe registers, acknowledges and replays history under the
//! state lock, so a message published concurrently is delivered exactly once: either in the replay (its
//! offset was taken before the subscribe) or live (after).
//!
//! Offsets start, for each channel incarnation, at the wall clock in microseconds (unless
//! [`HubConfig::offsets_from_clock`] is off), so an offset a client kept from an earlier incarnation
//! (node restart, channel expired) never matches a different message: it gets a resync instead.
//!
//! Collaborators: tokio (`Notify`, `Instant`), metrics (`troupe_ws_*`), the gateway (`gateway::ws`,
//! which encodes frames and owns the sockets) and, later, the cluster relay ([`Relay`]).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Encodes one outbound frame: `(channel, offset, data) → bytes`. Called once per publish.
pub type Encoder = Arc<dyn Fn(&str, u64, &[u8]) -> Bytes + Send + Sync>;

/// Extra room a subscriber queue grants frames the connection adds itself (acks, pongs, errors).
const CONTROL_SLACK: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings of a [`Hub`].
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Messages kept per channel for replay (0 = no history).
    pub history_len: usize,
    /// Age after which a message leaves the history (`None` = count bound only).
    pub history_ttl: Option<Duration>,
    /// Number of shards of the channel map (rounded up to at least 1).
    pub shards: usize,
    /// Start each channel's offsets at the wall clock in microseconds (true) or at 0 (false).
    pub offsets_from_clock: bool,
    /// Threads one publish's fan-out is spread over once a channel has at least
    /// [`PARALLEL_FANOUT_MIN`] subscribers (1 = the publishing thread only). Worth it when subscribers
    /// write to their sockets directly: the fan-out is then one socket write per subscriber.
    pub fanout_threads: usize,
}

/// Subscribers from which a fan-out is spread over [`HubConfig::fanout_threads`] threads.
pub const PARALLEL_FANOUT_MIN: usize = 2048;

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_len: 256,
            history_ttl: Some(Duration::from_secs(300)),
            shards: 32,
            offsets_from_clock: true,
            fanout_threads: 1,
        }
    }
}

/// Why a subscriber's queue was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The queue overflowed: the consumer did not keep up (WebSocket close 4008).
    Slow,
    /// The connection ended (closed by its owner through [`Hub::disconnect`]).
    Disconnected,
}

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue was full; the subscriber is now marked slow.
    #[error("subscriber queue full")]
    Full,
    /// The queue is closed.
    #[error("subscriber queue closed ({0:?})")]
    Closed(CloseReason),
}

/// What [`Subscriber::next_batch`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// This many frames were appended to the caller's buffer.
    Frames(usize),
    /// The queue is closed (any frames still queued were dropped).
    Closed(CloseReason),
}

/// Who is subscribed: one entry per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The authenticated user.
    pub user_id: Arc<str>,
    /// The connection (unique per hub user, e.g. a gateway connection counter).
    pub connection_id: u64,
}

/// The answer to a subscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeOutcome {
    /// The channel's latest offset at the time of the subscribe (live messages follow it).
    pub offset: u64,
    /// Messages replayed from history (after `since`).
    pub replayed: usize,
    /// True when `since` was given but the history no longer covers it (or it came from another
    /// incarnation of the channel): nothing was replayed and the client must refetch its state.
    pub resync: bool,
}

/// A summary of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Latest offset.
    pub offset: u64,
    /// Subscribed connections.
    pub subscribers: usize,
    /// Messages held for replay.
    pub history: usize,
}

/// Cross-node seam: told about every local publish (not about messages it delivered itself through
/// [`Hub::deliver_relayed`]). The cluster issue implements it.
pub trait Relay: Send + Sync + 'static {
    /// A message was published on this node.
    fn on_local_publish(&self, channel: &str, offset: u64, data: &Bytes);
}

// ---------------------------------------------------------------------------------------------------
// Subscriber: one connection's bounded outbound queue.

/// A connection's socket as the hub may write to it directly: a non-blocking write. The transport
/// implements it (the gateway over its `TcpStream`); the hub only calls it under the subscriber's queue
/// lock, when nothing is queued, so direct writes and queued frames keep one order.
pub trait DirectWrite: Send + Sync + 'static {
    /// Write a prefix of `buf` without blocking: `Ok(n)` bytes were taken, `Err(WouldBlock)` none.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;

    /// Write a prefix of the concatenation of `bufs` without blocking (default: the first buffer).
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        bufs.first().map_or(Ok(0), |b| self.try_write(b))
    }
}

/// What [`Subscriber::flush`] did.
#[derive(Debug)]
pub enum Flush {
    /// Every queued byte was written.
    Drained,
    /// The socket would block with bytes still queued: wait until it is writable, then flush again.
    Blocked,
    /// The queue is closed and its last partly written frame (if any) is complete on the wire.
    Closed(CloseReason),
    /// The writer failed (the connection is gone).
    Failed(io::Error),
}

/// Most buffers one vectored write hands the writer.
const MAX_IOV: usize = 64;

struct Queue {
    frames: VecDeque<Bytes>,
    closed: Option<CloseReason>,
    /// The first queued frame is the unwritten rest of a frame partly written already: it must go out
    /// before anything else (even a close frame) or the stream is corrupt.
    partial: bool,
    writer: Option<Arc<dyn DirectWrite>>,
    /// Publishers write to `writer` themselves while nothing is queued.
    direct: bool,
}

impl Queue {
    /// Drop the queued frames, but keep the rest of a partly written one.
    fn clear(&mut self) {
        if self.partial {
            self.frames.truncate(1);
        } else {
            self.frames = VecDeque::new();
        }
    }

    /// The writer took `n` bytes from the front of the queue.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front_mut() else { return };
            if n >= front.len() {
                n -= front.len();
                self.frames.pop_front();
                self.partial = false;
            } else {
                *front = front.slice(n..);
                self.partial = true;
                return;
            }
        }
    }
}

struct SubscriberInner {
    connection_id: u64,
    user_id: Arc<str>,
    capacity: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    channels: Mutex<Vec<Arc<Channel>>>,
}

/// One connection's handle: a bounded queue of outbound frames shared by every channel it subscribes
/// to. Cheap to clone; the hub holds clones while subscribed, the connection drains it.
#[derive(Clone)]
pub struct Subscriber {
    inner: Arc<SubscriberInner>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("connection_id", &self.inner.connection_id)
            .field("user_id", &self.inner.user_id)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber for connection `connection_id` of `user_id` whose queue holds `capacity` frames.
    pub fn new(connection_id: u64, user_id: impl Into<Arc<str>>, capacity: usize) -> Self {
        Self::build(connection_id, user_id.into(), capacity, None, false)
    }

    /// Like [`new`](Self::new), over a socket the connection drains its queue into with
    /// [`flush`](Self::flush) (vectored writes of everything queued). With `direct`, a publisher also
    /// writes a frame straight to `writer` while nothing is queued (no wake-up of the connection) and
    /// queues only what the socket does not take.
    pub fn with_writer(
        connection_id: u64,
        user_id: impl Into<Arc<str>>,
        capacity: usize,
        writer: Arc<dyn DirectWrite>,
        direct: bool,
    ) -> Self {
        Self::build(connection_id, user_id.into(), capacity, Some(writer), direct)
    }

    fn build(
        connection_id: u64,
        user_id: Arc<str>,
        capacity: usize,
        writer: Option<Arc<dyn DirectWrite>>,
        direct: bool,
    ) -> Self {
        Self {
            inner: Arc::new(SubscriberInner {
                connection_id,
                user_id,
                capacity: capacity.max(1),
                queue: Mutex::new(Queue { frames: VecDeque::new(), closed: None, partial: false, writer, direct }),
                notify: Notify::new(),
                channels: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The connection id.
    pub fn connection_id(&self) -> u64 {
        self.inner.connection_id
    }

    /// The user id.
    pub fn user_id(&self) -> &Arc<str> {
        &self.inner.user_id
    }

    /// Frames waiting to be written.
    pub fn queued(&self) -> usize {
        lock(&self.inner.queue).frames.len()
    }

    /// Channels this subscriber is subscribed to.
    pub fn subscriptions(&self) -> usize {
        lock(&self.inner.channels).len()
    }

    /// Why the queue is closed, if it is.
    pub fn closed(&self) -> Option<CloseReason> {
        lock(&self.inner.queue).closed
    }

    /// Queue a frame of the connection's own (an ack, a pong, an error). It may exceed the live
    /// capacity by a small slack; past that the subscriber is slow.
    pub fn push_control(&self, frame: Bytes) -> Result<(), PushError> {
        self.push(frame, CONTROL_SLACK)
    }

    /// Queue `frame` if fewer than `capacity + slack` frames wait; otherwise mark the subscriber slow,
    /// drop its queued frames and wake the connection.
    fn push(&self, frame: Bytes, slack: usize) -> Result<(), PushError> {
        let mut q = lock(&self.inner.queue);
        if let Some(reason) = q.closed {
            return Err(PushError::Closed(reason));
        }
        if q.frames.len() >= self.inner.capacity + slack {
            q.closed = Some(CloseReason::Slow);
            q.clear();
            drop(q);
            self.inner.notify.notify_one();
            return Err(PushError::Full);
        }
        let was_empty = q.frames.is_empty();
        let mut frame = frame;
        if was_empty
            && q.direct
            && let Some(w) = &q.writer
        {
            match w.try_write(&frame) {
                Ok(n) if n >= frame.len() => return Ok(()),
                Ok(n) => {
                    q.partial = n > 0;
                    frame = frame.slice(n..);
                }
                // WouldBlock, or an error the connection sees at its next flush.
                Err(_) => {}
            }
        }
        q.frames.push_back(frame);
        drop(q);
        if was_empty {
            self.inner.notify.notify_one();
        }
        Ok(())
    }

    /// Close the queue (idempotent; the first reason wins). Returns true if this call closed it.
    fn close(&self, reason: CloseReason) -> bool {
        let mut q = lock(&self.inner.queue);
        if q.closed.is_some() {
            return false;
        }
        q.closed = Some(reason);
        q.clear();
        drop(q);
        self.inner.notify.notify_one();
        true
    }

    /// Write queued frames to the writer given at [`with_writer`](Self::with_writer), in batches of
    /// vectored writes, until the queue is empty or the socket would block. Never blocks. After the
    /// queue is closed it still writes the rest of a partly written frame, then reports
    /// [`Flush::Closed`]: the transport may then write its own close frame.
    pub fn flush(&self) -> Flush {
        let mut q = lock(&self.inner.queue);
        let Some(w) = q.writer.clone() else {
            return match q.closed {
                Some(reason) => Flush::Closed(reason),
                None if q.frames.is_empty() => Flush::Drained,
                None => Flush::Blocked,
            };
        };
        while !q.frames.is_empty() {
            let iov: Vec<io::IoSlice<'_>> = q.frames.iter().take(MAX_IOV).map(|f| io::IoSlice::new(f)).collect();
            let written = if iov.len() == 1 { w.try_write(&iov[0]) } else { w.try_write_vectored(&iov) };
            drop(iov);
            match written {
                Ok(0) => {
                    q.writer = None;
                    return Flush::Failed(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => q.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) => {
                    q.writer = None;
                    return Flush::Failed(e);
                }
            }
        }
        if q.frames.capacity() > 4 * self.inner.capacity.max(16) {
            q.frames.shrink_to(self.inner.capacity);
        }
        match q.closed {
            Some(reason) => {
                // Nothing will be written through the hub again: release the socket (a channel's
                // subscriber snapshot may hold this subscriber until its next publish).
                q.writer = None;
                Flush::Closed(reason)
            }
            None => Flush::Drained,
        }
    }

    /// Forget the writer given at [`with_writer`](Self::with_writer) (the connection is ending; later
    /// frames are queued, and dropped with the subscriber). Idempotent.
    pub fn detach_writer(&self) {
        lock(&self.inner.queue).writer = None;
    }

    /// True while the subscriber writes through a [`DirectWrite`].
    pub fn has_writer(&self) -> bool {
        lock(&self.inner.queue).writer.is_some()
    }

    /// Wait until the queue may need a [`flush`](Self::flush) (frames were queued, or it was closed).
    /// Cancel-safe; a wake-up may be spurious.
    pub async fn wait(&self) {
        {
            let q = lock(&self.inner.queue);
            if q.closed.is_some() || !q.frames.is_empty() {
                return;
            }
        }
        self.inner.notify.notified().await;
    }

    /// Wait until frames are queued (moves all of them to `out`) or the queue is closed. Cancel-safe.
    pub async fn next_batch(&self, out: &mut Vec<Bytes>) -> Batch {
        loop {
            {
                let mut q = lock(&self.inner.queue);
                if let Some(reason) = q.closed {
                    return Batch::Closed(reason);
                }
                if !q.frames.is_empty() {
                    let n = q.frames.len();
                    out.extend(q.frames.drain(..));
                    if q.frames.capacity() > 4 * self.inner.capacity.max(16) {
                        q.frames.shrink_to(self.inner.capacity);
                    }
                    return Batch::Frames(n);
                }
            }
            self.inner.notify.notified().await;
        }
    }

    /// Resolve once the queue is closed (for a writer blocked on a slow socket). Cancel-safe.
    pub async fn wait_closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = lock(&self.inner.queue).closed {
                return reason;
            }
            self.inner.notify.notified().await;
        }
    }

    fn same(&self, other: &Subscriber) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

// ---------------------------------------------------------------------------------------------------
// Channel.

struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

struct ChannelState {
    /// Latest assigned offset.
    last: u64,
    /// Every offset up to and including `floor` is gone from history; all after it are kept.
    floor: u64,
    history: VecDeque<Entry>,
    subs: HashMap<u64, Subscriber>,
    snapshot: Arc<[Subscriber]>,
    dirty: bool,
    dead: bool,
}

struct Channel {
    name: Arc<str>,
    state: Mutex<ChannelState>,
    fanout: Mutex<()>,
}

impl ChannelState {
    fn prune(&mut self, cfg: &HubConfig, now: Instant) {
        while self.history.len() > cfg.history_len {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.offset;
            }
        }
        if let Some(ttl) = cfg.history_ttl {
            while self.history.front().is_some_and(|e| now.saturating_duration_since(e.at) > ttl) {
                if let Some(e) = self.history.pop_front() {
                    self.floor = e.offset;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Hub.

struct Metrics {
    deliveries: metrics::Counter,
    slow: metrics::Counter,
    publishes: metrics::Counter,
    channels: metrics::Gauge,
    subscriptions: metrics::Gauge,
}

/// One shard of the channel map.
type Shard = RwLock<HashMap<Arc<str>, Arc<Channel>>>;

struct HubInner {
    cfg: HubConfig,
    encoder: Encoder,
    relay: Option<Arc<dyn Relay>>,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    metrics: Metrics,
    deliveries: AtomicU64,
    slow_total: AtomicU64,
}

/// The channel hub. Cheap to clone (all clones share the channels).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("cfg", &self.inner.cfg).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub encoding frames with `encoder`. Metric handles are resolved here: install the recorder
    /// first.
    pub fn new(cfg: HubConfig, encoder: Encoder) -> Self {
        Self::build(cfg, encoder, None)
    }

    /// A hub that also tells `relay` about every local publish.
    pub fn with_relay(cfg: HubConfig, encoder: Encoder, relay: Arc<dyn Relay>) -> Self {
        Self::build(cfg, encoder, Some(relay))
    }

    fn build(cfg: HubConfig, encoder: Encoder, relay: Option<Arc<dyn Relay>>) -> Self {
        let shards = (0..cfg.shards.max(1)).map(|_| RwLock::new(HashMap::new())).collect();
        Self {
            inner: Arc::new(HubInner {
                cfg,
                encoder,
                relay,
                hasher: std::collections::hash_map::RandomState::new(),
                shards,
                metrics: Metrics {
                    deliveries: metrics::counter!("troupe_ws_deliveries_total"),
                    slow: metrics::counter!("troupe_ws_slow_consumers_total"),
                    publishes: metrics::counter!("troupe_ws_publishes_total"),
                    channels: metrics::gauge!("troupe_ws_channels"),
                    subscriptions: metrics::gauge!("troupe_ws_subscriptions"),
                },
                deliveries: AtomicU64::new(0),
                slow_total: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.cfg
    }

    fn shard(&self, name: &str) -> &Shard {
        let h = self.inner.hasher.hash_one(name) as usize;
        &self.inner.shards[h % self.inner.shards.len()]
    }

    fn lookup(&self, name: &str) -> Option<Arc<Channel>> {
        self.shard(name).read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    fn get_or_create(&self, name: &str) -> Arc<Channel> {
        if let Some(ch) = self.lookup(name) {
            return ch;
        }
        let mut map = self.shard(name).write().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = map.get(name) {
            return ch.clone();
        }
        let base = if self.inner.cfg.offsets_from_clock {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
        } else {
            0
        };
        let name: Arc<str> = name.into();
        let ch = Arc::new(Channel {
            name: name.clone(),
            state: Mutex::new(ChannelState {
                last: base,
                floor: base,
                history: VecDeque::new(),
                subs: HashMap::new(),
                snapshot: Arc::from(Vec::new()),
                dirty: false,
                dead: false,
            }),
            fanout: Mutex::new(()),
        });
        map.insert(name, ch.clone());
        self.inner.metrics.channels.increment(1.0);
        ch
    }

    /// Publish `data` on `channel` (created if needed); returns its offset. The frame is encoded once
    /// and the same bytes are queued to every subscriber; full queues mark their subscribers slow.
    /// Synchronous: fan-outs of one channel run one at a time (offset order), 50–75 ns per
    /// subscriber without contention (`wsload hub-bench`: 0.7–1.1 ms for 15,000), so a broadcast to
    /// thousands belongs on the blocking pool, not in an actor handler.
    pub fn publish(&self, channel: &str, data: Bytes) -> u64 {
        let offset = self.fan_out(channel, &data);
        if let Some(relay) = &self.inner.relay {
            relay.on_local_publish(channel, offset, &data);
        }
        offset
    }

    /// Deliver a message that another node published (no relay call); returns its local offset.
    pub fn deliver_relayed(&self, channel: &str, data: Bytes) -> u64 {
        self.fan_out(channel, &data)
    }

    fn fan_out(&self, channel: &str, data: &[u8]) -> u64 {
        loop {
            let ch = self.get_or_create(channel);
            let mut st = lock(&ch.state);
            if st.dead {
                continue;
            }
            st.last += 1;
            let offset = st.last;
            let frame = (self.inner.encoder)(&ch.name, offset, data);
            let now = Instant::now();
            if self.inner.cfg.history_len > 0 {
                st.history.push_back(Entry { offset, at: now, frame: frame.clone() });
            } else {
                st.floor = offset;
            }
            st.prune(&self.inner.cfg, now);
            if st.dirty {
                st.snapshot = st.subs.values().cloned().collect();
                st.dirty = false;
            }
            let snapshot = st.snapshot.clone();
            // Take the fan-out lock before letting the next publisher take an offset: deliveries
            // stay in offset order, and subscribers never wait for a fan-out.
            let order = lock(&ch.fanout);
            drop(st);
            let (delivered, slow) = self.deliver_all(&snapshot, &frame);
            drop(order);
            self.inner.deliveries.fetch_add(delivered, Ordering::Relaxed);
            self.inner.metrics.deliveries.increment(delivered);
            self.inner.metrics.publishes.increment(1);
            for sub in &slow {
                self.remove_everywhere(sub);
            }
            return offset;
        }
    }

    /// Push `frame` to every subscriber of `snapshot` (on several threads if configured and large
    /// enough); returns the deliveries and the subscribers to remove.
    fn deliver_all(&self, snapshot: &[Subscriber], frame: &Bytes) -> (u64, Vec<Subscriber>) {
        let threads = self.inner.cfg.fanout_threads.max(1);
        if threads == 1 || snapshot.len() < PARALLEL_FANOUT_MIN {
            return self.deliver(snapshot, frame);
        }
        let chunk = snapshot.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut others = Vec::new();
            let mut inline = Vec::new();
            for part in snapshot.chunks(chunk).skip(1) {
                match std::thread::Builder::new().spawn_scoped(scope, || self.deliver(part, frame)) {
                    Ok(h) => others.push(h),
                    // No thread to be had: deliver this part here.
                    Err(_) => inline.push(part),
                }
            }
            let (mut delivered, mut slow) = self.deliver(&snapshot[..chunk.min(snapshot.len())], frame);
            for part in inline {
                let (d, s) = self.deliver(part, frame);
                delivered += d;
                slow.extend(s);
            }
            for h in others {
                if let Ok((d, s)) = h.join() {
                    delivered += d;
                    slow.extend(s);
                }
            }
            (delivered, slow)
        })
    }

    fn deliver(&self, subs: &[Subscriber], frame: &Bytes) -> (u64, Vec<Subscriber>) {
        let mut slow: Vec<Subscriber> = Vec::new();
        let mut delivered = 0u64;
        for sub in subs {
            match sub.push(frame.clone(), 0) {
                Ok(()) => delivered += 1,
                Err(PushError::Full) => {
                    self.count_slow();
                    slow.push(sub.clone());
                }
                Err(PushError::Closed(_)) => slow.push(sub.clone()),
            }
        }
        (delivered, slow)
    }

    fn count_slow(&self) {
        self.inner.slow_total.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.slow.increment(1);
    }

    /// Subscribe `sub` to `channel` (created if needed) and replay the history after `since`.
    pub fn subscribe(&self, channel: &str, sub: &Subscriber, since: Option<u64>) -> SubscribeOutcome {
        self.subscribe_with(channel, sub, since, |_| None::<Bytes>)
    }

    /// Like [`subscribe`](Self::subscribe), and queue the frames `ack` returns before the replay and
    /// before any live message, so the client sees its acknowledgement first.
    pub fn subscribe_with<I>(
        &self,
        channel: &str,
        sub: &Subscriber,
        since: Option<u64>,
        ack: impl FnOnce(&SubscribeOutcome) -> I,
    ) -> SubscribeOutcome
    where
        I: IntoIterator<Item = Bytes>,
    {
        loop {
            let ch = self.get_or_create(channel);
            let mut st = lock(&ch.state);
            if st.dead {
                continue;
            }
            st.prune(&self.inner.cfg, Instant::now());
            let (resync, from) = match since {
                None => (false, st.last),
                Some(s) if s >= st.floor && s <= st.last => (false, s),
                Some(_) => (true, st.last),
            };
            let replay: Vec<Bytes> = st.history.iter().filter(|e| e.offset > from).map(|e| e.frame.clone()).collect();
            let outcome = SubscribeOutcome { offset: st.last, replayed: replay.len(), resync };
            if sub.closed().is_some() {
                return outcome;
            }
            if st.subs.insert(sub.connection_id(), sub.clone()).is_none() {
                st.dirty = true;
                lock(&sub.inner.channels).push(ch.clone());
                self.inner.metrics.subscriptions.increment(1.0);
            }
            let slack = replay.len() + CONTROL_SLACK;
            let mut overflow = false;
            for frame in ack(&outcome).into_iter().chain(replay) {
                if let Err(e) = sub.push(frame, slack) {
                    overflow = e == PushError::Full;
                    break;
                }
            }
            drop(st);
            if overflow {
                self.count_slow();
            }
            if sub.closed().is_some() {
                self.remove_everywhere(sub);
            }
            return outcome;
        }
    }

    /// Unsubscribe `sub` from `channel`; returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &str, sub: &Subscriber) -> bool {
        let Some(ch) = self.lookup(channel) else { return false };
        let removed = self.remove_from(&ch, sub);
        if removed {
            lock(&sub.inner.channels).retain(|c| !Arc::ptr_eq(c, &ch));
        }
        removed
    }

    fn remove_from(&self, ch: &Arc<Channel>, sub: &Subscriber) -> bool {
        let mut st = lock(&ch.state);
        let removed = match st.subs.get(&sub.connection_id()) {
            Some(s) if s.same(sub) => st.subs.remove(&sub.connection_id()).is_some(),
            _ => false,
        };
        if removed {
            st.dirty = true;
            self.inner.metrics.subscriptions.decrement(1.0);
        }
        let idle = removed && st.subs.is_empty() && st.history.is_empty();
        drop(st);
        if idle {
            self.remove_if_idle(ch);
        }
        removed
    }

    /// Remove `ch` from the map if it still has neither subscribers nor history (a channel nobody
    /// published to, such as the notification channel of a user who left, goes at once).
    fn remove_if_idle(&self, ch: &Arc<Channel>) {
        let mut map = self.shard(&ch.name).write().unwrap_or_else(PoisonError::into_inner);
        if !map.get(&ch.name).is_some_and(|c| Arc::ptr_eq(c, ch)) {
            return;
        }
        let mut st = lock(&ch.state);
        if st.subs.is_empty() && st.history.is_empty() {
            st.dead = true;
            drop(st);
            map.remove(&ch.name);
            self.inner.metrics.channels.decrement(1.0);
        }
    }

    fn remove_everywhere(&self, sub: &Subscriber) {
        let channels = std::mem::take(&mut *lock(&sub.inner.channels));
        for ch in &channels {
            self.remove_from(ch, sub);
        }
    }

    /// The connection ended: close its queue and remove it from every channel.
    pub fn disconnect(&self, sub: &Subscriber) {
        sub.close(CloseReason::Disconnected);
        self.remove_everywhere(sub);
    }

    /// Who is subscribed to `channel`, at most `limit` entries (in no particular order).
    pub fn presence(&self, channel: &str, limit: usize) -> Vec<Presence> {
        let Some(ch) = self.lookup(channel) else { return Vec::new() };
        let st = lock(&ch.state);
        st.subs
            .values()
            .take(limit)
            .map(|s| Presence { user_id: s.inner.user_id.clone(), connection_id: s.inner.connection_id })
            .collect()
    }

    /// Number of connections subscribed to `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.lookup(channel).map_or(0, |ch| lock(&ch.state).subs.len())
    }

    /// Offset, subscribers and history size of `channel`, if it exists.
    pub fn channel_info(&self, channel: &str) -> Option<ChannelInfo> {
        let ch = self.lookup(channel)?;
        let st = lock(&ch.state);
        Some(ChannelInfo { offset: st.last, subscribers: st.subs.len(), history: st.history.len() })
    }

    /// Number of live channels.
    pub fn channel_count(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    /// Deliveries made so far (frames queued by publishes).
    pub fn deliveries(&self) -> u64 {
        self.inner.deliveries.load(Ordering::Relaxed)
    }

    /// Subscribers closed as slow so far.
    pub fn slow_consumers(&self) -> u64 {
        self.inner.slow_total.load(Ordering::Relaxed)
    }

    /// Drop expired history and remove channels with neither subscribers nor history. Returns the
    /// number of channels removed. Run it periodically ([`spawn_sweeper`](Self::spawn_sweeper)).
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, ch| {
                let mut st = lock(&ch.state);
                st.prune(&self.inner.cfg, now);
                if st.subs.is_empty() && st.history.is_empty() {
                    st.dead = true;
                    removed += 1;
                    false
                } else {
                    true
                }
            });
        }
        self.inner.metrics.channels.decrement(removed as f64);
        removed
    }

    /// Sweep every `period` until the last clone of the hub is dropped.
    pub fn spawn_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<HubInner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Hub { inner }.sweep();
            }
        })
    }
}

#[cfg(test)]
mod tests;
