//! The shard manager: one task per node turning the `up` set into held shard leases.
//!
//! Every step (on an `up`-set change, and every quarter of `renew_interval`): drop shards whose lease
//! may have lapsed (no successful renewal began within `act_within`), renew the ones due, release the
//! ones no longer desired (entities checkpointed and stopped first), acquire the desired ones not held
//! (a shard still leased by its previous owner is retried on the next step).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use troupe_storage::{Key, Lease, Store, StoreError};

use super::router::RouterMsg;
use super::{ManagerCmd, OWNERS_TABLE, OwnedShards, ShardSettings, ShardTable, UpSet};
use crate::error::ClusterError;
use crate::placement::{ShardLeases, desired_shards, plan};

struct Held {
    lease: Lease,
    /// When the last successful renewal (or the acquisition) began: the lease is valid until at least
    /// this + TTL by the store's clock.
    renewed_at: Instant,
}

pub(super) struct Manager {
    settings: ShardSettings,
    store: Store,
    node_id: String,
    incarnation: u64,
    leases: ShardLeases,
    held: BTreeMap<u32, Held>,
    table: Arc<ShardTable>,
    router: ActorRef<RouterMsg>,
    up: watch::Receiver<UpSet>,
    /// Set by a drain or a stop: take no shard again.
    released_all: bool,
    published: Option<(u64, Vec<u32>)>,
}

impl Manager {
    pub(super) fn new(
        settings: ShardSettings,
        store: Store,
        node_id: &str,
        table: Arc<ShardTable>,
        router: ActorRef<RouterMsg>,
        up: watch::Receiver<UpSet>,
    ) -> Self {
        let incarnation = up.borrow().incarnation;
        let leases = ShardLeases::new(store.clone(), node_id, incarnation, settings.lease_ttl);
        Self {
            settings,
            store,
            node_id: node_id.to_owned(),
            incarnation,
            leases,
            held: BTreeMap::new(),
            table,
            router,
            up,
            released_all: false,
            published: None,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<ManagerCmd>) {
        let mut ticker = tokio::time::interval(self.settings.renew_interval / 4);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut up_open = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = self.up.changed(), if up_open => {
                    if changed.is_err() {
                        up_open = false;
                    }
                }
                command = commands.recv() => match command {
                    Some(ManagerCmd::ReleaseAll(done)) => {
                        self.released_all = true;
                        self.step().await;
                        let _ = done.send(());
                    }
                    None => return,
                },
            }
            self.step().await;
        }
    }

    /// One round: expire, renew, release, acquire, publish.
    pub(super) async fn step(&mut self) {
        let up = self.up.borrow_and_update().clone();
        if up.incarnation != self.incarnation {
            // A new incarnation never inherits the old one's leases (they are held under another name).
            tracing::info!(from = self.incarnation, to = up.incarnation, "sharding: new incarnation; dropping shards");
            let all: Vec<u32> = self.held.keys().copied().collect();
            for shard in all {
                self.lost(shard, "new incarnation").await;
            }
            self.incarnation = up.incarnation;
            self.leases = ShardLeases::new(self.store.clone(), &self.node_id, up.incarnation, self.settings.lease_ttl);
        }
        self.expire().await;
        self.renew().await;
        let desired = if self.released_all || !up.members.contains(&self.node_id) {
            BTreeSet::new()
        } else {
            desired_shards(self.settings.shards, &up.members, &self.node_id)
        };
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        let moves = plan(&held, &desired);
        for shard in moves.release {
            self.release(shard).await;
        }
        for shard in moves.acquire {
            self.acquire(shard).await;
        }
        self.publish().await;
    }

    /// Drops every shard whose lease may have lapsed: another node may hold it now.
    async fn expire(&mut self) {
        let now = Instant::now();
        let limit = self.settings.act_within();
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.renewed_at) >= limit)
            .map(|(s, _)| *s)
            .collect();
        for shard in stale {
            self.lost(shard, "lease may have lapsed (no renewal in time)").await;
        }
    }

    async fn renew(&mut self) {
        let due: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.renewed_at.elapsed() >= self.settings.renew_interval)
            .map(|(s, _)| *s)
            .collect();
        for shard in due {
            let Some(lease) = self.held.get(&shard).map(|h| h.lease.clone()) else { continue };
            let started = Instant::now();
            match self.leases.renew(&lease).await {
                Ok(lease) => {
                    self.held.insert(shard, Held { lease, renewed_at: started });
                }
                Err(ClusterError::Store(StoreError::LeaseLost { .. })) => self.lost(shard, "lease taken over").await,
                // The store is unreachable: keep acting until `act_within`, `expire` drops it after.
                Err(e) => tracing::warn!(shard, error = %e, "sharding: lease renewal failed"),
            }
        }
    }

    /// Stops acting on `shard` at once (its entities stop without a checkpoint: another owner may
    /// have the state already).
    async fn lost(&mut self, shard: u32, why: &str) {
        self.table.remove(shard);
        self.held.remove(&shard);
        metrics::counter!("troupe_cluster_shard_moves_total", "op" => "lost").increment(1);
        tracing::warn!(shard, why, "sharding: lost a shard");
        self.stop_entities(shard, false).await;
    }

    /// Hands `shard` over: no new messages, entities checkpointed and stopped, lease released.
    async fn release(&mut self, shard: u32) {
        self.table.remove(shard);
        self.stop_entities(shard, true).await;
        if let Some(h) = self.held.remove(&shard) {
            match self.leases.release(&h.lease).await {
                Ok(_) => {
                    metrics::counter!("troupe_cluster_shard_moves_total", "op" => "release").increment(1);
                    tracing::debug!(shard, "sharding: released");
                }
                Err(e) => tracing::warn!(shard, error = %e, "sharding: release failed (the lease will lapse)"),
            }
        }
    }

    async fn acquire(&mut self, shard: u32) {
        let started = Instant::now();
        match self.leases.acquire(shard).await {
            Ok(lease) => {
                self.table.insert(shard, lease.token);
                self.held.insert(shard, Held { lease, renewed_at: started });
                metrics::counter!("troupe_cluster_shard_moves_total", "op" => "acquire").increment(1);
                tracing::debug!(shard, "sharding: acquired");
            }
            // The previous owner still holds it: retried on the next step.
            Err(ClusterError::Store(StoreError::LeaseHeld { .. })) => {}
            Err(e) => tracing::warn!(shard, error = %e, "sharding: cannot acquire"),
        }
    }

    async fn stop_entities(&self, shard: u32, checkpoint: bool) {
        let (tx, rx) = oneshot::channel();
        if self.router.send_message(RouterMsg::StopShard { shard, checkpoint, done: tx }).is_ok() {
            let limit = self.settings.checkpoint_timeout + Duration::from_millis(500);
            if tokio::time::timeout(limit, rx).await.is_err() {
                tracing::warn!(shard, "sharding: entities did not stop in time");
            }
        }
    }

    /// Writes the held set to the owners table when it changed (best effort: for operators' view).
    async fn publish(&mut self) {
        let shards: Vec<u32> = self.held.keys().copied().collect();
        metrics::gauge!("troupe_cluster_shards_owned").set(shards.len() as f64);
        let current = (self.incarnation, shards);
        if self.published.as_ref() == Some(&current) {
            return;
        }
        let owned = OwnedShards { node_id: self.node_id.clone(), incarnation: current.0, shards: current.1.clone() };
        let Ok(bytes) = postcard::to_stdvec(&owned) else { return };
        match self.store.put(OWNERS_TABLE, &Key::from("owners"), &Key::from(self.node_id.as_str()), bytes).await {
            Ok(_) => self.published = Some(current),
            Err(e) => tracing::debug!(error = %e, "sharding: cannot publish the owned shards"),
        }
    }
}
