//! Cluster singletons: a task that holds one named store lease while this node is in the `up` set and
//! reports through a `watch` whether this node may act as the singleton now (used as the event bus's
//! drain gate, so exactly one node drains the shared outbox).
//!
//! The same rules as shard leases: held as `<node id>/<incarnation>`, renewed every `renew_interval`,
//! and the gate closes at once when a renewal is refused or when no renewal succeeded within
//! `act_within` (80 % of the TTL) — before any other node can acquire it. A node leaving (not in the
//! `up` set) closes the gate, then releases the lease so another node takes over at once; a node that
//! dies is replaced at most `lease_ttl` + a quarter of `renew_interval` after its last renewal.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use troupe_storage::{Lease, Store, StoreError};

use super::{ShardSettings, UpSet};
use crate::error::ClusterError;

/// Lease name of the event bus's outbox drainer.
pub const BUS_OUTBOX_LEASE: &str = "bus.outbox";

/// Spawns the task holding lease `name` for this node; the receiver reads `true` while this node holds
/// it. The task ends when every receiver is dropped (releasing the lease).
pub fn lease_gate(
    store: Store,
    node_id: &str,
    name: &str,
    up: watch::Receiver<UpSet>,
    settings: &ShardSettings,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = Gate {
        store,
        node_id: node_id.to_owned(),
        name: name.to_owned(),
        ttl: settings.lease_ttl,
        renew: settings.renew_interval,
        act_within: settings.act_within(),
        held: None,
        tx,
    };
    (rx, tokio::spawn(task.run(up)))
}

struct Gate {
    store: Store,
    node_id: String,
    name: String,
    ttl: Duration,
    renew: Duration,
    act_within: Duration,
    held: Option<(Lease, Instant)>,
    tx: watch::Sender<bool>,
}

impl Gate {
    async fn run(mut self, mut up: watch::Receiver<UpSet>) {
        let mut ticker = tokio::time::interval(self.renew / 4);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = up.changed() => if changed.is_err() { break },
                () = self.tx.closed() => break,
            }
            let now_up = up.borrow_and_update().clone();
            self.step(&now_up).await;
        }
        self.close("stopping");
        if let Some((lease, _)) = self.held.take() {
            let _ = self.store.release_lease(&lease).await;
        }
    }

    fn holder(&self, up: &UpSet) -> String {
        format!("{}/{}", self.node_id, up.incarnation)
    }

    fn close(&self, why: &str) {
        if self.tx.send_replace(false) {
            tracing::info!(lease = %self.name, why, "cluster singleton: no longer held here");
        }
    }

    async fn step(&mut self, up: &UpSet) {
        let holder = self.holder(up);
        if self.held.as_ref().is_some_and(|(l, _)| l.owner != holder) {
            // A new incarnation never acts under the old one's lease.
            self.close("new incarnation");
            self.held = None;
        }
        if let Some((lease, renewed_at)) = self.held.clone() {
            if renewed_at.elapsed() >= self.act_within {
                self.close("no renewal in time");
                self.held = None;
            } else if renewed_at.elapsed() >= self.renew {
                let started = Instant::now();
                match self.store.renew_lease(&lease, self.ttl).await {
                    Ok(lease) => self.held = Some((lease, started)),
                    Err(StoreError::LeaseLost { .. }) => {
                        self.close("lease taken over");
                        self.held = None;
                    }
                    Err(e) => tracing::warn!(lease = %self.name, error = %e, "cluster singleton: renewal failed"),
                }
            }
        }
        let wanted = up.members.contains(&self.node_id);
        match (&self.held, wanted) {
            (Some((lease, _)), false) => {
                let lease = lease.clone();
                self.close("this node is not up");
                self.held = None;
                if let Err(e) = self.store.release_lease(&lease).await {
                    tracing::warn!(lease = %self.name, error = %e, "cluster singleton: release failed (it will lapse)");
                }
            }
            (None, true) => {
                let started = Instant::now();
                match self.store.acquire_lease(&self.name, &holder, self.ttl).await {
                    Ok(lease) => {
                        tracing::info!(lease = %self.name, token = lease.token, "cluster singleton: held here");
                        self.held = Some((lease, started));
                        self.tx.send_replace(true);
                    }
                    Err(StoreError::LeaseHeld { .. }) => {}
                    Err(e) => {
                        let e = ClusterError::from(e);
                        tracing::warn!(lease = %self.name, error = %e, "cluster singleton: cannot acquire");
                    }
                }
            }
            _ => {}
        }
    }
}
