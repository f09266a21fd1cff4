//! Versioned wire envelope for anything that may cross a node.
//!
//! Wire format: the magic bytes `TRP`, one wire-format version byte
//! ([`WIRE_VERSION`]), then the postcard encoding of [`Envelope`]. The payload
//! inside is itself postcard bytes, tagged with its own schema `version` so
//! receivers can migrate old payloads.
//!
//! [`Envelope::decode`] treats its input as untrusted: it never panics, caps
//! the input at [`MAX_ENVELOPE_BYTES`], rejects trailing bytes, and validates
//! the W3C trace context. Postcard checks every string/byte length against
//! the input that is left before allocating, so a forged length cannot make
//! it allocate more than the input size.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg(test)]
mod tests;

/// Largest encoded envelope accepted by [`Envelope::encode`] and
/// [`Envelope::decode`] (16 MiB).
pub const MAX_ENVELOPE_BYTES: usize = 16 * 1024 * 1024;

/// Magic prefix of every encoded envelope.
pub const MAGIC: [u8; 3] = *b"TRP";

/// Wire format version written after [`MAGIC`]; the only one this build reads.
pub const WIRE_VERSION: u8 = 1;

const HEADER_LEN: usize = MAGIC.len() + 1;

/// Why an envelope could not be built, encoded, decoded or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The envelope (or its payload) exceeds [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size of the input or of the encoding, in bytes.
        size: usize,
        /// The limit, [`MAX_ENVELOPE_BYTES`].
        max: usize,
    },
    /// The input does not start with `TRP`.
    #[error("not a Troupe envelope: missing \"TRP\" magic prefix")]
    BadMagic,
    /// The wire-format version byte is not one this build reads.
    #[error("unsupported envelope wire format version {found} (this build reads version {supported})", supported = WIRE_VERSION)]
    UnsupportedVersion {
        /// The version byte found in the input.
        found: u8,
    },
    /// The bytes after the header are not a valid envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The payload could not be serialized or deserialized as the requested
    /// type.
    #[error("envelope payload: {0}")]
    Payload(String),
    /// The W3C `traceparent`/`tracestate` is invalid.
    #[error("invalid trace context: {0}")]
    BadTraceContext(String),
}

/// A message, event or command with its routing metadata and a postcard
/// payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id, a UUID v7 (time ordered).
    pub id: Uuid,
    /// What the payload is, e.g. `"user.created"`.
    pub kind: String,
    /// Id of the entity the message is about.
    pub aggregate_id: String,
    /// Schema version of the payload.
    pub version: u32,
    /// Creation time, Unix epoch milliseconds.
    pub timestamp_ms: i64,
    /// W3C trace context to continue the trace on the receiving side.
    pub trace_context: Option<TraceContext>,
    /// The payload, postcard-encoded.
    #[serde(with = "payload_bytes")]
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Wrap `payload` (postcard-encoded) with a fresh v7 id and the current
    /// wall-clock time; no trace context.
    ///
    /// # Errors
    /// [`EnvelopeError::Payload`] if `payload` cannot be serialized,
    /// [`EnvelopeError::TooLarge`] if it exceeds [`MAX_ENVELOPE_BYTES`].
    pub fn seal<T: Serialize>(
        kind: impl Into<String>,
        aggregate_id: impl Into<String>,
        version: u32,
        payload: &T,
    ) -> Result<Self, EnvelopeError> {
        let payload = postcard::to_stdvec(payload).map_err(|e| EnvelopeError::Payload(e.to_string()))?;
        if payload.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { size: payload.len(), max: MAX_ENVELOPE_BYTES });
        }
        Ok(Self {
            id: Uuid::now_v7(),
            kind: kind.into(),
            aggregate_id: aggregate_id.into(),
            version,
            timestamp_ms: unix_ms_now(),
            trace_context: None,
            payload,
        })
    }

    /// The same envelope carrying `tc`.
    #[must_use]
    pub fn with_trace(self, tc: TraceContext) -> Self {
        Self { trace_context: Some(tc), ..self }
    }

    /// Deserialize the payload as `T`.
    ///
    /// # Errors
    /// [`EnvelopeError::Payload`] if the payload is not a `T` or has bytes left
    /// over after it.
    pub fn open<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        let (value, rest) =
            postcard::take_from_bytes::<T>(&self.payload).map_err(|e| EnvelopeError::Payload(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EnvelopeError::Payload(format!("{} trailing bytes after the payload", rest.len())));
        }
        Ok(value)
    }

    /// `TRP` + [`WIRE_VERSION`] + postcard(self). Fails if the trace context
    /// is invalid or the result would exceed [`MAX_ENVELOPE_BYTES`].
    ///
    /// # Errors
    /// [`EnvelopeError::BadTraceContext`] or [`EnvelopeError::TooLarge`].
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        if let Some(tc) = &self.trace_context {
            tc.validate()?;
        }
        // Cheap lower bound first, so an oversize payload is not copied.
        let at_least = HEADER_LEN
            .saturating_add(self.payload.len())
            .saturating_add(self.kind.len())
            .saturating_add(self.aggregate_id.len());
        if at_least > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { size: at_least, max: MAX_ENVELOPE_BYTES });
        }
        let mut out = Vec::with_capacity(at_least.saturating_add(64));
        out.extend_from_slice(&MAGIC);
        out.push(WIRE_VERSION);
        let out =
            postcard::to_extend(self, out).map_err(|e| EnvelopeError::Malformed(format!("encoding failed: {e}")))?;
        if out.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { size: out.len(), max: MAX_ENVELOPE_BYTES });
        }
        Ok(out)
    }

    /// Parse an encoded envelope from untrusted bytes. Never panics.
    ///
    /// # Errors
    /// [`EnvelopeError::TooLarge`] for input over [`MAX_ENVELOPE_BYTES`],
    /// [`EnvelopeError::BadMagic`] / [`EnvelopeError::UnsupportedVersion`] for
    /// a foreign or newer header, [`EnvelopeError::Malformed`] for short,
    /// truncated or corrupt input or trailing bytes, and
    /// [`EnvelopeError::BadTraceContext`] for an invalid trace context.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { size: bytes.len(), max: MAX_ENVELOPE_BYTES });
        }
        let Some((&[m0, m1, m2, wire_version], body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            // Too short for a header: blame the magic if what is there is
            // already wrong.
            let n = bytes.len().min(MAGIC.len());
            if bytes.get(..n) != MAGIC.get(..n) {
                return Err(EnvelopeError::BadMagic);
            }
            return Err(EnvelopeError::Malformed(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        };
        if [m0, m1, m2] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        if wire_version != WIRE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: wire_version });
        }
        let (envelope, rest) =
            postcard::take_from_bytes::<Self>(body).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EnvelopeError::Malformed(format!("{} trailing bytes after the envelope", rest.len())));
        }
        if let Some(tc) = &envelope.trace_context {
            tc.validate()?;
        }
        Ok(envelope)
    }
}

/// Milliseconds since the Unix epoch by the wall clock (negative before it).
fn unix_ms_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// A W3C Trace Context (`traceparent` and optional `tracestate` headers),
/// validated when parsed or decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// `version-traceid-parentid-flags`, e.g.
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub traceparent: String,
    /// Vendor-specific `key=value` list, passed through unchanged.
    pub tracestate: Option<String>,
}

/// Length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;
/// Longest `traceparent` accepted for future versions (which may append fields).
const MAX_TRACEPARENT_LEN: usize = 512;
/// The W3C limit on `tracestate` list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;

impl TraceContext {
    /// Validate and store the `traceparent` and `tracestate` header values.
    ///
    /// Follows W3C Trace Context level 1: lowercase hex only, version `ff`
    /// and all-zero trace/parent ids rejected, version `00` exactly 55
    /// characters; higher versions may append `-`-separated fields. An empty
    /// `tracestate` is stored as `None`.
    ///
    /// # Errors
    /// [`EnvelopeError::BadTraceContext`] saying what is wrong.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, EnvelopeError> {
        validate_traceparent(traceparent).map_err(EnvelopeError::BadTraceContext)?;
        let tracestate = match tracestate {
            Some(ts) => {
                if validate_tracestate(ts).map_err(EnvelopeError::BadTraceContext)? {
                    Some(ts.to_owned())
                } else {
                    None
                }
            }
            None => None,
        };
        Ok(Self { traceparent: traceparent.to_owned(), tracestate })
    }

    /// Start a new trace: random trace and span ids, sampled flag set.
    pub fn new_root() -> Self {
        let trace_id = fastrand::u128(1..);
        let span_id = fastrand::u64(1..);
        Self { traceparent: format!("00-{trace_id:032x}-{span_id:016x}-01"), tracestate: None }
    }

    /// A context for a child span: same trace id, flags and tracestate, new
    /// random span id, written as version 00.
    #[must_use]
    pub fn child(&self) -> Self {
        let span_id = fastrand::u64(1..);
        Self {
            traceparent: format!("00-{}-{span_id:016x}-{}", self.trace_id(), self.flags()),
            tracestate: self.tracestate.clone(),
        }
    }

    /// The 32-hex-digit trace id (empty if the context was built invalid).
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or("")
    }

    /// The 16-hex-digit id of the span that sent this context (empty if the
    /// context was built invalid).
    pub fn span_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or("")
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(self.flags(), 16).is_ok_and(|f| f & 1 == 1)
    }

    fn flags(&self) -> &str {
        self.traceparent.get(53..55).unwrap_or("00")
    }

    /// Check both fields (the fields are public, so a context may have been
    /// built without [`parse`](Self::parse)).
    ///
    /// # Errors
    /// [`EnvelopeError::BadTraceContext`] saying what is wrong.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        validate_traceparent(&self.traceparent).map_err(EnvelopeError::BadTraceContext)?;
        if let Some(ts) = &self.tracestate {
            validate_tracestate(ts).map_err(EnvelopeError::BadTraceContext)?;
        }
        Ok(())
    }
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn validate_traceparent(tp: &str) -> Result<(), String> {
    let b = tp.as_bytes();
    if b.len() < TRACEPARENT_LEN || b.len() > MAX_TRACEPARENT_LEN {
        return Err(format!("traceparent is {} characters, expected {TRACEPARENT_LEN}", b.len()));
    }
    let field = |range: std::ops::Range<usize>| b.get(range).unwrap_or_default();
    let (version, trace_id, parent_id, flags) = (field(0..2), field(3..35), field(36..52), field(53..55));
    if field(2..3) != b"-" || field(35..36) != b"-" || field(52..53) != b"-" {
        return Err("traceparent fields must be separated by '-'".into());
    }
    for (name, value) in [("version", version), ("trace id", trace_id), ("parent id", parent_id), ("flags", flags)] {
        if !is_lower_hex(value) {
            return Err(format!("traceparent {name} is not lowercase hex"));
        }
    }
    if version == b"ff" {
        return Err("traceparent version ff is invalid".into());
    }
    if version == b"00" && b.len() != TRACEPARENT_LEN {
        return Err(format!("version 00 traceparent is {} characters, expected {TRACEPARENT_LEN}", b.len()));
    }
    if b.len() > TRACEPARENT_LEN && field(55..56) != b"-" {
        return Err("traceparent has extra characters after the flags".into());
    }
    if trace_id.iter().all(|&c| c == b'0') {
        return Err("traceparent trace id is all zeros".into());
    }
    if parent_id.iter().all(|&c| c == b'0') {
        return Err("traceparent parent id is all zeros".into());
    }
    Ok(())
}

/// Validate a `tracestate` list; `Ok(false)` if it has no members.
fn validate_tracestate(ts: &str) -> Result<bool, String> {
    let mut keys: Vec<&str> = Vec::new();
    for member in ts.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return Err(format!("tracestate member {member:?} has no '='"));
        };
        if !valid_tracestate_key(key) {
            return Err(format!("tracestate key {key:?} is invalid"));
        }
        if !valid_tracestate_value(value) {
            return Err(format!("tracestate value for {key:?} is invalid"));
        }
        if keys.contains(&key) {
            return Err(format!("tracestate key {key:?} appears twice"));
        }
        if keys.len() == MAX_TRACESTATE_MEMBERS {
            return Err(format!("tracestate has more than {MAX_TRACESTATE_MEMBERS} members"));
        }
        keys.push(key);
    }
    Ok(!keys.is_empty())
}

fn is_key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// `simple-key` or `tenant-id@system-id` per W3C Trace Context.
fn valid_tracestate_key(key: &str) -> bool {
    let chars_ok = |s: &[u8], max: usize| s.len() <= max && s.iter().all(|&c| is_key_char(c));
    match key.split_once('@') {
        None => match key.as_bytes() {
            [first, rest @ ..] => first.is_ascii_lowercase() && chars_ok(rest, 255),
            [] => false,
        },
        Some((tenant, system)) => {
            let tenant_ok = match tenant.as_bytes() {
                [first, rest @ ..] => (first.is_ascii_lowercase() || first.is_ascii_digit()) && chars_ok(rest, 240),
                [] => false,
            };
            let system_ok = match system.as_bytes() {
                [first, rest @ ..] => first.is_ascii_lowercase() && chars_ok(rest, 13),
                [] => false,
            };
            tenant_ok && system_ok
        }
    }
}

/// 1–256 printable ASCII characters other than `,` and `=`, not ending in a
/// space.
fn valid_tracestate_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b.last() != Some(&b' ')
}

/// Serde adapter: the payload as a byte string, which postcard writes exactly
/// like a `Vec<u8>` sequence (varint length + raw bytes) but reads with one
/// bounds-checked copy instead of one visitor call per byte.
mod payload_bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Never trust the size hint for more than a modest preallocation.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
