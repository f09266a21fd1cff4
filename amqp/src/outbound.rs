//! Outbound: [`Outbound`] is the bridge's event-bus subscriber. The bus hands it batches of
//! consecutive outbox entries (strict order, a few batches in flight); one publisher task publishes
//! them in call order on one confirm-mode channel (persistent, `mandatory`, message id, `traceparent`
//! header, routing key = topic), never more than `confirm_window` messages unconfirmed (a window that
//! slides message by message across batches: each message holds a permit until its confirm), and
//! answers each batch with per-event results once the broker has
//! confirmed (ack), refused (nack: retried) or returned (per [`ReturnedPolicy`]) every message. The
//! bus acknowledges an outbox entry only after an `Ok`, and after any failure it hands over the failed
//! entry and everything after it again, in order: a broker outage repeats messages (same message
//! id), never loses or reorders them.
//!
//! Reconnection: the channel's connection has lapin's automatic recovery on; a batch arriving while
//! it recovers waits up to `recovery_wait`, then the task connects afresh. A batch that cannot be
//! published fails with a retryable error and the bus backs off (the bridge's subscription never
//! dead-letters for broker trouble: its attempts are unlimited).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use troupe_actors::bus::{BatchHandler, BatchResults, BusEvent, HandlerError};

use crate::config::{BridgeConfig, ReturnedPolicy};
use crate::link::{self, DOWN, Status, UP};
use crate::message::{self, OUTBOX_ID_HEADER, PACKED_CONTENT_TYPE, PackedBatch};

/// One batch handed over by the bus.
pub(crate) struct Job {
    events: Vec<Arc<BusEvent>>,
    reply: oneshot::Sender<BatchResults>,
}

/// Metric handles.
#[derive(Clone)]
pub(crate) struct OutMetrics {
    published: metrics::Counter,
    confirmed: metrics::Counter,
    returned: metrics::Counter,
    nacked: metrics::Counter,
    reconnects: metrics::Counter,
    unconfirmed: metrics::Gauge,
}

impl OutMetrics {
    fn new() -> Self {
        Self {
            published: metrics::counter!("troupe_amqp_published_total"),
            confirmed: metrics::counter!("troupe_amqp_confirmed_total"),
            returned: metrics::counter!("troupe_amqp_returned_total"),
            nacked: metrics::counter!("troupe_amqp_nacked_total"),
            reconnects: metrics::counter!("troupe_amqp_reconnects_total", "link" => "publisher"),
            unconfirmed: metrics::gauge!("troupe_amqp_unconfirmed"),
        }
    }
}

/// The bridge's outbound side: an event-bus [`BatchHandler`]. Cheap to clone. Batches are
/// published by the task [`Outbound::run`] runs (the bridge actor runs it; a new run replaces the
/// previous one's queue, and batches queued to a stopped run fail with a retryable error).
#[derive(Clone)]
pub struct Outbound {
    config: Arc<BridgeConfig>,
    queue: Arc<Mutex<Option<mpsc::UnboundedSender<Job>>>>,
    status: Status,
    unconfirmed: Arc<AtomicUsize>,
    /// `confirm_window` permits: one per published, unconfirmed message.
    window: Arc<Semaphore>,
    last_progress: Arc<Progress>,
    /// When the publish in progress started (ms on `last_progress`'s clock; 0 = none).
    busy_since: Arc<std::sync::atomic::AtomicU64>,
    /// Status handles of the current connection and channel, for the watcher.
    links: Arc<Mutex<Option<(lapin::ConnectionStatus, lapin::ChannelStatus)>>>,
    /// The connection a publish or a confirm failed or timed out on (its generation; 0 = none): the
    /// next batch connects afresh if that is still the current connection. A late failure of an
    /// older connection's confirms must not tear down the fresh one (that cascaded into a reconnect
    /// per in-flight batch after a broker restart).
    broken: Arc<std::sync::atomic::AtomicU64>,
    /// Generation of the current connection (1 for the first).
    generation: Arc<std::sync::atomic::AtomicU64>,
    metrics: OutMetrics,
}

/// Longest wait for one `basic.publish` to be handed to the connection.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for a confirm; then the message counts as failed and the link is rebuilt.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Longest wait for a fresh connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Confirms waiting longer than this while the connection looks fine mark the link down.
const STALL_MS: u64 = 1500;

/// When the last confirm arrived (ms since `start`).
struct Progress {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self { start: std::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    fn elapsed_ms(&self) -> u64 {
        self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("exchange", &self.config.exchange).finish_non_exhaustive()
    }
}

fn all(n: usize, err: &HandlerError) -> BatchResults {
    (0..n).map(|_| Err(err.clone())).collect()
}

impl BatchHandler for Outbound {
    fn handle_batch(&self, events: Vec<Arc<BusEvent>>) -> BoxFuture<'static, BatchResults> {
        let n = events.len();
        let (reply, answer) = oneshot::channel();
        // Queued now, so batches reach the publisher in call order.
        let queued = match &*self.queue.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(tx) => tx.send(Job { events, reply }).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !queued {
                return all(n, &HandlerError::retry("rabbitmq publisher not running"));
            }
            answer.await.unwrap_or_else(|_| all(n, &HandlerError::retry("rabbitmq publisher stopped")))
        })
    }
}

/// One published message (or its failure) handed to a batch's confirm waiter.
struct Sent {
    /// The batch's events the message carries.
    range: (usize, usize),
    /// The broker's answer to come, the deadline for it and the message's place in the window.
    outcome: Result<(PublisherConfirm, tokio::time::Instant, OwnedSemaphorePermit), HandlerError>,
}

/// An open confirm-mode channel.
struct Open {
    conn: Connection,
    channel: Channel,
}

impl Outbound {
    pub(crate) fn new(config: Arc<BridgeConfig>, status: Status) -> Self {
        Self {
            window: Arc::new(Semaphore::new(config.confirm_window)),
            config,
            queue: Arc::new(Mutex::new(None)),
            status,
            unconfirmed: Arc::new(AtomicUsize::new(0)),
            last_progress: Arc::new(Progress::new()),
            busy_since: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            links: Arc::new(Mutex::new(None)),
            broken: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            metrics: OutMetrics::new(),
        }
    }

    /// Messages published and not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.load(Ordering::Relaxed)
    }

    /// The publisher task: takes over the queue and publishes until the returned future is dropped.
    pub fn run(&self) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        let (this, watched) = (self.clone(), self.clone());
        async move {
            tokio::select! {
                () = this.publish_loop(rx) => {}
                () = watched.watch() => {}
            }
        }
    }

    /// Health of the link, also while a publish is stuck: down when lapin reports the connection or
    /// channel not connected, when confirms stall, or when one publish call takes too long. Up again
    /// only on a fresh connection or a confirm.
    async fn watch(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            let connected = self
                .links
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|(conn, channel)| conn.connected() && channel.connected());
            let now = self.last_progress.now_ms();
            let busy = self.busy_since.load(Ordering::Relaxed);
            let (unconfirmed, quiet) = (self.unconfirmed(), self.last_progress.elapsed_ms());
            match connected {
                Some(false) => self.status.set(DOWN, "connection lost; recovering"),
                Some(true) if unconfirmed > 0 && quiet > STALL_MS && self.status.is_up() => {
                    self.status.set(DOWN, format!("no confirm for {quiet} ms ({unconfirmed} waiting)"));
                }
                Some(true) if busy != 0 && now.saturating_sub(busy) > STALL_MS && self.status.is_up() => {
                    self.status.set(DOWN, "publishing is blocked");
                }
                _ => {}
            }
        }
    }

    async fn publish_loop(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut open: Option<Open> = None;
        let mut ever_connected = false;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            let job = tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                _ = tick.tick() => {
                    // An idle link lapin reports down (after a broker restart its recovery can leave
                    // the status down with nothing left to publish): connect afresh now rather than
                    // at the next batch, so readiness tells the truth while idle.
                    if open.as_ref().is_some_and(|o| !(o.conn.status().connected() && o.channel.status().connected()))
                        && self.unconfirmed() == 0
                    {
                        self.broken.fetch_max(self.generation.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    // Connect eagerly (health shows the link before the first event).
                    if (open.is_none() || self.broken.load(Ordering::Relaxed) != 0)
                        && let Err(e) = self.ensure(&mut open, &mut ever_connected).await
                    {
                        tracing::debug!(error = %e, "rabbitmq: publisher cannot connect yet");
                    }
                    continue;
                }
            };
            let channel = match self.ensure(&mut open, &mut ever_connected).await {
                Ok(channel) => channel,
                Err(e) => {
                    let n = job.events.len();
                    let _ = job.reply.send(all(n, &HandlerError::retry(format!("rabbitmq unavailable: {e}"))));
                    continue;
                }
            };
            let ok = self.publish(&channel, job).await;
            if !ok {
                // The channel broke mid-batch: check it (or reconnect) before the next batch.
                self.status.set(DOWN, "publish failed; reconnecting");
            }
        }
    }

    /// A usable channel: the current one, the recovered one, or a fresh connection.
    async fn ensure(&self, open: &mut Option<Open>, ever: &mut bool) -> Result<Channel, lapin::Error> {
        let broken = self.broken.swap(0, Ordering::Relaxed);
        if broken != 0
            && broken == self.generation.load(Ordering::Relaxed)
            && let Some(o) = open.take()
        {
            tracing::warn!("rabbitmq: publisher link failed; connecting afresh");
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), o.conn.close(200, "reconnecting".into())).await;
        }
        if let Some(o) = open.as_ref() {
            let was_up = o.conn.status().connected() && o.channel.status().connected();
            if link::usable(&o.conn, &o.channel, self.config.recovery_wait).await {
                if !was_up {
                    self.metrics.reconnects.increment(1);
                    tracing::info!(exchange = %self.config.exchange, "rabbitmq: publisher channel recovered");
                }
                return Ok(o.channel.clone());
            }
            tracing::warn!("rabbitmq: publisher connection lost; connecting afresh");
            if let Some(o) = open.take() {
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), o.conn.close(200, "reconnecting".into()))
                        .await;
            }
        }
        self.status.set(DOWN, "connecting");
        let conn =
            tokio::time::timeout(CONNECT_TIMEOUT, link::connect(&self.config.url, "troupe-publisher")).await.map_err(
                |_| lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed)),
            )??;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel
            .exchange_declare(
                self.config.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        if *ever {
            self.metrics.reconnects.increment(1);
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        *ever = true;
        tracing::info!(exchange = %self.config.exchange, "rabbitmq: publisher connected");
        self.status.set(UP, "connected");
        *self.links.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((conn.status().clone(), channel.status().clone()));
        *open = Some(Open { conn, channel: channel.clone() });
        Ok(channel)
    }

    /// Publishes one batch and spawns the wait for its confirms. `false` if the channel failed.
    async fn publish(&self, channel: &Channel, job: Job) -> bool {
        let Job { events, reply } = job;
        // Shared with the confirm waiter below without copying the batch.
        let events: Arc<[Arc<BusEvent>]> = events.into();
        let n = events.len();
        let generation = self.generation.load(Ordering::Relaxed);
        // Groups of consecutive events sent as one message: each event alone, or packed by topic.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        if self.config.packed {
            let mut start = 0;
            for i in 1..=n {
                if i == n || events[i].topic != events[start].topic || i - start >= self.config.packed_max_events {
                    groups.push((start, i));
                    start = i;
                }
            }
        } else {
            groups.extend((0..n).map(|i| (i, i + 1)));
        }
        // The confirms are awaited, in order, by a task that starts before the first publish: a
        // message's permit returns to the window as soon as the broker answers it, also while the
        // rest of its batch is still being published (a batch larger than the window cannot wait on
        // its own permits).
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Sent>();
        let this = self.clone();
        let events_for_confirms = Arc::clone(&events);
        // If the waiter failed, `reply` drops and the batch fails with a retryable error.
        tokio::spawn(async move {
            let events = events_for_confirms;
            let mut results: BatchResults = Vec::with_capacity(n);
            while let Some(Sent { range: (start, end), outcome }) = sent_rx.recv().await {
                let result = match outcome {
                    // The permit goes back to the window once the broker has answered.
                    Ok((confirm, deadline, _permit)) => {
                        // Each confirm's deadline counts from its own publish, so a silently dead
                        // channel stalls a batch for one timeout, not one per message.
                        let r = match tokio::time::timeout_at(deadline, confirm).await {
                            Ok(r) => r,
                            Err(_) => {
                                this.broken.fetch_max(generation, Ordering::Relaxed);
                                Err(lapin::ErrorKind::InvalidChannelState(
                                    lapin::ChannelState::Error,
                                    "confirm timed out",
                                )
                                .into())
                            }
                        };
                        this.unconfirmed.fetch_sub(1, Ordering::Relaxed);
                        this.settle(r, &events[start], generation)
                    }
                    Err(e) => Err(e),
                };
                results.extend((start..end).map(|_| result.clone()));
            }
            this.metrics.unconfirmed.set(this.unconfirmed.load(Ordering::Relaxed) as f64);
            let _ = reply.send(results);
        });
        let mut ok = true;
        for (start, end) in groups {
            let outcome = if ok {
                match self.send_in_window(channel, &events[start..end], generation).await {
                    Ok((confirm, permit)) => {
                        if self.unconfirmed.fetch_add(1, Ordering::Relaxed) == 0 {
                            // The stall clock starts when something waits.
                            self.last_progress.touch();
                        }
                        self.metrics.published.increment(1);
                        Ok((confirm, tokio::time::Instant::now() + CONFIRM_TIMEOUT, permit))
                    }
                    Err(e) => {
                        ok = false;
                        Err(e)
                    }
                }
            } else {
                Err(HandlerError::retry("publish failed earlier in the batch"))
            };
            // The waiter ends only when this sender is dropped below.
            let _ = sent_tx.send(Sent { range: (start, end), outcome });
        }
        drop(sent_tx);
        self.metrics.unconfirmed.set(self.unconfirmed.load(Ordering::Relaxed) as f64);
        ok
    }

    /// Waits for room in the confirm window, then publishes one message. A publish failure (or a
    /// link found broken while waiting) marks the connection broken: the rest of the batch fails.
    async fn send_in_window(
        &self,
        channel: &Channel,
        events: &[Arc<BusEvent>],
        generation: u64,
    ) -> Result<(PublisherConfirm, OwnedSemaphorePermit), HandlerError> {
        let permit = Arc::clone(&self.window)
            .acquire_owned()
            .await
            .map_err(|_| HandlerError::retry("rabbitmq publisher stopped"))?;
        if self.broken.load(Ordering::Relaxed) == generation {
            // Confirms of this connection failed while we waited: publish after reconnecting.
            return Err(HandlerError::retry("rabbitmq link failed; reconnecting"));
        }
        self.busy_since.store(self.last_progress.now_ms().max(1), Ordering::Relaxed);
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, self.send(channel, events)).await.unwrap_or_else(|_| {
            Err(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Error, "basic.publish timed out").into())
        });
        self.busy_since.store(0, Ordering::Relaxed);
        match sent {
            Ok(confirm) => Ok((confirm, permit)),
            Err(e) => {
                self.broken.fetch_max(generation, Ordering::Relaxed);
                tracing::warn!(error = %e, "rabbitmq: publish failed");
                Err(HandlerError::retry(format!("publish failed: {e}")))
            }
        }
    }

    /// Publishes one message carrying `events` (one event, or a packed group).
    async fn send(&self, channel: &Channel, events: &[Arc<BusEvent>]) -> Result<PublisherConfirm, lapin::Error> {
        let first = &events[0];
        let mut headers = FieldTable::default();
        headers.insert(OUTBOX_ID_HEADER.into(), AMQPValue::LongLongInt(i64::try_from(first.id).unwrap_or(i64::MAX)));
        let (body, props) = if self.config.packed {
            let batch = PackedBatch::pack(events);
            let body = batch.encode().unwrap_or_default();
            let last = events.last().map_or(first.id, |e| e.id);
            headers.insert("x-troupe-events".into(), AMQPValue::LongLongInt(events.len() as i64));
            let props = BasicProperties::default()
                .with_message_id(ShortString::from(format!("outbox-{}-{}", first.id, last)))
                .with_content_type(PACKED_CONTENT_TYPE.into());
            (std::borrow::Cow::Owned(body), props)
        } else {
            let m = message::meta(first);
            if let Some(tp) = m.traceparent {
                headers.insert("traceparent".into(), AMQPValue::LongString(LongString::from(tp)));
            }
            let props = BasicProperties::default()
                .with_message_id(ShortString::from(m.message_id))
                .with_content_type(m.content_type.into());
            (std::borrow::Cow::Borrowed(first.payload.as_ref()), props)
        };
        let props = props.with_delivery_mode(2).with_type(first.topic.as_str().into()).with_headers(headers);
        channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                first.topic.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &body,
                props,
            )
            .await
    }

    /// Turns a broker answer into the event's result.
    fn settle(
        &self,
        answer: Result<Confirmation, lapin::Error>,
        first: &BusEvent,
        generation: u64,
    ) -> Result<(), HandlerError> {
        match answer {
            Ok(Confirmation::Ack(None)) => {
                self.last_progress.touch();
                self.status.up();
                self.metrics.confirmed.increment(1);
                Ok(())
            }
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                self.metrics.returned.increment(1);
                let reason = format!("returned by the broker: {} {}", returned.reply_code, returned.reply_text);
                tracing::warn!(id = first.id, topic = %first.topic, exchange = %self.config.exchange, %reason,
                    "rabbitmq: message returned (no queue bound?)");
                match self.config.returned {
                    ReturnedPolicy::DeadLetter => Err(HandlerError::reject(reason)),
                    ReturnedPolicy::Retry => Err(HandlerError::retry(reason)),
                    ReturnedPolicy::Drop => Ok(()),
                }
            }
            Ok(Confirmation::Nack(None)) => {
                self.metrics.nacked.increment(1);
                Err(HandlerError::retry("nacked by the broker"))
            }
            Ok(Confirmation::NotRequested) => Err(HandlerError::retry("channel not in confirm mode")),
            Err(e) => {
                self.broken.fetch_max(generation, Ordering::Relaxed);
                if self.status.is_up() {
                    self.status.set(DOWN, "confirms failing; reconnecting");
                }
                Err(HandlerError::retry(format!("no confirm: {e}")))
            }
        }
    }
}
