//! The drainer task (reads the outbox in pages, dispatches to per-subscriber workers, acknowledges
//! finished entries) and the worker tasks (call one subscriber's handler, retry with backoff,
//! dead-letter after the last attempt).

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{BusEvent, DeliveryOrder, Handler, HandlerError, Inner, Subscriber, dead};

/// Idle polls between full rescans of the outbox from its oldest entry.
const IDLE_RESCAN: u64 = 50;

/// An entry read from the outbox and not yet acknowledged.
struct Held {
    /// Matching subscribers that have not finished with it (succeeded or dead-lettered).
    remaining: usize,
    /// When this drainer read it (for the oldest-age gauge).
    seen: Instant,
}

/// The drainer: runs until aborted. Returns (a reason) only if a worker task ended, which means a bug.
pub(super) async fn run(inner: Arc<Inner>, subscribers: Vec<Arc<Subscriber>>) -> String {
    let config = &inner.config;
    let depth = metrics::gauge!("troupe_bus_outbox_depth");
    let oldest = metrics::gauge!("troupe_bus_oldest_age_seconds");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
    // Dropping the set (the drainer is aborted) aborts every worker with it.
    let mut workers = JoinSet::new();
    let mut queues = Vec::with_capacity(subscribers.len());
    for sub in &subscribers {
        // Unbounded, but every queued event is held in `held`, which the window bounds.
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker { inner: Arc::clone(&inner), sub: Arc::clone(sub), rx, done: done_tx.clone() };
        workers.spawn(worker.run());
        queues.push(tx);
    }

    let mut held: BTreeMap<u64, Held> = BTreeMap::new();
    let mut finished: Vec<u64> = Vec::new();
    // Greatest id read; entries become visible in id order (both backends assign ids at commit under
    // one writer or lock), so the next page starts after it.
    let mut read_pos: Option<u64> = None;
    let mut timer_wake = false;
    let mut idle_polls: u64 = 0;
    loop {
        if let Some(exit) = workers.try_join_next() {
            return format!("bus worker ended unexpectedly: {exit:?}");
        }
        while let Ok(id) = done_rx.try_recv() {
            finish(&mut held, &mut finished, id);
        }
        let mut store_ok = true;
        if !finished.is_empty() {
            match inner.store.ack_outbox(&finished).await {
                Ok(()) => {
                    for id in finished.drain(..) {
                        held.remove(&id);
                    }
                }
                Err(e) => {
                    // Kept: acknowledged again on the next round.
                    tracing::warn!(error = %e, entries = finished.len(), "bus: outbox ack failed");
                    store_ok = false;
                }
            }
        }
        // Safety net: every IDLE_RESCAN idle polls with nothing held, read from the oldest entry again.
        if timer_wake && held.is_empty() {
            idle_polls += 1;
            if idle_polls.is_multiple_of(IDLE_RESCAN) {
                read_pos = None;
            }
        }
        let room = config.max_in_flight.saturating_sub(held.len());
        let mut more = false;
        if room > 0 && store_ok {
            let limit = room.min(config.page_size);
            match inner.store.pending_outbox_after(read_pos, limit).await {
                Ok(entries) => {
                    more = entries.len() == limit;
                    let now = Instant::now();
                    for entry in entries {
                        read_pos = Some(entry.id);
                        if held.contains_key(&entry.id) {
                            continue;
                        }
                        let event = Arc::new(BusEvent {
                            id: entry.id,
                            topic: entry.topic,
                            payload: Bytes::from(entry.payload),
                        });
                        let mut remaining = 0;
                        for (sub, queue) in subscribers.iter().zip(&queues) {
                            if sub.matches(&event.topic) {
                                if queue.send(Arc::clone(&event)).is_err() {
                                    // Never acknowledge past a subscriber that can no longer take it.
                                    return format!("bus worker of {} is gone", sub.name);
                                }
                                remaining += 1;
                            }
                        }
                        held.insert(entry.id, Held { remaining, seen: now });
                        if remaining == 0 {
                            finished.push(entry.id);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "bus: reading the outbox failed"),
            }
        }
        inner.in_flight.store(held.len(), Ordering::Relaxed);
        depth.set(held.len() as f64);
        oldest.set(held.values().next().map_or(0.0, |h| h.seen.elapsed().as_secs_f64()));
        // Entries without subscribers are acknowledged at once; a full page means more may wait.
        if (!finished.is_empty() && store_ok) || (more && held.len() < config.max_in_flight) {
            timer_wake = false;
            continue;
        }
        timer_wake = false;
        tokio::select! {
            () = inner.wake.notified() => {}
            Some(id) = done_rx.recv() => finish(&mut held, &mut finished, id),
            () = tokio::time::sleep(config.poll_interval) => timer_wake = true,
        }
    }
}

fn finish(held: &mut BTreeMap<u64, Held>, finished: &mut Vec<u64>, id: u64) {
    if let Some(h) = held.get_mut(&id) {
        h.remaining = h.remaining.saturating_sub(1);
        if h.remaining == 0 {
            finished.push(id);
        }
    }
}

/// A delivery being attempted (or waiting for its next attempt).
pub(super) struct Attempt {
    event: Arc<BusEvent>,
    /// Attempts made so far.
    attempts: u32,
    /// Store-clock ms of the first failure (0 before it).
    first_failure_ms: u64,
    last_error: String,
}

/// One subscriber's worker: calls its handler for each event, one at a time.
struct Worker {
    inner: Arc<Inner>,
    sub: Arc<Subscriber>,
    rx: mpsc::UnboundedReceiver<Arc<BusEvent>>,
    done: mpsc::UnboundedSender<u64>,
}

impl Worker {
    async fn run(mut self) {
        let strict = self.sub.order == DeliveryOrder::Strict;
        let mut fresh: VecDeque<Arc<BusEvent>> = VecDeque::new();
        // Waiting retries by (due time, outbox id). In strict order there is at most one.
        let mut retries: BTreeMap<(Instant, u64), Attempt> = BTreeMap::new();
        loop {
            while let Ok(event) = self.rx.try_recv() {
                fresh.push_back(event);
            }
            let due = retries.first_key_value().map(|(k, _)| k.0);
            let next = if due.is_some_and(|d| d <= Instant::now()) {
                retries.pop_first().map(|(_, a)| a)
            } else if strict && due.is_some() {
                None
            } else {
                fresh.pop_front().map(|event| Attempt {
                    event,
                    attempts: 0,
                    first_failure_ms: 0,
                    last_error: String::new(),
                })
            };
            let Some(attempt) = next else {
                tokio::select! {
                    event = self.rx.recv() => match event {
                        Some(event) => fresh.push_back(event),
                        None => return,
                    },
                    () = sleep_until(due) => {}
                }
                continue;
            };
            if let Some(retry) = self.attempt(attempt).await {
                retries.insert(retry.0, retry.1);
            }
        }
    }

    /// Makes one attempt; returns the delivery if it must be retried later.
    async fn attempt(&self, mut a: Attempt) -> Option<((Instant, u64), Attempt)> {
        a.attempts += 1;
        let id = a.event.id;
        match call_handler(&*self.sub.handler, &a.event, self.inner.config.handler_timeout).await {
            Ok(()) => {
                self.sub.metrics.delivered.increment(1);
                let _ = self.done.send(id);
                None
            }
            Err(err) => {
                let now_ms = self.inner.store.now_ms();
                if a.first_failure_ms == 0 {
                    a.first_failure_ms = now_ms;
                }
                a.last_error = err.to_string();
                let rejected = matches!(err, HandlerError::Reject(_));
                if rejected || a.attempts >= self.sub.retry.max_attempts {
                    tracing::warn!(subscriber = %self.sub.name, id, topic = %a.event.topic, attempts = a.attempts,
                        error = %a.last_error, "bus: delivery dead-lettered");
                    dead::write(&self.inner, &self.sub, &a, now_ms).await;
                    let _ = self.done.send(id);
                    None
                } else {
                    self.sub.metrics.retries.increment(1);
                    let delay = self.sub.retry.backoff.delay(a.attempts);
                    tracing::debug!(subscriber = %self.sub.name, id, attempts = a.attempts, error = %a.last_error,
                        delay_ms = delay.as_millis() as u64, "bus: delivery failed; retrying");
                    Some(((Instant::now() + delay, id), a))
                }
            }
        }
    }
}

impl Attempt {
    pub(super) fn event(&self) -> &BusEvent {
        &self.event
    }
    pub(super) fn attempts(&self) -> u32 {
        self.attempts
    }
    pub(super) fn first_failure_ms(&self) -> u64 {
        self.first_failure_ms
    }
    pub(super) fn last_error(&self) -> &str {
        &self.last_error
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Calls a handler with a deadline; a panic or a timeout is a retryable failure.
pub(super) async fn call_handler(
    handler: &dyn Handler,
    event: &BusEvent,
    timeout: Duration,
) -> Result<(), HandlerError> {
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(event))) {
        Ok(fut) => fut,
        Err(_) => return Err(HandlerError::Retry("handler panicked".to_owned())),
    };
    match tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await {
        Err(_) => Err(HandlerError::Retry(format!("handler timed out after {} ms", timeout.as_millis()))),
        Ok(Err(_)) => Err(HandlerError::Retry("handler panicked".to_owned())),
        Ok(Ok(result)) => result,
    }
}
