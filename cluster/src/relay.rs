//! Cross-node channel fan-out: the [`Relay`] of the channel hub over the [`Links`].
//!
//! A publish on any node crosses the network once per peer node (one [`Links::broadcast`] on the
//! [`CHANNELS_PORT`] port), and every receiving node hands it to its own subscribers with
//! [`Hub::deliver_relayed`] (which does not relay again). The publisher never waits: a peer whose link
//! is full misses the message, counted in `troupe_cluster_relay_dropped_total` and logged (at most once
//! a second), like a slow WebSocket consumer. Order: messages published on one node reach each peer in
//! publish order; messages published on different nodes interleave per node (each node assigns its own
//! local offsets).
//!
//! Wire format: a version byte ([`RELAY_VERSION`]) then a postcard `(channel, data)`; undecodable
//! messages are counted in `troupe_cluster_decode_failures_total` and logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use troupe_actors::channels::{Hub, Relay};

use crate::link::Links;
use crate::link::frame::Raw;
use crate::mesh::count_decode_failure;

pub mod sessions;
#[cfg(test)]
mod tests;

/// The link port channel messages travel on.
pub const CHANNELS_PORT: &str = "channels";
/// The relay wire format version.
pub const RELAY_VERSION: u8 = 1;

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Relayed<'a> {
    channel: &'a str,
    #[serde(borrow)]
    data: Raw<'a>,
}

fn encode(channel: &str, data: &[u8]) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(1 + channel.len() + data.len() + 10);
    out.push(RELAY_VERSION);
    postcard::to_extend(&Relayed { channel, data: Raw(data) }, out)
}

fn decode(bytes: &[u8]) -> Result<Relayed<'_>, String> {
    match bytes.split_first() {
        None => Err("empty relay message".to_owned()),
        Some((&RELAY_VERSION, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unsupported relay version {v}")),
    }
}

/// Relays local publishes to every peer and delivers peers' publishes to the local hub.
pub struct ChannelRelay {
    links: Links,
    started: Instant,
    last_warn_ms: AtomicU64,
}

impl std::fmt::Debug for ChannelRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRelay").field("links", &self.links).finish_non_exhaustive()
    }
}

impl ChannelRelay {
    /// A relay over `links` (give it to [`Hub::with_relay`], then [`ChannelRelay::attach`] the hub).
    pub fn new(links: Links) -> Arc<Self> {
        Arc::new(Self { links, started: Instant::now(), last_warn_ms: AtomicU64::new(0) })
    }

    /// Delivers the channel messages peers relay to `hub`'s local subscribers.
    pub fn attach(&self, hub: &Hub) {
        let hub = hub.clone();
        self.links.register(CHANNELS_PORT, move |from, bytes| match decode(&bytes) {
            Ok(msg) => {
                metrics::counter!("troupe_cluster_relay_received_total").increment(1);
                hub.deliver_relayed(msg.channel, bytes.slice_ref(msg.data.0));
            }
            Err(reason) => {
                count_decode_failure("channel relay", &reason);
                tracing::debug!(peer = from, "undecodable relayed channel message");
            }
        });
    }

    fn warn_dropped(&self, channel: &str, peers: &[String]) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self.last_warn_ms.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(channel, ?peers, "cluster link full: channel message not relayed to these peers");
        }
    }
}

impl Relay for ChannelRelay {
    fn on_local_publish(&self, channel: &str, _offset: u64, data: &Bytes) {
        let bytes = match encode(channel, data) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot encode a channel message for the cluster");
                return;
            }
        };
        let report = self.links.broadcast(CHANNELS_PORT, &bytes);
        metrics::counter!("troupe_cluster_relay_sent_total").increment(report.queued as u64);
        if !report.full.is_empty() {
            metrics::counter!("troupe_cluster_relay_dropped_total").increment(report.full.len() as u64);
            self.warn_dropped(channel, &report.full);
        }
    }
}
