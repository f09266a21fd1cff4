//! PLACEHOLDER (replaced by the real envelope module).
/// Envelope errors.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Bad bytes.
    #[error("malformed envelope: {0}")]
    Malformed(String),
}
