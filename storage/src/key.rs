//! Order-preserving key encoding: a [`Key`] is a tuple of typed parts, and the byte order of
//! [`Key::encode`] equals the tuple order (parts compared left to right, a shorter prefix first; parts
//! of different kinds order by kind: bytes < string < u64 < i64).
//!
//! Encoding of each part: a tag byte, then
//! - bytes/string: the bytes with every `0x00` written as `0x00 0xFF`, then the terminator `0x00 0x00`;
//! - u64: 8 bytes big-endian; i64: 8 bytes big-endian with the sign bit flipped.

use crate::error::KeyDecodeError;

const TAG_BYTES: u8 = 0x01;
const TAG_STR: u8 = 0x02;
const TAG_U64: u8 = 0x03;
const TAG_I64: u8 = 0x04;

/// One component of a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyPart {
    /// Opaque bytes.
    Bytes(Vec<u8>),
    /// UTF-8 text, ordered by its bytes.
    Str(String),
    /// Unsigned integer.
    U64(u64),
    /// Signed integer.
    I64(i64),
}

/// A tuple key (partition or clustering key). `Key::default()` is the empty tuple, which sorts first.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub Vec<KeyPart>);

impl Key {
    /// The empty tuple.
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// Appends a byte-string part.
    #[must_use]
    pub fn bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.0.push(KeyPart::Bytes(b.into()));
        self
    }

    /// Appends a string part.
    #[must_use]
    pub fn str(mut self, s: impl Into<String>) -> Self {
        self.0.push(KeyPart::Str(s.into()));
        self
    }

    /// Appends an unsigned integer part.
    #[must_use]
    pub fn u64(mut self, v: u64) -> Self {
        self.0.push(KeyPart::U64(v));
        self
    }

    /// Appends a signed integer part.
    #[must_use]
    pub fn i64(mut self, v: i64) -> Self {
        self.0.push(KeyPart::I64(v));
        self
    }

    /// The order-preserving encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        self.encode_into(&mut out);
        out
    }

    /// Appends the order-preserving encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for part in &self.0 {
            match part {
                KeyPart::Bytes(b) => {
                    out.push(TAG_BYTES);
                    escape_into(b, out);
                }
                KeyPart::Str(s) => {
                    out.push(TAG_STR);
                    escape_into(s.as_bytes(), out);
                }
                KeyPart::U64(v) => {
                    out.push(TAG_U64);
                    out.extend_from_slice(&v.to_be_bytes());
                }
                KeyPart::I64(v) => {
                    out.push(TAG_I64);
                    out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes());
                }
            }
        }
    }

    /// Decodes a whole encoded key.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, KeyDecodeError> {
        let mut parts = Vec::new();
        while let Some((&tag, rest)) = bytes.split_first() {
            bytes = rest;
            let part = match tag {
                TAG_BYTES | TAG_STR => {
                    let (raw, rest) = unescape(bytes)?;
                    bytes = rest;
                    if tag == TAG_BYTES {
                        KeyPart::Bytes(raw)
                    } else {
                        KeyPart::Str(String::from_utf8(raw).map_err(|_| KeyDecodeError("string part is not UTF-8"))?)
                    }
                }
                TAG_U64 | TAG_I64 => {
                    let (head, rest) = bytes.split_at_checked(8).ok_or(KeyDecodeError("truncated integer part"))?;
                    bytes = rest;
                    let mut arr = [0u8; 8];
                    arr.copy_from_slice(head);
                    let v = u64::from_be_bytes(arr);
                    if tag == TAG_U64 { KeyPart::U64(v) } else { KeyPart::I64((v ^ (1 << 63)) as i64) }
                }
                _ => return Err(KeyDecodeError("unknown part tag")),
            };
            parts.push(part);
        }
        Ok(Self(parts))
    }

    /// Readable form for error messages: parts joined by `/`, bytes in hex.
    pub fn display(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                KeyPart::Bytes(b) => format!("0x{}", hex(b)),
                KeyPart::Str(s) => format!("{s:?}"),
                KeyPart::U64(v) => v.to_string(),
                KeyPart::I64(v) => format!("{v}i"),
            })
            .collect();
        format!("({})", parts.join(", "))
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::empty().str(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key::empty().str(s)
    }
}

impl From<u64> for Key {
    fn from(v: u64) -> Self {
        Key::empty().u64(v)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Writes `raw` escaped and terminated (see module doc).
pub(crate) fn escape_into(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Reads one escaped, terminated byte string; returns it and the rest.
pub(crate) fn unescape(bytes: &[u8]) -> Result<(Vec<u8>, &[u8]), KeyDecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match bytes.get(i) {
            None => return Err(KeyDecodeError("unterminated byte part")),
            Some(0) => match bytes.get(i + 1) {
                Some(0) => return Ok((out, bytes.get(i + 2..).unwrap_or_default())),
                Some(0xFF) => {
                    out.push(0);
                    i += 2;
                }
                _ => return Err(KeyDecodeError("bad escape in byte part")),
            },
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
