//! Fuzz the inbound decoder (`troupe_amqp::inbound::decode`): the first byte picks a content type,
//! the rest is the body of a delivery. Every input gets a payload or a reason, never a panic, and
//! opaque content types keep the bytes as sent.
//!
//! `cargo fuzz run inbound_decode` (nightly, or `RUSTC_BOOTSTRAP=1` on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_amqp::Payload;
use troupe_amqp::inbound::decode;

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/vnd.troupe.envelope"),
    Some("application/octet-stream"),
    Some("text/other"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    match decode(content_type, body) {
        Ok(Payload::Bytes(bytes)) => assert_eq!(bytes.as_ref(), body),
        Ok(_) => {}
        Err(reason) => assert!(!reason.is_empty()),
    }
});
