#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;
use ractor::Message as _;

use super::frame::{Item, Raw};
use super::*;

fn group() -> String {
    format!("test.inbox.{}", uuid::Uuid::now_v7())
}

fn cfg(group: &str) -> LinkConfig {
    LinkConfig { group: group.to_owned(), ..LinkConfig::default() }
}

#[test]
fn frames_round_trip() {
    let items = vec![
        Item::Tell { port: "channels", payload: Raw(b"hello") },
        Item::Request { id: 7, port: "rpc", payload: Raw(b"") },
        Item::Reply { id: u64::MAX, payload: Raw(&[0, 1, 2]) },
        Item::Fail { id: 3, reason: "nope" },
    ];
    let bytes = frame::encode("node-a", &items).unwrap();
    assert_eq!(&bytes[..4], frame::MAGIC);
    assert_eq!(bytes[4], frame::VERSION);
    let back = frame::decode(&bytes).unwrap();
    assert_eq!(back, frame::Frame { from: "node-a", items });
}

#[test]
fn foreign_frames_are_refused() {
    let good = frame::encode("a", &[Item::Tell { port: "p", payload: Raw(b"x") }]).unwrap();
    assert!(frame::decode(b"").is_err());
    assert!(frame::decode(b"TRLK").is_err());
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(frame::decode(&bad_magic).unwrap_err().contains("magic"));
    let mut future = good.clone();
    future[4] = frame::VERSION + 1;
    assert!(frame::decode(&future).unwrap_err().contains("version"));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(frame::decode(&trailing).unwrap_err().contains("trailing"));
    assert!(frame::decode(&good[..good.len() - 1]).is_err());
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = frame::decode(&bytes);
        let mut framed = frame::MAGIC.to_vec();
        framed.push(frame::VERSION);
        framed.extend_from_slice(&bytes);
        let _ = frame::decode(&framed);
    }

    #[test]
    fn any_tells_round_trip(msgs in proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..64)), 0..32)) {
        let items: Vec<Item<'_>> = msgs.iter().map(|(p, b)| Item::Tell { port: p, payload: Raw(b) }).collect();
        let bytes = frame::encode("n", &items).unwrap();
        prop_assert_eq!(frame::decode(&bytes).unwrap().items, items);
    }
}

fn tell(port: &str, payload: &'static [u8]) -> Outgoing {
    Outgoing::Tell { port: port.into(), payload: Bytes::from_static(payload) }
}

#[test]
fn the_queue_is_bounded_by_messages_and_bytes() {
    let mut q = PeerQueue::new(3, 1 << 20);
    assert_eq!(q.push(tell("p", b"1")), Ok(true));
    assert_eq!(q.push(tell("p", b"2")), Ok(false));
    assert_eq!(q.push(tell("p", b"3")), Ok(false));
    assert_eq!(q.push(tell("p", b"4")), Err(queue::QueueFull));

    let one = tell("p", &[0; 100]).size();
    let mut q = PeerQueue::new(1000, 2 * one);
    assert!(q.push(tell("p", &[0; 100])).is_ok());
    assert!(q.push(tell("p", &[0; 100])).is_ok());
    assert_eq!(q.push(tell("p", b"x")), Err(queue::QueueFull));
    assert_eq!(q.bytes(), 2 * one);
    // A message bigger than the whole byte bound still goes through an empty queue, alone.
    let mut q = PeerQueue::new(1000, 10);
    assert!(q.push(tell("p", &[0; 100])).is_ok());
    assert_eq!(q.push(tell("p", b"")), Err(queue::QueueFull));
}

#[test]
fn frames_are_cut_in_order_within_the_frame_size() {
    let mut q = PeerQueue::new(1000, 1 << 20);
    for _ in 0..10 {
        q.push(tell("p", &[7; 50])).unwrap();
    }
    let size = tell("p", &[7; 50]).size();
    let mut out = Vec::new();
    q.take_frame(3 * size + 1, &mut out);
    assert_eq!((out.len(), q.len()), (3, 7));
    assert_eq!(q.bytes(), 7 * size);
    out.clear();
    q.take_frame(1, &mut out);
    assert_eq!(out.len(), 1, "a frame always carries at least one message");
    out.clear();
    q.take_frame(usize::MAX, &mut out);
    assert_eq!((out.len(), q.len(), q.bytes()), (6, 0, 0));
    // The encoded frame never exceeds the estimate.
    let items: Vec<Item<'_>> = out.iter().map(Outgoing::item).collect();
    assert!(frame::encode("", &items).unwrap().len() <= 5 + 2 + 6 * size);
}

#[test]
fn inbox_messages_cross_the_wire_as_calls_and_foreign_ones_are_refused() {
    let (tx, _rx) = ractor::concurrency::oneshot();
    let wire = InboxMsg::Frame { frame: vec![1, 2], reply: tx.into() }.serialize().unwrap();
    let SerializedMessage::Call { variant, args, .. } = &wire else { panic!("a frame is a call") };
    assert_eq!((variant.as_str(), args.as_slice()), (FRAME_VARIANT, &[1u8, 2][..]));
    assert!(InboxMsg::deserialize(wire).is_ok());
    let cast = SerializedMessage::Cast { variant: FRAME_VARIANT.into(), args: vec![], metadata: None };
    assert!(InboxMsg::deserialize(cast).is_err());
    assert!(InboxMsg::deserialize(SerializedMessage::CallReply(1, vec![])).is_err());
}

type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

fn recorder(links: &Links, port: &str) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    links.register(port, move |from, bytes| lock(&s).push((from.to_owned(), bytes)));
    seen
}

/// Waits (up to 5 s) for `f` to hold.
pub(crate) async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn tells_reach_the_peer_in_order_and_broadcasts_reach_every_peer() {
    let g = group();
    let a = Links::start("a", cfg(&g)).await.unwrap();
    let b = Links::start("b", cfg(&g)).await.unwrap();
    let c = Links::start("c", cfg(&g)).await.unwrap();
    assert_eq!(a.peers(), vec!["b".to_owned(), "c".to_owned()]);
    let on_b = recorder(&b, "p");
    let on_c = recorder(&c, "p");
    for i in 0..1000u32 {
        a.tell("b", "p", Bytes::from(i.to_be_bytes().to_vec())).unwrap();
    }
    until(|| lock(&on_b).len() == 1000).await;
    let got: Vec<u32> = lock(&on_b).iter().map(|(_, b)| u32::from_be_bytes(b[..].try_into().unwrap())).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(lock(&on_b).iter().all(|(from, _)| from == "a"));

    let report = a.broadcast("p", &Bytes::from_static(b"all"));
    assert_eq!(report, Broadcast { queued: 2, full: vec![] });
    until(|| lock(&on_c).len() == 1).await;
    until(|| lock(&on_b).len() == 1001).await;
    assert!(matches!(a.tell("a", "p", Bytes::new()), Err(ClusterError::Unreachable { .. })));
    assert!(matches!(a.tell("nobody", "p", Bytes::new()), Err(ClusterError::Unreachable { .. })));
    for l in [a, b, c] {
        l.stop();
    }
}

#[tokio::test]
async fn calls_are_answered_failed_or_timed_out() {
    let g = group();
    let a = Links::start("a", cfg(&g)).await.unwrap();
    let b = Links::start("b", cfg(&g)).await.unwrap();
    b.register_call("echo", |req: Request| {
        let mut out = req.payload.to_vec();
        out.reverse();
        req.reply(Bytes::from(out));
    });
    let held: Arc<Mutex<Vec<Request>>> = Arc::default();
    let h = held.clone();
    b.register_call("silent", move |req| lock(&h).push(req));
    b.register_call("dropper", drop);
    let deadline = Duration::from_secs(5);
    let answer = a.call("b", "echo", Bytes::from_static(b"abc"), deadline).await.unwrap();
    assert_eq!(&answer[..], b"cba");
    let err = a.call("b", "nothing-here", Bytes::new(), deadline).await.unwrap_err();
    assert!(matches!(&err, ClusterError::CallFailed { reason, .. } if reason.contains("no call handler")), "{err}");
    let err = a.call("b", "dropper", Bytes::new(), deadline).await.unwrap_err();
    assert!(matches!(err, ClusterError::CallFailed { .. }), "{err}");
    let err = a.call("b", "silent", Bytes::new(), Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, ClusterError::CallTimeout { .. }), "{err}");
    assert!(lock(&a.inner.pending).is_empty(), "a timed-out call leaves nothing pending");
    // Concurrent calls are matched to their own answers.
    let calls = (0..50u8).map(|i| {
        let a = a.clone();
        async move { a.call("b", "echo", Bytes::from(vec![i, 0]), deadline).await.unwrap() }
    });
    let answers = futures_join(calls).await;
    for (i, ans) in answers.iter().enumerate() {
        assert_eq!(&ans[..], &[0, i as u8]);
    }
    lock(&held).clear();
    a.stop();
    b.stop();
}

async fn futures_join<F: std::future::Future<Output = Bytes> + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<Bytes> {
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A peer inbox that takes frames and never answers them (a frozen node).
pub(crate) struct Frozen {
    pub group: String,
    pub frames: Arc<AtomicUsize>,
}

/// Starts a [`Frozen`] inbox for node `node` in `group`.
pub(crate) async fn frozen_peer(group: &str, node: &str) -> (ActorRef<InboxMsg>, Arc<AtomicUsize>) {
    let frames = Arc::new(AtomicUsize::new(0));
    let frozen = Frozen { group: group.to_owned(), frames: frames.clone() };
    let (actor, _) = Actor::spawn(Some(inbox_name(group, node)), frozen, ()).await.unwrap();
    (actor, frames)
}

impl Actor for Frozen {
    type Msg = InboxMsg;
    type State = Vec<RpcReplyPort<Vec<u8>>>;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<InboxMsg>, (): ()) -> std::result::Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(self.group.clone(), vec![me.get_cell()]);
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _: ActorRef<InboxMsg>,
        msg: InboxMsg,
        held: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let InboxMsg::Frame { reply, .. } = msg;
        self.frames.fetch_add(1, Ordering::SeqCst);
        held.push(reply);
        Ok(())
    }
}

#[tokio::test]
async fn a_frozen_peer_fills_only_the_bounded_queue_then_tell_is_full() {
    let g = group();
    let config = LinkConfig { max_queue_messages: 20, max_frame_bytes: 64, max_frames_in_flight: 2, ..cfg(&g) };
    let a = Links::start("a", config).await.unwrap();
    let (frozen, frames) = frozen_peer(&g, "frozen").await;
    let b = Links::start("b", cfg(&g)).await.unwrap();
    let on_b = recorder(&b, "p");

    let mut sent = 0;
    let full = loop {
        match a.tell("frozen", "p", Bytes::from_static(&[1; 16])) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 10_000, "the link never filled");
        tokio::task::yield_now().await;
    };
    assert!(matches!(full, ClusterError::LinkFull { ref peer } if peer == "frozen"), "{full}");
    until(|| frames.load(Ordering::SeqCst) == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(frames.load(Ordering::SeqCst), 2, "no more frames than the in-flight bound");
    assert_eq!(a.queued("frozen"), 20);
    // The other peers' links are unaffected, and a broadcast reports the full one.
    let report = a.broadcast("p", &Bytes::from_static(b"x"));
    assert_eq!(report, Broadcast { queued: 1, full: vec!["frozen".to_owned()] });
    until(|| lock(&on_b).len() == 1).await;

    // The peer goes away: its link drops what is queued and closes; tells are then unreachable.
    frozen.stop(None);
    until(|| matches!(a.tell("frozen", "p", Bytes::new()), Err(ClusterError::Unreachable { .. }))).await;
    a.stop();
    b.stop();
}

#[tokio::test]
async fn garbage_frames_are_counted_and_the_inbox_keeps_working() {
    let g = group();
    let a = Links::start("a", cfg(&g)).await.unwrap();
    let b = Links::start("b", cfg(&g)).await.unwrap();
    let on_b = recorder(&b, "p");
    b.register("boom", |_, _| panic!("handler bug"));
    let cell = resolve(&g, "a", "b").unwrap();
    let answer = ractor::rpc::call::<InboxMsg, Vec<u8>, _>(
        &cell,
        |reply| InboxMsg::Frame { frame: b"TRLK\x01\xff\xff\xff".to_vec(), reply },
        Some(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert!(matches!(answer, ractor::rpc::CallResult::Success(_)), "garbage is still acknowledged");
    a.tell("b", "boom", Bytes::new()).unwrap();
    a.tell("b", "p", Bytes::from_static(b"after")).unwrap();
    until(|| lock(&on_b).len() == 1).await;
    a.stop();
    b.stop();
}
