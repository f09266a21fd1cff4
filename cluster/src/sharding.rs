//! Cluster sharding: sharded entities (a user's session or presence state, one pipeline partition…)
//! live on exactly one node at a time, in the spirit of Akka Cluster Sharding and Orleans grains.
//!
//! - Keys map to one of `shards` shards ([`shard_of`](crate::placement::shard_of)); each shard is owned
//!   by the `up` member rendezvous hashing picks ([`desired_shards`](crate::placement::desired_shards)),
//!   held through the store lease `shard/<n>` whose fencing token guards every write of its entities'
//!   state.
//! - The shard manager (`sharding/manager.rs`), driven by the `up` set ([`UpSet`]), releases shards that
//!   are no longer ours (stop every entity, after its [`Entity::checkpoint`], then release the lease),
//!   acquires the ones that became ours (retrying while the previous holder's lease lives), renews held
//!   leases every `renew_interval`, and stops acting on a shard at once when a renewal fails or when its
//!   lease may have lapsed (`lease_ttl` × 0.8 after the last successful renewal began).
//! - Entities are local ractor actors spawned on demand on the owner node by the router
//!   (`sharding/router.rs`), linked to it (it hears when one stops or fails). An entity's state goes
//!   through [`EntityContext::load`] (which first claims the state for this owner's token, so a stale
//!   owner's later writes are rejected) and [`EntityContext::save`] ([`fenced_put`](crate::placement::fenced_put)).
//! - Callers address `(kind, key)` with [`Sharding::call`] (a deadline; retryable failures — shard
//!   moving, being acquired, owner unreachable — are retried until it passes, then returned as
//!   [`ClusterError::Deadline`]). The node delivers locally when it holds the shard, else forwards to
//!   the owner's router (a remotable actor in the process group `troupe.cluster.shards.<node id>`,
//!   envelope bytes in and out, like the pinger). A router never forwards a forwarded message: when the
//!   shard moved meanwhile it answers "unavailable" and the caller retries. No message is dropped
//!   silently: every one is answered, with the entity's reply or a typed error.
//!
//! Delivery is at most once per attempt: a caller that retries after a timeout may deliver twice, so
//! entity messages should be idempotent (e.g. "set", not "add").

mod manager;
pub mod presence;
mod router;
pub mod singleton;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use troupe_storage::{Key, Scan, Store};

use crate::error::{ClusterError, Result};
use crate::placement;

pub use router::RouterMsg;

#[cfg(test)]
mod tests;

/// A boxed future, as entity callbacks return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Table holding entity state (partition = kind, clustering key = entity key), fenced.
pub const ENTITY_TABLE: &str = "cluster_entities";
/// Table where each node publishes the shards it holds (partition `owners`, clustering key = node id).
pub const OWNERS_TABLE: &str = "cluster_shards";

/// Sharding settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSettings {
    /// Number of shards (fixed for the life of the cluster: changing it moves every key).
    pub shards: u32,
    /// Lease time-to-live: a dead owner's shards are free again at most this long after its last
    /// renewal.
    pub lease_ttl: Duration,
    /// How often held leases are renewed (well under `lease_ttl`).
    pub renew_interval: Duration,
    /// How long a stopping shard waits for its entities' checkpoints.
    pub checkpoint_timeout: Duration,
}

impl Default for ShardSettings {
    /// 64 shards, 3 s leases renewed every second, 2 s for checkpoints.
    fn default() -> Self {
        Self {
            shards: 64,
            lease_ttl: Duration::from_secs(3),
            renew_interval: Duration::from_secs(1),
            checkpoint_timeout: Duration::from_secs(2),
        }
    }
}

impl ShardSettings {
    /// The settings `[cluster]` gives: `shards`, `shard_lease_ttl` (renewed every third of it).
    pub fn from_config(cfg: &troupe_config::NodeConfig) -> Self {
        let ttl = cfg.cluster.shard_lease_ttl;
        Self { shards: cfg.cluster.shards, lease_ttl: ttl, renew_interval: ttl / 3, ..Self::default() }
    }

    /// How long after a renewal began this node may still act on the shard: 80 % of the lease TTL,
    /// so it stops before any other node can acquire the lease.
    pub fn act_within(&self) -> Duration {
        self.lease_ttl.mul_f64(0.8)
    }
}

/// The members shards are spread over, as this node sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpSet {
    /// This node's current incarnation (leases are held as `<node id>/<incarnation>`).
    pub incarnation: u64,
    /// Node ids of the members that own shards (`up` or `suspect`); this node only while it is one.
    pub members: Vec<String>,
}

/// One sharded entity: the state of one key of one kind, living in one actor on its owner node.
pub trait Entity: Send + 'static {
    /// Handles one message (opaque bytes); the answer goes back to the caller.
    fn handle<'a>(&'a mut self, ctx: &'a EntityContext, message: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>>>;

    /// Called before the entity stops because its shard moves (not when the lease was lost): write
    /// what must survive with [`EntityContext::save`].
    fn checkpoint<'a>(&'a mut self, _ctx: &'a EntityContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Creates the entities of one kind (on the owner node, on their first message).
pub trait EntityFactory: Send + Sync + 'static {
    /// A new entity for `ctx.key()`; typically loads its state with [`EntityContext::load`].
    fn create<'a>(&'a self, ctx: &'a EntityContext) -> BoxFuture<'a, Result<Box<dyn Entity>>>;
}

/// What an entity knows about itself, and its fenced state.
#[derive(Clone, Debug)]
pub struct EntityContext {
    kind: String,
    key: String,
    shard: u32,
    token: u64,
    node_id: String,
    store: Store,
}

impl EntityContext {
    /// The entity kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The entity key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// Its shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }
    /// The fencing token of the shard lease this incarnation of the entity runs under.
    pub fn token(&self) -> u64 {
        self.token
    }
    /// The node hosting it.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn keys(&self) -> (Key, Key) {
        (Key::from(self.kind.as_str()), Key::from(self.key.as_str()))
    }

    /// Claims the entity's state for this owner (so older owners' later writes are rejected) and
    /// returns it. [`ClusterError::Fenced`] when a newer owner has claimed it.
    pub async fn load(&self) -> Result<Option<Vec<u8>>> {
        let (pk, ck) = self.keys();
        placement::fenced_claim(&self.store, ENTITY_TABLE, &pk, &ck, self.token).await?.map_err(ClusterError::from)
    }

    /// Writes the entity's state under this owner's token. [`ClusterError::Fenced`] when a newer owner
    /// has written or claimed it: the entity must stop acting.
    pub async fn save(&self, state: Vec<u8>) -> Result<()> {
        let (pk, ck) = self.keys();
        match placement::fenced_put(&self.store, ENTITY_TABLE, &pk, &ck, self.token, state).await? {
            Ok(_) => Ok(()),
            Err(stale) => {
                metrics::counter!("troupe_cluster_fenced_writes_total").increment(1);
                tracing::warn!(kind = %self.kind, key = %self.key, token = self.token, current = stale.current,
                    "sharding: a stale owner's write was rejected");
                Err(stale.into())
            }
        }
    }
}

/// The entity kinds of a node, registered before [`Sharding::start`] (every node registers the same).
#[derive(Clone, Default)]
pub struct EntityKinds {
    kinds: HashMap<String, Arc<dyn EntityFactory>>,
}

impl std::fmt::Debug for EntityKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityKinds").field("kinds", &self.kinds.keys().collect::<Vec<_>>()).finish()
    }
}

impl EntityKinds {
    /// No kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind` made by `factory` (a later registration of the same kind replaces it).
    #[must_use]
    pub fn register(mut self, kind: &str, factory: Arc<dyn EntityFactory>) -> Self {
        self.kinds.insert(kind.to_owned(), factory);
        self
    }

    pub(crate) fn get(&self, kind: &str) -> Option<Arc<dyn EntityFactory>> {
        self.kinds.get(kind).cloned()
    }
}

/// The shards this node holds and may act on (token per shard). Shared by the manager (writer) and the
/// router and callers (readers); a shard is removed before its entities stop.
#[derive(Debug, Default)]
pub(crate) struct ShardTable {
    held: RwLock<HashMap<u32, u64>>,
}

impl ShardTable {
    pub(crate) fn token(&self, shard: u32) -> Option<u64> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).get(&shard).copied()
    }
    fn insert(&self, shard: u32, token: u64) {
        self.held.write().unwrap_or_else(PoisonError::into_inner).insert(shard, token);
    }
    fn remove(&self, shard: u32) {
        self.held.write().unwrap_or_else(PoisonError::into_inner).remove(&shard);
    }
    fn shards(&self) -> BTreeSet<u32> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }
}

/// What a node publishes about the shards it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedShards {
    /// The node.
    pub node_id: String,
    /// The incarnation holding them.
    pub incarnation: u64,
    /// The shards.
    pub shards: Vec<u32>,
}

pub(crate) enum ManagerCmd {
    /// Release every shard (with checkpoints) and take none again; answers when done.
    ReleaseAll(oneshot::Sender<()>),
}

struct Inner {
    node_id: String,
    settings: ShardSettings,
    store: Store,
    table: Arc<ShardTable>,
    router: ActorRef<RouterMsg>,
    up: watch::Receiver<UpSet>,
    commands: mpsc::Sender<ManagerCmd>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by [`Sharding::use_links`]: cross-node hops go over the batched links.
    links: std::sync::OnceLock<crate::link::Links>,
}

/// Handle on this node's sharding (router + shard manager). Clone freely.
#[derive(Clone)]
pub struct Sharding {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sharding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharding").field("node_id", &self.inner.node_id).finish_non_exhaustive()
    }
}

impl Sharding {
    /// Starts the router (joining its process group) and the shard manager following `up`.
    pub async fn start(
        settings: ShardSettings,
        store: Store,
        node_id: &str,
        up: watch::Receiver<UpSet>,
        kinds: EntityKinds,
    ) -> Result<Sharding> {
        if settings.shards == 0 || settings.renew_interval >= settings.act_within() {
            return Err(ClusterError::Config(
                "sharding: shards must be ≥ 1 and renew_interval under 80 % of the lease TTL".to_owned(),
            ));
        }
        let table = Arc::new(ShardTable::default());
        let router_actor = router::Router {
            node_id: node_id.to_owned(),
            shards: settings.shards,
            store: store.clone(),
            table: table.clone(),
            kinds,
        };
        let (router, router_task) = Actor::spawn(None, router_actor, ())
            .await
            .map_err(|e| ClusterError::Mesh(format!("cannot start the shard router: {e}")))?;
        let (tx, rx) = mpsc::channel(4);
        let manager =
            manager::Manager::new(settings.clone(), store.clone(), node_id, table.clone(), router.clone(), up.clone());
        let manager_task = tokio::spawn(manager.run(rx));
        let router_join = tokio::spawn(async move {
            let _ = router_task.await;
        });
        Ok(Sharding {
            inner: Arc::new(Inner {
                node_id: node_id.to_owned(),
                settings,
                store,
                table,
                router,
                up,
                commands: tx,
                tasks: std::sync::Mutex::new(vec![manager_task, router_join]),
                links: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Carries this node's cross-node hops over `links` (bounded, batched) and serves the peers'
    /// forwarded messages from them. Without it (in-process tests) a hop is one ractor_cluster
    /// remote call to the owner's router. Every node of a cluster must do the same. Once only.
    pub fn use_links(&self, links: &crate::link::Links) {
        if self.inner.links.set(links.clone()).is_ok() {
            router::serve_links(links, self.inner.router.clone(), self.inner.settings.shards);
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ShardSettings {
        &self.inner.settings
    }

    /// The shards this node holds now.
    pub fn owned(&self) -> BTreeSet<u32> {
        self.inner.table.shards()
    }

    /// The shard of `key`.
    pub fn shard_of(&self, key: &str) -> u32 {
        placement::shard_of(key.as_bytes(), self.inner.settings.shards)
    }

    /// What every node published about the shards it holds (node id → incarnation and shards). A
    /// crashed node's entry stays until it restarts: compare the incarnation with its membership row.
    pub async fn published_owners(&self) -> Result<HashMap<String, OwnedShards>> {
        let pk = Key::from("owners");
        let mut out = HashMap::new();
        let mut scan = Scan::all();
        loop {
            let page = self.inner.store.scan(OWNERS_TABLE, &pk, &scan).await?;
            for row in page.rows {
                match postcard::from_bytes::<OwnedShards>(&row.value) {
                    Ok(owned) => {
                        out.insert(owned.node_id.clone(), owned);
                    }
                    Err(e) => tracing::warn!(error = %e, "sharding: skipping an undecodable owners row"),
                }
            }
            match page.next {
                Some(cursor) => scan = Scan::all().after(Some(cursor)),
                None => return Ok(out),
            }
        }
    }

    /// Sends `message` to entity `(kind, key)` wherever it lives and returns its answer. Retryable
    /// failures are retried until `timeout`; then [`ClusterError::Deadline`].
    pub async fn call(&self, kind: &str, key: &str, message: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let shard = self.shard_of(key);
        let mut pause = Duration::from_millis(20);
        let mut last = format!("shard {shard}: no attempt");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClusterError::Deadline(last));
            }
            match self.route_once(kind, key, shard, message.clone(), left).await {
                Err(e) if e.is_retryable() => {
                    metrics::counter!("troupe_cluster_shard_retries_total").increment(1);
                    last = e.to_string();
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Like [`call`](Self::call), for messages whose answer the caller ignores (it still learns that
    /// the entity took the message, or why not).
    pub async fn tell(&self, kind: &str, key: &str, message: Vec<u8>, timeout: Duration) -> Result<()> {
        self.call(kind, key, message, timeout).await.map(|_| ())
    }

    async fn route_once(&self, kind: &str, key: &str, shard: u32, message: Vec<u8>, left: Duration) -> Result<Vec<u8>> {
        if self.inner.table.token(shard).is_some() {
            return router::deliver_local(&self.inner.router, kind, key, shard, message, left).await;
        }
        let owner = {
            let up = self.inner.up.borrow();
            placement::owner(&shard.to_be_bytes(), &up.members).map(str::to_owned)
        };
        match owner {
            None => Err(ClusterError::ShardUnavailable { shard, reason: "no up member".to_owned() }),
            Some(owner) if owner == self.inner.node_id => {
                Err(ClusterError::ShardUnavailable { shard, reason: "being acquired by this node".to_owned() })
            }
            Some(owner) => {
                metrics::counter!("troupe_cluster_shard_forwards_total").increment(1);
                router::forward(self.inner.links.get(), &owner, shard, kind, key, message, left).await
            }
        }
    }

    /// Releases every shard (each entity checkpointed first) and acquires none again: for a drain or
    /// a graceful stop, before the node leaves. Waits up to `limit`.
    pub async fn release_all(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(ManagerCmd::ReleaseAll(tx)).await.is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// Stops the manager (without releasing: leases lapse) and the router. For tests and shutdown
    /// after [`release_all`](Self::release_all).
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        self.inner.router.stop(None);
        for t in tasks {
            t.abort();
        }
    }
}
