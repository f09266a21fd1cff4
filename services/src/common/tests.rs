#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

#[test]
fn cursor_round_trips_and_rejects_garbage() {
    let ck = Key::empty().u64(u64::MAX - 5).str("0190abcd-0000-7000-8000-000000000000");
    let c = encode_cursor(&ck);
    assert_eq!(decode_cursor(&c, &['u', 's']).unwrap(), ck);
    for bad in ["", "zz", "abc", "0300", &"00".repeat(600)] {
        assert_eq!(decode_cursor(bad, &['u', 's']).unwrap_err().kind(), "invalid", "{bad}");
    }
    // Right encoding, wrong shape.
    assert!(decode_cursor(&c, &['s', 's']).is_err());
    assert!(decode_cursor(&c, &['u']).is_err());
}

#[test]
fn limits_and_ids() {
    assert_eq!(page_limit(None).unwrap(), DEFAULT_LIMIT);
    assert_eq!(page_limit(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
    assert!(page_limit(Some(0)).is_err());
    assert!(page_limit(Some(MAX_LIMIT + 1)).is_err());
    let id = new_id();
    check_id("id", &id).unwrap();
    assert!(check_id("id", &id.to_uppercase()).is_err());
    assert!(check_id("id", "../etc/passwd").is_err());
    assert!(check_id("id", "").is_err());
}

#[test]
fn text_checks() {
    assert_eq!(check_text("t", "  hi  ", 10, false).unwrap(), "hi");
    assert!(check_text("t", "   ", 10, false).is_err());
    assert!(check_text("t", "a\u{0}b", 10, false).is_err());
    assert!(check_text("t", "a\nb", 10, false).is_err());
    assert!(check_text("t", "a\nb", 10, true).is_ok());
    assert!(check_text("t", &"é".repeat(11), 10, false).is_err());
}

proptest! {
    #[test]
    fn decode_cursor_never_panics(s in ".{0,80}") {
        let _ = decode_cursor(&s, &['u', 's']);
    }
}
