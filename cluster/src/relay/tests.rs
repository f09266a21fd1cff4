#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use proptest::prelude::*;
use troupe_actors::channels::HubConfig;

use super::*;
use crate::link::LinkConfig;
use crate::link::tests::until;

#[test]
fn relayed_messages_round_trip_and_foreign_ones_are_refused() {
    let bytes = encode("room:1", b"hello").unwrap();
    assert_eq!(bytes[0], RELAY_VERSION);
    assert_eq!(decode(&bytes).unwrap(), Relayed { channel: "room:1", data: Raw(b"hello") });
    assert!(decode(b"").is_err());
    let mut future = bytes.clone();
    future[0] = RELAY_VERSION + 1;
    assert!(decode(&future).unwrap_err().contains("version"));
    assert!(decode(&bytes[..bytes.len() - 1]).is_err());
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let mut versioned = vec![RELAY_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = decode(&versioned);
    }
}

async fn node(group: &str, id: &str) -> (Links, Hub) {
    let links = Links::start(id, LinkConfig { group: group.to_owned(), ..LinkConfig::default() }).await.unwrap();
    let relay = ChannelRelay::new(links.clone());
    let encoder: troupe_actors::channels::Encoder = Arc::new(|_, _, data| Bytes::copy_from_slice(data));
    let hub = Hub::with_relay(HubConfig::default(), encoder, relay.clone());
    relay.attach(&hub);
    (links, hub)
}

/// Messages the hub holds for `channel` (each node numbers its own offsets, so count them instead).
fn held(hub: &Hub, channel: &str) -> usize {
    hub.channel_info(channel).map_or(0, |i| i.history)
}

#[tokio::test]
async fn a_publish_reaches_every_other_node_once_and_is_not_relayed_back() {
    let group = format!("test.relay.{}", uuid::Uuid::now_v7());
    let (la, a) = node(&group, "a").await;
    let (lb, b) = node(&group, "b").await;
    let (lc, c) = node(&group, "c").await;
    a.publish("room", Bytes::from_static(b"1"));
    a.publish("room", Bytes::from_static(b"2"));
    c.publish("room", Bytes::from_static(b"3"));
    until(|| held(&b, "room") == 3 && held(&a, "room") == 3 && held(&c, "room") == 3).await;
    // Nothing bounces: a few more rounds of the links change nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!([held(&a, "room"), held(&b, "room"), held(&c, "room")], [3, 3, 3]);
    for l in [la, lb, lc] {
        l.stop();
    }
}

#[tokio::test]
async fn garbage_on_the_channels_port_is_dropped() {
    let group = format!("test.relay.{}", uuid::Uuid::now_v7());
    let (la, _a) = node(&group, "a").await;
    let (lb, b) = node(&group, "b").await;
    la.tell("b", CHANNELS_PORT, Bytes::from_static(b"\x01\xff\xff")).unwrap();
    la.tell("b", CHANNELS_PORT, Bytes::from(encode("ok", b"x").unwrap())).unwrap();
    until(|| held(&b, "ok") == 1).await;
    la.stop();
    lb.stop();
}

#[tokio::test]
async fn a_frozen_peer_never_blocks_the_publisher_and_the_others_still_get_everything() {
    let group = format!("test.relay.{}", uuid::Uuid::now_v7());
    let cfg =
        LinkConfig { group: group.clone(), max_queue_messages: 10, max_frames_in_flight: 1, ..LinkConfig::default() };
    let links = Links::start("a", cfg).await.unwrap();
    let relay = ChannelRelay::new(links.clone());
    let encoder: troupe_actors::channels::Encoder = Arc::new(|_, _, data| Bytes::copy_from_slice(data));
    let a = Hub::with_relay(HubConfig::default(), encoder, relay.clone());
    relay.attach(&a);
    let (frozen, frames) = crate::link::tests::frozen_peer(&group, "frozen").await;
    let (lb, b) = node(&group, "b").await;
    for i in 0..200u32 {
        a.publish("room", Bytes::from(i.to_be_bytes().to_vec()));
        if i % 5 == 0 {
            // Let b's link drain (it is bounded like the frozen one).
            until(|| links.queued("b") == 0).await;
        }
    }
    until(|| held(&b, "room") == 200).await;
    assert_eq!(links.queued("frozen"), 10, "the frozen peer holds only its bounded queue");
    assert_eq!(frames.load(std::sync::atomic::Ordering::SeqCst), 1, "and one unanswered frame");
    frozen.stop(None);
    links.stop();
    lb.stop();
}

#[tokio::test]
async fn a_revoked_session_is_applied_on_every_other_node() {
    let group = format!("test.relay.{}", uuid::Uuid::now_v7());
    let cfg = || LinkConfig { group: group.clone(), ..LinkConfig::default() };
    let (a, b, c) = (
        Links::start("a", cfg()).await.unwrap(),
        Links::start("b", cfg()).await.unwrap(),
        Links::start("c", cfg()).await.unwrap(),
    );
    let applied: Arc<std::sync::Mutex<Vec<(String, String, u64)>>> = Arc::default();
    let mut hooks = Vec::new();
    for l in [&a, &b, &c] {
        let (seen, me) = (applied.clone(), l.node_id().to_owned());
        hooks.push(sessions::relay_revocations(l, move |sid, at| {
            seen.lock().unwrap().push((me.clone(), sid.to_owned(), at));
        }));
    }
    hooks[0]("sid-1", 42);
    until(|| applied.lock().unwrap().len() == 2).await;
    let mut got = applied.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [("b".into(), "sid-1".into(), 42), ("c".into(), "sid-1".into(), 42)]);
    // Garbage on the port is dropped.
    a.tell("b", sessions::SESSIONS_PORT, Bytes::from_static(b"junk")).unwrap();
    hooks[1]("sid-2", 7);
    until(|| applied.lock().unwrap().len() == 4).await;
    for l in [a, b, c] {
        l.stop();
    }
}
