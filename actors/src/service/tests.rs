#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
//! ServiceRef tests: restarts, breaker, deadlines, admission limit, lookups, mailbox depth.

use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{BreakerConfig, BreakerState};
use crate::error::Error;
use crate::registry::Registry;
use crate::supervisor::tests::{OtherMsg, WMsg, id, info, new_log, restarts, send, settle, spec, worker};
use crate::supervisor::{Backoff, CallLimits, ChildSpec, Supervisor, SupervisorSpec};

fn breaker(consecutive_failures: u32, cooldown: Duration) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures,
        failure_rate: 1.0,
        min_calls: 1_000,
        window: Duration::from_secs(30),
        cooldown,
    }
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

async fn start(spec: SupervisorSpec) -> (crate::RootHandle, Registry) {
    let reg = Registry::new();
    let root = Supervisor::start_root(spec, reg.clone()).await.unwrap();
    (root, reg)
}

// ---------------------------------------------------------------------------------------------
// 9. Breaker.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn crashes_open_the_breaker_and_a_probe_closes_it() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(worker("a", &log).breaker(breaker(3, secs(5))))).await;
    let svc = reg.service::<WMsg>("a").unwrap();

    for n in 1..=3 {
        assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed, "closed after {} crashes", n - 1);
        svc.tell(WMsg::Fail).unwrap();
        settle().await;
    }
    assert_eq!(restarts(&reg, "/root/a"), 3);
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);

    // Open: fail fast, without waiting for the (running, restarted) actor.
    let t0 = Instant::now();
    match svc.call(WMsg::Ping).await {
        Err(Error::Unavailable { retry_after, service }) => {
            assert_eq!(service, "/root/a");
            assert!(retry_after > Duration::ZERO && retry_after <= secs(5), "{retry_after:?}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(matches!(svc.tell(WMsg::Noop), Err(Error::Unavailable { .. })));

    tokio::time::advance(secs(5)).await;
    let probe = svc.call(WMsg::Ping).await.unwrap();
    assert_eq!(Some(probe), id(&reg, "/root/a"));
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed);
    svc.tell(WMsg::Noop).unwrap();
    assert_eq!(svc.call(WMsg::Ping).await.unwrap(), probe);
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_again() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(
        worker("a", &log).breaker(breaker(1, secs(5))).calls(CallLimits { timeout: secs(1), max_in_flight: 8 }),
    ))
    .await;
    let svc = reg.service::<WMsg>("/root/a").unwrap();
    send(&reg, "/root/a", WMsg::Fail);
    settle().await;
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);
    tokio::time::advance(secs(5)).await;

    // The probe times out: open again, for another cooldown.
    assert!(matches!(svc.call(|r| WMsg::Sleep(secs(3), r)).await, Err(Error::Timeout { .. })));
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);
    assert!(matches!(svc.call(WMsg::Ping).await, Err(Error::Unavailable { .. })));
    tokio::time::sleep(secs(5)).await;
    assert!(svc.call(WMsg::Ping).await.is_ok());
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed);
    assert!(root.shutdown(secs(5)).await);
}

/// A probe whose actor stops mid-call gets no reply; the breaker must not wait for it forever.
#[tokio::test(start_paused = true)]
async fn a_probe_interrupted_by_a_stop_does_not_wedge_the_breaker() {
    let log = new_log();
    let (root, reg) =
        start(spec("root").child(worker("a", &log).restart(crate::Restart::Transient).breaker(breaker(1, secs(5)))))
            .await;
    let svc = reg.service::<WMsg>("a").unwrap();
    send(&reg, "/root/a", WMsg::Fail);
    settle().await;
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);
    tokio::time::advance(secs(5)).await;

    // The probe is in the mailbox behind a normal stop: the reply port is dropped unanswered.
    let cell = reg.slot("/root/a").unwrap().cell().unwrap();
    let probe = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.call(|r| WMsg::Sleep(secs(1), r)).await })
    };
    cell.stop(None);
    assert!(matches!(probe.await.unwrap(), Err(Error::Stopped { .. })));
    settle().await;
    // The transient child ended normally; once it is started again the breaker lets a probe through.
    assert_eq!(info(&reg, "/root/a").status, crate::Status::Stopped);
    assert_ne!(info(&reg, "/root/a").breaker, BreakerState::HalfOpen, "the lost probe was resolved");
    assert!(root.shutdown(secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// 10. ServiceRef.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn service_ref_survives_restarts() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(worker("a", &log))).await;
    let svc = reg.service::<WMsg>("a").unwrap();
    assert_eq!(svc.path(), "/root/a");
    let first = svc.call(WMsg::Ping).await.unwrap();

    svc.tell(WMsg::Fail).unwrap();
    settle().await;
    let second = svc.call(WMsg::Ping).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(Some(second), id(&reg, "/root/a"));

    // The actor dies mid-call: the caller learns it stopped, and the next call reaches the new one.
    let pending = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.call(|r| WMsg::Sleep(secs(2), r)).await })
    };
    settle().await;
    reg.slot("/root/a").unwrap().cell().unwrap().kill();
    assert!(matches!(pending.await.unwrap(), Err(Error::Stopped { .. })));
    settle().await;
    let third = svc.call(WMsg::Ping).await.unwrap();
    assert!(third != second && third != first);
    assert_eq!(restarts(&reg, "/root/a"), 2);
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn calls_between_incarnations_are_unavailable() {
    let log = new_log();
    let (root, reg) =
        start(spec("root").backoff(Backoff { initial: secs(1), max: secs(1), jitter: 0.0 }).child(worker("a", &log)))
            .await;
    let svc = reg.service::<WMsg>("a").unwrap();
    svc.tell(WMsg::Fail).unwrap();
    settle().await;
    let err = svc.call(WMsg::Ping).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }) && err.is_retryable(), "{err:?}");
    assert!(matches!(svc.tell(WMsg::Noop), Err(Error::Unavailable { .. })));
    tokio::time::sleep(secs(1)).await;
    settle().await;
    assert_eq!(Some(svc.call(WMsg::Ping).await.unwrap()), id(&reg, "/root/a"));
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn calls_time_out_and_timeouts_open_the_breaker() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(
        worker("a", &log).breaker(breaker(2, secs(30))).calls(CallLimits { timeout: secs(1), max_in_flight: 8 }),
    ))
    .await;
    let svc = reg.service::<WMsg>("a").unwrap();
    assert_eq!(svc.default_timeout(), secs(1));

    let t0 = Instant::now();
    match svc.call(|r| WMsg::Sleep(secs(2), r)).await {
        Err(Error::Timeout { timeout, .. }) => assert_eq!(timeout, secs(1)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed);

    // An explicit, longer deadline is honoured.
    assert!(svc.call_with_timeout(|r| WMsg::Sleep(secs(2), r), secs(10)).await.is_ok());

    assert!(matches!(svc.call(|r| WMsg::Sleep(secs(2), r)).await, Err(Error::Timeout { .. })));
    assert!(matches!(svc.call(|r| WMsg::Sleep(secs(2), r)).await, Err(Error::Timeout { .. })));
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);
    assert!(matches!(svc.call(WMsg::Ping).await, Err(Error::Unavailable { .. })));
    // Timeouts are not crashes.
    assert_eq!(restarts(&reg, "/root/a"), 0);
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn too_many_calls_in_flight_are_refused() {
    let log = new_log();
    let (root, reg) =
        start(spec("root").child(worker("a", &log).calls(CallLimits { timeout: secs(60), max_in_flight: 2 }))).await;
    let svc = reg.service::<WMsg>("a").unwrap();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.call(|r| WMsg::Sleep(secs(10), r)).await })
        })
        .collect();
    settle().await;
    assert_eq!(info(&reg, "/root/a").in_flight, 2);

    let t0 = Instant::now();
    match svc.call(WMsg::Ping).await {
        Err(Error::Overloaded { limit, .. }) => assert_eq!(limit, 2),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed, "refusals are not failures");

    for b in busy {
        b.await.unwrap().unwrap();
    }
    assert_eq!(info(&reg, "/root/a").in_flight, 0);
    assert!(svc.call(WMsg::Ping).await.is_ok());
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn registry_lookups() {
    let log = new_log();
    let (root, reg) = start(
        spec("root")
            .child(worker("a", &log))
            .child(ChildSpec::supervisor(spec("m1").child(worker("w", &log))))
            .child(ChildSpec::supervisor(spec("m2").child(worker("w", &log)))),
    )
    .await;
    assert!(matches!(reg.service::<WMsg>("nope"), Err(Error::NotFound { name }) if name == "nope"));
    assert!(matches!(reg.service::<WMsg>("/root/nope"), Err(Error::NotFound { .. })));
    assert!(matches!(reg.service::<WMsg>("w"), Err(Error::Ambiguous { name }) if name == "w"));
    assert!(matches!(reg.service::<OtherMsg>("a"), Err(Error::WrongMessageType { .. })));
    assert!(matches!(reg.service::<WMsg>("m1"), Err(Error::WrongMessageType { .. })));

    let w1 = reg.service::<WMsg>("/root/m1/w").unwrap();
    let w2 = reg.service::<WMsg>("/root/m2/w").unwrap();
    assert_eq!(Some(w1.call(WMsg::Ping).await.unwrap()), id(&reg, "/root/m1/w"));
    assert_eq!(Some(w2.call(WMsg::Ping).await.unwrap()), id(&reg, "/root/m2/w"));
    assert!(reg.actor_ref::<WMsg>("a").is_ok());

    let paths: Vec<String> = reg.snapshot().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, ["/root", "/root/a", "/root/m1", "/root/m1/w", "/root/m2", "/root/m2/w"]);
    assert_eq!(info(&reg, "/root/m1/w").parent.as_deref(), Some("/root/m1"));
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn mailbox_depth_returns_to_zero() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(worker("a", &log))).await;
    let svc = reg.service::<WMsg>("a").unwrap();
    let busy = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.call(|r| WMsg::Sleep(secs(1), r)).await })
    };
    settle().await;
    assert_eq!(info(&reg, "/root/a").mailbox_depth, 0, "the sleep is being handled");
    for _ in 0..3 {
        svc.tell(WMsg::Noop).unwrap();
    }
    assert_eq!(info(&reg, "/root/a").mailbox_depth, 3);
    busy.await.unwrap().unwrap();
    settle().await;
    assert_eq!(info(&reg, "/root/a").mailbox_depth, 0);
    assert_eq!(info(&reg, "/root/a").messages, 4, "every handled message is counted");
    // Messages lost with a dead incarnation are not left counted: the new one starts empty.
    reg.slot("/root/a").unwrap().cell().unwrap().kill();
    let _ = svc.tell(WMsg::Noop);
    settle().await;
    assert_eq!(restarts(&reg, "/root/a"), 1);
    assert_eq!(info(&reg, "/root/a").mailbox_depth, 0);
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn a_tell_after_the_cooldown_is_the_probe_and_closes_the_breaker() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(worker("a", &log).breaker(breaker(2, secs(5))))).await;
    let svc = reg.service::<WMsg>("a").unwrap();
    for _ in 0..2 {
        svc.tell(WMsg::Fail).unwrap();
        settle().await;
    }
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);
    assert!(matches!(svc.tell(WMsg::Noop), Err(Error::Unavailable { .. })));

    tokio::time::advance(secs(5)).await;
    svc.tell(WMsg::Noop).unwrap(); // the probe
    assert!(matches!(svc.tell(WMsg::Noop), Err(Error::Unavailable { .. })), "only one probe at a time");
    settle().await;
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed, "a handled probe closes the breaker");
    svc.tell(WMsg::Noop).unwrap();
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn a_failing_tell_probe_opens_the_breaker_again() {
    let log = new_log();
    let (root, reg) = start(spec("root").child(worker("a", &log).breaker(breaker(2, secs(5))))).await;
    let svc = reg.service::<WMsg>("a").unwrap();
    for _ in 0..2 {
        svc.tell(WMsg::Fail).unwrap();
        settle().await;
    }
    tokio::time::advance(secs(5)).await;
    svc.tell(WMsg::Fail).unwrap(); // the probe crashes the actor
    settle().await;
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open);
    assert!(matches!(svc.tell(WMsg::Noop), Err(Error::Unavailable { .. })));
    // The next cooldown admits a new probe: the breaker is not wedged.
    tokio::time::advance(secs(5)).await;
    svc.tell(WMsg::Noop).unwrap();
    settle().await;
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed);
    assert!(root.shutdown(secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// Queries on the caller's task.
// ---------------------------------------------------------------------------------------------

/// The shared read-side object the queries below run against.
struct Shelf {
    books: u32,
}

#[tokio::test(start_paused = true)]
async fn queries_run_against_the_local_object_only_while_the_actor_runs() {
    let log = new_log();
    let shelf = std::sync::Arc::new(Shelf { books: 7 });
    let (root, reg) = start(
        spec("root")
            .backoff(Backoff { initial: secs(1), max: secs(1), jitter: 0.0 })
            .child(worker("a", &log).local(shelf)),
    )
    .await;
    let svc = reg.service::<WMsg>("a").unwrap();
    assert_eq!(svc.query(|s: std::sync::Arc<Shelf>| async move { s.books }).await.unwrap(), 7);
    // A type the child was not given: the service has no such query side.
    assert!(matches!(
        svc.query(|s: std::sync::Arc<String>| async move { s.len() }).await,
        Err(Error::Unavailable { .. })
    ));

    // Between incarnations queries fail fast like calls, then work again.
    svc.tell(WMsg::Fail).unwrap();
    settle().await;
    let err = svc.query(|s: std::sync::Arc<Shelf>| async move { s.books }).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    tokio::time::sleep(secs(1)).await;
    settle().await;
    assert_eq!(svc.query(|s: std::sync::Arc<Shelf>| async move { s.books + 1 }).await.unwrap(), 8);
    assert!(root.shutdown(secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn query_timeouts_and_panics_count_for_the_breaker_and_spare_the_caller() {
    let log = new_log();
    let shelf = std::sync::Arc::new(Shelf { books: 1 });
    let (root, reg) = start(
        spec("root").child(
            worker("a", &log)
                .local(shelf)
                .breaker(breaker(2, secs(30)))
                .calls(CallLimits { timeout: secs(1), max_in_flight: 8 }),
        ),
    )
    .await;
    let svc = reg.service::<WMsg>("a").unwrap();
    let t0 = Instant::now();
    let slow = svc
        .query(|s: std::sync::Arc<Shelf>| async move {
            tokio::time::sleep(secs(5)).await;
            s.books
        })
        .await;
    assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Closed);

    #[allow(clippy::panic, reason = "the test is about a panicking query")]
    let boom = svc.query(|_s: std::sync::Arc<Shelf>| async move { panic!("query bug") }).await;
    let boom: crate::Result<u32> = boom;
    assert!(matches!(boom, Err(Error::Stopped { .. })), "{boom:?}");
    assert_eq!(info(&reg, "/root/a").breaker, BreakerState::Open, "two failures open the breaker");
    let refused = svc.query(|s: std::sync::Arc<Shelf>| async move { s.books }).await;
    assert!(matches!(refused, Err(Error::Unavailable { .. })), "{refused:?}");
    // The actor itself never crashed.
    assert_eq!(restarts(&reg, "/root/a"), 0);
    assert!(root.shutdown(secs(5)).await);
}
