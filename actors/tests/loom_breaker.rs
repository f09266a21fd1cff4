//! Loom model of the circuit breaker around its half-open transition.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom_breaker`
//! from `actors/loom/`, a small harness crate that builds this file without
//! troupe-actors' other dependencies (some, like ractor_cluster, do not compile
//! under `--cfg loom`, which compiles `tokio::net` out). LOOM_MAX_PREEMPTIONS
//! raises the default preemption bound of 3.
//!
//! `loom` is a dev-dependency, which the library itself cannot see, so the
//! model compiles `src/breaker.rs` into this test crate. There `cfg(test)` and
//! `cfg(loom)` both hold, and the file's `sync` shim switches to loom's atomics
//! and mutex: the code checked here is the shipped code.
#![cfg(loom)]

#[allow(dead_code, reason = "the model drives only part of the breaker API")]
#[path = "../src/breaker.rs"]
mod breaker;

use std::sync::Arc;
use std::time::Duration;

use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
use loom::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

const COOLDOWN: Duration = Duration::from_secs(1);

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // LOOM_MAX_PREEMPTIONS overrides this bound.
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn valid(state: BreakerState) -> bool {
    matches!(state, BreakerState::Closed | BreakerState::Open | BreakerState::HalfOpen)
}

/// A breaker that has just tripped, and the instant its cooldown ends.
fn tripped(cfg: BreakerConfig) -> (Arc<CircuitBreaker>, Instant) {
    let b = CircuitBreaker::new(cfg);
    let t0 = Instant::now();
    for _ in 0..cfg.consecutive_failures {
        if let Ok(p) = b.try_acquire(t0) {
            b.record_failure(p, t0);
        }
    }
    assert_eq!(b.state(), BreakerState::Open);
    (Arc::new(b), t0 + COOLDOWN)
}

fn cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 2,
        failure_rate: 0.0,
        min_calls: 0,
        window: Duration::from_secs(1),
        cooldown: COOLDOWN,
    }
}

/// Tracks probes in flight; panics if a second one is admitted.
#[derive(Clone)]
struct ProbeGauge(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl ProbeGauge {
    fn new() -> Self {
        Self(Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)))
    }

    fn admitted(&self, p: &Permit) {
        if p.is_probe() {
            let before = self.0.fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "two half-open probes in flight");
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn finished(&self, was_probe: bool) {
        if was_probe {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn total(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
}

/// Outcome a thread reports for the permit it got.
#[derive(Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Drop,
}

fn call(b: &CircuitBreaker, gauge: &ProbeGauge, now: Instant, outcome: Outcome) {
    let Ok(p) = b.try_acquire(now) else {
        assert!(valid(b.state()));
        return;
    };
    gauge.admitted(&p);
    let probe = p.is_probe();
    match outcome {
        // Count the probe as finished only after its outcome is recorded:
        // until then no other probe may be admitted.
        Outcome::Success => {
            b.record_success(p, now);
            gauge.finished(probe);
        }
        Outcome::Failure => {
            b.record_failure(p, now);
            gauge.finished(probe);
        }
        // A dropped probe frees its slot during `drop`, so it stops counting
        // just before.
        Outcome::Drop => {
            gauge.finished(probe);
            drop(p);
        }
    }
    assert!(valid(b.state()));
}

fn race(outcomes: [Outcome; 3], threads: usize) {
    model(move || {
        let (b, now) = tripped(cfg());
        let gauge = ProbeGauge::new();
        let handles: Vec<_> = outcomes
            .iter()
            .take(threads)
            .map(|&outcome| {
                let b = Arc::clone(&b);
                let gauge = gauge.clone();
                loom::thread::spawn(move || call(&b, &gauge, now, outcome))
            })
            .collect();
        for h in handles {
            if h.join().is_err() {
                panic!("model thread panicked");
            }
        }
        // The first caller after the cooldown always gets the probe.
        assert!(gauge.total() >= 1);
        let state = b.state();
        assert!(valid(state));
        if !outcomes[..threads].iter().any(|o| matches!(o, Outcome::Drop)) {
            // Without drops exactly one probe decides the outcome.
            assert_eq!(gauge.total(), 1);
            assert_ne!(state, BreakerState::HalfOpen);
        }
    });
}

#[test]
fn three_callers_race_for_the_probe() {
    race([Outcome::Success, Outcome::Failure, Outcome::Success], 3);
}

#[test]
fn dropped_probe_hands_over_the_slot() {
    race([Outcome::Drop, Outcome::Success, Outcome::Failure], 3);
}

#[test]
fn two_droppers() {
    race([Outcome::Drop, Outcome::Drop, Outcome::Success], 3);
}

#[test]
fn crash_races_probe() {
    model(|| {
        let (b, now) = tripped(cfg());
        let gauge = ProbeGauge::new();
        let prober = {
            let b = Arc::clone(&b);
            let gauge = gauge.clone();
            loom::thread::spawn(move || call(&b, &gauge, now, Outcome::Success))
        };
        let supervisor = {
            let b = Arc::clone(&b);
            loom::thread::spawn(move || {
                b.record_crash(now);
                assert!(valid(b.state()));
            })
        };
        call(&b, &gauge, now, Outcome::Drop);
        for h in [prober, supervisor] {
            if h.join().is_err() {
                panic!("model thread panicked");
            }
        }
        let state = b.state();
        assert!(valid(state));
        // The crash either reopened the breaker, or hit it closed (after the
        // probe succeeded) and counted once; or hit it open (before any probe)
        // and a probe later closed it.
        match state {
            BreakerState::Open => {}
            BreakerState::Closed => assert!(b.consecutive_failures() <= 1),
            // Only if the last event was the main thread dropping its probe.
            BreakerState::HalfOpen => {}
        }
    });
}

#[test]
fn closed_fast_path_races_trip() {
    // Rate window and consecutive counter touched from two threads while the
    // breaker trips: no panic, consistent state.
    model(|| {
        let b = Arc::new(CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 2,
            failure_rate: 0.5,
            min_calls: 2,
            window: Duration::from_secs(1),
            cooldown: COOLDOWN,
        }));
        let t0 = Instant::now();
        let gauge = ProbeGauge::new();
        let other = {
            let b = Arc::clone(&b);
            let gauge = gauge.clone();
            loom::thread::spawn(move || {
                call(&b, &gauge, t0, Outcome::Success);
                // Next window bucket: takes the slow path.
                call(&b, &gauge, t0 + Duration::from_millis(600), Outcome::Success);
            })
        };
        call(&b, &gauge, t0, Outcome::Failure);
        call(&b, &gauge, t0 + Duration::from_millis(600), Outcome::Failure);
        if other.join().is_err() {
            panic!("model thread panicked");
        }
        assert_eq!(gauge.total(), 0);
        // Two failures against at most two successes: 50 % over >= 2 calls,
        // or two in a row. Either way it opened.
        assert_eq!(b.state(), BreakerState::Open);
    });
}
