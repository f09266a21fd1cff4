#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use bytes::Bytes;
use troupe_actors::bus::BusEvent;
use troupe_actors::envelope::{Envelope, TraceContext};

use super::*;

fn event(id: u64, payload: Vec<u8>) -> BusEvent {
    BusEvent { id, topic: "user.created".to_owned(), payload: Bytes::from(payload) }
}

#[test]
fn json_domain_events_give_their_id_and_traceparent() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let json = serde_json::json!({"id": "0190-abc", "type": "user.created", "traceparent": tp, "payload": {}});
    let m = meta(&event(7, serde_json::to_vec(&json).unwrap()));
    assert_eq!(
        m,
        Meta { message_id: "0190-abc".into(), traceparent: Some(tp.into()), content_type: JSON_CONTENT_TYPE }
    );
}

#[test]
fn envelopes_give_their_id_and_trace_context() {
    let env = Envelope::seal("user.created", "u1", 1, &42u32).unwrap().with_trace(TraceContext::new_root());
    let m = meta(&event(7, env.encode().unwrap()));
    assert_eq!(m.message_id, env.id.to_string());
    assert_eq!(m.traceparent, env.trace_context.map(|t| t.traceparent));
    assert_eq!(m.content_type, ENVELOPE_CONTENT_TYPE);
}

#[test]
fn other_payloads_fall_back_to_the_outbox_id() {
    for payload in [b"TRP\x01garbage".to_vec(), b"{not json".to_vec(), b"plain".to_vec(), Vec::new()] {
        let m = meta(&event(9, payload));
        assert_eq!(m.message_id, "9");
        assert_eq!(m.traceparent, None);
    }
}

#[test]
fn packed_batches_round_trip_and_reject_garbage() {
    let events: Vec<Arc<BusEvent>> = (1..=3).map(|i| Arc::new(event(i, vec![i as u8; 10]))).collect();
    let batch = PackedBatch::pack(&events);
    let back = PackedBatch::decode(&batch.encode().unwrap()).unwrap();
    assert_eq!(back, batch);
    assert_eq!(back.events.iter().map(|e| e.outbox_id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(PackedBatch::decode(b"\xff\xff\xff").is_err());
    let mut wrong = batch.clone();
    wrong.version = 9;
    assert!(PackedBatch::decode(&wrong.encode().unwrap()).is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;
    use crate::inbound::{Payload, decode};

    fn packed_event() -> impl Strategy<Value = PackedEvent> {
        (
            ".{0,40}",
            any::<u64>(),
            "[a-z.]{1,20}",
            proptest::option::of("[0-9a-f-]{0,60}"),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(id, outbox_id, topic, traceparent, payload)| PackedEvent {
                id,
                outbox_id,
                topic,
                traceparent,
                payload,
            })
    }

    proptest! {
        /// Any packed batch survives encode → decode unchanged.
        #[test]
        fn packed_batches_round_trip(events in proptest::collection::vec(packed_event(), 0..20)) {
            let batch = PackedBatch { version: PACKED_VERSION, events };
            let back = PackedBatch::decode(&batch.encode().unwrap()).unwrap();
            prop_assert_eq!(back, batch);
        }

        /// Bytes off the wire never panic the packed decoder; what it accepts re-encodes to a batch
        /// that decodes the same.
        #[test]
        fn packed_decode_of_any_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(batch) = PackedBatch::decode(&body) {
                prop_assert_eq!(PackedBatch::decode(&batch.encode().unwrap()).unwrap(), batch);
            }
        }

        /// The inbound decoder answers every body under every content type with a value or a
        /// typed reason, never a panic; opaque content types keep the bytes as sent.
        #[test]
        fn inbound_decode_of_any_bytes_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            ct in proptest::sample::select(vec![
                None,
                Some(JSON_CONTENT_TYPE),
                Some("application/json; charset=utf-8"),
                Some(ENVELOPE_CONTENT_TYPE),
                Some(BYTES_CONTENT_TYPE),
                Some("application/x-postcard"),
                Some(PACKED_CONTENT_TYPE),
                Some("text/weird"),
            ]),
        ) {
            match decode(ct, &body) {
                Ok(Payload::Bytes(b)) => prop_assert_eq!(b.as_ref(), body.as_slice()),
                Ok(_) => {}
                Err(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }
}
