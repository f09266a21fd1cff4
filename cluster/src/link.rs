//! Bounded, batched links between nodes: the transport the rest of Troupe uses to cross the network.
//!
//! Every node runs one remotable **inbox** actor in the process group [`INBOX_GROUP`] (named
//! `<group>@<node id>`, which ractor_cluster mirrors onto every peer with its name, so a peer's inbox is
//! found by node id). Toward each peer a node keeps one **link**: a queue bounded by messages and by
//! bytes, drained by one sender task that packs every queued message (up to a frame size) into one
//! frame ([`frame`]: magic, version, postcard items) and sends it as *one* ractor_cluster remote call to
//! the peer's inbox. The inbox dispatches the frame's items to the handlers registered by port name and
//! then answers the call; at most `max_frames_in_flight` frames per peer await that answer. So a slow,
//! frozen or dead peer fills only our bounded queue (ractor_cluster's own queues stay unbounded but hold
//! at most those few frames), and [`Links::tell`] then fails fast with [`ClusterError::LinkFull`].
//!
//! Messages to one peer arrive in send order while its mesh session lasts. Frames that do not decode are
//! counted (`troupe_cluster_decode_failures_total`) and logged, never fatal. Handlers run inside the
//! inbox actor: they must be quick (hand long work to a task). Request/response ([`Links::call`]) rides
//! the same links with a correlation id and always has a deadline.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::error::{ClusterError, Result};
use crate::mesh::count_decode_failure;

pub(crate) mod frame;
mod queue;
#[cfg(test)]
pub(crate) mod tests;

use queue::{Outgoing, PeerQueue};

/// Process group of every node's inbox.
pub const INBOX_GROUP: &str = "troupe.cluster.inbox";
const FRAME_VARIANT: &str = "troupe.link.frame.v1";

/// Link bounds. The defaults suit a small cluster on a LAN.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Process group of the inboxes (tests use their own so links of parallel tests stay apart).
    pub group: String,
    /// Messages queued toward one peer before `tell` fails with `LinkFull`.
    pub max_queue_messages: usize,
    /// Bytes queued toward one peer before `tell` fails with `LinkFull`.
    pub max_queue_bytes: usize,
    /// Largest frame (a bigger single message travels alone).
    pub max_frame_bytes: usize,
    /// Frames sent to one peer and not yet answered by its inbox.
    pub max_frames_in_flight: usize,
    /// How long an unanswered frame holds its in-flight slot (a session that closes frees it at once).
    pub frame_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            group: INBOX_GROUP.to_owned(),
            max_queue_messages: 100_000,
            max_queue_bytes: 16 << 20,
            max_frame_bytes: 64 << 10,
            max_frames_in_flight: 4,
            frame_timeout: Duration::from_secs(30),
        }
    }
}

/// Handles one-way messages of a port: `(from node id, payload)`.
pub type Handler = Arc<dyn Fn(&str, Bytes) + Send + Sync>;
/// Handles requests of a port; answer through [`Request::reply`] (now or later, from any task).
pub type CallHandler = Arc<dyn Fn(Request) + Send + Sync>;

#[derive(Clone)]
enum Port {
    Tell(Handler),
    Call(CallHandler),
}

/// A request received by a call handler. Dropping it unanswered fails the caller's call at once.
pub struct Request {
    /// Calling node.
    pub from: String,
    /// Request payload.
    pub payload: Bytes,
    responder: Option<(Arc<Inner>, u64)>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("from", &self.from).field("len", &self.payload.len()).finish()
    }
}

impl Request {
    /// Answers the caller.
    pub fn reply(mut self, payload: Bytes) {
        if let Some((inner, id)) = self.responder.take() {
            inner.respond(&self.from, Outgoing::Reply { id, payload });
        }
    }

    /// Fails the caller's call with `reason`.
    pub fn fail(mut self, reason: &str) {
        if let Some((inner, id)) = self.responder.take() {
            inner.respond(&self.from, Outgoing::Fail { id, reason: reason.into() });
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some((inner, id)) = self.responder.take() {
            inner.respond(&self.from, Outgoing::Fail { id, reason: "the handler dropped the request".into() });
        }
    }
}

/// What a [`Links::broadcast`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// Peers whose link took the message.
    pub queued: usize,
    /// Peers whose link was full (message dropped for them).
    pub full: Vec<String>,
}

/// This node's links (cheap to clone).
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("node_id", &self.inner.node_id).finish_non_exhaustive()
    }
}

struct Inner {
    node_id: String,
    cfg: LinkConfig,
    rt: tokio::runtime::Handle,
    ports: RwLock<HashMap<String, Port>>,
    peers: RwLock<HashMap<String, Arc<Peer>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<std::result::Result<Bytes, String>>>>,
    next_id: AtomicU64,
    inbox: Mutex<Option<ActorRef<InboxMsg>>>,
}

struct Peer {
    node_id: String,
    queue: Mutex<PeerQueue>,
    wake: Notify,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn inbox_name(group: &str, node_id: &str) -> String {
    format!("{group}@{node_id}")
}

/// Every other node's inbox in `group`, one per node (the lowest actor id when two mesh sessions to the
/// same peer both mirror it).
fn peer_inboxes(group: &str, me: &str) -> HashMap<String, ActorCell> {
    let prefix = format!("{group}@");
    let mut out: HashMap<String, ActorCell> = HashMap::new();
    for cell in ractor::pg::get_members(&group.to_owned()) {
        let Some(name) = cell.get_name() else { continue };
        let Some(node) = name.strip_prefix(&prefix) else { continue };
        if node == me {
            continue;
        }
        match out.get(node) {
            Some(seen) if seen.get_id() <= cell.get_id() => {}
            _ => {
                out.insert(node.to_owned(), cell);
            }
        }
    }
    out
}

fn resolve(group: &str, me: &str, node: &str) -> Option<ActorCell> {
    peer_inboxes(group, me).remove(node)
}

impl Links {
    /// Starts this node's inbox (named `<group>@<node_id>`, joined to `cfg.group`).
    pub async fn start(node_id: impl Into<String>, cfg: LinkConfig) -> Result<Links> {
        let node_id = node_id.into();
        let inner = Arc::new(Inner {
            rt: tokio::runtime::Handle::current(),
            node_id,
            cfg,
            ports: RwLock::default(),
            peers: RwLock::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            inbox: Mutex::new(None),
        });
        let name = inbox_name(&inner.cfg.group, &inner.node_id);
        let inbox = Inbox { inner: Arc::downgrade(&inner), group: inner.cfg.group.clone() };
        let (actor, _) = Actor::spawn(Some(name), inbox, ())
            .await
            .map_err(|e| ClusterError::Mesh(format!("cannot start the link inbox: {e}")))?;
        *lock(&inner.inbox) = Some(actor);
        Ok(Links { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Routes one-way messages of `port` to `handler` (replacing any previous handler of the port).
    pub fn register(&self, port: &str, handler: impl Fn(&str, Bytes) + Send + Sync + 'static) {
        self.inner
            .ports
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port.to_owned(), Port::Tell(Arc::new(handler)));
    }

    /// Routes requests of `port` to `handler` (replacing any previous handler of the port).
    pub fn register_call(&self, port: &str, handler: impl Fn(Request) + Send + Sync + 'static) {
        self.inner
            .ports
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port.to_owned(), Port::Call(Arc::new(handler)));
    }

    /// Node ids of the peers whose inbox this node currently sees.
    pub fn peers(&self) -> Vec<String> {
        let mut ids: Vec<String> = peer_inboxes(&self.inner.cfg.group, &self.inner.node_id).into_keys().collect();
        ids.sort();
        ids
    }

    /// Queues `payload` for the handler of `port` on `node`. Never waits: a full link is
    /// [`ClusterError::LinkFull`], a peer whose inbox is not visible is [`ClusterError::Unreachable`].
    pub fn tell(&self, node: &str, port: &str, payload: Bytes) -> Result<()> {
        self.inner.enqueue(node, Outgoing::Tell { port: port.into(), payload })
    }

    /// Queues `payload` once toward every peer.
    pub fn broadcast(&self, port: &str, payload: &Bytes) -> Broadcast {
        let mut out = Broadcast::default();
        for node in peer_inboxes(&self.inner.cfg.group, &self.inner.node_id).into_keys() {
            match self.inner.enqueue(&node, Outgoing::Tell { port: port.into(), payload: payload.clone() }) {
                Ok(()) => out.queued += 1,
                Err(ClusterError::LinkFull { .. }) => out.full.push(node),
                // The peer left between the listing and the push: nobody to deliver to.
                Err(_) => {}
            }
        }
        out
    }

    /// Sends a request to the call handler of `port` on `node` and waits for the answer until
    /// `deadline`.
    pub async fn call(&self, node: &str, port: &str, payload: Bytes, deadline: Duration) -> Result<Bytes> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id, tx);
        let pending = PendingGuard { inner: &self.inner, id };
        self.inner.enqueue(node, Outgoing::Request { id, port: port.into(), payload })?;
        let answer = tokio::time::timeout(deadline, rx).await;
        drop(pending);
        match answer {
            Ok(Ok(Ok(bytes))) => Ok(bytes),
            Ok(Ok(Err(reason))) => Err(ClusterError::CallFailed { peer: node.to_owned(), reason }),
            Ok(Err(_)) => Err(ClusterError::Stopped),
            Err(_) => {
                metrics::counter!("troupe_cluster_link_call_timeouts_total").increment(1);
                Err(ClusterError::CallTimeout { peer: node.to_owned(), port: port.to_owned() })
            }
        }
    }

    /// Messages queued toward `node` (0 without a link).
    pub fn queued(&self, node: &str) -> usize {
        let peer = self.inner.peers.read().unwrap_or_else(PoisonError::into_inner).get(node).cloned();
        peer.map_or(0, |p| lock(&p.queue).len())
    }

    /// Stops the inbox and every link (queued messages are dropped) and forgets the handlers.
    pub fn stop(&self) {
        self.inner.ports.write().unwrap_or_else(PoisonError::into_inner).clear();
        if let Some(inbox) = lock(&self.inner.inbox).take() {
            inbox.stop(None);
        }
        let peers: Vec<Arc<Peer>> =
            self.inner.peers.write().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, p)| p).collect();
        for peer in peers {
            peer.close();
        }
    }
}

struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

impl Peer {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.wake.notify_one();
    }
}

impl Inner {
    fn enqueue(self: &Arc<Self>, node: &str, msg: Outgoing) -> Result<()> {
        let existing = self.peers.read().unwrap_or_else(PoisonError::into_inner).get(node).cloned();
        let peer = match existing {
            Some(p) if !p.closed.load(Ordering::Acquire) => p,
            _ => self.open_peer(node)?,
        };
        let was_empty = lock(&peer.queue).push(msg).map_err(|_| {
            metrics::counter!("troupe_cluster_link_full_total").increment(1);
            ClusterError::LinkFull { peer: node.to_owned() }
        })?;
        if was_empty {
            peer.wake.notify_one();
        }
        Ok(())
    }

    fn open_peer(self: &Arc<Self>, node: &str) -> Result<Arc<Peer>> {
        if node == self.node_id || resolve(&self.cfg.group, &self.node_id, node).is_none() {
            metrics::counter!("troupe_cluster_link_unreachable_total").increment(1);
            return Err(ClusterError::Unreachable { peer: node.to_owned() });
        }
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = peers.get(node).filter(|p| !p.closed.load(Ordering::Acquire)) {
            return Ok(p.clone());
        }
        let peer = Arc::new(Peer {
            node_id: node.to_owned(),
            queue: Mutex::new(PeerQueue::new(self.cfg.max_queue_messages, self.cfg.max_queue_bytes)),
            wake: Notify::new(),
            permits: Arc::new(Semaphore::new(self.cfg.max_frames_in_flight.max(1))),
            closed: AtomicBool::new(false),
        });
        peers.insert(node.to_owned(), peer.clone());
        drop(peers);
        self.rt.spawn(run_link(Arc::downgrade(self), self.node_id.clone(), self.cfg.clone(), peer.clone()));
        Ok(peer)
    }

    /// Queues an answer to `node`; an answer that cannot be queued is counted (the caller times out).
    fn respond(self: &Arc<Self>, node: &str, msg: Outgoing) {
        if let Err(e) = self.enqueue(node, msg) {
            metrics::counter!("troupe_cluster_link_dropped_total", "reason" => "reply").increment(1);
            tracing::debug!(peer = node, error = %e, "cannot queue a call answer");
        }
    }

    fn port(&self, name: &str) -> Option<Port> {
        self.ports.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// The handler of `name`, remembering the last port looked up (frames are mostly one port).
    fn cached_port<'a>(&self, cache: &mut Option<(&'a str, Option<Port>)>, name: &'a str) -> Option<Port> {
        match cache {
            Some((n, p)) if *n == name => p.clone(),
            _ => {
                let p = self.port(name);
                *cache = Some((name, p.clone()));
                p
            }
        }
    }

    /// Dispatches one received frame.
    fn receive(self: &Arc<Self>, bytes: Bytes) {
        let decoded = match frame::decode(&bytes) {
            Ok(f) => f,
            Err(reason) => {
                count_decode_failure("link frame", &reason);
                return;
            }
        };
        let from = decoded.from;
        metrics::counter!("troupe_cluster_link_messages_received_total").increment(decoded.items.len() as u64);
        let mut cached: Option<(&str, Option<Port>)> = None;
        for item in decoded.items {
            let mut port_of = |name| self.cached_port(&mut cached, name);
            match item {
                frame::Item::Tell { port, payload } => match port_of(port) {
                    Some(Port::Tell(h)) => guarded(port, || h(from, bytes.slice_ref(payload.0))),
                    _ => unhandled(port),
                },
                frame::Item::Request { id, port, payload } => match port_of(port) {
                    Some(Port::Call(h)) => {
                        let request = Request {
                            from: from.to_owned(),
                            payload: bytes.slice_ref(payload.0),
                            responder: Some((self.clone(), id)),
                        };
                        guarded(port, || h(request));
                    }
                    _ => {
                        unhandled(port);
                        self.respond(
                            from,
                            Outgoing::Fail { id, reason: format!("no call handler for {port:?}").into() },
                        );
                    }
                },
                frame::Item::Reply { id, payload } => {
                    if let Some(tx) = lock(&self.pending).remove(&id) {
                        let _ = tx.send(Ok(bytes.slice_ref(payload.0)));
                    }
                }
                frame::Item::Fail { id, reason } => {
                    if let Some(tx) = lock(&self.pending).remove(&id) {
                        let _ = tx.send(Err(reason.to_owned()));
                    }
                }
            }
        }
    }
}

fn unhandled(port: &str) {
    metrics::counter!("troupe_cluster_link_unhandled_total").increment(1);
    tracing::debug!(port, "link message for a port without a handler");
}

/// Runs a handler; a panic is counted and logged instead of killing the inbox.
fn guarded(port: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        metrics::counter!("troupe_cluster_link_handler_panics_total").increment(1);
        tracing::error!(port, "a link handler panicked");
    }
}

/// One peer's sender: takes an in-flight slot, cuts a frame from the queue, sends it to the peer's
/// inbox as a remote call, and frees the slot when the inbox answers (or the frame times out).
async fn run_link(inner: Weak<Inner>, me: String, cfg: LinkConfig, peer: Arc<Peer>) {
    let mut batch: Vec<Outgoing> = Vec::new();
    loop {
        let Ok(permit) = peer.permits.clone().acquire_owned().await else { return };
        loop {
            if peer.closed.load(Ordering::Acquire) {
                return;
            }
            lock(&peer.queue).take_frame(cfg.max_frame_bytes, &mut batch);
            if !batch.is_empty() {
                break;
            }
            peer.wake.notified().await;
        }
        let Some(cell) = resolve(&cfg.group, &me, &peer.node_id) else {
            // The peer's inbox is gone (session closed): drop what is queued and retire the link; the
            // next tell opens a new one if the peer comes back.
            peer.close();
            let dropped = batch.len() + lock(&peer.queue).clear();
            metrics::counter!("troupe_cluster_link_dropped_total", "reason" => "unreachable").increment(dropped as u64);
            tracing::warn!(peer = %peer.node_id, dropped, "peer inbox gone; link closed");
            if let Some(inner) = inner.upgrade() {
                let mut peers = inner.peers.write().unwrap_or_else(PoisonError::into_inner);
                if peers.get(&peer.node_id).is_some_and(|p| Arc::ptr_eq(p, &peer)) {
                    peers.remove(&peer.node_id);
                }
            }
            return;
        };
        let n = batch.len() as u64;
        let items: Vec<frame::Item<'_>> = batch.iter().map(Outgoing::item).collect();
        let encoded = frame::encode(&me, &items);
        drop(items);
        batch.clear();
        let bytes = match encoded {
            Ok(b) => b,
            Err(e) => {
                metrics::counter!("troupe_cluster_link_dropped_total", "reason" => "encode").increment(n);
                tracing::warn!(peer = %peer.node_id, error = %e, "cannot encode a link frame");
                continue;
            }
        };
        let len = bytes.len() as u64;
        let (tx, rx) = oneshot::channel();
        if let Err(e) = cell.send_message(InboxMsg::Frame { frame: bytes, reply: tx.into() }) {
            metrics::counter!("troupe_cluster_link_dropped_total", "reason" => "send").increment(n);
            tracing::warn!(peer = %peer.node_id, error = %e, "cannot send a link frame");
            continue;
        }
        metrics::counter!("troupe_cluster_link_frames_sent_total").increment(1);
        metrics::counter!("troupe_cluster_link_messages_sent_total").increment(n);
        metrics::counter!("troupe_cluster_link_bytes_sent_total").increment(len);
        let timeout = cfg.frame_timeout;
        let node = peer.node_id.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(timeout, rx).await.is_err() {
                metrics::counter!("troupe_cluster_link_frame_timeouts_total").increment(1);
                tracing::warn!(peer = %node, "a link frame was not answered in time");
            }
            drop(permit);
        });
    }
}

/// The inbox's one message: a frame, sent as a remote call the inbox answers once it has dispatched it.
pub(crate) enum InboxMsg {
    /// A link frame.
    Frame {
        /// Frame bytes ([`frame`]).
        frame: Vec<u8>,
        /// Answered (empty) after dispatch.
        reply: RpcReplyPort<Vec<u8>>,
    },
}

impl ractor::Message for InboxMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> std::result::Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            InboxMsg::Frame { frame, reply } => {
                Ok(SerializedMessage::Call { variant: FRAME_VARIANT.to_owned(), args: frame, reply, metadata: None })
            }
        }
    }

    fn deserialize(bytes: SerializedMessage) -> std::result::Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Call { variant, args, reply, .. } if variant == FRAME_VARIANT => {
                Ok(InboxMsg::Frame { frame: args, reply })
            }
            SerializedMessage::Call { variant, .. } | SerializedMessage::Cast { variant, .. } => {
                count_decode_failure("link message", &format!("unknown variant {variant:?}"));
                Err(BoxedDowncastErr)
            }
            SerializedMessage::CallReply(..) => {
                count_decode_failure("link message", "unexpected call reply");
                Err(BoxedDowncastErr)
            }
        }
    }
}

struct Inbox {
    inner: Weak<Inner>,
    group: String,
}

impl Actor for Inbox {
    type Msg = InboxMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<InboxMsg>, (): ()) -> std::result::Result<(), ActorProcessingErr> {
        ractor::pg::join(self.group.clone(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<InboxMsg>,
        msg: InboxMsg,
        (): &mut (),
    ) -> std::result::Result<(), ActorProcessingErr> {
        let InboxMsg::Frame { frame, reply } = msg;
        if let Some(inner) = self.inner.upgrade() {
            inner.receive(Bytes::from(frame));
        }
        let _ = reply.send(Vec::new());
        Ok(())
    }
}
