//! Fuzz `PackedBatch::decode` (the body of a packed message, bytes a consumer reads off the broker):
//! it must never panic, and whatever it accepts must re-encode and decode to the same batch.
//!
//! `cargo fuzz run packed_decode` (nightly, or `RUSTC_BOOTSTRAP=1` on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_amqp::PackedBatch;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = PackedBatch::decode(data) {
        let bytes = match batch.encode() {
            Ok(bytes) => bytes,
            Err(e) => panic!("decoded batch does not re-encode: {e}"),
        };
        match PackedBatch::decode(&bytes) {
            Ok(again) => assert_eq!(again, batch),
            Err(e) => panic!("re-encoded batch does not decode: {e}"),
        }
    }
});
