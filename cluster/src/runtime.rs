//! The cluster runtime: one task per node that, every `heartbeat_interval`, writes this node's
//! heartbeat, reads the membership table into the local view, dials members it has no mesh session
//! with (backoff per address), pings every connected peer's pinger, feeds the [`Detector`] and applies
//! its verdicts to the table (compare-and-set), and promotes this node from `joining` to `up`.
//!
//! Rules the loop keeps:
//! - a node declares others suspect/down only while its own heartbeat write is fresh, and judges by
//!   mesh pings only once it is `up` itself (a joining or refused node cannot tell their silence from
//!   its own isolation);
//! - a node that finds its own row `down` (or at another incarnation) rejoins with a new, greater
//!   incarnation and starts its judgements from scratch; one that finds itself `suspect` refutes it;
//! - a joining node becomes `up` once a live `up`/`suspect` peer answered its ping (the cookie was accepted), or
//!   when no live `up` member exists (the first node);
//! - the sessions of a peer declared down are closed, so a frozen peer cannot grow our queues.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ractor::ActorId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use troupe_actors::{ComponentHealth, ComponentStatus, HealthProbe};
use troupe_config::NodeConfig;
use troupe_storage::Store;

use crate::detector::{Detector, DetectorConfig, PeerHealth};
use crate::error::{ClusterError, Result};
use crate::membership::{Member, MembershipTable, NodeStatus, Versioned, next_incarnation};
use crate::mesh::{Mesh, MeshSettings};

#[cfg(test)]
mod tests;

/// Name of the file in the data dir holding this node's stable id.
pub const NODE_ID_FILE: &str = "cluster-node-id";
/// First delay between two dials of the same address.
const DIAL_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest delay between two dials of the same address.
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one TCP dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything the runtime needs, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Stable node id.
    pub node_id: String,
    /// Human-readable name (`node.name`).
    pub name: String,
    /// Mesh listen address.
    pub listen: SocketAddr,
    /// `host:port` peers dial.
    pub advertise: String,
    /// This node's HTTP API address.
    pub http_addr: String,
    /// Shared secret.
    pub cookie: String,
    /// `host:port` of nodes to dial before the table names any.
    pub seeds: Vec<String>,
    /// Heartbeat and ping period.
    pub heartbeat_interval: Duration,
    /// Detector bounds.
    pub detector: DetectorConfig,
    /// Mutual TLS on every mesh connection, when configured.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl ClusterSettings {
    /// The settings `cfg` describes (`None` when clustering is off); the node id comes from (or is
    /// created in) `<data_dir>/cluster-node-id`.
    pub fn from_config(cfg: &NodeConfig, http_addr: SocketAddr) -> Result<Option<ClusterSettings>> {
        let c = &cfg.cluster;
        let Some(listen) = c.addr else { return Ok(None) };
        let cookie = c
            .cookie
            .as_ref()
            .map(|s| s.expose().to_owned())
            .ok_or_else(|| ClusterError::Config("cluster.cookie is required".to_owned()))?;
        let advertise = c.advertise_addr.as_ref().map_or_else(|| listen.to_string(), ToString::to_string);
        Ok(Some(ClusterSettings {
            node_id: load_or_create_node_id(&cfg.node.data_dir)?,
            name: cfg.node.name.clone(),
            listen,
            advertise,
            http_addr: http_addr.to_string(),
            cookie,
            seeds: c.seeds.iter().map(ToString::to_string).collect(),
            heartbeat_interval: c.heartbeat_interval,
            detector: DetectorConfig { suspect_after: c.suspect_after, down_after: c.down_after },
            tls: match (&c.tls_cert, &c.tls_key, &c.tls_ca) {
                (Some(cert), Some(key), Some(ca)) => {
                    Some(crate::tls::TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
                }
                _ => None,
            },
        }))
    }

    fn advertise_host(&self) -> String {
        match self.advertise.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None => self.advertise.clone(),
        }
    }
}

/// Reads the node id from `<dir>/cluster-node-id`, creating a fresh UUID there on first start.
pub fn load_or_create_node_id(dir: &Path) -> Result<String> {
    let path = dir.join(NODE_ID_FILE);
    let err = |reason: String| ClusterError::NodeId { path: path.display().to_string(), reason };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            uuid::Uuid::parse_str(id).map_err(|e| err(format!("not a UUID: {e}")))?;
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            std::fs::write(&path, format!("{id}\n")).map_err(|e| err(e.to_string()))?;
            Ok(id)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberView {
    /// Stable node id.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Current incarnation.
    pub incarnation: u64,
    /// Mesh address.
    pub cluster_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Stored status.
    pub status: NodeStatus,
    /// Heartbeat counter.
    pub heartbeat: u64,
    /// Store clock of the last heartbeat (Unix ms).
    pub last_heartbeat_ms: u64,
    /// Who set the status and why.
    pub reason: String,
    /// Whether this row is this node.
    pub is_self: bool,
    /// This node's judgement of the peer (`None` for itself).
    pub local_health: Option<PeerHealth>,
    /// Whether a mesh session to the peer is open.
    pub connected: bool,
    /// Last ping round trip (ms).
    pub rtt_ms: Option<f64>,
}

/// This node's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterView {
    /// This node's id.
    pub node_id: String,
    /// This node's incarnation.
    pub incarnation: u64,
    /// This node's status.
    pub status: Option<NodeStatus>,
    /// Every row of the table, this node first, then by node id.
    pub members: Vec<MemberView>,
}

enum Command {
    Leave(oneshot::Sender<()>),
}

/// Handle on the running cluster runtime. Clone freely.
#[derive(Clone)]
pub struct ClusterHandle {
    view: Arc<RwLock<ClusterView>>,
    commands: mpsc::Sender<Command>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    up: watch::Receiver<crate::sharding::UpSet>,
    node_id: String,
    table: MembershipTable,
    drain: watch::Receiver<bool>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

impl ClusterHandle {
    /// Starts the mesh listener, registers this node as `joining` with a new incarnation, and spawns
    /// the runtime task.
    pub async fn start(settings: ClusterSettings, store: Store) -> Result<ClusterHandle> {
        let table = MembershipTable::new(store);
        let previous = table.get(&settings.node_id).await?;
        let incarnation = next_incarnation(previous.as_ref().map(|v| v.member.incarnation), table.now_ms());
        let mesh_settings = MeshSettings {
            node_id: settings.node_id.clone(),
            cookie: settings.cookie.clone(),
            listen: settings.listen,
            advertise_host: settings.advertise_host(),
            tls: settings.tls.as_ref().map(crate::tls::MeshTls::load).transpose()?,
        };
        let mesh = Mesh::start(&mesh_settings, incarnation).await?;
        let me = Member {
            node_id: settings.node_id.clone(),
            name: settings.name.clone(),
            incarnation,
            cluster_addr: settings.advertise.clone(),
            http_addr: settings.http_addr.clone(),
            status: NodeStatus::Joining,
            heartbeat: 0,
            last_heartbeat_ms: table.now_ms(),
            reason: "started".to_owned(),
        };
        let mut driver = Driver::new(settings, table, mesh, me);
        if let Err(e) = driver.register(previous).await {
            driver.mesh.stop().await;
            return Err(e);
        }
        tracing::info!(
            node_id = %driver.me.node_id,
            incarnation = driver.me.incarnation,
            addr = %driver.me.cluster_addr,
            "cluster: joining"
        );
        let view = driver.view.clone();
        let up = driver.up.subscribe();
        let drain = driver.drain.subscribe();
        let node_id = driver.me.node_id.clone();
        let table = driver.table.clone();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(driver.run(rx));
        Ok(ClusterHandle { view, commands: tx, task: Arc::new(Mutex::new(Some(task))), up, node_id, table, drain })
    }

    /// Asks member `node_id` to drain: it hands its shards over, closes its WebSocket clients, leaves
    /// the cluster and exits. Any node may ask; the target acts on its next heartbeat. Returns the
    /// target's incarnation.
    pub async fn request_drain(&self, node_id: &str) -> Result<u64> {
        let row = self.table.get(node_id).await?.ok_or_else(|| ClusterError::UnknownNode(node_id.to_owned()))?;
        if !matches!(row.member.status, NodeStatus::Up | NodeStatus::Suspect | NodeStatus::Joining) {
            return Err(ClusterError::NotLive { node_id: node_id.to_owned(), status: row.member.status.to_string() });
        }
        self.table.request_drain(node_id, row.member.incarnation).await?;
        tracing::info!(target_node = node_id, incarnation = row.member.incarnation, "cluster: drain requested");
        Ok(row.member.incarnation)
    }

    /// Turns `true` once a drain of this node was requested (see [`request_drain`](Self::request_drain)).
    pub fn drain_requested(&self) -> watch::Receiver<bool> {
        self.drain.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The members shards are spread over (`up` or `suspect`; this node only while it is one), and
    /// this node's incarnation: what the shard manager follows.
    pub fn up_set(&self) -> watch::Receiver<crate::sharding::UpSet> {
        self.up.clone()
    }

    /// This node's current view.
    pub fn view(&self) -> ClusterView {
        self.view.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The readiness probe named `cluster` (down, and so not ready, until the node has joined).
    pub fn probe(&self) -> Arc<dyn HealthProbe> {
        Arc::new(ClusterProbe { view: self.view.clone() })
    }

    /// Leaves gracefully: `leaving`, then `down`, then closes the mesh. Waits up to `limit`.
    pub async fn leave(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task
            && tokio::time::timeout(Duration::from_secs(3), task).await.is_err()
        {
            tracing::warn!("cluster task did not stop in time");
        }
    }
}

/// Whether a node that reaches `reached` of the `others` meshed peers (besides the one it judges) may
/// judge by ping silence: at least half of them, or there are none.
pub(crate) fn mesh_quorum(reached: usize, others: usize) -> bool {
    reached * 2 >= others
}

/// Readiness probe: the node is ready once it is `up`.
pub struct ClusterProbe {
    view: Arc<RwLock<ClusterView>>,
}

impl HealthProbe for ClusterProbe {
    fn health(&self) -> ComponentHealth {
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let up = view.members.iter().filter(|m| m.status == NodeStatus::Up).count();
        let (status, detail) = match view.status {
            Some(NodeStatus::Up) => (ComponentStatus::Up, format!("up; {up} of {} members up", view.members.len())),
            Some(NodeStatus::Suspect) => (ComponentStatus::Degraded, "suspected by a peer; refuting".to_owned()),
            Some(NodeStatus::Joining) => {
                (ComponentStatus::Down, "joining: no up member has answered this node yet".to_owned())
            }
            Some(NodeStatus::Leaving) => (ComponentStatus::Down, "leaving the cluster".to_owned()),
            Some(NodeStatus::Down) => (ComponentStatus::Down, "declared down; rejoining".to_owned()),
            None => (ComponentStatus::Down, "not started".to_owned()),
        };
        ComponentHealth { name: "cluster".to_owned(), status, critical: true, detail }
    }
}

struct DialState {
    next_at: Instant,
    backoff: Duration,
}

struct PingResult {
    cell: ActorId,
    outcome: Result<(crate::mesh::PongBody, Duration)>,
}

struct Driver {
    settings: ClusterSettings,
    table: MembershipTable,
    mesh: Mesh,
    me: Member,
    my_version: Option<u64>,
    detector: Detector,
    view: Arc<RwLock<ClusterView>>,
    dials: HashMap<String, DialState>,
    ever_connected: HashSet<String>,
    pings_in_flight: HashSet<ActorId>,
    ping_tx: mpsc::Sender<PingResult>,
    ping_rx: Option<mpsc::Receiver<PingResult>>,
    last_tick: Instant,
    last_own_write: Option<Instant>,
    rows: Vec<Versioned>,
    sessions: HashMap<String, Vec<ractor::ActorRef<ractor_cluster::NodeSessionMessage>>>,
    up: watch::Sender<crate::sharding::UpSet>,
    drain: watch::Sender<bool>,
}

impl Driver {
    fn new(settings: ClusterSettings, table: MembershipTable, mesh: Mesh, me: Member) -> Self {
        let (ping_tx, ping_rx) = mpsc::channel(1024);
        let detector = Detector::new(settings.detector);
        Self {
            settings,
            table,
            mesh,
            me,
            my_version: None,
            detector,
            view: Arc::new(RwLock::new(ClusterView::default())),
            dials: HashMap::new(),
            ever_connected: HashSet::new(),
            pings_in_flight: HashSet::new(),
            ping_tx,
            ping_rx: Some(ping_rx),
            last_tick: Instant::now(),
            last_own_write: None,
            rows: Vec::new(),
            sessions: HashMap::new(),
            up: watch::Sender::new(crate::sharding::UpSet::default()),
            drain: watch::Sender::new(false),
        }
    }

    /// Writes this node's row at its new incarnation over whatever row was there.
    async fn register(&mut self, mut previous: Option<Versioned>) -> Result<()> {
        for _ in 0..5 {
            if let Some(p) = &previous {
                self.me.incarnation = self.me.incarnation.max(p.member.incarnation.saturating_add(1));
            }
            let expected = previous.as_ref().map(|p| p.version);
            if let Some(v) = self.table.write(&self.me, expected).await? {
                self.my_version = Some(v);
                self.last_own_write = Some(Instant::now());
                self.mesh.incarnation.store(self.me.incarnation, std::sync::atomic::Ordering::Release);
                self.publish_view();
                return Ok(());
            }
            previous = self.table.get(&self.me.node_id).await?;
        }
        Err(ClusterError::Config("another process keeps rewriting this node's membership row".to_owned()))
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let Some(mut pings) = self.ping_rx.take() else { return };
        let mut ticker = tokio::time::interval(self.settings.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick().await,
                Some(result) = pings.recv() => self.on_ping(result),
                command = commands.recv() => {
                    match command {
                        Some(Command::Leave(done)) => {
                            self.leave().await;
                            let _ = done.send(());
                        }
                        None => self.leave().await,
                    }
                    self.mesh.stop().await;
                    return;
                }
            }
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        // Idle time since the previous tick ended (not since it started: a slow store must not look like
        // a pause). A freeze in the middle of a tick is caught by the freshness check in `judge`.
        let gap = now.saturating_duration_since(self.last_tick);
        if gap > (self.settings.heartbeat_interval * 2).max(self.settings.detector.suspect_after) {
            tracing::warn!(gap_ms = gap.as_millis() as u64, "cluster: this node was paused; restarting judgements");
            self.detector.restart_all(now);
        }
        self.heartbeat().await;
        match self.table.load_all().await {
            Ok(rows) => self.rows = rows,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot read the membership table");
                self.publish_view();
                self.last_tick = Instant::now();
                return;
            }
        }
        for row in &self.rows {
            let m = &row.member;
            if m.node_id != self.me.node_id {
                self.detector.observe(&m.node_id, m.incarnation, m.status, m.heartbeat, now);
            }
        }
        let ids: HashSet<String> = self.rows.iter().map(|r| r.member.node_id.clone()).collect();
        self.detector.retain(|id| ids.contains(id));
        self.sessions = self.mesh.sessions().await;
        self.close_sessions_of_down_peers();
        self.dial_missing(now);
        self.send_pings();
        self.maybe_join().await;
        self.judge(now).await;
        self.check_drain().await;
        self.publish_view();
        self.last_tick = Instant::now();
    }

    /// Acts on a drain request for this node: one for this incarnation raises the `drain` flag (the
    /// node then hands over and leaves); one for an older incarnation is stale and removed.
    async fn check_drain(&mut self) {
        if *self.drain.borrow() {
            return;
        }
        match self.table.drain_request(&self.me.node_id).await {
            Ok(Some(inc)) if inc == self.me.incarnation => {
                tracing::warn!(incarnation = inc, "cluster: drain requested; handing over and leaving");
                self.drain.send_replace(true);
            }
            Ok(Some(_)) => {
                if let Err(e) = self.table.clear_drain(&self.me.node_id).await {
                    tracing::debug!(error = %e, "cluster: cannot clear a stale drain request");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cluster: cannot read drain requests"),
        }
    }

    /// Writes this node's heartbeat; handles a row someone else changed.
    async fn heartbeat(&mut self) {
        let mut next = self.me.clone();
        next.heartbeat = next.heartbeat.saturating_add(1);
        next.last_heartbeat_ms = self.table.now_ms();
        match self.table.write(&next, self.my_version).await {
            Ok(Some(v)) => self.wrote(next, v),
            Ok(None) => self.resolve_conflict(next).await,
            Err(e) => tracing::warn!(error = %e, "cluster: heartbeat write failed"),
        }
    }

    fn wrote(&mut self, member: Member, version: u64) {
        self.me = member;
        self.my_version = Some(version);
        self.last_own_write = Some(Instant::now());
    }

    /// Our row changed under us: refute a suspicion, or rejoin after being declared down.
    async fn resolve_conflict(&mut self, next: Member) {
        let current = match self.table.get(&self.me.node_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot re-read this node's row");
                return;
            }
        };
        match current {
            Some(row) if row.member.incarnation == self.me.incarnation && row.member.status != NodeStatus::Down => {
                if row.member.status == NodeStatus::Suspect {
                    metrics::counter!("troupe_cluster_refutations_total").increment(1);
                    tracing::info!(by = %row.member.reason, "cluster: refuting a suspicion of this node");
                }
                let mut next = next;
                next.heartbeat = next.heartbeat.max(row.member.heartbeat.saturating_add(1));
                next.reason = "alive (refuted suspicion)".to_owned();
                match self.table.write(&next, Some(row.version)).await {
                    Ok(Some(v)) => self.wrote(next, v),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cluster: heartbeat write failed"),
                }
            }
            other => self.rejoin(other).await,
        }
    }

    /// Declared down (or our row vanished or moved on): come back as a new incarnation.
    async fn rejoin(&mut self, current: Option<Versioned>) {
        let why = current.as_ref().map_or_else(|| "row removed".to_owned(), |r| r.member.reason.clone());
        tracing::warn!(incarnation = self.me.incarnation, why = %why, "cluster: this node was declared down; rejoining");
        metrics::counter!("troupe_cluster_rejoins_total").increment(1);
        let previous_incarnation = current.as_ref().map_or(self.me.incarnation, |r| r.member.incarnation);
        self.me.incarnation =
            next_incarnation(Some(previous_incarnation.max(self.me.incarnation)), self.table.now_ms());
        self.me.status = NodeStatus::Joining;
        self.me.heartbeat = 0;
        self.me.last_heartbeat_ms = self.table.now_ms();
        self.me.reason = format!("rejoined after: {why}");
        self.detector = Detector::new(self.settings.detector);
        self.pings_in_flight.clear();
        match self.register(current).await {
            Ok(()) => tracing::info!(incarnation = self.me.incarnation, "cluster: rejoining"),
            Err(e) => tracing::warn!(error = %e, "cluster: rejoin write failed; retrying next tick"),
        }
    }

    fn close_sessions_of_down_peers(&mut self) {
        for row in &self.rows {
            if row.member.status == NodeStatus::Down
                && let Some(sessions) = self.sessions.remove(&row.member.node_id)
            {
                for s in sessions {
                    s.stop(Some("peer is down".to_owned()));
                }
            }
        }
    }

    fn dial_missing(&mut self, now: Instant) {
        let mut targets: Vec<(Option<String>, String)> = self
            .rows
            .iter()
            .map(|r| &r.member)
            .filter(|m| m.node_id != self.me.node_id && m.status.is_live() && !m.cluster_addr.is_empty())
            .filter(|m| !self.sessions.contains_key(&m.node_id))
            .map(|m| (Some(m.node_id.clone()), m.cluster_addr.clone()))
            .collect();
        if self.sessions.is_empty() {
            let known: HashSet<&str> = self.rows.iter().map(|r| r.member.cluster_addr.as_str()).collect();
            for seed in &self.settings.seeds {
                if *seed != self.settings.advertise && !known.contains(seed.as_str()) {
                    targets.push((None, seed.clone()));
                }
            }
        }
        for (peer, addr) in targets {
            let state =
                self.dials.entry(addr.clone()).or_insert(DialState { next_at: now, backoff: DIAL_BACKOFF_INITIAL });
            if state.next_at > now {
                continue;
            }
            let jitter = 0.8 + fastrand::f64() * 0.4;
            state.next_at = now + state.backoff.mul_f64(jitter);
            state.backoff = (state.backoff * 2).min(DIAL_BACKOFF_MAX);
            if let Some(peer) = &peer
                && self.ever_connected.contains(peer)
            {
                metrics::counter!("troupe_cluster_reconnects_total").increment(1);
            }
            let dialer = self.mesh.dialer();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(DIAL_TIMEOUT, dialer.dial(&addr));
                match outcome.await {
                    Ok(Ok(())) => {
                        metrics::counter!("troupe_cluster_dials_total", "outcome" => "connected").increment(1);
                        tracing::debug!(%addr, peer = ?peer, "cluster: dialed");
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("troupe_cluster_dials_total", "outcome" => "failed").increment(1);
                        tracing::debug!(%addr, peer = ?peer, error = %e, "cluster: dial failed");
                    }
                    Err(_) => {
                        metrics::counter!("troupe_cluster_dials_total", "outcome" => "timeout").increment(1);
                        tracing::debug!(%addr, peer = ?peer, "cluster: dial timed out");
                    }
                }
            });
        }
    }

    fn send_pings(&mut self) {
        let timeout = self.settings.detector.suspect_after;
        for cell in self.mesh.remote_pingers() {
            let id = cell.get_id();
            if !self.pings_in_flight.insert(id) {
                continue;
            }
            let tx = self.ping_tx.clone();
            let (from, incarnation) = (self.me.node_id.clone(), self.me.incarnation);
            tokio::spawn(async move {
                let outcome = crate::mesh::ping(cell, &from, incarnation, timeout).await;
                let _ = tx.try_send(PingResult { cell: id, outcome });
            });
        }
    }

    fn on_ping(&mut self, result: PingResult) {
        self.pings_in_flight.remove(&result.cell);
        match result.outcome {
            Ok((pong, rtt)) => {
                if self.detector.pong(&pong.node_id, pong.incarnation, rtt, Instant::now()) {
                    metrics::histogram!("troupe_cluster_heartbeat_rtt_seconds").record(rtt.as_secs_f64());
                    self.ever_connected.insert(pong.node_id.clone());
                    if let Some(m) = self.rows.iter().find(|r| r.member.node_id == pong.node_id) {
                        self.dials.remove(&m.member.cluster_addr);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster: ping failed"),
        }
    }

    async fn maybe_join(&mut self) {
        if self.me.status != NodeStatus::Joining {
            return;
        }
        let now = Instant::now();
        let live_up: Vec<&Member> = self
            .rows
            .iter()
            .map(|r| &r.member)
            .filter(|m| m.node_id != self.me.node_id && matches!(m.status, NodeStatus::Up | NodeStatus::Suspect))
            // By the store heartbeat alone: a joining node's missing pings say nothing about the peer.
            .filter(|m| self.detector.health(&m.node_id, now, false) != Some(PeerHealth::Down))
            .collect();
        let answered = live_up.iter().any(|m| self.detector.reachable(&m.node_id, now));
        let peers_up = live_up.len();
        if peers_up > 0 && !answered {
            return;
        }
        let mut next = self.me.clone();
        next.status = NodeStatus::Up;
        next.reason = if answered { "joined".to_owned() } else { "first node up".to_owned() };
        match self.table.write(&next, self.my_version).await {
            Ok(Some(v)) => {
                self.wrote(next, v);
                metrics::counter!("troupe_cluster_joins_total").increment(1);
                tracing::info!(incarnation = self.me.incarnation, peers_up, "cluster: node is up");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cluster: cannot mark this node up"),
        }
    }

    async fn judge(&mut self, now: Instant) {
        let now = now.max(Instant::now());
        let fresh = self
            .last_own_write
            .is_some_and(|t| now.saturating_duration_since(t) < self.settings.detector.suspect_after);
        if !fresh || !self.me.status.is_live() {
            return;
        }
        let use_mesh = self.me.status == NodeStatus::Up;
        let meshed: Vec<&str> = self
            .rows
            .iter()
            .map(|r| &r.member)
            .filter(|m| m.node_id != self.me.node_id && m.status.is_meshed())
            .map(|m| m.node_id.as_str())
            .collect();
        let store_only = self.detector.verdicts(now, false);
        let mut verdicts = Vec::new();
        for verdict in self.detector.verdicts(now, use_mesh) {
            // A ping silence counts only while this node hears most of the others: a node cut off from
            // the mesh must not accuse the majority.
            let others: Vec<&str> = meshed.iter().copied().filter(|id| *id != verdict.node_id).collect();
            let reached = others.iter().filter(|id| self.detector.reachable(id, now)).count();
            if mesh_quorum(reached, others.len()) {
                verdicts.push(verdict);
            } else if let Some(v) = store_only.iter().find(|v| v.node_id == verdict.node_id) {
                verdicts.push(v.clone());
            }
        }
        for verdict in verdicts {
            let Some(row) = self.rows.iter().find(|r| r.member.node_id == verdict.node_id) else { continue };
            if row.member.incarnation != verdict.incarnation {
                continue;
            }
            let new_status = match (verdict.health, row.member.status) {
                (PeerHealth::Down, s) if s.is_live() => NodeStatus::Down,
                (PeerHealth::Suspect, NodeStatus::Up) => NodeStatus::Suspect,
                _ => continue,
            };
            let mut next = row.member.clone();
            next.status = new_status;
            next.reason = format!("{} by {}: {}", new_status.as_str(), self.me.node_id, verdict.reason);
            match self.table.write(&next, Some(row.version)).await {
                Ok(Some(version)) => {
                    // The view shows the new status now, not after the next read.
                    if let Some(r) = self.rows.iter_mut().find(|r| r.member.node_id == verdict.node_id) {
                        *r = Versioned { member: next, version };
                    }
                    metrics::counter!(
                        "troupe_cluster_suspicions_total",
                        "verdict" => new_status.as_str()
                    )
                    .increment(1);
                    tracing::warn!(
                        peer = %verdict.node_id,
                        incarnation = verdict.incarnation,
                        status = new_status.as_str(),
                        reason = %verdict.reason,
                        "cluster: peer marked"
                    );
                    if new_status == NodeStatus::Down
                        && let Some(sessions) = self.sessions.remove(&verdict.node_id)
                    {
                        for s in sessions {
                            s.stop(Some("peer declared down".to_owned()));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, peer = %verdict.node_id, "cluster: cannot mark a peer"),
            }
        }
    }

    /// `leaving`, a heartbeat for peers to see it, then `down`.
    async fn leave(&mut self) {
        for (status, reason) in [(NodeStatus::Leaving, "leaving (graceful stop)"), (NodeStatus::Down, "left")] {
            for _ in 0..3 {
                let mut next = self.me.clone();
                next.status = status;
                next.reason = reason.to_owned();
                next.heartbeat = next.heartbeat.saturating_add(1);
                next.last_heartbeat_ms = self.table.now_ms();
                match self.table.write(&next, self.my_version).await {
                    Ok(Some(v)) => {
                        self.wrote(next, v);
                        break;
                    }
                    Ok(None) => match self.table.get(&self.me.node_id).await {
                        Ok(Some(row)) if row.member.incarnation == self.me.incarnation => {
                            self.my_version = Some(row.version);
                        }
                        _ => break,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: cannot write the leave");
                        break;
                    }
                }
            }
            tracing::info!(status = status.as_str(), "cluster: leaving");
            if status == NodeStatus::Down && *self.drain.borrow() {
                let _ = self.table.clear_drain(&self.me.node_id).await;
            }
            self.publish_view();
            if status == NodeStatus::Leaving {
                tokio::time::sleep(self.settings.heartbeat_interval * 2).await;
            }
        }
    }

    fn publish_view(&self) {
        let now = Instant::now();
        let mut members: Vec<MemberView> = self
            .rows
            .iter()
            .map(|r| &r.member)
            .filter(|m| m.node_id != self.me.node_id)
            .map(|m| MemberView {
                node_id: m.node_id.clone(),
                name: m.name.clone(),
                incarnation: m.incarnation,
                cluster_addr: m.cluster_addr.clone(),
                http_addr: m.http_addr.clone(),
                status: m.status,
                heartbeat: m.heartbeat,
                last_heartbeat_ms: m.last_heartbeat_ms,
                reason: m.reason.clone(),
                is_self: false,
                local_health: self.detector.health(&m.node_id, now, self.me.status == NodeStatus::Up),
                connected: self.sessions.contains_key(&m.node_id),
                rtt_ms: self.detector.rtt(&m.node_id).map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect();
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let me = &self.me;
        members.insert(
            0,
            MemberView {
                node_id: me.node_id.clone(),
                name: me.name.clone(),
                incarnation: me.incarnation,
                cluster_addr: me.cluster_addr.clone(),
                http_addr: me.http_addr.clone(),
                status: me.status,
                heartbeat: me.heartbeat,
                last_heartbeat_ms: me.last_heartbeat_ms,
                reason: me.reason.clone(),
                is_self: true,
                local_health: None,
                connected: true,
                rtt_ms: None,
            },
        );
        for status in NodeStatus::ALL {
            let n = members.iter().filter(|m| m.status == status).count();
            metrics::gauge!("troupe_cluster_members", "status" => status.as_str()).set(n as f64);
        }
        let owns = |s: NodeStatus| matches!(s, NodeStatus::Up | NodeStatus::Suspect);
        let mut up: Vec<String> = members.iter().filter(|m| owns(m.status)).map(|m| m.node_id.clone()).collect();
        up.sort();
        let up = crate::sharding::UpSet { incarnation: me.incarnation, members: up };
        self.up.send_if_modified(|current| {
            let changed = *current != up;
            if changed {
                *current = up;
            }
            changed
        });
        let view =
            ClusterView { node_id: me.node_id.clone(), incarnation: me.incarnation, status: Some(me.status), members };
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = view;
    }
}
