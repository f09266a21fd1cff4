#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use ractor::Message as _;

use super::*;

#[tokio::test]
async fn ping_messages_cross_the_wire_as_envelopes() {
    let request = seal(PING_KIND, "a", &PingBody { from: "a".into(), from_incarnation: 3 }).unwrap();
    let (tx, rx) = ractor::concurrency::oneshot();
    let msg = PingerMsg::Ping { request: request.clone(), reply: tx.into() };
    assert!(PingerMsg::serializable());
    let wire = msg.serialize().unwrap();
    let SerializedMessage::Call { variant, args, .. } = &wire else { panic!("a ping is a call") };
    assert_eq!((variant.as_str(), args), (PING_VARIANT, &request));
    let PingerMsg::Ping { request: back, reply } = PingerMsg::deserialize(wire).unwrap();
    assert_eq!(open::<PingBody>(PING_KIND, &back).unwrap().from_incarnation, 3);
    reply.send(b"pong".to_vec()).unwrap();
    assert_eq!(rx.await.unwrap(), b"pong");
}

#[test]
fn unknown_or_foreign_messages_are_refused() {
    let cast = SerializedMessage::Cast { variant: "other".into(), args: vec![1], metadata: None };
    assert!(PingerMsg::deserialize(cast).is_err());
    assert!(PingerMsg::deserialize(SerializedMessage::CallReply(1, vec![])).is_err());
    let pong = seal(PONG_KIND, "b", &PongBody { node_id: "b".into(), incarnation: 1 }).unwrap();
    assert!(matches!(open::<PingBody>(PING_KIND, &pong), Err(ClusterError::Decode { .. })));
    assert!(matches!(open::<PingBody>(PING_KIND, b"\x00garbage"), Err(ClusterError::Decode { .. })));
}

#[tokio::test]
async fn the_pinger_answers_with_its_current_incarnation_and_ignores_garbage() {
    let incarnation = Arc::new(AtomicU64::new(5));
    let (pinger, handle) =
        Actor::spawn(None, Pinger { node_id: "me".into(), incarnation: incarnation.clone() }, ()).await.unwrap();
    let ask = |bytes: Vec<u8>| {
        let pinger = pinger.clone();
        async move {
            pinger
                .call(|reply| PingerMsg::Ping { request: bytes, reply }, Some(Duration::from_millis(200)))
                .await
                .unwrap()
        }
    };
    let ping = seal(PING_KIND, "a", &PingBody { from: "a".into(), from_incarnation: 1 }).unwrap();
    let ractor::rpc::CallResult::Success(bytes) = ask(ping.clone()).await else { panic!("no pong") };
    assert_eq!(open::<PongBody>(PONG_KIND, &bytes).unwrap(), PongBody { node_id: "me".into(), incarnation: 5 });
    incarnation.store(9, Ordering::Release);
    let ractor::rpc::CallResult::Success(bytes) = ask(ping).await else { panic!("no pong") };
    assert_eq!(open::<PongBody>(PONG_KIND, &bytes).unwrap().incarnation, 9);
    // Garbage gets no answer (the caller's deadline fires), and the pinger keeps running.
    assert!(!matches!(ask(b"junk".to_vec()).await, ractor::rpc::CallResult::Success(_)));
    assert!(ractor::pg::get_members(&PINGER_GROUP.to_owned()).iter().any(|c| c.get_id() == pinger.get_id()));
    pinger.stop(None);
    handle.await.unwrap();
}
