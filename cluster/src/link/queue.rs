//! One peer's bounded outbound queue (by messages and by bytes) and the cutting of frames out of it.

use std::collections::VecDeque;

use bytes::Bytes;

use super::frame::{Item, Raw, item_size};

/// A message waiting for its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// See [`Item::Tell`].
    Tell { port: Box<str>, payload: Bytes },
    /// See [`Item::Request`].
    Request { id: u64, port: Box<str>, payload: Bytes },
    /// See [`Item::Reply`].
    Reply { id: u64, payload: Bytes },
    /// See [`Item::Fail`].
    Fail { id: u64, reason: Box<str> },
}

impl Outgoing {
    /// Upper bound of its encoded size.
    pub fn size(&self) -> usize {
        match self {
            Outgoing::Tell { port, payload } | Outgoing::Request { port, payload, .. } => {
                item_size(port, payload.len())
            }
            Outgoing::Reply { payload, .. } => item_size("", payload.len()),
            Outgoing::Fail { reason, .. } => item_size("", reason.len()),
        }
    }

    /// The frame item borrowing from it.
    pub fn item(&self) -> Item<'_> {
        match self {
            Outgoing::Tell { port, payload } => Item::Tell { port, payload: Raw(payload) },
            Outgoing::Request { id, port, payload } => Item::Request { id: *id, port, payload: Raw(payload) },
            Outgoing::Reply { id, payload } => Item::Reply { id: *id, payload: Raw(payload) },
            Outgoing::Fail { id, reason } => Item::Fail { id: *id, reason },
        }
    }
}

/// Bounded FIFO of [`Outgoing`] messages.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct QueueFull;

impl PeerQueue {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self { items: VecDeque::new(), bytes: 0, max_messages: max_messages.max(1), max_bytes: max_bytes.max(1) }
    }

    /// Queues `msg`; `Ok(true)` when the queue was empty (the sender may be asleep). A message larger
    /// than the byte bound is accepted only into an empty queue, so it can never be stuck forever.
    pub fn push(&mut self, msg: Outgoing) -> Result<bool, QueueFull> {
        let size = msg.size();
        let was_empty = self.items.is_empty();
        if self.items.len() >= self.max_messages || (!was_empty && self.bytes + size > self.max_bytes) {
            return Err(QueueFull);
        }
        self.bytes += size;
        self.items.push_back(msg);
        Ok(was_empty)
    }

    /// Moves the oldest messages that fit in `max_frame_bytes` into `out` (always at least one when the
    /// queue is not empty).
    pub fn take_frame(&mut self, max_frame_bytes: usize, out: &mut Vec<Outgoing>) {
        let mut frame = 0;
        while let Some(next) = self.items.front() {
            let size = next.size();
            if !out.is_empty() && frame + size > max_frame_bytes {
                break;
            }
            frame += size;
            self.bytes -= size;
            if let Some(msg) = self.items.pop_front() {
                out.push(msg);
            }
        }
    }

    /// Drops everything queued; how many messages.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.bytes = 0;
        n
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
