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
