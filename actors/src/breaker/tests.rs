#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, advance};

use super::*;

const COOLDOWN: Duration = Duration::from_secs(10);

fn cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_rate: 0.0,
        min_calls: 0,
        window: Duration::from_secs(10),
        cooldown: COOLDOWN,
    }
}

fn rate_cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 0,
        failure_rate: 0.5,
        min_calls: 10,
        window: Duration::from_secs(10),
        cooldown: COOLDOWN,
    }
}

fn succeed(b: &CircuitBreaker) {
    let p = b.try_acquire(Instant::now()).unwrap();
    b.record_success(p, Instant::now());
}

fn fail(b: &CircuitBreaker) {
    let p = b.try_acquire(Instant::now()).unwrap();
    b.record_failure(p, Instant::now());
}

/// Trip `b` (built with `cfg()`) and wait out the cooldown.
async fn trip_and_cool(b: &CircuitBreaker) {
    for _ in 0..3 {
        fail(b);
    }
    assert_eq!(b.state(), BreakerState::Open);
    advance(COOLDOWN).await;
}

#[test]
fn is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<CircuitBreaker>();
    check::<Permit>();
}

#[tokio::test(start_paused = true)]
async fn opens_after_k_consecutive_failures() {
    let b = CircuitBreaker::new(cfg());
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.consecutive_failures(), 2);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.consecutive_failures(), 3);
    assert!(b.try_acquire(Instant::now()).is_err());
}

#[tokio::test(start_paused = true)]
async fn crashes_count_as_failures() {
    let b = CircuitBreaker::new(cfg());
    b.record_crash(Instant::now());
    fail(&b);
    b.record_crash(Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn success_resets_consecutive_count() {
    let b = CircuitBreaker::new(cfg());
    fail(&b);
    fail(&b);
    succeed(&b);
    assert_eq!(b.consecutive_failures(), 0);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_only_after_min_calls() {
    let b = CircuitBreaker::new(rate_cfg());
    // 100 % failures, but below min_calls.
    for _ in 0..9 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn rate_below_threshold_stays_closed() {
    let b = CircuitBreaker::new(rate_cfg());
    for _ in 0..20 {
        succeed(&b);
        succeed(&b);
        fail(&b);
    }
    // 33 % < 50 %.
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..20 {
        fail(&b);
    }
    // 40 failures / 80 calls.
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_leave_the_window() {
    let b = CircuitBreaker::new(rate_cfg());
    for _ in 0..9 {
        fail(&b);
    }
    // Those nine failures age out of the 10 s window.
    advance(Duration::from_secs(11)).await;
    for _ in 0..9 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_successes_leave_the_window() {
    let b = CircuitBreaker::new(rate_cfg());
    for _ in 0..100 {
        succeed(&b);
    }
    advance(Duration::from_secs(5)).await;
    for _ in 0..10 {
        fail(&b);
    }
    // 10 failures against 100 successes still in the window.
    assert_eq!(b.state(), BreakerState::Closed);
    advance(Duration::from_secs(6)).await;
    // The successes are gone; the failures (5-6 s old) remain.
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn window_spreads_over_buckets() {
    let b = CircuitBreaker::new(rate_cfg());
    // One outcome every 500 ms: 10 successes, then failures, all inside 10 s.
    for i in 0..19 {
        if i < 10 {
            succeed(&b)
        } else {
            fail(&b)
        }
        advance(Duration::from_millis(500)).await;
    }
    // 10 successes, 9 failures in ~9.5 s: 47 %.
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    // All twenty outcomes are still in the window: 10/20 = 50 %.
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_refuses_with_decreasing_retry_after() {
    let b = CircuitBreaker::new(cfg());
    for _ in 0..3 {
        fail(&b);
    }
    let first = b.try_acquire(Instant::now()).unwrap_err();
    assert_eq!(first, COOLDOWN);
    advance(Duration::from_secs(4)).await;
    let second = b.try_acquire(Instant::now()).unwrap_err();
    assert_eq!(second, Duration::from_secs(6));
    advance(Duration::from_millis(5_999)).await;
    let third = b.try_acquire(Instant::now()).unwrap_err();
    assert_eq!(third, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_one_probe() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let refused = b.try_acquire(Instant::now()).unwrap_err();
    assert!(refused > Duration::ZERO && refused <= HALF_OPEN_RETRY_AFTER);
    advance(Duration::from_secs(60)).await;
    assert!(b.try_acquire(Instant::now()).is_err(), "still one probe");
    b.record_success(probe, Instant::now());
}

#[tokio::test(start_paused = true)]
async fn probe_success_closes() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    b.record_success(probe, Instant::now());
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.consecutive_failures(), 0);
    let p = b.try_acquire(Instant::now()).unwrap();
    assert!(!p.is_probe());
    b.record_success(p, Instant::now());
    // Counters were reset: it takes K fresh failures to open again.
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_success_resets_rate_window() {
    let b = CircuitBreaker::new(rate_cfg());
    for _ in 0..10 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
    advance(COOLDOWN).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    b.record_success(probe, Instant::now());
    assert_eq!(b.state(), BreakerState::Closed);
    // The ten old failures are forgotten even though they are < 10 s old.
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_with_fresh_cooldown() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    advance(Duration::from_secs(2)).await;
    b.record_failure(probe, Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err(), COOLDOWN);
    advance(COOLDOWN).await;
    assert!(b.try_acquire(Instant::now()).unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn crash_while_half_open_reopens() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    b.record_crash(Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err(), COOLDOWN);
    // The superseded probe's success must not close the breaker.
    b.record_success(probe, Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn crash_while_half_open_idle_reopens() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    drop(b.try_acquire(Instant::now()).unwrap());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.record_crash(Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn crash_while_open_does_not_extend_cooldown() {
    let b = CircuitBreaker::new(cfg());
    for _ in 0..3 {
        fail(&b);
    }
    advance(Duration::from_secs(5)).await;
    b.record_crash(Instant::now());
    assert_eq!(b.consecutive_failures(), 4);
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_permit_does_not_wedge() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    assert!(probe.is_probe());
    drop(probe);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let next = b.try_acquire(Instant::now()).unwrap();
    assert!(next.is_probe(), "the slot was released");
    assert!(b.try_acquire(Instant::now()).is_err());
    b.record_success(next, Instant::now());
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn stale_call_outcomes_are_ignored() {
    let b = CircuitBreaker::new(cfg());
    let late_ok = b.try_acquire(Instant::now()).unwrap();
    let late_err = b.try_acquire(Instant::now()).unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    b.record_success(late_ok, Instant::now());
    b.record_failure(late_err, Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.consecutive_failures(), 3);
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err(), COOLDOWN);
}

#[tokio::test(start_paused = true)]
async fn reset_closes_and_invalidates_probe() {
    let b = CircuitBreaker::new(cfg());
    trip_and_cool(&b).await;
    let probe = b.try_acquire(Instant::now()).unwrap();
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.consecutive_failures(), 0);
    // The old probe now reports like a regular permit.
    b.record_failure(probe, Instant::now());
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.consecutive_failures(), 1);
}

#[tokio::test(start_paused = true)]
async fn zero_cooldown_probes_immediately() {
    let b = CircuitBreaker::new(BreakerConfig { cooldown: Duration::ZERO, ..cfg() });
    for _ in 0..3 {
        fail(&b);
    }
    let probe = b.try_acquire(Instant::now()).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.try_acquire(Instant::now()).unwrap_err(), Duration::from_millis(1));
    b.record_success(probe, Instant::now());
}

#[test]
fn threads_hammering_admit_one_probe_at_a_time() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    let b = Arc::new(CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 2,
        failure_rate: 0.5,
        min_calls: 5,
        window: Duration::from_millis(1),
        cooldown: Duration::ZERO,
    }));
    // No crashes here: a crash supersedes the probe in flight, and with a zero
    // cooldown the next caller then legitimately probes at once.
    let probes = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let b = Arc::clone(&b);
            let probes = Arc::clone(&probes);
            s.spawn(move || {
                for i in 0..20_000u64 {
                    let now = t0 + Duration::from_micros(i);
                    let Ok(p) = b.try_acquire(now) else { continue };
                    let probe = p.is_probe();
                    if probe {
                        assert_eq!(probes.fetch_add(1, SeqCst), 0, "two probes in flight");
                    }
                    // A probe stops counting just before its outcome is
                    // recorded: until then no other probe may be admitted.
                    // (Counting until after the record would race with a new
                    // probe legitimately admitted right after it.)
                    if probe {
                        probes.fetch_sub(1, SeqCst);
                    }
                    match (i + t) % 5 {
                        0 | 1 => b.record_failure(p, now),
                        2 => drop(p),
                        _ => b.record_success(p, now),
                    }
                }
            });
        }
    });
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Acquire,
    Succeed(usize),
    Fail(usize),
    Drop(usize),
    Crash,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..3_000).prop_map(Op::Advance),
        4 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Succeed),
        3 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => Just(Op::Crash),
        1 => Just(Op::Reset),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (0u32..5, prop_oneof![Just(0.0), Just(0.5), Just(1.0), 0.0f64..1.5], 0u32..6, 0u64..5_000, 0u64..4_000).prop_map(
        |(k, rate, min_calls, window, cooldown)| BreakerConfig {
            consecutive_failures: k,
            failure_rate: rate,
            min_calls,
            window: Duration::from_millis(window),
            cooldown: Duration::from_millis(cooldown),
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_invariants(cfg in config(), ops in prop::collection::vec(op(), 0..200)) {
        let b = CircuitBreaker::new(cfg);
        let mut now = Instant::now();
        // Held permits, with whether each is the live probe.
        let mut held: Vec<(Permit, bool)> = Vec::new();
        for op in ops {
            match op {
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Acquire => match b.try_acquire(now) {
                    Ok(p) => {
                        let probe = p.is_probe();
                        if probe {
                            prop_assert!(
                                !held.iter().any(|(_, live)| *live),
                                "second concurrent probe admitted"
                            );
                        }
                        held.push((p, probe));
                    }
                    Err(retry) => {
                        prop_assert!(!retry.is_zero());
                        prop_assert!(retry <= cfg.cooldown.max(Duration::from_millis(1)));
                        prop_assert_ne!(b.state(), BreakerState::Closed);
                    }
                },
                Op::Succeed(i) if !held.is_empty() => {
                    let (p, live) = held.swap_remove(i % held.len());
                    b.record_success(p, now);
                    if live {
                        prop_assert_eq!(b.state(), BreakerState::Closed);
                        prop_assert_eq!(b.consecutive_failures(), 0);
                    }
                }
                Op::Fail(i) if !held.is_empty() => {
                    let (p, live) = held.swap_remove(i % held.len());
                    b.record_failure(p, now);
                    if live {
                        prop_assert_eq!(b.state(), BreakerState::Open);
                    }
                }
                Op::Drop(i) if !held.is_empty() => {
                    let (p, live) = held.swap_remove(i % held.len());
                    drop(p);
                    if live {
                        prop_assert_eq!(b.state(), BreakerState::HalfOpen);
                        let next = b.try_acquire(now);
                        prop_assert!(next.as_ref().is_ok_and(Permit::is_probe));
                        if let Ok(p) = next {
                            held.push((p, true));
                        }
                    }
                }
                Op::Crash => {
                    let before = b.state();
                    b.record_crash(now);
                    if before == BreakerState::HalfOpen {
                        prop_assert_eq!(b.state(), BreakerState::Open);
                    }
                }
                Op::Reset => {
                    b.reset();
                    prop_assert_eq!(b.state(), BreakerState::Closed);
                }
                Op::Succeed(_) | Op::Fail(_) | Op::Drop(_) => {}
            }
            // A probe is live only while the breaker stays half-open.
            if b.state() != BreakerState::HalfOpen {
                for (_, live) in &mut held {
                    *live = false;
                }
            }
        }
    }
}
