//! The membership table in the shared store: one row per node (partition `members`, clustering key =
//! node id) holding its incarnation, addresses, status and heartbeat. Rows are postcard in the versioned
//! envelope (`troupe_actors::envelope`). Every status change is a compare-and-set on the row version, so a
//! node refuting a suspicion and a peer declaring it down cannot both win.

use serde::{Deserialize, Serialize};
use troupe_actors::envelope::Envelope;
use troupe_storage::{Expected, Key, Scan, Store, StoreError};

use crate::error::{ClusterError, Result};

#[cfg(test)]
mod tests;

/// The table holding membership rows.
pub const MEMBERS_TABLE: &str = "cluster_members";
/// The table holding drain requests (partition `drain`, clustering key = node id, value = the
/// incarnation to drain, big-endian u64). Apart from the member rows so their format stays as is.
pub const DRAINS_TABLE: &str = "cluster_drains";
/// Envelope kind of a membership row.
const MEMBER_KIND: &str = "cluster.member";
/// Schema version of [`Member`].
const MEMBER_VERSION: u32 = 1;

/// A member's lifecycle status, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Registered, not yet connected to the cluster (or refused by it).
    Joining,
    /// Connected and heartbeating.
    Up,
    /// A peer has not heard from it within `suspect_after`.
    Suspect,
    /// Stopping gracefully.
    Leaving,
    /// Declared dead (or left). Never comes back at this incarnation.
    Down,
}

impl NodeStatus {
    /// Every status, for metrics.
    pub const ALL: [NodeStatus; 5] =
        [NodeStatus::Joining, NodeStatus::Up, NodeStatus::Suspect, NodeStatus::Leaving, NodeStatus::Down];

    /// Lower-case name (`up`, `suspect`…).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Joining => "joining",
            NodeStatus::Up => "up",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Leaving => "leaving",
            NodeStatus::Down => "down",
        }
    }

    /// Whether the node at this status is expected to heartbeat (everything but `down`).
    pub fn is_live(self) -> bool {
        self != NodeStatus::Down
    }

    /// Whether peers ping it and judge it by the mesh (it has joined and not yet left).
    pub fn is_meshed(self) -> bool {
        matches!(self, NodeStatus::Up | NodeStatus::Suspect | NodeStatus::Leaving)
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One membership row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable node id (kept in the node's data dir across restarts).
    pub node_id: String,
    /// Human-readable node name (`node.name`).
    pub name: String,
    /// Grows every time the node (re)joins; a row at an older incarnation is a dead process.
    pub incarnation: u64,
    /// Where peers dial its mesh (`host:port`).
    pub cluster_addr: String,
    /// Its HTTP API (`ip:port`).
    pub http_addr: String,
    /// Lifecycle status.
    pub status: NodeStatus,
    /// Heartbeat counter, +1 on every heartbeat write of this incarnation.
    pub heartbeat: u64,
    /// Store clock (ms) of the last heartbeat write.
    pub last_heartbeat_ms: u64,
    /// Who set the current status and why (e.g. `marked down by <id>: no ping answer for 3s`).
    pub reason: String,
}

impl Member {
    /// Row bytes: the member in the versioned envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let enc = |e: troupe_actors::envelope::EnvelopeError| ClusterError::Encode {
            what: "membership row",
            reason: e.to_string(),
        };
        Envelope::seal(MEMBER_KIND, self.node_id.clone(), MEMBER_VERSION, self).map_err(enc)?.encode().map_err(enc)
    }

    /// Decodes row bytes.
    pub fn decode(bytes: &[u8]) -> Result<Member> {
        let dec = |reason: String| ClusterError::Decode { what: "membership row", reason };
        let env = Envelope::decode(bytes).map_err(|e| dec(e.to_string()))?;
        if env.kind != MEMBER_KIND || env.version != MEMBER_VERSION {
            return Err(dec(format!("unexpected kind {:?} version {}", env.kind, env.version)));
        }
        env.open::<Member>().map_err(|e| dec(e.to_string()))
    }
}

/// A row as read: the member and the row version (for compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The member.
    pub member: Member,
    /// Row version.
    pub version: u64,
}

/// The membership table over the shared store.
#[derive(Clone, Debug)]
pub struct MembershipTable {
    store: Store,
    pk: Key,
}

impl MembershipTable {
    /// The table of the default cluster in `store`.
    pub fn new(store: Store) -> Self {
        Self { store, pk: Key::from("members") }
    }

    /// The store clock (ms).
    pub fn now_ms(&self) -> u64 {
        self.store.now_ms()
    }

    /// Every row; undecodable rows are skipped (logged and counted).
    pub async fn load_all(&self) -> Result<Vec<Versioned>> {
        let mut out = Vec::new();
        let mut scan = Scan::all();
        loop {
            let page = self.store.scan(MEMBERS_TABLE, &self.pk, &scan).await?;
            for row in page.rows {
                match Member::decode(&row.value) {
                    Ok(member) => out.push(Versioned { member, version: row.version }),
                    Err(e) => {
                        metrics::counter!("troupe_cluster_decode_failures_total", "what" => "member").increment(1);
                        tracing::warn!(key = %row.ck.display(), error = %e, "skipping an undecodable membership row");
                    }
                }
            }
            match page.next {
                Some(cursor) => scan = Scan::all().after(Some(cursor)),
                None => return Ok(out),
            }
        }
    }

    /// One node's row.
    pub async fn get(&self, node_id: &str) -> Result<Option<Versioned>> {
        let row = self.store.get(MEMBERS_TABLE, &self.pk, &Key::from(node_id)).await?;
        row.map(|row| Ok(Versioned { member: Member::decode(&row.value)?, version: row.version })).transpose()
    }

    /// Writes `member` if its row is still at `expected` (`None` = absent). Returns the new version, or
    /// `Ok(None)` when another writer got there first.
    pub async fn write(&self, member: &Member, expected: Option<u64>) -> Result<Option<u64>> {
        let ck = Key::from(member.node_id.as_str());
        let bytes = member.encode()?;
        let written = match expected {
            None => self.store.put_if_absent(MEMBERS_TABLE, &self.pk, &ck, bytes, None).await,
            Some(v) => self.store.compare_and_set(MEMBERS_TABLE, &self.pk, &ck, Expected::Version(v), bytes).await,
        };
        match written {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks `node_id` at `incarnation` to drain (its runtime acts on it on its next tick).
    pub async fn request_drain(&self, node_id: &str, incarnation: u64) -> Result<()> {
        let pk = Key::from("drain");
        self.store.put(DRAINS_TABLE, &pk, &Key::from(node_id), incarnation.to_be_bytes().to_vec()).await?;
        Ok(())
    }

    /// The incarnation a drain was requested for, if any.
    pub async fn drain_request(&self, node_id: &str) -> Result<Option<u64>> {
        let row = self.store.get(DRAINS_TABLE, &Key::from("drain"), &Key::from(node_id)).await?;
        Ok(row.and_then(|r| <[u8; 8]>::try_from(r.value.as_slice()).ok()).map(u64::from_be_bytes))
    }

    /// Removes a drain request (done, or meant for an older incarnation).
    pub async fn clear_drain(&self, node_id: &str) -> Result<()> {
        Ok(self.store.delete(DRAINS_TABLE, &Key::from("drain"), &Key::from(node_id)).await?)
    }

    /// Deletes a node's row (operators' clean-up of long-dead members).
    pub async fn remove(&self, node_id: &str) -> Result<()> {
        Ok(self.store.delete(MEMBERS_TABLE, &self.pk, &Key::from(node_id)).await?)
    }
}

/// The incarnation a node joining now takes: greater than any it had (`previous`), and clock-based so
/// it stays greater even if its row was removed meanwhile.
pub fn next_incarnation(previous: Option<u64>, now_ms: u64) -> u64 {
    previous.map_or(now_ms, |p| p.saturating_add(1).max(now_ms))
}
