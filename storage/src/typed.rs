//! Typed values inside opaque bytes: postcard in a one-byte version envelope (`[TYPED_VERSION] ‖ postcard`).
//! Used for the store's own records (leases, snapshots, outbox entries) and available to callers.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Envelope version written by this build.
pub const TYPED_VERSION: u8 = 1;

/// Encodes `value` as `[TYPED_VERSION] ‖ postcard(value)`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let out = vec![TYPED_VERSION];
    // postcard serialization into a Vec only fails for types serde cannot represent (none of ours).
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(_) => vec![TYPED_VERSION],
    }
}

/// Decodes bytes written by [`encode`]; the error says what was wrong (never panics).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        None => Err("empty value".to_owned()),
        Some((&TYPED_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| format!("postcard: {e}")),
        Some((v, _)) => Err(format!("unknown envelope version {v}")),
    }
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LeaseRecord {
    pub owner: String,
    pub token: u64,
    /// 0 = released.
    pub expires_at_ms: u64,
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotRecord {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// An outbox entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OutboxRecord {
    pub topic: String,
    /// As a byte string: the same postcard bytes as a `Vec<u8>` sequence (varint length, raw bytes),
    /// read with one copy instead of one visitor call per byte (it showed in the bus's profile).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests;
