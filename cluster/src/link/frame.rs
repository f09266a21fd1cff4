//! The link frame: the one wire format of [`super::Links`]. A frame is `b"TRLK"`, a version byte, then a
//! postcard body (the sender's node id and a sequence of items). Payloads are raw bytes the callers
//! encode themselves (an [`troupe_actors::envelope::Envelope`] when they need trace context); decoding
//! borrows them from the frame, so a receiver slices them out of the frame buffer without copying.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// First bytes of every frame.
pub(crate) const MAGIC: &[u8; 4] = b"TRLK";
/// The frame format version this build writes and reads.
pub(crate) const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1;

/// Bytes serialized as one postcard byte string (length + raw bytes), borrowed when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Raw<'a>(pub &'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Raw<'de>, E> {
                Ok(Raw(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// One message inside a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Item<'a> {
    /// A one-way message for the handler of `port`.
    Tell {
        /// Port name.
        port: &'a str,
        /// Payload.
        #[serde(borrow)]
        payload: Raw<'a>,
    },
    /// A request for the call handler of `port`; answered by a `Reply` or `Fail` with the same id.
    Request {
        /// Correlation id (unique per calling node).
        id: u64,
        /// Port name.
        port: &'a str,
        /// Payload.
        #[serde(borrow)]
        payload: Raw<'a>,
    },
    /// The answer to request `id`.
    Reply {
        /// Correlation id.
        id: u64,
        /// Payload.
        #[serde(borrow)]
        payload: Raw<'a>,
    },
    /// Request `id` failed on the callee (no handler, handler gave up).
    Fail {
        /// Correlation id.
        id: u64,
        /// Why.
        reason: &'a str,
    },
}

#[derive(Serialize, Deserialize)]
struct Body<'a> {
    from: &'a str,
    #[serde(borrow)]
    items: Vec<Item<'a>>,
}

#[derive(Serialize)]
struct BodyRef<'a, 'b> {
    from: &'a str,
    items: &'b [Item<'a>],
}

/// Encodes a frame.
pub(crate) fn encode(from: &str, items: &[Item<'_>]) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(HEADER_LEN + 16 + items.len() * 24);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    postcard::to_extend(&BodyRef { from, items }, out)
}

/// A decoded frame borrowing from the bytes it came from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    /// Sending node id.
    pub from: &'a str,
    /// Its items, in send order.
    pub items: Vec<Item<'a>>,
}

/// Decodes a frame; never panics, whatever the bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame<'_>, String> {
    let Some((head, body)) = bytes.split_at_checked(HEADER_LEN) else {
        return Err(format!("{} bytes: shorter than the frame header", bytes.len()));
    };
    if &head[..MAGIC.len()] != MAGIC {
        return Err("not a link frame (bad magic)".to_owned());
    }
    if head[MAGIC.len()] != VERSION {
        return Err(format!("unsupported frame version {}", head[MAGIC.len()]));
    }
    let (body, rest): (Body<'_>, &[u8]) = postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok(Frame { from: body.from, items: body.items })
}

/// Upper bound of an item's encoded size (used to cut frames before encoding them).
pub(crate) fn item_size(port: &str, payload: usize) -> usize {
    // tag + id (varint ≤ 10) + port (len varint ≤ 5 + bytes) + payload (len varint ≤ 5 + bytes)
    1 + 10 + 5 + port.len() + 5 + payload
}
