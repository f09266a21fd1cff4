#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// Test frames: 8 bytes of offset, then the data.
fn encoder(calls: Arc<AtomicUsize>) -> Encoder {
    Arc::new(move |_ch: &str, offset: u64, data: &[u8]| {
        calls.fetch_add(1, Ordering::Relaxed);
        let mut v = offset.to_be_bytes().to_vec();
        v.extend_from_slice(data);
        Bytes::from(v)
    })
}

fn offset_of(frame: &Bytes) -> u64 {
    u64::from_be_bytes(frame[..8].try_into().unwrap())
}

fn hub(history_len: usize, ttl: Option<Duration>) -> Hub {
    let cfg = HubConfig { history_len, history_ttl: ttl, shards: 4, offsets_from_clock: false, ..HubConfig::default() };
    Hub::new(cfg, encoder(Arc::new(AtomicUsize::new(0))))
}

fn drain(sub: &Subscriber) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut q = lock(&sub.inner.queue);
    out.extend(q.frames.drain(..));
    out
}

fn offsets(sub: &Subscriber) -> Vec<u64> {
    drain(sub).iter().map(offset_of).collect()
}

#[test]
fn offsets_increase_per_channel_and_a_publish_is_encoded_once_for_all_subscribers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let hub = Hub::new(HubConfig { offsets_from_clock: false, ..HubConfig::default() }, encoder(calls.clone()));
    let subs: Vec<Subscriber> = (0..50).map(|i| Subscriber::new(i, "u", 16)).collect();
    for s in &subs {
        let o = hub.subscribe("a", s, None);
        assert_eq!(o, SubscribeOutcome { offset: 0, replayed: 0, resync: false });
    }
    assert_eq!(hub.publish("a", Bytes::from_static(b"x")), 1);
    assert_eq!(hub.publish("a", Bytes::from_static(b"y")), 2);
    assert_eq!(hub.publish("b", Bytes::from_static(b"z")), 1, "offsets are per channel");
    assert_eq!(calls.load(Ordering::Relaxed), 3, "one encoding per publish, not per subscriber");
    let first: Vec<Vec<Bytes>> = subs.iter().map(drain).collect();
    for frames in &first {
        assert_eq!(frames.iter().map(offset_of).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(frames[0].as_ptr(), first[0][0].as_ptr(), "every subscriber shares the same bytes");
        assert_eq!(&frames[1][8..], b"y");
    }
    assert_eq!(hub.deliveries(), 100);
}

#[test]
fn clock_offsets_differ_between_channel_incarnations() {
    let hub = Hub::new(HubConfig { history_len: 0, ..HubConfig::default() }, encoder(Arc::default()));
    let first = hub.publish("c", Bytes::new());
    assert!(first > 1_600_000_000_000_000, "offsets start at the wall clock in µs: {first}");
    assert_eq!(hub.sweep(), 1, "no subscribers, no history: the channel goes");
    std::thread::sleep(Duration::from_millis(2));
    let second = hub.publish("c", Bytes::new());
    assert!(second > first, "{second} > {first}");
    let sub = Subscriber::new(1, "u", 8);
    assert!(hub.subscribe("c", &sub, Some(first)).resync, "an offset of the old incarnation needs a resync");
}

#[test]
fn history_by_count_replays_after_since_or_asks_for_resync() {
    let hub = hub(3, None);
    for i in 0..5u8 {
        hub.publish("c", Bytes::from(vec![i]));
    }
    let sub = Subscriber::new(1, "u", 16);
    assert_eq!(hub.subscribe("c", &sub, Some(2)), SubscribeOutcome { offset: 5, replayed: 3, resync: false });
    assert_eq!(offsets(&sub), [3, 4, 5]);
    assert_eq!(hub.subscribe("c", &sub, Some(4)).replayed, 1);
    assert_eq!(offsets(&sub), [5]);
    assert_eq!(hub.subscribe("c", &sub, Some(5)), SubscribeOutcome { offset: 5, replayed: 0, resync: false });
    let old = hub.subscribe("c", &sub, Some(1));
    assert_eq!(old, SubscribeOutcome { offset: 5, replayed: 0, resync: true }, "offset 2 is gone");
    assert!(hub.subscribe("c", &sub, Some(9)).resync, "an offset from the future");
    assert!(offsets(&sub).is_empty());
    assert_eq!(hub.subscriber_count("c"), 1, "re-subscribing does not add a second entry");
    hub.publish("c", Bytes::new());
    assert_eq!(offsets(&sub), [6], "delivered once");
}

#[tokio::test(start_paused = true)]
async fn history_by_age_drops_old_messages() {
    let hub = hub(100, Some(Duration::from_secs(10)));
    hub.publish("c", Bytes::new());
    tokio::time::advance(Duration::from_secs(6)).await;
    hub.publish("c", Bytes::new());
    tokio::time::advance(Duration::from_secs(6)).await;
    let sub = Subscriber::new(1, "u", 16);
    assert!(hub.subscribe("c", &sub, Some(0)).resync, "offset 1 is older than 10 s");
    assert_eq!(hub.subscribe("c", &sub, Some(1)).replayed, 1);
    assert_eq!(offsets(&sub), [2]);
    assert_eq!(hub.channel_info("c").unwrap().history, 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    hub.unsubscribe("c", &sub);
    assert_eq!(hub.sweep(), 1, "expired history and no subscribers: removed");
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn ack_frames_come_before_the_replay_and_live_messages() {
    let hub = hub(10, None);
    hub.publish("c", Bytes::from_static(b"old"));
    let sub = Subscriber::new(1, "u", 16);
    let ack = Bytes::from_static(b"ACK-----");
    let outcome = hub.subscribe_with("c", &sub, Some(0), |o| {
        assert_eq!(o.replayed, 1);
        [ack.clone()]
    });
    assert_eq!(outcome.offset, 1);
    hub.publish("c", Bytes::from_static(b"new"));
    let frames = drain(&sub);
    assert_eq!(frames[0], ack);
    assert_eq!(frames[1..].iter().map(offset_of).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test]
async fn slow_consumer_is_closed_and_removed_from_every_channel() {
    let hub = hub(0, None);
    let slow = Subscriber::new(1, "s", 2);
    let fast = Subscriber::new(2, "f", 100);
    for ch in ["a", "b"] {
        hub.subscribe(ch, &slow, None);
        hub.subscribe(ch, &fast, None);
    }
    for _ in 0..3 {
        hub.publish("a", Bytes::new());
    }
    assert_eq!(slow.closed(), Some(CloseReason::Slow));
    assert_eq!(slow.queued(), 0, "its frames are dropped at once");
    assert_eq!(hub.slow_consumers(), 1);
    assert_eq!(hub.subscriber_count("a"), 1);
    assert_eq!(hub.subscriber_count("b"), 1, "removed from the channel that did not overflow too");
    let mut buf = Vec::new();
    assert_eq!(slow.next_batch(&mut buf).await, Batch::Closed(CloseReason::Slow));
    assert_eq!(fast.next_batch(&mut buf).await, Batch::Frames(3));
    assert_eq!(slow.push_control(Bytes::new()), Err(PushError::Closed(CloseReason::Slow)));
    assert!(!hub.subscribe("a", &slow, None).resync);
    assert_eq!(hub.subscriber_count("a"), 1, "a closed subscriber is not added again");
}

#[test]
fn a_replay_that_does_not_fit_closes_the_subscriber_as_slow() {
    let hub = hub(50, None);
    for _ in 0..50 {
        hub.publish("c", Bytes::new());
    }
    // The replay itself may exceed the capacity, but not pile on a queue that is already full.
    let sub2 = Subscriber::new(2, "u", 4);
    assert_eq!(hub.subscribe("c", &sub2, Some(0)).replayed, 50);
    assert_eq!(sub2.queued(), 50);
    assert_eq!(hub.subscribe("c", &sub2, Some(0)).replayed, 50);
    assert_eq!(sub2.closed(), Some(CloseReason::Slow), "a second replay onto an undrained queue overflows");
    assert_eq!(hub.subscriber_count("c"), 0);
}

#[test]
fn presence_lists_identities_and_follows_unsubscribe_and_disconnect() {
    let hub = hub(0, None);
    let a = Subscriber::new(1, "alice", 8);
    let b = Subscriber::new(2, "bob", 8);
    hub.subscribe("room", &a, None);
    hub.subscribe("room", &b, None);
    hub.subscribe("other", &a, None);
    let mut p = hub.presence("room", 10);
    p.sort_by_key(|p| p.connection_id);
    assert_eq!(
        p,
        [Presence { user_id: "alice".into(), connection_id: 1 }, Presence { user_id: "bob".into(), connection_id: 2 }]
    );
    assert_eq!(hub.presence("room", 1).len(), 1, "limit");
    assert!(hub.unsubscribe("room", &b));
    assert!(!hub.unsubscribe("room", &b));
    assert_eq!(hub.presence("room", 10).len(), 1);
    hub.disconnect(&a);
    assert!(hub.presence("room", 10).is_empty());
    assert!(hub.presence("other", 10).is_empty());
    assert_eq!(a.closed(), Some(CloseReason::Disconnected));
    assert!(hub.presence("nope", 10).is_empty());
    assert_eq!(hub.channel_count(), 0, "channels without subscribers and history go at once");
    assert_eq!(hub.sweep(), 0);
}

#[test]
fn relay_sees_local_publishes_only() {
    #[derive(Default)]
    struct Rec(Mutex<Vec<(String, u64)>>);
    impl Relay for Rec {
        fn on_local_publish(&self, channel: &str, offset: u64, _data: &Bytes) {
            lock(&self.0).push((channel.to_owned(), offset));
        }
    }
    let rec = Arc::new(Rec::default());
    let cfg = HubConfig { offsets_from_clock: false, ..HubConfig::default() };
    let hub = Hub::with_relay(cfg, encoder(Arc::default()), rec.clone());
    hub.publish("a", Bytes::new());
    hub.deliver_relayed("a", Bytes::new());
    hub.publish("a", Bytes::new());
    assert_eq!(*lock(&rec.0), [("a".to_owned(), 1), ("a".to_owned(), 3)]);
}

/// Publishers and subscribers race on one channel: every subscriber sees each offset after its
/// starting point exactly once, in order — replayed or live, never both, never neither.
#[test]
fn concurrent_publish_and_subscribe_lose_and_duplicate_nothing() {
    const PER_PUBLISHER: usize = 3000;
    const PUBLISHERS: usize = 2;
    const TOTAL: u64 = (PER_PUBLISHER * PUBLISHERS) as u64;
    let mut mid_stream = 0;
    for round in 0..4u64 {
        let hub = hub(100_000, None);
        let barrier = Arc::new(std::sync::Barrier::new(PUBLISHERS + 6));
        let mut pubs = Vec::new();
        for _ in 0..PUBLISHERS {
            let (hub, barrier) = (hub.clone(), barrier.clone());
            pubs.push(std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..PER_PUBLISHER {
                    hub.publish("c", Bytes::new());
                }
            }));
        }
        let mut subs = Vec::new();
        for i in 0..6u64 {
            let (hub, barrier) = (hub.clone(), barrier.clone());
            subs.push(std::thread::spawn(move || {
                let sub = Subscriber::new(i, "u", 100_000);
                barrier.wait();
                for _ in 0..(i * 300 + round * 50) {
                    std::hint::spin_loop();
                }
                std::thread::yield_now();
                // Even ids replay from an offset seen mid-stream; odd ids start live.
                let since = if i % 2 == 0 { hub.channel_info("c").map(|c| c.offset / 2) } else { None };
                let outcome = hub.subscribe("c", &sub, since);
                assert!(!outcome.resync);
                (sub, since.unwrap_or(outcome.offset), outcome.offset)
            }));
        }
        for p in pubs {
            p.join().unwrap();
        }
        for s in subs {
            let (sub, start, at) = s.join().unwrap();
            mid_stream += usize::from(at > 0 && at < TOTAL);
            let got = offsets(&sub);
            let want: Vec<u64> = (start + 1..=TOTAL).collect();
            assert_eq!(got, want, "round {round}, subscriber {}", sub.connection_id());
        }
    }
    assert!(mid_stream > 0, "no subscribe landed while publishing: the test proved nothing");
}

proptest::proptest! {
    /// Against a model: a subscribe with `since` replays exactly the offsets after it when the kept
    /// history covers it (the last `history_len` offsets), and asks for a resync otherwise.
    #[test]
    fn replay_matches_the_model(history_len in 0usize..6, ops in proptest::collection::vec(0u64..12, 1..40)) {
        let hub = hub(history_len, None);
        // Keeps the channel (and its offsets) alive while the probes come and go.
        let keeper = Subscriber::new(u64::MAX, "k", 1000);
        hub.subscribe("c", &keeper, None);
        let mut last = 0u64;
        for (i, op) in ops.into_iter().enumerate() {
            if op < 6 {
                last = hub.publish("c", Bytes::new());
                continue;
            }
            // op 6..12 → since somewhere around the window, including the future.
            let since = (last + 2).saturating_sub(op - 6 + (history_len as u64));
            let sub = Subscriber::new(i as u64, "u", 64);
            let outcome = hub.subscribe("c", &sub, Some(since));
            let floor = last.saturating_sub(history_len as u64);
            let covered = since >= floor && since <= last;
            proptest::prop_assert_eq!(outcome.resync, !covered, "since {} last {} floor {}", since, last, floor);
            let want: Vec<u64> = if covered { (since + 1..=last).collect() } else { Vec::new() };
            proptest::prop_assert_eq!(offsets(&sub), want);
            proptest::prop_assert_eq!(outcome.offset, last);
            hub.disconnect(&sub);
        }
    }
}

/// A socket that takes at most `room` more bytes (then `WouldBlock`), recording what it took.
#[derive(Default)]
struct FakeSocket {
    room: std::sync::Mutex<usize>,
    wire: std::sync::Mutex<Vec<u8>>,
}

impl FakeSocket {
    fn open(&self, bytes: usize) {
        *self.room.lock().unwrap() += bytes;
    }

    fn wire(&self) -> Vec<u8> {
        self.wire.lock().unwrap().clone()
    }
}

impl DirectWrite for FakeSocket {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(*room);
        *room -= n;
        self.wire.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            match self.try_write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }
}

fn direct(sock: &Arc<FakeSocket>, capacity: usize) -> Subscriber {
    Subscriber::with_writer(7, "u", capacity, sock.clone(), true)
}

#[test]
fn a_frame_goes_straight_to_the_socket_while_nothing_is_queued() {
    let sock = Arc::new(FakeSocket::default());
    sock.open(1 << 20);
    let sub = direct(&sock, 4);
    let hub = hub(0, None);
    hub.subscribe("a", &sub, None);
    hub.publish("a", Bytes::from_static(b"x"));
    hub.publish("a", Bytes::from_static(b"y"));
    assert_eq!(sub.queued(), 0, "written directly, nothing queued");
    let mut want = 1u64.to_be_bytes().to_vec();
    want.push(b'x');
    want.extend_from_slice(&2u64.to_be_bytes());
    want.push(b'y');
    assert_eq!(sock.wire(), want);
    assert!(matches!(sub.flush(), Flush::Drained));
}

#[test]
fn a_partial_write_queues_the_rest_and_later_frames_follow_it_in_order() {
    let sock = Arc::new(FakeSocket::default());
    sock.open(5);
    let sub = direct(&sock, 16);
    let hub = hub(0, None);
    hub.subscribe("a", &sub, None);
    for d in [b"a", b"b", b"c"] {
        hub.publish("a", Bytes::from_static(d));
    }
    assert_eq!(sock.wire().len(), 5, "the socket took 5 bytes of the first frame");
    assert_eq!(sub.queued(), 3, "the rest of frame 1, frames 2 and 3");
    assert!(matches!(sub.flush(), Flush::Blocked));
    sock.open(7);
    assert!(matches!(sub.flush(), Flush::Blocked), "12 bytes of 27 out");
    assert_eq!(sub.queued(), 2);
    sock.open(1 << 20);
    assert!(matches!(sub.flush(), Flush::Drained));
    hub.publish("a", Bytes::from_static(b"d"));
    let wire = sock.wire();
    let frames: Vec<(u64, u8)> =
        wire.chunks(9).map(|c| (u64::from_be_bytes(c[..8].try_into().unwrap()), c[8])).collect();
    assert_eq!(frames, [(1, b'a'), (2, b'b'), (3, b'c'), (4, b'd')]);
}

#[test]
fn a_slow_direct_subscriber_is_closed_but_its_partly_written_frame_is_completed() {
    let sock = Arc::new(FakeSocket::default());
    sock.open(4);
    let sub = direct(&sock, 2);
    let hub = hub(0, None);
    hub.subscribe("a", &sub, None);
    for _ in 0..4 {
        hub.publish("a", Bytes::from_static(b"z"));
    }
    assert_eq!(sub.closed(), Some(CloseReason::Slow));
    assert_eq!(hub.slow_consumers(), 1);
    assert_eq!(hub.subscriber_count("a"), 0);
    assert_eq!(sub.queued(), 1, "only the rest of the partly written frame is kept");
    assert!(matches!(sub.flush(), Flush::Blocked));
    sock.open(1 << 20);
    assert!(matches!(sub.flush(), Flush::Closed(CloseReason::Slow)));
    assert_eq!(sock.wire().len(), 9, "exactly one whole frame on the wire");
    assert!(!sub.has_writer(), "the socket is released once the queue is closed and flushed");
}

#[test]
fn control_frames_use_the_direct_path_and_a_failed_socket_is_reported() {
    struct Broken;
    impl DirectWrite for Broken {
        fn try_write(&self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::ConnectionReset.into())
        }
    }
    let sub = Subscriber::with_writer(1, "u", 4, Arc::new(Broken), true);
    sub.push_control(Bytes::from_static(b"pong")).unwrap();
    assert_eq!(sub.queued(), 1, "kept for the connection to see the error");
    assert!(matches!(sub.flush(), Flush::Failed(e) if e.kind() == std::io::ErrorKind::ConnectionReset));
    assert!(!sub.has_writer());
}

#[test]
fn a_fan_out_spread_over_threads_reaches_everyone_in_order() {
    let cfg = HubConfig { offsets_from_clock: false, fanout_threads: 3, ..HubConfig::default() };
    let hub = Hub::new(cfg, encoder(Arc::default()));
    let n = PARALLEL_FANOUT_MIN + 1000;
    let subs: Vec<Subscriber> = (0..n as u64).map(|i| Subscriber::new(i, "u", 4)).collect();
    for s in &subs {
        hub.subscribe("a", s, None);
    }
    for d in [b"1", b"2", b"3"] {
        hub.publish("a", Bytes::from_static(d));
    }
    assert_eq!(hub.deliveries(), 3 * n as u64);
    for s in &subs {
        assert_eq!(offsets(s), [1, 2, 3]);
    }
    // A slow subscriber in any part is still found and removed.
    for s in subs.iter().take(n - 1) {
        drain(s);
    }
    for _ in 0..5 {
        hub.publish("a", Bytes::from_static(b"x"));
        for s in subs.iter().take(n - 1) {
            drain(s);
        }
    }
    assert_eq!(hub.slow_consumers(), 1);
    assert_eq!(subs[n - 1].closed(), Some(CloseReason::Slow));
    assert_eq!(hub.subscriber_count("a"), n - 1);
}

#[test]
fn without_direct_writes_frames_wait_for_the_connections_flush() {
    let sock = Arc::new(FakeSocket::default());
    sock.open(1 << 20);
    let sub = Subscriber::with_writer(7, "u", 8, sock.clone(), false);
    let hub = hub(0, None);
    hub.subscribe("a", &sub, None);
    hub.publish("a", Bytes::from_static(b"x"));
    hub.publish("a", Bytes::from_static(b"y"));
    assert_eq!(sub.queued(), 2);
    assert!(sock.wire().is_empty());
    assert!(matches!(sub.flush(), Flush::Drained));
    assert_eq!(sock.wire().len(), 18, "both frames, one vectored write");
}
