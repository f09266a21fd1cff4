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

/// The layout records had before their byte fields were read as byte strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PlainVecOutbox {
    topic: String,
    payload: Vec<u8>,
}

proptest! {
    /// Stored bytes are unchanged by reading payloads as byte strings: old rows decode, new rows are
    /// byte-for-byte what the old layout wrote.
    #[test]
    fn byte_string_fields_keep_the_stored_layout(
        topic in "[a-z.]{0,12}",
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let old = PlainVecOutbox { topic: topic.clone(), payload: payload.clone() };
        let new = OutboxRecord { topic, payload };
        prop_assert_eq!(encode(&old), encode(&new));
        prop_assert_eq!(decode::<OutboxRecord>(&encode(&old)).unwrap(), new.clone());
        let snap = SnapshotRecord { version: 3, state: new.payload.clone() };
        let plain = (3u64, new.payload);
        prop_assert_eq!(encode(&snap), encode(&plain));
    }
}
