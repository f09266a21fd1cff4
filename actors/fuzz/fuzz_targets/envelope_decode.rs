//! Fuzz `Envelope::decode` with arbitrary bytes: it must never panic, and
//! whatever it accepts must re-encode and decode to the same envelope.
//!
//! `cargo fuzz run envelope_decode` (nightly, or `RUSTC_BOOTSTRAP=1` on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_actors::envelope::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let bytes = match envelope.encode() {
            Ok(bytes) => bytes,
            Err(e) => panic!("decoded envelope does not re-encode: {e}"),
        };
        match Envelope::decode(&bytes) {
            Ok(again) => assert_eq!(again, envelope),
            Err(e) => panic!("re-encoded envelope does not decode: {e}"),
        }
    }
});
