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
use troupe_storage::StoreError;

use futures::stream::{FuturesOrdered, StreamExt};

use super::{BatchHandler, BatchResults, BusEvent, DeliveryOrder, Dispatch, HandlerError, Inner, Subscriber, dead};

/// Finished entries that are acknowledged at once; fewer wait up to [`ACK_DELAY`].
const ACK_BATCH: usize = 1024;
/// Longest wait of a finished entry for its acknowledgement to start.
const ACK_DELAY: Duration = Duration::from_millis(20);

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
    // One acknowledgement runs at a time beside the reading (a store commit costs about as much as
    // reading a page); finished ids gather meanwhile, so acks batch themselves under load.
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Result<(), StoreError>, Vec<u64>)>();
    let mut acking: Option<tokio::task::JoinHandle<()>> = None;
    // Greatest id read; entries become visible in id order (both backends assign ids at commit under
    // one writer or lock), so the next page starts after it.
    let mut read_pos: Option<u64> = None;
    let mut timer_wake = false;
    let mut idle_polls: u64 = 0;
    let mut acked: Option<(Result<(), StoreError>, Vec<u64>)> = None;
    let mut finished_since: Option<Instant> = None;
    loop {
        if let Some(exit) = workers.try_join_next() {
            return format!("bus worker ended unexpectedly: {exit:?}");
        }
        while let Ok(id) = done_rx.try_recv() {
            finish(&mut held, &mut finished, id);
        }
        if acked.is_none()
            && let Ok(result) = ack_rx.try_recv()
        {
            acked = Some(result);
        }
        let mut store_ok = true;
        if let Some((result, ids)) = acked.take() {
            acking = None;
            match result {
                Ok(()) => {
                    for id in ids {
                        held.remove(&id);
                    }
                }
                Err(e) => {
                    // Kept: acknowledged again on the next round.
                    tracing::warn!(error = %e, entries = ids.len(), "bus: outbox ack failed");
                    finished.extend(ids);
                    store_ok = false;
                }
            }
        } else if acking.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
            return "bus outbox ack task failed".to_owned();
        }
        if finished.is_empty() {
            finished_since = None;
        } else if finished_since.is_none() {
            finished_since = Some(Instant::now());
        }
        // Small acks wait up to ACK_DELAY for company: fewer store commits (each may sync the disk).
        let ack_due = finished.len() >= ACK_BATCH || finished_since.is_some_and(|t| t.elapsed() >= ACK_DELAY);
        if acking.is_none() && ack_due && store_ok {
            finished_since = None;
            let ids = std::mem::take(&mut finished);
            let (store, tx) = (inner.store.clone(), ack_tx.clone());
            acking = Some(tokio::spawn(async move {
                let result = store.ack_outbox(&ids).await;
                let _ = tx.send((result, ids));
            }));
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
        let ack_ready = finished.len() >= ACK_BATCH || finished_since.is_some_and(|t| t.elapsed() >= ACK_DELAY);
        if (ack_ready && store_ok && acking.is_none()) || (more && held.len() < config.max_in_flight) {
            timer_wake = false;
            continue;
        }
        timer_wake = false;
        tokio::select! {
            () = inner.wake.notified() => {}
            Some(id) = done_rx.recv() => finish(&mut held, &mut finished, id),
            Some(result) = ack_rx.recv(), if acking.is_some() => acked = Some(result),
            () = sleep_until(finished_since.filter(|_| acking.is_none()).map(|t| t + ACK_DELAY)) => {}
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
    async fn run(self) {
        match self.sub.handler.clone() {
            Dispatch::One(_) => self.run_single().await,
            Dispatch::Batch { handler, max_batch, pipeline } => self.run_batched(handler, max_batch, pipeline).await,
        }
    }

    async fn run_single(mut self) {
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
        match call_handler(&self.sub.handler, &a.event, self.inner.config.handler_timeout).await {
            Ok(()) => {
                self.sub.metrics.delivered.increment(1);
                let _ = self.done.send(id);
                None
            }
            Err(err) => self.failed(a, err).await,
        }
    }

    /// A failed attempt: dead-lettered (rejected, or the last attempt) or returned for a retry.
    async fn failed(&self, mut a: Attempt, err: HandlerError) -> Option<((Instant, u64), Attempt)> {
        let id = a.event.id;
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

impl Attempt {
    fn new(event: Arc<BusEvent>) -> Self {
        Self { event, attempts: 0, first_failure_ms: 0, last_error: String::new() }
    }
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

/// Calls a handler with one event and a deadline; a panic or a timeout is a retryable failure.
pub(super) async fn call_handler(
    handler: &Dispatch,
    event: &Arc<BusEvent>,
    timeout: Duration,
) -> Result<(), HandlerError> {
    let handler = match handler {
        Dispatch::One(handler) => handler,
        Dispatch::Batch { handler, .. } => {
            let mut results = call_batch(&**handler, vec![Arc::clone(event)], timeout).await;
            return results.pop().unwrap_or_else(|| Err(HandlerError::Retry("no result".to_owned())));
        }
    };
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

/// Calls a batch handler with a deadline; returns exactly one result per event (a panic, a timeout
/// or a missing result is a retryable failure). The handler is called now; the future only waits.
fn call_batch(
    handler: &dyn BatchHandler,
    events: Vec<Arc<BusEvent>>,
    timeout: Duration,
) -> impl Future<Output = BatchResults> + Send + 'static {
    let n = events.len();
    let fut = std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle_batch(events)));
    async move {
        let failed = |reason: String| (0..n).map(|_| Err(HandlerError::Retry(reason.clone()))).collect();
        let fut = match fut {
            Ok(fut) => fut,
            Err(_) => return failed("handler panicked".to_owned()),
        };
        match tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await {
            Err(_) => failed(format!("handler timed out after {} ms", timeout.as_millis())),
            Ok(Err(_)) => failed("handler panicked".to_owned()),
            Ok(Ok(mut results)) => {
                if results.len() != n {
                    let reason = format!("handler returned {} results for {n} events", results.len());
                    results.truncate(n);
                    results.resize_with(n, || Err(HandlerError::Retry(reason.clone())));
                }
                results
            }
        }
    }
}

/// One batch in flight: its attempts and (when resolved) their results.
type BatchFuture = futures::future::BoxFuture<'static, (Vec<Attempt>, BatchResults)>;

impl Worker {
    /// The worker of a batched subscriber: up to `pipeline` calls of up to `max_batch` events in
    /// flight, results taken in call order. Strict order: a failure that will be retried stops new
    /// calls; once the calls in flight are back, the failed event and every later one handed over
    /// (successful or not) go again, in order, after the backoff. First-attempt order: failed events
    /// are retried one by one when due while later events go ahead.
    async fn run_batched(mut self, handler: Arc<dyn BatchHandler>, max_batch: usize, pipeline: usize) {
        let strict = self.sub.order == DeliveryOrder::Strict;
        let timeout = self.inner.config.handler_timeout;
        let mut fresh: VecDeque<Attempt> = VecDeque::new();
        let mut in_flight: FuturesOrdered<BatchFuture> = FuturesOrdered::new();
        // First-attempt order: waiting retries by (due time, id).
        let mut retries: BTreeMap<(Instant, u64), Attempt> = BTreeMap::new();
        // Strict order: set from a retryable failure until its redo has been put back in `fresh`.
        let mut blocked = false;
        let mut redo: Vec<Attempt> = Vec::new();
        let mut hold_until: Option<Instant> = None;
        let mut closed = false;
        loop {
            while let Ok(event) = self.rx.try_recv() {
                fresh.push_back(Attempt::new(event));
            }
            if strict && blocked && in_flight.is_empty() {
                for a in redo.drain(..).rev() {
                    fresh.push_front(a);
                }
                blocked = false;
            }
            let now = Instant::now();
            if hold_until.is_some_and(|h| h <= now) {
                hold_until = None;
            }
            // Launch calls while there is room.
            while in_flight.len() < pipeline && !blocked && hold_until.is_none() {
                let batch: Vec<Attempt> = match retries.first_key_value() {
                    Some((k, _)) if k.0 <= now => retries.pop_first().map(|(_, a)| vec![a]).unwrap_or_default(),
                    _ => {
                        let take = fresh.len().min(max_batch);
                        fresh.drain(..take).collect()
                    }
                };
                if batch.is_empty() {
                    break;
                }
                let events = batch.iter().map(|a| Arc::clone(&a.event)).collect();
                let call = call_batch(&*handler, events, timeout);
                in_flight.push_back(Box::pin(async move { (batch, call.await) }));
            }
            if closed && in_flight.is_empty() && fresh.is_empty() && retries.is_empty() && !blocked {
                return;
            }
            let due = match (hold_until, retries.first_key_value().map(|(k, _)| k.0)) {
                (Some(h), _) => Some(h),
                (None, r) => r,
            };
            tokio::select! {
                event = self.rx.recv(), if !closed => match event {
                    Some(event) => fresh.push_back(Attempt::new(event)),
                    None => closed = true,
                },
                Some((batch, results)) = in_flight.next(), if !in_flight.is_empty() => {
                    for (a, result) in batch.into_iter().zip(results) {
                        if strict && blocked {
                            // Handed over after the failed one: goes again after it, in order.
                            redo.push(a);
                            continue;
                        }
                        if let Some(retry) = self.settle(a, result).await {
                            if strict {
                                hold_until = Some(retry.0.0);
                                blocked = true;
                                redo.push(retry.1);
                            } else {
                                retries.insert(retry.0, retry.1);
                            }
                        }
                    }
                }
                () = sleep_until(due) => {}
            }
        }
    }

    /// Records the result of one attempt (success, dead letter or retry); returns the delivery if it
    /// must be retried later.
    async fn settle(&self, mut a: Attempt, result: Result<(), HandlerError>) -> Option<((Instant, u64), Attempt)> {
        a.attempts += 1;
        let id = a.event.id;
        match result {
            Ok(()) => {
                self.sub.metrics.delivered.increment(1);
                let _ = self.done.send(id);
                None
            }
            Err(err) => self.failed(a, err).await,
        }
    }
}
