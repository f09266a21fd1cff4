#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
//! Supervision tests: strategies, restart policies, intensity and escalation, backoff, startup
//! failures, ordered shutdown, and a property test over random crash schedules. Time is tokio's
//! paused clock throughout; backoffs have no jitter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};

use super::{Backoff, ChildSpec, Restart, Strategy, Supervisor, SupervisorSpec};
use crate::registry::{ActorInfo, Registry, Status};

// ---------------------------------------------------------------------------------------------
// Test worker and helpers (shared with the ServiceRef tests).
// ---------------------------------------------------------------------------------------------

/// Start/stop log shared by every worker of a test.
pub(crate) type Log = Arc<Mutex<Vec<String>>>;

pub(crate) fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

pub(crate) fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Log entries from index `from` on.
pub(crate) fn entries_since(log: &Log, from: usize) -> Vec<String> {
    entries(log).split_off(from)
}

/// Messages of the test worker.
pub(crate) enum WMsg {
    /// Reply with the current incarnation's id.
    Ping(RpcReplyPort<ActorId>),
    /// The handler returns an error.
    Fail,
    /// The handler panics.
    Panic,
    /// The actor stops itself normally.
    StopNormal,
    /// Sleep, then reply.
    Sleep(Duration, RpcReplyPort<()>),
    /// Do nothing.
    Noop,
}

impl ractor::Message for WMsg {}

/// Another message type, for wrong-type lookups.
pub(crate) struct OtherMsg;

impl ractor::Message for OtherMsg {}

/// Logs `start:<name>` / `stop:<name>` (and `startfail:<name>` for injected start failures).
#[derive(Clone)]
pub(crate) struct Worker {
    name: String,
    log: Log,
    /// Remaining injected `pre_start` failures.
    fail_starts: Arc<AtomicU32>,
}

impl Worker {
    fn note(&self, what: &str) {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{what}:{}", self.name));
    }
}

impl Actor for Worker {
    type Msg = WMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<WMsg>, _args: ()) -> Result<(), ActorProcessingErr> {
        if self.fail_starts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            self.note("startfail");
            return Err("injected start failure".into());
        }
        self.note("start");
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<WMsg>, _state: &mut ()) -> Result<(), ActorProcessingErr> {
        self.note("stop");
        Ok(())
    }

    async fn handle(&self, myself: ActorRef<WMsg>, msg: WMsg, _state: &mut ()) -> Result<(), ActorProcessingErr> {
        match msg {
            WMsg::Ping(reply) => {
                let _ = reply.send(myself.get_id());
            }
            WMsg::Fail => return Err("injected failure".into()),
            WMsg::Panic => panic!("injected panic"),
            WMsg::StopNormal => myself.stop(None),
            WMsg::Sleep(d, reply) => {
                tokio::time::sleep(d).await;
                let _ = reply.send(());
            }
            WMsg::Noop => {}
        }
        Ok(())
    }
}

/// A permanent worker child.
pub(crate) fn worker(name: &str, log: &Log) -> ChildSpec {
    worker_failing(name, log, 0)
}

/// A permanent worker child whose `pre_start` fails the first `fail_starts` times.
pub(crate) fn worker_failing(name: &str, log: &Log, fail_starts: u32) -> ChildSpec {
    let w = Worker { name: name.to_owned(), log: Arc::clone(log), fail_starts: Arc::new(AtomicU32::new(fail_starts)) };
    ChildSpec::new(name, w, || ())
}

/// A supervisor spec with no backoff and a generous intensity (100 restarts in 10 s).
pub(crate) fn spec(name: &str) -> SupervisorSpec {
    SupervisorSpec::new(name).backoff(Backoff::NONE).intensity(100, Duration::from_secs(10))
}

/// Let every ready task run (the clock does not move).
pub(crate) async fn settle() {
    for _ in 0..300 {
        tokio::task::yield_now().await;
    }
}

/// The snapshot entry at `path`.
pub(crate) fn info(reg: &Registry, path: &str) -> ActorInfo {
    reg.snapshot().into_iter().find(|i| i.path == path).unwrap_or_else(|| panic!("no actor at {path}"))
}

pub(crate) fn status(reg: &Registry, path: &str) -> Status {
    info(reg, path).status
}

pub(crate) fn restarts(reg: &Registry, path: &str) -> u64 {
    info(reg, path).restarts
}

/// Id of the current incarnation, if any.
pub(crate) fn id(reg: &Registry, path: &str) -> Option<ActorId> {
    reg.slot(path).unwrap().cell().map(|c| c.get_id())
}

/// Send `msg` to the current incarnation at `path`.
pub(crate) fn send(reg: &Registry, path: &str, msg: WMsg) {
    reg.actor_ref::<WMsg>(path).unwrap().send_message(msg).unwrap();
}

/// Ping the current incarnation at `path` directly (around the ServiceRef).
pub(crate) async fn ping(reg: &Registry, path: &str) -> ActorId {
    let actor = reg.actor_ref::<WMsg>(path).unwrap();
    match actor.call(WMsg::Ping, Some(Duration::from_secs(1))).await.unwrap() {
        ractor::rpc::CallResult::Success(id) => id,
        _ => panic!("{path} did not answer"),
    }
}

/// Crash the worker at `path` and let the supervisor react.
async fn crash(reg: &Registry, path: &str) {
    send(reg, path, WMsg::Fail);
    settle().await;
}

fn count(log: &Log, entry: &str) -> usize {
    entries(log).iter().filter(|e| *e == entry).count()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|e| (*e).to_owned()).collect()
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

// ---------------------------------------------------------------------------------------------
// 1–3. Strategies.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_crashed_child() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root").child(worker("a", &log)).child(worker("b", &log)).child(worker("c", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    assert_eq!(entries(&log), s(&["start:a", "start:b", "start:c"]));
    let (a0, b0, c0) = (id(&reg, "/root/a").unwrap(), id(&reg, "/root/b").unwrap(), id(&reg, "/root/c").unwrap());

    crash(&reg, "/root/b").await;

    let b1 = id(&reg, "/root/b").unwrap();
    assert_eq!(id(&reg, "/root/a"), Some(a0));
    assert_ne!(b1, b0);
    assert_eq!(id(&reg, "/root/c"), Some(c0));
    assert_eq!(ping(&reg, "/root/b").await, b1);
    assert_eq!((restarts(&reg, "/root/a"), restarts(&reg, "/root/b"), restarts(&reg, "/root/c")), (0, 1, 0));
    for p in ["/root/a", "/root/b", "/root/c"] {
        assert_eq!(status(&reg, p), Status::Running, "{p}");
    }
    // A failed handler skips post_stop: only the new start is logged.
    assert_eq!(entries_since(&log, 3), s(&["start:b"]));
    assert_eq!(info(&reg, "/root/b").last_error.as_deref(), Some("injected failure"));

    // A panic is a crash too.
    send(&reg, "/root/b", WMsg::Panic);
    settle().await;
    assert_ne!(id(&reg, "/root/b"), Some(b1));
    assert_eq!(restarts(&reg, "/root/b"), 2);
    assert_eq!(id(&reg, "/root/a"), Some(a0));
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_everyone_in_order() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .strategy(Strategy::OneForAll)
            .child(worker("a", &log))
            .child(worker("b", &log))
            .child(worker("c", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    let before: Vec<_> = ["/root/a", "/root/b", "/root/c"].iter().map(|p| id(&reg, p).unwrap()).collect();

    crash(&reg, "/root/b").await;

    // Others stopped in reverse start order, then all started again in order.
    assert_eq!(entries_since(&log, 3), s(&["stop:c", "stop:a", "start:a", "start:b", "start:c"]));
    for (p, old) in ["/root/a", "/root/b", "/root/c"].iter().zip(&before) {
        let new = id(&reg, p).unwrap();
        assert_ne!(&new, old, "{p} has a new incarnation");
        assert_eq!(ping(&reg, p).await, new);
        assert_eq!(status(&reg, p), Status::Running);
        assert_eq!(restarts(&reg, p), 1, "{p}");
    }
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_crashed_child_and_later_ones() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .strategy(Strategy::RestForOne)
            .child(worker("a", &log))
            .child(worker("b", &log))
            .child(worker("c", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    let (a0, b0, c0) = (id(&reg, "/root/a").unwrap(), id(&reg, "/root/b").unwrap(), id(&reg, "/root/c").unwrap());

    crash(&reg, "/root/b").await;

    assert_eq!(entries_since(&log, 3), s(&["stop:c", "start:b", "start:c"]));
    assert_eq!(id(&reg, "/root/a"), Some(a0));
    assert_ne!(id(&reg, "/root/b"), Some(b0));
    assert_ne!(id(&reg, "/root/c"), Some(c0));
    assert_eq!((restarts(&reg, "/root/a"), restarts(&reg, "/root/b"), restarts(&reg, "/root/c")), (0, 1, 1));

    // Crashing the last child touches nobody else.
    let (a1, b1) = (id(&reg, "/root/a"), id(&reg, "/root/b"));
    crash(&reg, "/root/c").await;
    assert_eq!((id(&reg, "/root/a"), id(&reg, "/root/b")), (a1, b1));
    assert_eq!(restarts(&reg, "/root/c"), 2);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

/// c waits for its restart when b crashes: b's round supersedes c's, c starts once (after b), and
/// its restart is counted once.
#[tokio::test(start_paused = true)]
async fn a_superseded_restart_round_starts_the_child_once() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .strategy(Strategy::RestForOne)
            .backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(10), jitter: 0.0 })
            .child(worker("a", &log))
            .child(worker("b", &log))
            .child(worker("c", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    crash(&reg, "/root/c").await; // c: round 1, due at 1 s
    tokio::time::advance(ms(500)).await;
    crash(&reg, "/root/b").await; // b and c: round 2, due at 1.5 s
    assert_eq!(status(&reg, "/root/c"), Status::Restarting);
    tokio::time::advance(ms(600)).await; // 1.1 s: round 1 is stale
    settle().await;
    assert_eq!(status(&reg, "/root/c"), Status::Restarting);
    assert_eq!(status(&reg, "/root/b"), Status::Restarting);
    tokio::time::advance(ms(400)).await; // 1.5 s
    settle().await;
    assert_eq!(entries_since(&log, 3), s(&["start:b", "start:c"]));
    assert_eq!(status(&reg, "/root/c"), Status::Running);
    assert_eq!((restarts(&reg, "/root/a"), restarts(&reg, "/root/b"), restarts(&reg, "/root/c")), (0, 1, 1));
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

/// A temporary sibling stopped by a one-for-all restart is not restarted and is reported Stopped
/// (it used to stay `Restarting` forever).
#[tokio::test(start_paused = true)]
async fn temporary_sibling_of_a_group_restart_is_stopped_not_restarting() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .strategy(Strategy::OneForAll)
            .child(worker("a", &log))
            .child(worker("tmp", &log).restart(Restart::Temporary))
            .child(worker("c", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    crash(&reg, "/root/a").await;
    assert_eq!(entries_since(&log, 3), s(&["stop:c", "stop:tmp", "start:a", "start:c"]));
    assert_eq!(status(&reg, "/root/tmp"), Status::Stopped);
    assert_eq!(id(&reg, "/root/tmp"), None);
    assert_eq!(restarts(&reg, "/root/tmp"), 0);
    assert_eq!(status(&reg, "/root/c"), Status::Running);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// 4. Restart intensity and escalation.
// ---------------------------------------------------------------------------------------------

fn nested_tree(log: &Log) -> SupervisorSpec {
    spec("root").child(ChildSpec::supervisor(
        spec("mid").intensity(2, Duration::from_secs(10)).child(worker("x", log)).child(worker("y", log)),
    ))
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_escalates_to_the_parent() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(nested_tree(&log), reg.clone()).await.unwrap();
    let mid0 = id(&reg, "/root/mid").unwrap();
    let y0 = id(&reg, "/root/mid/y").unwrap();

    crash(&reg, "/root/mid/x").await;
    crash(&reg, "/root/mid/x").await;
    assert_eq!(restarts(&reg, "/root/mid/x"), 2);
    assert_eq!(id(&reg, "/root/mid"), Some(mid0), "two restarts are within the intensity");
    let n = entries(&log).len();

    crash(&reg, "/root/mid/x").await;

    // mid gave up: stopped its children (y; x was dead), failed, and root started it again.
    assert_eq!(entries_since(&log, n), s(&["stop:y", "start:x", "start:y"]));
    assert_ne!(id(&reg, "/root/mid"), Some(mid0));
    assert_eq!(restarts(&reg, "/root/mid"), 1);
    assert_eq!(status(&reg, "/root/mid"), Status::Running);
    assert!(info(&reg, "/root/mid").last_error.unwrap().contains("gave up"));
    assert_ne!(id(&reg, "/root/mid/y"), Some(y0));
    for p in ["/root/mid/x", "/root/mid/y"] {
        assert_eq!(status(&reg, p), Status::Running, "{p}");
        assert_eq!(ping(&reg, p).await, id(&reg, p).unwrap());
    }
    assert_eq!(restarts(&reg, "/root/mid/x"), 2, "the escalating crash is not a restart of x");
    assert_eq!(status(&reg, "/root"), Status::Running);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn crashes_spaced_wider_than_the_window_never_escalate() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(nested_tree(&log), reg.clone()).await.unwrap();
    let mid0 = id(&reg, "/root/mid").unwrap();
    for _ in 0..6 {
        crash(&reg, "/root/mid/x").await;
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert_eq!(id(&reg, "/root/mid"), Some(mid0));
    assert_eq!(restarts(&reg, "/root/mid"), 0);
    assert_eq!(restarts(&reg, "/root/mid/x"), 6);
    assert_eq!(restarts(&reg, "/root/mid/y"), 0);
    assert_eq!(status(&reg, "/root/mid/x"), Status::Running);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn root_escalation_ends_the_tree() {
    let log = new_log();
    let reg = Registry::new();
    let mut root = Supervisor::start_root(
        spec("root").intensity(1, Duration::from_secs(10)).child(worker("a", &log)).child(worker("b", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    crash(&reg, "/root/a").await;
    assert_eq!(status(&reg, "/root/a"), Status::Running);
    send(&reg, "/root/a", WMsg::Fail);

    tokio::time::timeout(Duration::from_secs(5), root.exited()).await.expect("the root exits");

    assert_eq!(status(&reg, "/root"), Status::Failed);
    assert_eq!(info(&reg, "/root").actor_id, None);
    assert_eq!(status(&reg, "/root/a"), Status::Failed);
    assert_eq!(status(&reg, "/root/b"), Status::Failed);
    assert_eq!(entries_since(&log, 3), s(&["stop:b"]));
    assert!(!root.shutdown(Duration::from_secs(1)).await, "nothing left to stop gracefully");
    assert_eq!(status(&reg, "/root"), Status::Failed, "shutdown after escalation keeps the root Failed");
}

// ---------------------------------------------------------------------------------------------
// 5. Backoff.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn backoff_doubles_and_resets_after_a_long_run() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .backoff(Backoff { initial: ms(100), max: Duration::from_secs(10), jitter: 0.0 })
            .intensity(100, Duration::from_secs(10))
            .child(worker("a", &log)),
        reg.clone(),
    )
    .await
    .unwrap();

    // Restarted after `delay` (not a millisecond before), from the moment of the crash.
    async fn expect_restart_after(reg: &Registry, delay: Duration) {
        let before = id(reg, "/root/a").unwrap();
        crash(reg, "/root/a").await;
        assert_eq!(status(reg, "/root/a"), Status::Restarting);
        tokio::time::advance(delay - ms(1)).await;
        settle().await;
        assert_eq!(status(reg, "/root/a"), Status::Restarting, "not yet after {:?}", delay - ms(1));
        assert_eq!(id(reg, "/root/a"), None);
        tokio::time::advance(ms(1)).await;
        settle().await;
        assert_eq!(status(reg, "/root/a"), Status::Running, "restarted after {delay:?}");
        assert_ne!(id(reg, "/root/a"), Some(before));
    }

    expect_restart_after(&reg, ms(100)).await;
    expect_restart_after(&reg, ms(200)).await;
    expect_restart_after(&reg, ms(400)).await;
    // Runs longer than the 10 s window: the next crash starts over at 100 ms.
    tokio::time::advance(Duration::from_millis(10_001)).await;
    expect_restart_after(&reg, ms(100)).await;
    expect_restart_after(&reg, ms(200)).await;
    assert_eq!(restarts(&reg, "/root/a"), 5);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

/// The attempt counter resets on a long *run*, not on a long wait: a child that never starts keeps
/// backing off even once the delays exceed the window.
#[tokio::test(start_paused = true)]
async fn backoff_keeps_growing_for_a_child_that_never_starts() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60), jitter: 0.0 })
            .intensity(100, Duration::from_secs(2))
            .child(worker_failing("a", &log, u32::MAX)),
        reg.clone(),
    )
    .await
    .unwrap();
    settle().await;
    // Start attempts at 0, 1, 3, 7, 15 s (delays 1, 2, 4, 8 s).
    let mut at = Duration::ZERO;
    for (n, next) in [(1, 1), (2, 3), (3, 7), (4, 15)] {
        let next = Duration::from_secs(next);
        assert_eq!(count(&log, "startfail:a"), n, "attempts by {at:?}");
        tokio::time::advance(next - at - ms(1)).await;
        settle().await;
        assert_eq!(count(&log, "startfail:a"), n, "no attempt before {next:?}");
        tokio::time::advance(ms(1)).await;
        settle().await;
        at = next;
    }
    assert_eq!(count(&log, "startfail:a"), 5);
    assert_eq!(status(&reg, "/root/a"), Status::Restarting);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// 6. Restart policies.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn restart_policies() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .child(worker("t_normal", &log).restart(Restart::Transient))
            .child(worker("t_fail", &log).restart(Restart::Transient))
            .child(worker("tmp", &log).restart(Restart::Temporary))
            .child(worker("perm", &log))
            .child(worker("t_kill", &log).restart(Restart::Transient)),
        reg.clone(),
    )
    .await
    .unwrap();

    // transient, normal exit: Stopped, not restarted.
    send(&reg, "/root/t_normal", WMsg::StopNormal);
    // transient, failure: restarted.
    let t_fail0 = id(&reg, "/root/t_fail");
    send(&reg, "/root/t_fail", WMsg::Fail);
    // temporary, failure: Stopped, never restarted.
    send(&reg, "/root/tmp", WMsg::Fail);
    // permanent, killed: abnormal, restarted.
    let perm0 = id(&reg, "/root/perm");
    reg.slot("/root/perm").unwrap().cell().unwrap().kill();
    // transient, killed: abnormal too.
    let t_kill0 = id(&reg, "/root/t_kill");
    reg.slot("/root/t_kill").unwrap().cell().unwrap().kill();
    settle().await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert_eq!(status(&reg, "/root/t_normal"), Status::Stopped);
    assert_eq!(id(&reg, "/root/t_normal"), None);
    assert_eq!(restarts(&reg, "/root/t_normal"), 0);
    assert_eq!(count(&log, "stop:t_normal"), 1);
    assert_eq!(count(&log, "start:t_normal"), 1);

    assert_eq!(status(&reg, "/root/t_fail"), Status::Running);
    assert_ne!(id(&reg, "/root/t_fail"), t_fail0);
    assert_eq!(restarts(&reg, "/root/t_fail"), 1);

    assert_eq!(status(&reg, "/root/tmp"), Status::Stopped);
    assert_eq!(id(&reg, "/root/tmp"), None);
    assert_eq!(restarts(&reg, "/root/tmp"), 0);
    assert_eq!(count(&log, "start:tmp"), 1);
    assert_eq!(info(&reg, "/root/tmp").last_error.as_deref(), Some("injected failure"));

    assert_eq!(status(&reg, "/root/perm"), Status::Running);
    assert_ne!(id(&reg, "/root/perm"), perm0);
    assert_eq!(restarts(&reg, "/root/perm"), 1);
    assert_eq!(info(&reg, "/root/perm").last_error.as_deref(), Some("killed"));
    assert_eq!(count(&log, "stop:perm"), 0, "a kill skips post_stop");

    assert_eq!(status(&reg, "/root/t_kill"), Status::Running);
    assert_ne!(id(&reg, "/root/t_kill"), t_kill0);
    assert_eq!(restarts(&reg, "/root/t_kill"), 1);

    // A permanent child that stops normally is restarted too.
    send(&reg, "/root/perm", WMsg::StopNormal);
    settle().await;
    assert_eq!(status(&reg, "/root/perm"), Status::Running);
    assert_eq!(restarts(&reg, "/root/perm"), 2);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// 7. Startup failures.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn start_failures_are_retried_like_crashes() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(spec("root").child(worker_failing("a", &log, 2)), reg.clone()).await.unwrap();
    settle().await;
    assert_eq!(entries(&log), s(&["startfail:a", "startfail:a", "start:a"]));
    assert_eq!(status(&reg, "/root/a"), Status::Running);
    assert_eq!(restarts(&reg, "/root/a"), 2);
    assert_eq!(ping(&reg, "/root/a").await, id(&reg, "/root/a").unwrap());
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn a_child_that_never_starts_escalates() {
    let log = new_log();
    let reg = Registry::new();
    let mut root = Supervisor::start_root(
        spec("root").intensity(1, Duration::from_secs(10)).child(ChildSpec::supervisor(
            spec("mid").intensity(2, Duration::from_secs(10)).child(worker_failing("a", &log, u32::MAX)),
        )),
        reg.clone(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), root.exited()).await.expect("the root gives up");
    // Each mid incarnation tries 3 times (the third exceeds 2 restarts); root restarts mid once.
    assert_eq!(count(&log, "startfail:a"), 6);
    assert_eq!(count(&log, "start:a"), 0);
    assert_eq!(status(&reg, "/root"), Status::Failed);
    assert_eq!(status(&reg, "/root/mid"), Status::Failed);
    assert_eq!(status(&reg, "/root/mid/a"), Status::Failed);
}

/// One-for-all: when a child fails to start, the children after it still start in the next round
/// (they used to be left out of it because they had never been started).
#[tokio::test(start_paused = true)]
async fn group_start_failure_still_starts_the_later_children() {
    for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
        let log = new_log();
        let reg = Registry::new();
        let root = Supervisor::start_root(
            spec("root")
                .strategy(strategy)
                .child(worker("a", &log))
                .child(worker_failing("b", &log, 1))
                .child(worker("c", &log)),
            reg.clone(),
        )
        .await
        .unwrap();
        settle().await;
        let expected = match strategy {
            Strategy::OneForAll => s(&["start:a", "startfail:b", "stop:a", "start:a", "start:b", "start:c"]),
            _ => s(&["start:a", "startfail:b", "start:b", "start:c"]),
        };
        assert_eq!(entries(&log), expected, "{strategy:?}");
        for p in ["/root/a", "/root/b", "/root/c"] {
            assert_eq!(status(&reg, p), Status::Running, "{strategy:?} {p}");
        }
        assert!(root.shutdown(Duration::from_secs(5)).await);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Ordered shutdown.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn shutdown_stops_in_reverse_start_order() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .child(worker("a", &log))
            .child(ChildSpec::supervisor(spec("mid").child(worker("x", &log)).child(worker("y", &log))))
            .child(worker("b", &log)),
        reg.clone(),
    )
    .await
    .unwrap();
    assert_eq!(entries(&log), s(&["start:a", "start:x", "start:y", "start:b"]));
    assert!(root.shutdown(Duration::from_secs(5)).await);
    assert_eq!(entries_since(&log, 4), s(&["stop:b", "stop:y", "stop:x", "stop:a"]));
    for i in reg.snapshot() {
        assert_eq!(i.status, Status::Stopped, "{}", i.path);
        assert_eq!(i.actor_id, None, "{}", i.path);
    }
}

#[tokio::test(start_paused = true)]
async fn a_child_that_ignores_stop_is_killed_after_its_shutdown_time() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root").child(worker("a", &log)).child(worker("slow", &log).shutdown(Duration::from_secs(1))),
        reg.clone(),
    )
    .await
    .unwrap();
    let slow = reg.actor_ref::<WMsg>("/root/slow").unwrap();
    let busy = tokio::spawn(async move { slow.call(|r| WMsg::Sleep(Duration::from_secs(600), r), None).await });
    settle().await;

    let t0 = tokio::time::Instant::now();
    assert!(root.shutdown(Duration::from_secs(10)).await);
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(2), "took {took:?}");
    // slow was killed (no post_stop), then a stopped normally.
    assert_eq!(entries_since(&log, 2), s(&["stop:a"]));
    assert!(matches!(busy.await.unwrap(), Ok(ractor::rpc::CallResult::SenderError)));
    assert_eq!(status(&reg, "/root/slow"), Status::Stopped);
    assert_eq!(status(&reg, "/root/a"), Status::Stopped);
    assert_eq!(status(&reg, "/root"), Status::Stopped);
}

/// The root's grace runs out before a slow child's own shutdown time: the tree is killed, the call
/// reports false, and no slot keeps claiming a running actor.
#[tokio::test(start_paused = true)]
async fn shutdown_past_the_root_grace_kills_the_tree() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root").child(ChildSpec::supervisor(
            spec("mid").child(worker("a", &log)).child(worker("slow", &log).shutdown(Duration::from_secs(60))),
        )),
        reg.clone(),
    )
    .await
    .unwrap();
    let a = reg.slot("/root/mid/a").unwrap().cell().unwrap();
    let slow = reg.actor_ref::<WMsg>("/root/mid/slow").unwrap();
    let busy = tokio::spawn(async move { slow.call(|r| WMsg::Sleep(Duration::from_secs(600), r), None).await });
    settle().await;

    let t0 = tokio::time::Instant::now();
    assert!(!root.shutdown(Duration::from_secs(1)).await);
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert!(matches!(busy.await.unwrap(), Ok(ractor::rpc::CallResult::SenderError)));
    settle().await;
    assert_eq!(a.get_status(), ActorStatus::Stopped);
    for i in reg.snapshot() {
        assert_eq!(i.status, Status::Stopped, "{}", i.path);
        assert_eq!(i.actor_id, None, "{}", i.path);
    }
    assert_eq!(count(&log, "stop:slow"), 0);
}

/// A nested supervisor that is killed cannot stop its children in order; ractor kills them with it.
/// Their slots must not keep claiming a running actor.
#[tokio::test(start_paused = true)]
async fn descendants_of_a_killed_supervisor_are_not_left_running() {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(
        spec("root")
            .backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(1), jitter: 0.0 })
            .child(ChildSpec::supervisor(spec("mid").child(worker("x", &log))))
            .child(ChildSpec::supervisor(spec("tmp").child(worker("z", &log))).restart(Restart::Temporary)),
        reg.clone(),
    )
    .await
    .unwrap();
    let x0 = reg.slot("/root/mid/x").unwrap().cell().unwrap();
    reg.slot("/root/mid").unwrap().cell().unwrap().kill();
    reg.slot("/root/tmp").unwrap().cell().unwrap().kill();
    settle().await;
    assert_eq!(x0.get_status(), ActorStatus::Stopped);
    assert_eq!(status(&reg, "/root/mid"), Status::Restarting);
    assert_eq!(status(&reg, "/root/mid/x"), Status::Restarting);
    assert_eq!(id(&reg, "/root/mid/x"), None);
    assert_eq!(status(&reg, "/root/tmp"), Status::Stopped);
    assert_eq!(status(&reg, "/root/tmp/z"), Status::Stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(status(&reg, "/root/mid/x"), Status::Running);
    assert_ne!(id(&reg, "/root/mid/x"), Some(x0.get_id()));
    assert_eq!(status(&reg, "/root/tmp/z"), Status::Stopped);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// 11. Property: random crash schedules never leave a permanent child stopped under a running
// supervisor.
// ---------------------------------------------------------------------------------------------

/// Targets of the random schedule (every actor below the root).
const TARGETS: &[&str] = &[
    "/root/s1",
    "/root/s1/p1",
    "/root/s1/t1",
    "/root/s1/p2",
    "/root/s2",
    "/root/s2/p3",
    "/root/s2/tmp",
    "/root/s2/p4",
    "/root/s3",
    "/root/s3/p5",
    "/root/s3/t2",
    "/root/w",
];

#[derive(Clone, Debug)]
enum Op {
    /// Crash target `.0`: 0 = handler error, 1 = kill, 2 = normal stop.
    Crash(usize, u8),
    /// Let time pass.
    Advance(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        3 => (0..TARGETS.len(), 0..3u8).prop_map(|(t, k)| Op::Crash(t, k)),
        2 => (0..300u64).prop_map(Op::Advance),
    ]
}

fn property_tree(log: &Log) -> SupervisorSpec {
    let backoff = Backoff { initial: ms(10), max: ms(80), jitter: 0.0 };
    let nested = |name: &str, strategy: Strategy| {
        spec(name).strategy(strategy).backoff(backoff).intensity(3, Duration::from_secs(1))
    };
    spec("root")
        .backoff(backoff)
        .intensity(1_000_000, Duration::from_secs(1))
        .child(ChildSpec::supervisor(
            nested("s1", Strategy::OneForAll)
                .child(worker("p1", log))
                .child(worker("t1", log).restart(Restart::Transient))
                .child(worker("p2", log)),
        ))
        .child(ChildSpec::supervisor(
            nested("s2", Strategy::RestForOne)
                .child(worker("p3", log))
                .child(worker("tmp", log).restart(Restart::Temporary))
                .child(worker("p4", log)),
        ))
        .child(ChildSpec::supervisor(
            nested("s3", Strategy::OneForOne)
                .child(worker("p5", log))
                .child(worker("t2", log).restart(Restart::Transient)),
        ))
        .child(worker("w", log))
}

async fn run_schedule(ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let log = new_log();
    let reg = Registry::new();
    let root = Supervisor::start_root(property_tree(&log), reg.clone()).await.unwrap();
    for op in ops {
        match op {
            Op::Crash(t, kind) => {
                let path = TARGETS[t];
                let Some(cell) = reg.slot(path).unwrap().cell() else { continue };
                let is_supervisor = info(&reg, path).supervisor;
                match (kind, is_supervisor) {
                    (0, false) => {
                        let _ = cell.send_message(WMsg::Fail);
                    }
                    (2, false) => {
                        let _ = cell.send_message(WMsg::StopNormal);
                    }
                    (2, true) => cell.stop(None),
                    _ => cell.kill(),
                }
                settle().await;
            }
            Op::Advance(t) => tokio::time::sleep(ms(t)).await,
        }
    }
    // Enough time for every backoff and intensity window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;

    prop_assert_eq!(status(&reg, "/root"), Status::Running);
    let snapshot = reg.snapshot();
    for i in &snapshot {
        let Some(parent) = &i.parent else { continue };
        let parent_status = snapshot.iter().find(|p| &p.path == parent).map(|p| p.status);
        if parent_status != Some(Status::Running) {
            continue;
        }
        match i.restart {
            Restart::Permanent => prop_assert_eq!(i.status, Status::Running, "{} (permanent)", i.path),
            _ => prop_assert!(matches!(i.status, Status::Running | Status::Stopped), "{}: {:?}", i.path, i.status),
        }
        if i.status == Status::Running {
            let cell = reg.slot(&i.path).unwrap().cell().unwrap();
            prop_assert_eq!(cell.get_status(), ActorStatus::Running, "{} is really running", i.path);
            if !i.supervisor {
                prop_assert_eq!(ping(&reg, &i.path).await, cell.get_id());
            }
        } else {
            prop_assert!(i.actor_id.is_none(), "{} has no actor", i.path);
        }
    }
    prop_assert!(root.shutdown(Duration::from_secs(30)).await);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_crash_schedules_keep_permanent_children_running(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(run_schedule(ops))?;
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_for_exit_is_cancel_safe() {
    let log = new_log();
    let reg = Registry::new();
    let mut root = Supervisor::start_root(spec("root").child(worker("a", &log)), reg.clone()).await.unwrap();
    // As the node does: race `exited()` against a signal; the signal wins and drops the exit future.
    tokio::select! {
        () = root.exited() => panic!("the root did not exit"),
        () = tokio::time::sleep(Duration::from_millis(10)) => {}
    }
    assert!(root.shutdown(Duration::from_secs(5)).await, "shutdown still stops the tree gracefully");
    assert_eq!(status(&reg, "/root/a"), Status::Stopped);
}
