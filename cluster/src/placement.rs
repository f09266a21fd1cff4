//! Placement, as a library (not yet wired into the node): which `up` member owns a key or a shard
//! (rendezvous — highest-random-weight — hashing), and shard ownership held through store leases whose
//! fencing tokens guard every write of the shard's state.
//!
//! - [`owner`] / [`ranked`]: rendezvous hashing over member ids. Removing a member moves only the keys it
//!   owned; adding one moves only keys to it; the answer does not depend on the members' order.
//! - [`shard_of`]: a key's shard among a fixed number; [`desired_shards`] and [`plan`]: what this node
//!   should acquire and release when the `up` set changes.
//! - [`ShardLeases`]: acquire/renew/release `shard/<n>` leases in the store as `<node id>/<incarnation>`,
//!   so a node that rejoined with a new incarnation never inherits its old token.
//! - [`fenced_put`] / [`fenced_get`]: state written with the writer's fencing token; a write carrying a
//!   token older than the stored one is rejected, so a stale owner (e.g. resumed after SIGSTOP) cannot
//!   overwrite its successor's state.
//!
//! The hash is our own (FNV-1a then a splitmix64 finalizer) so placement is stable across Rust versions
//! and platforms — every node must compute the same owner.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_storage::{Expected, Key, Lease, Store, StoreError};

use crate::error::{ClusterError, Result};

#[cfg(test)]
mod tests;

/// Stable 64-bit hash of `parts` (length-prefixed, so `("ab","c")` ≠ `("a","bc")`).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    }
    // splitmix64 finalizer: FNV alone clusters on short, similar inputs.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A member's weight for `key`.
pub fn score(key: &[u8], member: &str) -> u64 {
    stable_hash(&[member.as_bytes(), key])
}

/// The member owning `key`: the highest score (ties broken by the smaller id). `None` without members.
pub fn owner<'a, S: AsRef<str>>(key: &[u8], members: &'a [S]) -> Option<&'a str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| score(key, a).cmp(&score(key, b)).then_with(|| b.cmp(a)))
}

/// Members in preference order for `key` (owner first): the fallback order when the owner goes.
pub fn ranked<'a, S: AsRef<str>>(key: &[u8], members: &'a [S]) -> Vec<&'a str> {
    let mut out: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
    out.sort_by(|a, b| score(key, b).cmp(&score(key, a)).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// The shard of `key` among `shards` (≥ 1).
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    (stable_hash(&[b"shard", key]) % u64::from(shards.max(1))) as u32
}

/// The shards `me` owns among `shards` when `members` are up.
pub fn desired_shards<S: AsRef<str>>(shards: u32, members: &[S], me: &str) -> BTreeSet<u32> {
    (0..shards).filter(|s| owner(&s.to_be_bytes(), members) == Some(me)).collect()
}

/// What to change to go from the shards held to the shards desired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards to stop, checkpoint and release (held, no longer ours).
    pub release: Vec<u32>,
    /// Shards to acquire (ours, not held).
    pub acquire: Vec<u32>,
}

/// The moves from `held` to `desired`. Releases come first: a shard moves by its old owner releasing it,
/// and the new owner acquiring it (or its lease expiring).
pub fn plan(held: &BTreeSet<u32>, desired: &BTreeSet<u32>) -> Plan {
    Plan { release: held.difference(desired).copied().collect(), acquire: desired.difference(held).copied().collect() }
}

/// Shard leases in the store, held as `<node id>/<incarnation>`.
#[derive(Clone, Debug)]
pub struct ShardLeases {
    store: Store,
    holder: String,
    ttl: Duration,
}

impl ShardLeases {
    /// Leases for this node's incarnation, each valid for `ttl` unless renewed.
    pub fn new(store: Store, node_id: &str, incarnation: u64, ttl: Duration) -> Self {
        Self { store, holder: format!("{node_id}/{incarnation}"), ttl }
    }

    /// The lease name of a shard.
    pub fn name(shard: u32) -> String {
        format!("shard/{shard}")
    }

    /// This holder's name in the lease records.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes `shard` (a greater fencing token than any before, unless this holder still has it).
    /// `StoreError::LeaseHeld` (wrapped) while another live holder has it.
    pub async fn acquire(&self, shard: u32) -> Result<Lease> {
        Ok(self.store.acquire_lease(&Self::name(shard), &self.holder, self.ttl).await?)
    }

    /// Extends a held lease; an error when it was taken over (stop acting on the shard).
    pub async fn renew(&self, lease: &Lease) -> Result<Lease> {
        Ok(self.store.renew_lease(lease, self.ttl).await?)
    }

    /// Gives a lease up after the shard was stopped and checkpointed; `false` if it was already lost.
    pub async fn release(&self, lease: &Lease) -> Result<bool> {
        Ok(self.store.release_lease(lease).await?)
    }
}

/// A value stored with the fencing token of the lease its writer held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FencedValue {
    token: u64,
    /// `None`: claimed by a new owner (see [`fenced_claim`]) before any state was written.
    value: Option<Vec<u8>>,
}

/// Why a fenced write did not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stale fencing token {token}: the stored state was written with token {current}")]
pub struct StaleToken {
    /// The writer's token.
    pub token: u64,
    /// The token of the stored state.
    pub current: u64,
}

/// Writes `value` guarded by `token`: applied only if no state written with a greater token exists.
/// `Ok(Err(StaleToken))` when the writer is a stale owner.
pub async fn fenced_put(
    store: &Store,
    table: &str,
    pk: &Key,
    ck: &Key,
    token: u64,
    value: Vec<u8>,
) -> Result<std::result::Result<u64, StaleToken>> {
    fenced_write(store, table, pk, ck, token, Some(value)).await
}

/// Takes over the state at `pk`/`ck` for the holder of `token` before it reads it: rewrites the stored
/// state (or an empty claim) with `token`, so every write of an older owner that lands afterwards is
/// rejected, and returns the state as it was (including every write an older owner made before).
/// `Ok(Err(StaleToken))` when a newer owner claimed it already.
pub async fn fenced_claim(
    store: &Store,
    table: &str,
    pk: &Key,
    ck: &Key,
    token: u64,
) -> Result<std::result::Result<Option<Vec<u8>>, StaleToken>> {
    for _ in 0..8 {
        let current = store.get(table, pk, ck).await?;
        let (value, written) = match &current {
            None => (None, store.put_if_absent(table, pk, ck, encode_fenced(token, None)?, None).await),
            Some(row) => {
                let stored = decode_fenced(&row.value)?;
                if stored.token > token {
                    return Ok(Err(StaleToken { token, current: stored.token }));
                }
                if stored.token == token {
                    return Ok(Ok(stored.value));
                }
                let bytes = encode_fenced(token, stored.value.clone())?;
                (stored.value, store.compare_and_set(table, pk, ck, Expected::Version(row.version), bytes).await)
            }
        };
        match written {
            Ok(_) => return Ok(Ok(value)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClusterError::Contention("fenced claim"))
}

fn encode_fenced(token: u64, value: Option<Vec<u8>>) -> Result<Vec<u8>> {
    postcard::to_stdvec(&FencedValue { token, value })
        .map_err(|e| ClusterError::Encode { what: "fenced value", reason: e.to_string() })
}

async fn fenced_write(
    store: &Store,
    table: &str,
    pk: &Key,
    ck: &Key,
    token: u64,
    value: Option<Vec<u8>>,
) -> Result<std::result::Result<u64, StaleToken>> {
    let bytes = encode_fenced(token, value)?;
    for _ in 0..8 {
        let current = store.get(table, pk, ck).await?;
        let written = match &current {
            None => store.put_if_absent(table, pk, ck, bytes.clone(), None).await,
            Some(row) => {
                let stored = decode_fenced(&row.value)?;
                if stored.token > token {
                    return Ok(Err(StaleToken { token, current: stored.token }));
                }
                store.compare_and_set(table, pk, ck, Expected::Version(row.version), bytes.clone()).await
            }
        };
        match written {
            Ok(version) => return Ok(Ok(version)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClusterError::Contention("fenced write"))
}

/// Reads a fenced value: `(token it was written with, value)`; `None` when absent or only claimed.
pub async fn fenced_get(store: &Store, table: &str, pk: &Key, ck: &Key) -> Result<Option<(u64, Vec<u8>)>> {
    match store.get(table, pk, ck).await? {
        None => Ok(None),
        Some(row) => {
            let v = decode_fenced(&row.value)?;
            Ok(v.value.map(|value| (v.token, value)))
        }
    }
}

fn decode_fenced(bytes: &[u8]) -> Result<FencedValue> {
    postcard::from_bytes(bytes).map_err(|e| ClusterError::Decode { what: "fenced value", reason: e.to_string() })
}
