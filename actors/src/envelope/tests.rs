#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserCreated {
    name: String,
    age: u8,
    tags: Vec<String>,
    score: Option<i64>,
}

fn user() -> UserCreated {
    UserCreated { name: "ada".into(), age: 36, tags: vec!["admin".into()], score: Some(-7) }
}

fn sample() -> Envelope {
    Envelope::seal("user.created", "user-42", 3, &user())
        .unwrap()
        .with_trace(TraceContext::parse(W3C_EXAMPLE, Some("rojo=00f067aa0ba902b7")).unwrap())
}

/// Header + raw postcard of `env`, bypassing `encode`'s checks.
fn raw_encoding(env: &Envelope) -> Vec<u8> {
    let mut out = b"TRP\x01".to_vec();
    out.extend(postcard::to_stdvec(env).unwrap());
    out
}

#[test]
fn round_trip() {
    let env = sample();
    let bytes = env.encode().unwrap();
    assert_eq!(&bytes[..4], b"TRP\x01");
    let back = Envelope::decode(&bytes).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.open::<UserCreated>().unwrap(), user());
    assert_eq!(back.kind, "user.created");
    assert_eq!(back.aggregate_id, "user-42");
    assert_eq!(back.version, 3);
}

#[test]
fn seal_stamps_v7_id_and_wall_clock() {
    let before = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let a = Envelope::seal("k", "a", 1, &1u8).unwrap();
    let b = Envelope::seal("k", "a", 1, &1u8).unwrap();
    assert_eq!(a.id.get_version_num(), 7);
    assert!(a.id < b.id, "v7 ids are time ordered");
    assert!(a.timestamp_ms >= before && a.timestamp_ms - before < 60_000);
    assert!(a.trace_context.is_none());
}

#[test]
fn payload_wire_format_is_a_plain_byte_vec() {
    let env = sample();
    let all = postcard::to_stdvec(&env).unwrap();
    let payload = postcard::to_stdvec(&env.payload).unwrap();
    assert!(all.ends_with(&payload));
}

#[test]
fn rejects_short_input() {
    for input in [&b""[..], b"T", b"TR", b"TRP"] {
        assert!(matches!(Envelope::decode(input), Err(EnvelopeError::Malformed(_))), "{input:?}");
    }
    assert!(matches!(Envelope::decode(b"X"), Err(EnvelopeError::BadMagic)));
    assert!(matches!(Envelope::decode(b"TX"), Err(EnvelopeError::BadMagic)));
    // Header only, no body.
    assert!(matches!(Envelope::decode(b"TRP\x01"), Err(EnvelopeError::Malformed(_))));
}

#[test]
fn rejects_wrong_magic() {
    let mut bytes = sample().encode().unwrap();
    bytes[2] = b'X';
    assert!(matches!(Envelope::decode(&bytes), Err(EnvelopeError::BadMagic)));
    assert!(matches!(Envelope::decode(b"{\"json\": true}"), Err(EnvelopeError::BadMagic)));
}

#[test]
fn rejects_unknown_wire_version() {
    let mut bytes = sample().encode().unwrap();
    for v in [0u8, 2, 255] {
        bytes[3] = v;
        let err = Envelope::decode(&bytes).unwrap_err();
        assert!(matches!(err, EnvelopeError::UnsupportedVersion { found } if found == v), "{err}");
        assert!(err.to_string().contains(&v.to_string()));
    }
}

#[test]
fn rejects_oversize_input() {
    let mut bytes = sample().encode().unwrap();
    bytes.resize(MAX_ENVELOPE_BYTES + 1, 0);
    let err = Envelope::decode(&bytes).unwrap_err();
    assert!(matches!(
        err,
        EnvelopeError::TooLarge { size, max } if size == MAX_ENVELOPE_BYTES + 1 && max == MAX_ENVELOPE_BYTES
    ));
}

#[test]
fn encode_rejects_oversize_envelope() {
    let mut env = sample();
    env.payload = vec![0; MAX_ENVELOPE_BYTES];
    assert!(matches!(env.encode(), Err(EnvelopeError::TooLarge { .. })));
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = sample().encode().unwrap();
    bytes.push(0);
    let err = Envelope::decode(&bytes).unwrap_err();
    assert!(matches!(&err, EnvelopeError::Malformed(m) if m.contains("trailing")), "{err}");
}

#[test]
fn rejects_truncation() {
    let bytes = sample().encode().unwrap();
    for len in 4..bytes.len() {
        assert!(matches!(Envelope::decode(&bytes[..len]), Err(EnvelopeError::Malformed(_))), "truncated to {len}");
    }
}

/// A length prefix claiming ~4 GiB must fail on the remaining-input check,
/// not try to allocate.
#[test]
fn rejects_absurd_string_length() {
    let mut bytes = b"TRP\x01".to_vec();
    bytes.push(16);
    bytes.extend(uuid::Uuid::now_v7().as_bytes());
    // `kind` length: u32::MAX as a varint, then a few bytes.
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    bytes.extend(b"user.created");
    assert!(matches!(Envelope::decode(&bytes), Err(EnvelopeError::Malformed(_))));
}

#[test]
fn rejects_absurd_payload_length() {
    let mut env = sample();
    env.payload.clear();
    let mut bytes = env.encode().unwrap();
    // The payload is the last field: its length varint is the last byte.
    assert_eq!(bytes.pop(), Some(0));
    for len in [u64::from(u32::MAX), u64::MAX, 1 << 40, 17] {
        let mut forged = bytes.clone();
        let mut v = len;
        loop {
            let byte = u8::try_from(v & 0x7f).unwrap();
            v >>= 7;
            if v == 0 {
                forged.push(byte);
                break;
            }
            forged.push(byte | 0x80);
        }
        forged.extend([1, 2, 3]);
        assert!(matches!(Envelope::decode(&forged), Err(EnvelopeError::Malformed(_))), "payload length {len}");
    }
}

#[test]
fn rejects_invalid_traceparent_inside() {
    let mut env = sample();
    env.trace_context = Some(TraceContext {
        traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
        tracestate: None,
    });
    assert!(matches!(env.encode(), Err(EnvelopeError::BadTraceContext(_))));
    let bytes = raw_encoding(&env);
    assert!(matches!(Envelope::decode(&bytes), Err(EnvelopeError::BadTraceContext(_))));

    env.trace_context = Some(TraceContext { traceparent: W3C_EXAMPLE.into(), tracestate: Some("Bad Key=1".into()) });
    assert!(matches!(Envelope::decode(&raw_encoding(&env)), Err(EnvelopeError::BadTraceContext(_))));
}

#[test]
fn rejects_bad_option_tag() {
    let mut env = sample();
    env.trace_context = None;
    env.payload.clear();
    let mut bytes = env.encode().unwrap();
    // ... trace_context tag (0), payload length (0).
    let n = bytes.len();
    assert_eq!(&bytes[n - 2..], &[0, 0]);
    bytes[n - 2] = 2;
    assert!(matches!(Envelope::decode(&bytes), Err(EnvelopeError::Malformed(_))));
}

#[test]
fn open_rejects_wrong_type_and_trailing_bytes() {
    let env = Envelope::seal("k", "a", 1, &"hello").unwrap();
    assert!(matches!(env.open::<u64>(), Err(EnvelopeError::Payload(_))));
    let env = Envelope::seal("k", "a", 1, &(1u8, 2u8)).unwrap();
    assert!(matches!(env.open::<u8>(), Err(EnvelopeError::Payload(_))));
    assert_eq!(env.open::<(u8, u8)>().unwrap(), (1, 2));
}

#[test]
fn error_messages_are_clear() {
    assert_eq!(
        EnvelopeError::UnsupportedVersion { found: 9 }.to_string(),
        "unsupported envelope wire format version 9 (this build reads version 1)"
    );
    assert!(EnvelopeError::TooLarge { size: 20, max: 10 }.to_string().contains("20 bytes exceeds the 10-byte limit"));
}

#[test]
fn traceparent_accepts_w3c_example() {
    let tc = TraceContext::parse(W3C_EXAMPLE, None).unwrap();
    assert_eq!(tc.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tc.span_id(), "00f067aa0ba902b7");
    assert!(tc.sampled());
    assert!(!TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", None).unwrap().sampled());
}

#[test]
fn traceparent_accepts_future_versions() {
    let base = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(TraceContext::parse(base, None).is_ok());
    assert!(TraceContext::parse(&format!("{base}-what-the-future-holds"), None).is_ok());
    assert!(TraceContext::parse(&format!("{base}x"), None).is_err());
}

#[test]
fn traceparent_rejects_bad_input() {
    let bad = [
        // lengths
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        // hex
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        // separators
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        // all-zero ids
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        // forbidden version
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        // multibyte characters where hex digits belong
        "00-4bf92f3577b34da6a3ce929d0e0é4736-00f067aa0ba902b7-01",
    ];
    for tp in bad {
        assert!(matches!(TraceContext::parse(tp, None), Err(EnvelopeError::BadTraceContext(_))), "accepted {tp:?}");
    }
    let huge = format!("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}", "a".repeat(600));
    assert!(TraceContext::parse(&huge, None).is_err());
}

#[test]
fn tracestate_validation() {
    let ok = [
        "rojo=00f067aa0ba902b7",
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "rojo=1 , congo=2",
        "tenant1@vendor=opaque value",
        "a_b-c*d/e=x",
        // Trailing whitespace is optional whitespace around the member.
        "k=trailing ",
    ];
    for ts in ok {
        let tc = TraceContext::parse(W3C_EXAMPLE, Some(ts)).unwrap();
        assert_eq!(tc.tracestate.as_deref(), Some(ts));
    }
    for empty in ["", " ", ",, ,"] {
        let tc = TraceContext::parse(W3C_EXAMPLE, Some(empty)).unwrap();
        assert_eq!(tc.tracestate, None);
    }
    let many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    let bad = [
        "novalue",
        "Upper=1",
        "1abc=x",
        "k=",
        "k=a,b",
        "k=a=b",
        "k=tab\tinside",
        "k=1,k=2",
        "@vendor=x",
        "tenant@=x",
        "tenant@vendorwaytoolong1=x",
        many.as_str(),
    ];
    for ts in bad {
        assert!(
            matches!(TraceContext::parse(W3C_EXAMPLE, Some(ts)), Err(EnvelopeError::BadTraceContext(_))),
            "accepted {ts:?}"
        );
    }
    let thirty_two = (0..32).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    assert!(TraceContext::parse(W3C_EXAMPLE, Some(&thirty_two)).is_ok());
}

#[test]
fn new_root_and_child() {
    let root = TraceContext::new_root();
    root.validate().unwrap();
    assert!(root.sampled());
    assert_eq!(root.traceparent.len(), 55);
    let other = TraceContext::new_root();
    assert_ne!(root.trace_id(), other.trace_id());

    let parent = TraceContext::parse(W3C_EXAMPLE, Some("rojo=1")).unwrap();
    let child = parent.child();
    child.validate().unwrap();
    assert_eq!(child.trace_id(), parent.trace_id());
    assert_ne!(child.span_id(), parent.span_id());
    assert_eq!(child.tracestate, parent.tracestate);
    assert!(child.sampled());

    let future = TraceContext::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", None).unwrap();
    let child = future.child();
    assert!(child.traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(child.traceparent.ends_with("-00"));
    child.validate().unwrap();
}

#[test]
fn invalid_public_fields_do_not_panic_accessors() {
    let tc = TraceContext { traceparent: "é".into(), tracestate: None };
    assert_eq!(tc.trace_id(), "");
    assert_eq!(tc.span_id(), "");
    assert!(!tc.sampled());
    assert!(tc.validate().is_err());
    let _ = tc.child();
}

fn trace_context() -> impl Strategy<Value = Option<TraceContext>> {
    prop_oneof![
        Just(None),
        Just(Some(TraceContext::new_root())),
        (
            "[0-9a-f]{31}[1-9a-f]",
            "[0-9a-f]{15}[1-9a-f]",
            "[0-9a-f]{2}",
            proptest::option::of("[a-z][a-z0-9_]{0,10}=[!-+\\--<>-~]{1,20}")
        )
            .prop_map(|(t, p, f, ts)| Some(TraceContext::parse(&format!("00-{t}-{p}-{f}"), ts.as_deref()).unwrap())),
    ]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct AnyPayload {
    bytes: Vec<u8>,
    text: String,
    n: i64,
    f: Option<u32>,
    list: Vec<(u16, String)>,
}

fn any_payload() -> impl Strategy<Value = AnyPayload> {
    (
        prop::collection::vec(any::<u8>(), 0..300),
        any::<String>(),
        any::<i64>(),
        any::<Option<u32>>(),
        prop::collection::vec((any::<u16>(), ".{0,8}"), 0..5),
    )
        .prop_map(|(bytes, text, n, f, list)| AnyPayload { bytes, text, n, f, list })
}

/// A valid encoding to mutate.
fn valid_encoding() -> impl Strategy<Value = Vec<u8>> {
    (".{0,12}", ".{0,12}", any::<u32>(), any_payload(), trace_context()).prop_map(
        |(kind, agg, version, payload, tc)| {
            let mut env = Envelope::seal(kind, agg, version, &payload).unwrap();
            env.trace_context = tc;
            env.encode().unwrap()
        },
    )
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate(usize),
    Insert { at: usize, byte: u8 },
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

proptest! {
    #[test]
    fn round_trips_arbitrary_envelopes(
        kind in any::<String>(),
        agg in any::<String>(),
        version in any::<u32>(),
        payload in any_payload(),
        tc in trace_context(),
    ) {
        let mut env = Envelope::seal(kind.clone(), agg.clone(), version, &payload).unwrap();
        if let Some(tc) = tc {
            env = env.with_trace(tc);
        }
        let back = Envelope::decode(&env.encode().unwrap()).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(&back.kind, &kind);
        prop_assert_eq!(&back.aggregate_id, &agg);
        prop_assert_eq!(back.open::<AnyPayload>().unwrap(), payload);
    }

    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
        let mut with_header = b"TRP\x01".to_vec();
        with_header.extend(&bytes);
        let _ = Envelope::decode(&with_header);
    }

    #[test]
    fn decode_mutated_encodings_never_panics(
        valid in valid_encoding(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = valid;
        for m in mutations {
            let len = bytes.len().max(1);
            match m {
                Mutation::Flip { at, mask } => {
                    if let Some(b) = bytes.get_mut(at % len) {
                        *b ^= mask;
                    }
                }
                Mutation::Truncate(n) => bytes.truncate(n % len),
                Mutation::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
                Mutation::Remove(at) => {
                    if !bytes.is_empty() {
                        bytes.remove(at % len);
                    }
                }
            }
        }
        if let Ok(env) = Envelope::decode(&bytes) {
            // Whatever decodes must re-encode and decode to the same value.
            let again = Envelope::decode(&env.encode().unwrap()).unwrap();
            prop_assert_eq!(again, env);
        }
    }
}
