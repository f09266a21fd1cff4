//! PLACEHOLDER (replaced by the real breaker): same API, mutex-based.
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub consecutive_failures: u32,
    /// Failure rate that opens it.
    pub failure_rate: f64,
    /// Minimum outcomes before the rate counts.
    pub min_calls: u32,
    /// Rate window.
    pub window: Duration,
    /// Open time before a probe.
    pub cooldown: Duration,
}

/// Breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls refused.
    Open,
    /// One probe allowed.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    opened_at: Option<Instant>,
    probe_out: bool,
}

/// Circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Permission to call.
#[must_use]
#[derive(Debug)]
pub struct Permit {
    probe: bool,
}

impl Permit {
    /// Whether this is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl CircuitBreaker {
    /// New closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner { state: BreakerState::Closed, consecutive: 0, opened_at: None, probe_out: false }),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// Ask to call.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Duration> {
        let mut g = self.lock();
        match g.state {
            BreakerState::Closed => Ok(Permit { probe: false }),
            BreakerState::Open => {
                let at = g.opened_at.unwrap_or(now);
                let until = at + self.cfg.cooldown;
                if now >= until {
                    g.state = BreakerState::HalfOpen;
                    g.probe_out = true;
                    Ok(Permit { probe: true })
                } else {
                    Err(until - now)
                }
            }
            BreakerState::HalfOpen => {
                if g.probe_out {
                    Err(Duration::from_millis(100))
                } else {
                    g.probe_out = true;
                    Ok(Permit { probe: true })
                }
            }
        }
    }
    /// Success.
    pub fn record_success(&self, permit: Permit, _now: Instant) {
        let mut g = self.lock();
        g.consecutive = 0;
        if permit.probe {
            g.state = BreakerState::Closed;
            g.probe_out = false;
        }
    }
    /// Failure.
    pub fn record_failure(&self, permit: Permit, now: Instant) {
        let mut g = self.lock();
        if permit.probe {
            g.probe_out = false;
        }
        Self::fail(&self.cfg, &mut g, now, permit.probe);
    }
    fn fail(cfg: &BreakerConfig, g: &mut Inner, now: Instant, force: bool) {
        g.consecutive += 1;
        if force || g.state == BreakerState::HalfOpen || g.consecutive >= cfg.consecutive_failures {
            g.state = BreakerState::Open;
            g.opened_at = Some(now);
        }
    }
    /// Crash.
    pub fn record_crash(&self, now: Instant) {
        let mut g = self.lock();
        Self::fail(&self.cfg, &mut g, now, false);
    }
    /// State.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }
    /// Consecutive failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive
    }
    /// Reset.
    pub fn reset(&self) {
        let mut g = self.lock();
        *g = Inner { state: BreakerState::Closed, consecutive: 0, opened_at: None, probe_out: false };
    }
}
