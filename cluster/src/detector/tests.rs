#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, advance};

use super::*;

fn cfg() -> DetectorConfig {
    DetectorConfig { suspect_after: Duration::from_millis(1500), down_after: Duration::from_secs(3) }
}

const MS: fn(u64) -> Duration = Duration::from_millis;

#[tokio::test(start_paused = true)]
async fn a_peer_that_keeps_heartbeating_and_answering_stays_alive() {
    let mut d = Detector::new(cfg());
    for hb in 0..20 {
        let now = Instant::now();
        d.observe("b", 1, NodeStatus::Up, hb, now);
        assert!(d.pong("b", 1, MS(2), now));
        assert!(d.verdicts(now, true).is_empty());
        advance(MS(500)).await;
    }
    assert_eq!(d.rtt("b"), Some(MS(2)));
    assert!(d.reachable("b", Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_suspect_then_down_on_the_store_heartbeat() {
    let mut d = Detector::new(cfg());
    d.observe("b", 1, NodeStatus::Up, 7, Instant::now());
    advance(MS(1499)).await;
    d.observe("b", 1, NodeStatus::Up, 7, Instant::now()); // unchanged counter: no news
    assert_eq!(d.health("b", Instant::now(), false), Some(PeerHealth::Alive));
    advance(MS(1)).await;
    let v = d.verdicts(Instant::now(), false);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].health, v[0].incarnation), (PeerHealth::Suspect, 1));
    assert!(v[0].reason.contains("store heartbeat"), "{}", v[0].reason);
    advance(MS(1500)).await;
    assert_eq!(d.verdicts(Instant::now(), false)[0].health, PeerHealth::Down);
    // A changed counter is life again.
    d.observe("b", 1, NodeStatus::Up, 8, Instant::now());
    assert_eq!(d.health("b", Instant::now(), false), Some(PeerHealth::Alive));
}

#[tokio::test(start_paused = true)]
async fn a_joined_peer_that_stops_answering_pings_is_down_even_if_it_writes_the_store() {
    let mut d = Detector::new(cfg());
    let t0 = Instant::now();
    d.observe("b", 1, NodeStatus::Up, 0, t0);
    d.pong("b", 1, MS(1), t0);
    for hb in 1..=7 {
        advance(MS(500)).await;
        d.observe("b", 1, NodeStatus::Up, hb, Instant::now());
    }
    // 3.5 s without a pong, fresh heartbeats: down by ping, alive by the store alone.
    let v = d.verdicts(Instant::now(), true);
    assert_eq!(v[0].health, PeerHealth::Down);
    assert!(v[0].reason.contains("ping"), "{}", v[0].reason);
    assert!(d.verdicts(Instant::now(), false).is_empty(), "a node that has not joined judges by the store only");
    assert!(!d.reachable("b", Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_joining_peer_is_not_judged_by_pings_until_it_is_up() {
    let mut d = Detector::new(cfg());
    for hb in 0..10 {
        advance(MS(500)).await;
        d.observe("b", 1, NodeStatus::Joining, hb, Instant::now());
    }
    assert!(d.verdicts(Instant::now(), true).is_empty());
    // Turning up starts the ping clock now, not when the row was first seen.
    d.observe("b", 1, NodeStatus::Up, 10, Instant::now());
    advance(MS(1400)).await;
    d.observe("b", 1, NodeStatus::Up, 11, Instant::now());
    assert_eq!(d.health("b", Instant::now(), true), Some(PeerHealth::Alive));
    advance(MS(200)).await;
    assert_eq!(d.health("b", Instant::now(), true), Some(PeerHealth::Suspect));
}

#[tokio::test(start_paused = true)]
async fn a_new_incarnation_starts_fresh_and_stale_pongs_are_ignored() {
    let mut d = Detector::new(cfg());
    d.observe("b", 1, NodeStatus::Up, 3, Instant::now());
    advance(Duration::from_secs(10)).await;
    assert_eq!(d.health("b", Instant::now(), true), Some(PeerHealth::Down));
    d.observe("b", 2, NodeStatus::Joining, 0, Instant::now());
    assert_eq!(d.health("b", Instant::now(), true), Some(PeerHealth::Alive));
    assert!(!d.pong("b", 1, MS(1), Instant::now()), "the old process's pong does not count");
    assert!(d.pong("b", 2, MS(1), Instant::now()));
    // An older incarnation's row (a slow reader) does not roll the record back.
    d.observe("b", 1, NodeStatus::Up, 99, Instant::now());
    assert!(d.pong("b", 2, MS(1), Instant::now()));
    assert!(!d.pong("nobody", 1, MS(1), Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn down_rows_are_not_judged_and_forgotten_peers_vanish() {
    let mut d = Detector::new(cfg());
    d.observe("b", 1, NodeStatus::Down, 3, Instant::now());
    d.observe("c", 1, NodeStatus::Up, 3, Instant::now());
    advance(Duration::from_secs(10)).await;
    let v = d.verdicts(Instant::now(), true);
    assert_eq!(v.iter().map(|v| v.node_id.as_str()).collect::<Vec<_>>(), ["c"]);
    d.retain(|id| id != "c");
    assert!(d.verdicts(Instant::now(), true).is_empty());
    assert_eq!(d.health("c", Instant::now(), true), None);
}

#[tokio::test(start_paused = true)]
async fn waking_up_from_a_pause_accuses_nobody() {
    let mut d = Detector::new(cfg());
    d.observe("b", 1, NodeStatus::Up, 1, Instant::now());
    d.pong("b", 1, MS(1), Instant::now());
    advance(Duration::from_secs(30)).await; // this node was frozen
    d.restart_all(Instant::now());
    assert!(d.verdicts(Instant::now(), true).is_empty());
    advance(MS(3000)).await;
    assert_eq!(d.verdicts(Instant::now(), true)[0].health, PeerHealth::Down);
}

proptest! {
    /// Whatever the event sequence, a peer's health only depends on how long each signal has been silent:
    /// alive under `suspect_after`, suspect until `down_after`, then down — never "better" with more silence.
    #[test]
    fn health_is_monotonic_in_silence(steps in proptest::collection::vec((0u64..2000, any::<bool>(), any::<bool>()), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let mut d = Detector::new(cfg());
            let mut hb = 0;
            let (mut last_hb, mut last_pong) = (Instant::now(), Instant::now());
            d.observe("b", 1, NodeStatus::Up, hb, Instant::now());
            for (wait, beat, answer) in steps {
                advance(MS(wait)).await;
                let now = Instant::now();
                if beat { hb += 1; last_hb = now; }
                d.observe("b", 1, NodeStatus::Up, hb, now);
                if answer { d.pong("b", 1, MS(1), now); last_pong = now; }
                let silence = now.duration_since(last_hb).max(now.duration_since(last_pong));
                let expected = if silence >= cfg().down_after {
                    PeerHealth::Down
                } else if silence >= cfg().suspect_after {
                    PeerHealth::Suspect
                } else {
                    PeerHealth::Alive
                };
                prop_assert_eq!(d.health("b", now, true), Some(expected));
            }
            Ok(())
        })?;
    }
}
