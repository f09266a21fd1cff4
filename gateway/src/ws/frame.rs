//! RFC 6455 framing for connections that own their socket: server frames are encoded once, complete
//! (header + payload, unmasked), so a broadcast's bytes go unchanged to every socket; client frames are
//! parsed with tungstenite's [`FrameHeader`] from a read buffer that exists only while bytes are
//! pending (an idle connection holds none).

use std::io::Cursor;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Room reserved in front of a payload for the longest unmasked header (2 + 8 bytes).
const HEADER_ROOM: usize = 10;

/// A complete unmasked frame whose payload `build` writes (into a buffer of at least `capacity`).
pub(crate) fn encode(opcode: OpCode, capacity: usize, build: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_ROOM + capacity);
    out.resize(HEADER_ROOM, 0);
    build(&mut out);
    let len = (out.len() - HEADER_ROOM) as u64;
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    let mut head = Cursor::new([0u8; HEADER_ROOM]);
    if header.format(len, &mut head).is_err() {
        // Ten bytes hold every unmasked header; this cannot happen.
        return Bytes::new();
    }
    let h = head.position() as usize;
    let start = HEADER_ROOM - h;
    out[start..HEADER_ROOM].copy_from_slice(&head.get_ref()[..h]);
    Bytes::from(out).slice(start..)
}

/// The text opcode.
pub(crate) const TEXT: OpCode = OpCode::Data(Data::Text);

/// A complete text frame carrying `payload`.
pub(crate) fn text(payload: &[u8]) -> Bytes {
    encode(TEXT, payload.len(), |out| out.extend_from_slice(payload))
}

/// A ping frame with an empty payload.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// A pong frame echoing `payload` (at most 125 bytes, as the ping's).
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    encode(OpCode::Control(Control::Pong), payload.len(), |out| out.extend_from_slice(payload))
}

/// A close frame: `code` and `reason` (cut to fit a control frame), or no body.
pub(crate) fn close(code: Option<u16>, reason: &str) -> Bytes {
    encode(OpCode::Control(Control::Close), 125, |out| {
        if let Some(code) = code {
            out.extend_from_slice(&code.to_be_bytes());
            let mut end = reason.len().min(123);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&reason.as_bytes()[..end]);
        }
    })
}

/// A message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame, with its code if it had one.
    Close(Option<u16>),
}

/// Why a client's bytes end the connection (close code and reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Violation {
    Violation { code: 1002, reason }
}

/// Close code 1009: a message over the limit.
pub(crate) const TOO_BIG: Violation = Violation { code: 1009, reason: "message too big" };

/// Incremental parser of client frames over a transient read buffer.
#[derive(Debug)]
pub(crate) struct Reader {
    max_message: usize,
    chunk: usize,
    /// Bytes read and not yet parsed from `start` on; no allocation when empty.
    pending: Vec<u8>,
    start: usize,
    /// Bytes the frame at `start` needs in all (0 = unknown until its header is complete).
    want: usize,
    /// A fragmented message so far, and whether it is text.
    message: Vec<u8>,
    fragmented: Option<bool>,
}

impl Reader {
    /// A reader accepting messages up to `max_message` bytes, reading at most `chunk` bytes a time
    /// (more only to complete a larger frame).
    pub(crate) fn new(max_message: usize, chunk: usize) -> Self {
        Self {
            max_message,
            chunk: chunk.max(16),
            pending: Vec::new(),
            start: 0,
            want: 0,
            message: Vec::new(),
            fragmented: None,
        }
    }

    /// Bytes allocated for reading right now (0 when idle).
    pub(crate) fn allocated(&self) -> usize {
        self.pending.capacity() + self.message.capacity()
    }

    /// Make room for the next read and return the buffer to read into (append to its spare capacity).
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        let unparsed = self.pending.len() - self.start;
        let need = self.want.max(unparsed + 1).max(self.chunk);
        if self.pending.capacity() - self.start < need {
            self.pending.drain(..self.start);
            self.start = 0;
            self.pending.reserve_exact(need - self.pending.len());
        }
        &mut self.pending
    }

    /// Append bytes read elsewhere (bytes hyper read past the upgrade request).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete message or control frame in the buffer, if any.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, Violation> {
        loop {
            let avail = &self.pending[self.start..];
            let mut cur = Cursor::new(avail);
            let Some((header, len)) = FrameHeader::parse(&mut cur).map_err(|_| protocol("invalid frame header"))?
            else {
                return Ok(None);
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(protocol("reserved bits set"));
            }
            let Some(mask) = header.mask else { return Err(protocol("client frames must be masked")) };
            if len > self.max_message as u64 {
                return Err(TOO_BIG);
            }
            let head = cur.position() as usize;
            let total = head + len as usize;
            if avail.len() < total {
                self.want = total;
                return Ok(None);
            }
            self.want = 0;
            let from = self.start + head;
            let payload = &mut self.pending[from..from + len as usize];
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            self.start += total;
            let payload = &self.pending[from..from + len as usize];
            match header.opcode {
                OpCode::Control(c) => {
                    if !header.is_final || payload.len() > 125 {
                        return Err(protocol("invalid control frame"));
                    }
                    return match c {
                        Control::Ping => Ok(Some(Incoming::Ping(payload.to_vec()))),
                        Control::Pong => Ok(Some(Incoming::Pong)),
                        Control::Close if payload.len() == 1 => Err(protocol("invalid close frame")),
                        Control::Close => {
                            Ok(Some(Incoming::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))))
                        }
                        Control::Reserved(_) => Err(protocol("reserved opcode")),
                    };
                }
                OpCode::Data(Data::Continue) => {
                    let Some(is_text) = self.fragmented else { return Err(protocol("unexpected continuation frame")) };
                    if self.message.len() + payload.len() > self.max_message {
                        return Err(TOO_BIG);
                    }
                    self.message.extend_from_slice(payload);
                    if header.is_final {
                        self.fragmented = None;
                        let message = std::mem::take(&mut self.message);
                        return Self::complete(is_text, message);
                    }
                }
                OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                    if self.fragmented.is_some() {
                        return Err(protocol("expected a continuation frame"));
                    }
                    let is_text = d == Data::Text;
                    if header.is_final {
                        let message = payload.to_vec();
                        return Self::complete(is_text, message);
                    }
                    self.fragmented = Some(is_text);
                    self.message = payload.to_vec();
                }
                OpCode::Data(Data::Reserved(_)) => return Err(protocol("reserved opcode")),
            }
        }
    }

    fn complete(is_text: bool, message: Vec<u8>) -> Result<Option<Incoming>, Violation> {
        if !is_text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(message)
            .map(|t| Some(Incoming::Text(t)))
            .map_err(|_| Violation { code: 1007, reason: "text message is not UTF-8" })
    }

    /// Drop the parsed bytes; free the buffer when nothing is pending.
    pub(crate) fn compact(&mut self) {
        if self.start >= self.pending.len() {
            self.pending = Vec::new();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests;
