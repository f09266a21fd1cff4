//! Circuit breaker guarding calls to one supervised child.
//!
//! # States
//!
//! * [`BreakerState::Closed`]: calls flow. The breaker trips to `Open` after
//!   [`BreakerConfig::consecutive_failures`] failures in a row, or when, inside the
//!   sliding [`BreakerConfig::window`], at least [`BreakerConfig::min_calls`]
//!   outcomes were seen and the share of failures among them is
//!   ≥ [`BreakerConfig::failure_rate`].
//! * [`BreakerState::Open`]: every caller is refused at once with the remaining
//!   cooldown as `retry_after`.
//! * [`BreakerState::HalfOpen`]: once the cooldown has elapsed, the next caller
//!   becomes the single probe. Other callers are refused with a short
//!   `retry_after` ([`HALF_OPEN_RETRY_AFTER`], capped by the cooldown). A probe
//!   success closes the breaker and resets every counter; a probe failure, or a
//!   crash reported by the supervisor, opens it again with a fresh cooldown. A
//!   probe [`Permit`] dropped without an outcome frees the probe slot, so the
//!   next caller probes instead.
//!
//! Failures are call errors/timeouts reported by callers
//! ([`CircuitBreaker::record_failure`]) and child crashes reported by the
//! supervisor ([`CircuitBreaker::record_crash`]). Outcomes of permits handed
//! out while the breaker was closed but reported after it left `Closed` are
//! stale and ignored (they say nothing about the restarted child).
//!
//! # Cost
//!
//! `try_acquire` followed by `record_success` in the `Closed` state takes no
//! lock: one atomic load to admit, then one load of the state, one load of the
//! current window bucket, one relaxed `fetch_add` into that bucket and one load
//! of the consecutive-failure counter. Every state change, every failure and
//! the first success in each new window bucket go through a `Mutex`, which is
//! never held across an `.await` (there are none here).
//!
//! Time is passed in as a [`tokio::time::Instant`], so tests drive it with a
//! paused clock; internally it becomes nanoseconds since the breaker was built.

use std::fmt;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use self::sync::{AtomicU8, AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering};

// The explicit path keeps this resolvable when `tests/loom_breaker.rs`
// includes this file with `#[path]` (rustfmt follows it even when cfg'd out).
#[cfg(all(test, not(loom)))]
#[path = "breaker/tests.rs"]
mod tests;

/// Synchronisation primitives: std's normally, loom's when this file is
/// compiled into the loom model (`tests/loom_breaker.rs` includes it with
/// `--cfg loom`), so the very same code is model-checked.
mod sync {
    #[cfg(all(loom, test))]
    pub(crate) use loom::sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    };
    #[cfg(not(all(loom, test)))]
    pub(crate) use std::sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    };
}

/// How long callers are told to wait while a half-open probe is in flight
/// (capped by [`BreakerConfig::cooldown`], and at least 1 ms).
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Number of time buckets in the failure-rate window. A power of two, so the
/// ring index is a mask. Fewer under loom to keep the model small.
#[cfg(not(all(loom, test)))]
const BUCKETS: u64 = 16;
#[cfg(all(loom, test))]
const BUCKETS: u64 = 2;

// Internal state encoding. Both half-open states are reported as `HalfOpen`;
// they differ in whether the probe slot is taken, which lets refusals while a
// probe is in flight skip the lock.
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN_BUSY: u8 = 2;
const HALF_OPEN_IDLE: u8 = 3;

/// When a [`CircuitBreaker`] trips and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row. `0` disables this trigger.
    pub consecutive_failures: u32,
    /// Open when failures / outcomes in the window reach this share (`0.5` =
    /// 50 %). Anything not above `0.0` (including NaN) disables this trigger;
    /// values above `1.0` never trip.
    pub failure_rate: f64,
    /// The rate trigger applies only once the window holds at least this many
    /// outcomes (successes + failures).
    pub min_calls: u32,
    /// Length of the sliding window for the rate trigger. It is kept as 16
    /// buckets of `window / 16`, so the effective window is between
    /// `15/16 * window` and `window` long.
    pub window: Duration,
    /// How long the breaker stays open before admitting a probe.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    /// Five failures in a row, or ≥ 50 % failures over at least 20 calls in
    /// 30 s; 5 s cooldown (the same defaults as the node's `[breaker]` config).
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(5),
        }
    }
}

/// Externally visible state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls are admitted.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// One probe call decides whether to close or reopen.
    HalfOpen,
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Hand it back with [`CircuitBreaker::record_success`] or
/// [`CircuitBreaker::record_failure`]. Dropping a probe permit without doing
/// so frees the probe slot (the next caller becomes the probe); dropping a
/// regular permit records nothing.
#[must_use = "report the call's outcome with record_success/record_failure"]
pub struct Permit {
    probe: Option<ProbeToken>,
}

impl Permit {
    const REGULAR: Self = Self { probe: None };

    /// Whether this permit is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("probe", &self.is_probe()).finish()
    }
}

/// The probe slot, held by a probe permit. Releases the slot when dropped
/// unless an outcome was recorded.
struct ProbeToken {
    inner: Arc<Inner>,
    generation: u64,
    armed: bool,
}

impl ProbeToken {
    fn resolve(mut self, success: bool, now_ns: u64) {
        self.armed = false;
        self.inner.resolve_probe(self.generation, success, now_ns);
    }
}

impl Drop for ProbeToken {
    fn drop(&mut self) {
        if self.armed {
            self.inner.release_probe(self.generation);
        }
    }
}

/// A circuit breaker for one supervised child. `Send + Sync`; share it with
/// an `Arc` between the supervisor and callers.
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("consecutive_failures", &self.consecutive_failures())
            .field("config", &self.inner.cfg)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker with the given configuration.
    pub fn new(cfg: BreakerConfig) -> Self {
        let cooldown_ns = duration_ns(cfg.cooldown);
        let probe_retry = HALF_OPEN_RETRY_AFTER.min(cfg.cooldown).max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Inner {
                cfg,
                epoch: Instant::now(),
                cooldown_ns,
                probe_retry,
                rate_enabled: cfg.failure_rate > 0.0,
                state: AtomicU8::new(CLOSED),
                open_until: AtomicU64::new(0),
                consecutive: AtomicU32::new(0),
                window: Window::new(cfg.window),
                slow: Mutex::new(Slow { probe_generation: 0 }),
            }),
        }
    }

    /// The configuration this breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.cfg
    }

    /// Ask to make a call at `now`. `Err(retry_after)` when the breaker is open
    /// (remaining cooldown) or a half-open probe is already in flight.
    ///
    /// # Errors
    /// The `retry_after` duration when the call is refused; it is never zero.
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Duration> {
        self.try_acquire_with(|| now)
    }

    /// [`try_acquire`](Self::try_acquire) that reads the clock only when it needs it (never on the
    /// closed fast path).
    ///
    /// # Errors
    /// The `retry_after` duration when the call is refused; it is never zero.
    #[inline]
    pub fn try_acquire_with(&self, now: impl FnOnce() -> Instant) -> Result<Permit, Duration> {
        let state = self.inner.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Ok(Permit::REGULAR);
        }
        self.acquire_slow(state, self.inner.nanos(now()))
    }

    #[cold]
    fn acquire_slow(&self, observed: u8, now_ns: u64) -> Result<Permit, Duration> {
        let inner = &*self.inner;
        // Lock-free refusals: still cooling down, or the probe slot is taken.
        match observed {
            OPEN => {
                let until = inner.open_until.load(Ordering::Relaxed);
                if now_ns < until {
                    return Err(Duration::from_nanos(until - now_ns));
                }
            }
            HALF_OPEN_BUSY => return Err(inner.probe_retry),
            _ => {}
        }
        let mut slow = inner.lock();
        // All state writes happen under the lock, so this is the truth.
        match inner.state.load(Ordering::Relaxed) {
            CLOSED => Ok(Permit::REGULAR),
            OPEN => {
                let until = inner.open_until.load(Ordering::Relaxed);
                if now_ns < until { Err(Duration::from_nanos(until - now_ns)) } else { Ok(self.admit_probe(&mut slow)) }
            }
            HALF_OPEN_IDLE => Ok(self.admit_probe(&mut slow)),
            _ => Err(inner.probe_retry),
        }
    }

    fn admit_probe(&self, slow: &mut Slow) -> Permit {
        slow.probe_generation = slow.probe_generation.wrapping_add(1);
        self.inner.state.store(HALF_OPEN_BUSY, Ordering::Release);
        Permit {
            probe: Some(ProbeToken { inner: Arc::clone(&self.inner), generation: slow.probe_generation, armed: true }),
        }
    }

    /// The call made under `permit` succeeded. A probe success closes the
    /// breaker.
    ///
    /// A probe permit is always settled on the breaker that issued it.
    #[inline]
    pub fn record_success(&self, permit: Permit, now: Instant) {
        self.record_success_with(permit, || now);
    }

    /// [`record_success`](Self::record_success) that reads the clock only when the rate window or a
    /// probe needs it.
    #[inline]
    pub fn record_success_with(&self, permit: Permit, now: impl FnOnce() -> Instant) {
        match permit.probe {
            None => self.inner.on_success(|| self.inner.nanos(now())),
            Some(token) => {
                let now_ns = token.inner.nanos(now());
                token.resolve(true, now_ns);
            }
        }
    }

    /// The call made under `permit` failed or timed out. A probe failure
    /// reopens the breaker with a fresh cooldown.
    pub fn record_failure(&self, permit: Permit, now: Instant) {
        match permit.probe {
            None => self.inner.on_call_failure(self.inner.nanos(now)),
            Some(token) => {
                let now_ns = token.inner.nanos(now);
                token.resolve(false, now_ns);
            }
        }
    }

    /// The supervisor saw the child fail. Counts as a failure when closed and
    /// reopens a half-open breaker; while open it only bumps
    /// [`consecutive_failures`](Self::consecutive_failures) (the cooldown is not
    /// extended).
    pub fn record_crash(&self, now: Instant) {
        self.inner.on_crash(self.inner.nanos(now));
    }

    /// Current state; one atomic load.
    pub fn state(&self) -> BreakerState {
        match self.inner.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Failures (call failures, probe failures, crashes) since the last
    /// success, close or reset.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.consecutive.load(Ordering::Relaxed)
    }

    /// Force the breaker closed and clear every counter. An outstanding probe
    /// permit becomes a regular one.
    pub fn reset(&self) {
        let inner = &*self.inner;
        let mut slow = inner.lock();
        slow.probe_generation = slow.probe_generation.wrapping_add(1);
        inner.open_until.store(0, Ordering::Relaxed);
        inner.close(&slow);
    }
}

/// Shared state; probe permits keep it alive through their own `Arc`.
struct Inner {
    cfg: BreakerConfig,
    /// Time zero for the nanosecond clock; earlier instants count as zero.
    epoch: Instant,
    cooldown_ns: u64,
    probe_retry: Duration,
    rate_enabled: bool,
    /// One of `CLOSED`, `OPEN`, `HALF_OPEN_BUSY`, `HALF_OPEN_IDLE`. Written
    /// only under `slow`; read lock-free.
    state: AtomicU8,
    /// End of the cooldown, in ns since `epoch`. Written only under `slow`,
    /// before `state` is set to `OPEN` (release), so a reader that sees `OPEN`
    /// (acquire) sees this deadline or a later one.
    open_until: AtomicU64,
    /// Reset to 0 lock-free by successes (only if non-zero); incremented under
    /// `slow`. A failure and a success racing may land in either order, which
    /// is inherent to concurrent calls.
    consecutive: AtomicU32,
    window: Window,
    slow: Mutex<Slow>,
}

/// Data guarded by the slow-path lock. Holding `&Slow`/`&mut Slow` is also
/// the proof, for helpers, that the lock is held.
struct Slow {
    /// Bumped on every probe admission and on reset; a probe's outcome counts
    /// only if its generation is still the current one.
    probe_generation: u64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Slow> {
        // Nothing under this lock can leave `Slow` inconsistent, so a poisoned
        // lock is still usable.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        duration_ns(now.saturating_duration_since(self.epoch))
    }

    /// Success of a regular permit. `now_ns` is only evaluated when the rate
    /// window needs it.
    #[inline]
    fn on_success(&self, now_ns: impl FnOnce() -> u64) {
        // Successes reported after the breaker left `Closed` are stale.
        if self.state.load(Ordering::Relaxed) != CLOSED {
            return;
        }
        if self.rate_enabled {
            let now_ns = now_ns();
            if !self.window.add_success_fast(now_ns) {
                self.add_success_slow(now_ns);
            }
        }
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    #[cold]
    fn add_success_slow(&self, now_ns: u64) {
        let slow = self.lock();
        if let Some(bucket) = self.window.bucket_at(now_ns, &slow) {
            bucket.successes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_call_failure(&self, now_ns: u64) {
        let slow = self.lock();
        // A failure of a call admitted before the breaker opened is stale.
        if self.state.load(Ordering::Relaxed) == CLOSED {
            self.failure_while_closed(now_ns, &slow);
        }
    }

    fn on_crash(&self, now_ns: u64) {
        let slow = self.lock();
        match self.state.load(Ordering::Relaxed) {
            CLOSED => self.failure_while_closed(now_ns, &slow),
            OPEN => {
                self.bump_consecutive(&slow);
            }
            _ => {
                self.bump_consecutive(&slow);
                self.trip(now_ns, &slow);
            }
        }
    }

    fn resolve_probe(&self, generation: u64, success: bool, now_ns: u64) {
        let slow = self.lock();
        let live = slow.probe_generation == generation && self.state.load(Ordering::Relaxed) == HALF_OPEN_BUSY;
        if live {
            if success {
                self.close(&slow);
            } else {
                self.bump_consecutive(&slow);
                self.trip(now_ns, &slow);
            }
            return;
        }
        // A superseded probe (crash reopened the breaker, or reset) reports
        // like any regular permit.
        drop(slow);
        if success {
            self.on_success(|| now_ns);
        } else {
            self.on_call_failure(now_ns);
        }
    }

    fn release_probe(&self, generation: u64) {
        let slow = self.lock();
        if slow.probe_generation == generation && self.state.load(Ordering::Relaxed) == HALF_OPEN_BUSY {
            self.state.store(HALF_OPEN_IDLE, Ordering::Release);
        }
    }

    fn bump_consecutive(&self, _locked: &Slow) -> u32 {
        let n = self.consecutive.load(Ordering::Relaxed).saturating_add(1);
        self.consecutive.store(n, Ordering::Relaxed);
        n
    }

    fn failure_while_closed(&self, now_ns: u64, slow: &Slow) {
        let n = self.bump_consecutive(slow);
        let k = self.cfg.consecutive_failures;
        let mut trip = k > 0 && n >= k;
        if self.rate_enabled {
            if let Some(bucket) = self.window.bucket_at(now_ns, slow) {
                bucket.failures.fetch_add(1, Ordering::Relaxed);
            }
            if !trip {
                let (successes, failures) = self.window.totals(slow);
                let total = successes.saturating_add(failures);
                // u64 -> f64 is exact below 2^53 outcomes per window.
                let rate = failures as f64 / total as f64;
                trip = total >= u64::from(self.cfg.min_calls.max(1)) && rate >= self.cfg.failure_rate;
            }
        }
        if trip {
            self.trip(now_ns, slow);
        }
    }

    fn trip(&self, now_ns: u64, _locked: &Slow) {
        self.open_until.store(now_ns.saturating_add(self.cooldown_ns), Ordering::Relaxed);
        self.state.store(OPEN, Ordering::Release);
    }

    fn close(&self, locked: &Slow) {
        self.consecutive.store(0, Ordering::Relaxed);
        if self.rate_enabled {
            self.window.clear(locked);
        }
        self.state.store(CLOSED, Ordering::Release);
    }
}

/// Sliding failure-rate window: a ring of `BUCKETS` time buckets, each
/// `window / BUCKETS` wide, holding success and failure counters.
///
/// `current` is the index (ns / width) of the newest bucket in use. A success
/// whose time falls inside that bucket is one relaxed `fetch_add` on it (the
/// bounds check is a multiply, no division). The first outcome of a newer
/// bucket takes the lock, zeroes the ring slot, stamps it with its index and
/// publishes `current` (release); an outcome from an older bucket still inside
/// the window goes to its slot under the lock, one from outside is dropped.
/// The rate is computed under the lock by summing the slots whose stamp lies
/// within `BUCKETS` of `current`, so buckets that were skipped (idle periods)
/// or that aged out never count.
///
/// Races only misfile a success: a thread that read `current` just before the
/// slot was recycled can add to the new bucket, which is at most one success
/// per racing thread per bucket turnover. That is acceptable for a
/// statistical trigger, and it keeps the hot path lock-free.
struct Window {
    width_ns: u64,
    current: AtomicU64,
    buckets: [Bucket; BUCKETS as usize],
}

struct Bucket {
    /// Bucket index this slot currently holds (slots start at 0 with zero
    /// counts, which is harmless).
    index: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
}

impl Window {
    fn new(window: Duration) -> Self {
        Self {
            width_ns: (duration_ns(window) / BUCKETS).max(1),
            current: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| Bucket {
                index: AtomicU64::new(0),
                successes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    fn slot(&self, index: u64) -> &Bucket {
        // `BUCKETS` is a power of two and the array has `BUCKETS` entries, so
        // the masked index is always in range.
        let masked = usize::try_from(index & (BUCKETS - 1)).unwrap_or(0);
        &self.buckets[masked]
    }

    /// Count a success if `now_ns` falls in the current bucket; `false` means
    /// the caller must take the slow path.
    #[inline]
    fn add_success_fast(&self, now_ns: u64) -> bool {
        let current = self.current.load(Ordering::Acquire);
        let start = current.saturating_mul(self.width_ns);
        if now_ns >= start && now_ns - start < self.width_ns {
            self.slot(current).successes.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The bucket for `now_ns`, recycling its slot if it is newer than
    /// `current`; `None` if it has already left the window.
    fn bucket_at(&self, now_ns: u64, _locked: &Slow) -> Option<&Bucket> {
        let index = now_ns / self.width_ns;
        let current = self.current.load(Ordering::Relaxed);
        let bucket = self.slot(index);
        if index > current {
            bucket.successes.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
            bucket.index.store(index, Ordering::Relaxed);
            self.current.store(index, Ordering::Release);
            Some(bucket)
        } else if current - index < BUCKETS && bucket.index.load(Ordering::Relaxed) == index {
            Some(bucket)
        } else {
            None
        }
    }

    /// (successes, failures) over the buckets still inside the window.
    fn totals(&self, _locked: &Slow) -> (u64, u64) {
        let current = self.current.load(Ordering::Relaxed);
        let mut successes = 0u64;
        let mut failures = 0u64;
        for bucket in &self.buckets {
            let index = bucket.index.load(Ordering::Relaxed);
            if index <= current && current - index < BUCKETS {
                successes = successes.saturating_add(bucket.successes.load(Ordering::Relaxed));
                failures = failures.saturating_add(bucket.failures.load(Ordering::Relaxed));
            }
        }
        (successes, failures)
    }

    fn clear(&self, _locked: &Slow) {
        for bucket in &self.buckets {
            bucket.successes.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
