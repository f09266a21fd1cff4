//! The failure detector's time logic, free of I/O so it can be tested with a paused clock.
//!
//! Two independent signals, judged on this node's monotonic clock (never on peers' wall clocks):
//! - **store heartbeat**: the peer's heartbeat counter in its membership row must keep changing; this
//!   catches a dead or frozen process even when no mesh connection to it was ever made;
//! - **mesh ping**: once a peer has joined (`up`/`suspect`/`leaving`) it must answer our pings over the
//!   mesh; this catches a peer that is cut off from us, and gives the RTT.
//!
//! A peer silent on either signal for `suspect_after` is [`PeerHealth::Suspect`]; for `down_after`,
//! [`PeerHealth::Down`]. A new incarnation starts a fresh record. If this node itself was paused (its
//! own timers fired late), every record restarts, so a node waking up from SIGSTOP never accuses the
//! peers it could not hear while frozen.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::membership::NodeStatus;

#[cfg(test)]
mod tests;

/// Detector bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Silence after which a peer is suspect.
    pub suspect_after: Duration,
    /// Silence after which a peer is down (> `suspect_after`).
    pub down_after: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { suspect_after: Duration::from_millis(1500), down_after: Duration::from_secs(3) }
    }
}

/// This node's judgement of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerHealth {
    /// Heard from within `suspect_after` on every signal that applies.
    Alive,
    /// Silent for `suspect_after` on some signal.
    Suspect,
    /// Silent for `down_after` on some signal.
    Down,
}

impl PeerHealth {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerHealth::Alive => "alive",
            PeerHealth::Suspect => "suspect",
            PeerHealth::Down => "down",
        }
    }
}

#[derive(Clone, Debug)]
struct Peer {
    incarnation: u64,
    status: NodeStatus,
    heartbeat: u64,
    heartbeat_seen: Instant,
    mesh_since: Instant,
    last_pong: Option<Instant>,
    rtt: Option<Duration>,
}

impl Peer {
    fn fresh(incarnation: u64, status: NodeStatus, heartbeat: u64, now: Instant) -> Self {
        Self { incarnation, status, heartbeat, heartbeat_seen: now, mesh_since: now, last_pong: None, rtt: None }
    }
}

/// A verdict on one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The peer.
    pub node_id: String,
    /// The incarnation judged.
    pub incarnation: u64,
    /// The judgement.
    pub health: PeerHealth,
    /// Which signal and how long it has been silent.
    pub reason: String,
}

/// Per-peer failure-detector state.
#[derive(Clone, Debug)]
pub struct Detector {
    config: DetectorConfig,
    peers: HashMap<String, Peer>,
}

impl Detector {
    /// An empty detector.
    pub fn new(config: DetectorConfig) -> Self {
        Self { config, peers: HashMap::new() }
    }

    /// The bounds.
    pub fn config(&self) -> DetectorConfig {
        self.config
    }

    /// Records a peer's membership row as read now.
    pub fn observe(&mut self, node_id: &str, incarnation: u64, status: NodeStatus, heartbeat: u64, now: Instant) {
        match self.peers.get_mut(node_id) {
            Some(p) if p.incarnation == incarnation => {
                if p.heartbeat != heartbeat {
                    p.heartbeat = heartbeat;
                    p.heartbeat_seen = now;
                }
                if !p.status.is_meshed() && status.is_meshed() {
                    p.mesh_since = now;
                }
                p.status = status;
            }
            Some(p) if p.incarnation > incarnation => {}
            _ => {
                self.peers.insert(node_id.to_owned(), Peer::fresh(incarnation, status, heartbeat, now));
            }
        }
    }

    /// Records a ping answer from `incarnation` of `node_id`; `false` when it is not the incarnation we
    /// track (a stale process answering).
    pub fn pong(&mut self, node_id: &str, incarnation: u64, rtt: Duration, now: Instant) -> bool {
        match self.peers.get_mut(node_id) {
            Some(p) if p.incarnation == incarnation => {
                p.last_pong = Some(now);
                p.rtt = Some(rtt);
                true
            }
            _ => false,
        }
    }

    /// Drops every peer for which `keep` is false (rows gone from the table).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.peers.retain(|id, _| keep(id));
    }

    /// This node was paused (its own timers fired late): restart every peer's silence from `now`.
    pub fn restart_all(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.heartbeat_seen = now;
            p.mesh_since = now;
            p.last_pong = None;
        }
    }

    /// The last measured ping round trip to `node_id`.
    pub fn rtt(&self, node_id: &str) -> Option<Duration> {
        self.peers.get(node_id).and_then(|p| p.rtt)
    }

    /// Whether `node_id` answered a ping within `suspect_after`.
    pub fn reachable(&self, node_id: &str, now: Instant) -> bool {
        self.peers
            .get(node_id)
            .and_then(|p| p.last_pong)
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.suspect_after)
    }

    /// The current judgement of one peer (`None` if unknown); `use_mesh` as in [`Detector::verdicts`].
    pub fn health(&self, node_id: &str, now: Instant, use_mesh: bool) -> Option<PeerHealth> {
        self.peers.get(node_id).map(|p| self.judge_peer(p, now, use_mesh).0)
    }

    /// Every live peer that is not [`PeerHealth::Alive`]. `use_mesh` = false judges by the store
    /// heartbeat alone (a node that has not joined cannot tell a silent peer from its own isolation).
    pub fn verdicts(&self, now: Instant, use_mesh: bool) -> Vec<Verdict> {
        let mut out: Vec<Verdict> = self
            .peers
            .iter()
            .filter(|(_, p)| p.status.is_live())
            .filter_map(|(id, p)| {
                let (health, reason) = self.judge_peer(p, now, use_mesh);
                (health != PeerHealth::Alive).then(|| Verdict {
                    node_id: id.clone(),
                    incarnation: p.incarnation,
                    health,
                    reason,
                })
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    fn judge_peer(&self, p: &Peer, now: Instant, use_mesh: bool) -> (PeerHealth, String) {
        let store_silence = now.saturating_duration_since(p.heartbeat_seen);
        let mesh_silence = if use_mesh && p.status.is_meshed() {
            let since = p.last_pong.map_or(p.mesh_since, |t| t.max(p.mesh_since));
            now.saturating_duration_since(since)
        } else {
            Duration::ZERO
        };
        let (signal, silence) =
            if mesh_silence > store_silence { ("ping", mesh_silence) } else { ("heartbeat", store_silence) };
        let health = if silence >= self.config.down_after {
            PeerHealth::Down
        } else if silence >= self.config.suspect_after {
            PeerHealth::Suspect
        } else {
            PeerHealth::Alive
        };
        let reason = match signal {
            "ping" => format!("no ping answer for {} ms", silence.as_millis()),
            _ => format!("no store heartbeat for {} ms", silence.as_millis()),
        };
        (health, reason)
    }
}
