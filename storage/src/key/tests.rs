#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

fn part() -> impl Strategy<Value = KeyPart> {
    prop_oneof![
        proptest::collection::vec(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 0..6).prop_map(KeyPart::Bytes),
        "[a\\x00b]{0,4}".prop_map(KeyPart::Str),
        prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()].prop_map(KeyPart::U64),
        prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), any::<i64>()].prop_map(KeyPart::I64),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    proptest::collection::vec(part(), 0..4).prop_map(Key)
}

proptest! {
    #[test]
    fn byte_order_equals_tuple_order(a in key(), b in key()) {
        prop_assert_eq!(a.encode().cmp(&b.encode()), a.cmp(&b));
    }

    #[test]
    fn decode_inverts_encode(a in key()) {
        prop_assert_eq!(Key::decode(&a.encode()), Ok(a));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = Key::decode(&bytes);
    }
}

#[test]
fn prefix_sorts_before_extension() {
    let short = Key::from("a");
    let long = Key::from("a").u64(0);
    assert!(short.encode() < long.encode());
    assert!(Key::empty().encode() < short.encode());
}

#[test]
fn display_is_readable() {
    assert_eq!(Key::from("x").u64(3).bytes(vec![0xab]).display(), "(\"x\", 3, 0xab)");
}
