#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

#[test]
fn roundtrip_and_version_check() {
    let rec = LeaseRecord { owner: "n1".to_owned(), token: 7, expires_at_ms: 99 };
    let bytes = encode(&rec);
    assert_eq!(bytes[0], TYPED_VERSION);
    assert_eq!(decode::<LeaseRecord>(&bytes).unwrap(), rec);
    let mut other = bytes.clone();
    other[0] = 2;
    assert!(decode::<LeaseRecord>(&other).unwrap_err().contains("version 2"));
    assert!(decode::<LeaseRecord>(&[]).is_err());
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode::<LeaseRecord>(&bytes);
        let _ = decode::<SnapshotRecord>(&bytes);
        let _ = decode::<OutboxRecord>(&bytes);
    }
}
