//! Connections: lapin with automatic recovery on, plus what lapin cannot do for us — waiting a bounded
//! time for its recovery, connecting afresh when it gave up, and a status shared with the health probe.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

/// Status of one link, as the health probe reads it.
#[derive(Debug, Default)]
pub(crate) struct LinkStatus {
    /// 0 = never connected, 1 = up, 2 = reconnecting / down.
    state: AtomicU8,
    detail: Mutex<String>,
}

pub(crate) const NEVER: u8 = 0;
pub(crate) const UP: u8 = 1;
pub(crate) const DOWN: u8 = 2;

impl LinkStatus {
    pub(crate) fn set(&self, state: u8, detail: impl Into<String>) {
        let mut d = self.detail.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.store(state, Ordering::Relaxed);
        *d = detail.into();
    }
    /// Marks the link up (cheap when it already is).
    pub(crate) fn up(&self) {
        if self.state.load(Ordering::Relaxed) != UP {
            self.set(UP, "connected");
        }
    }
    pub(crate) fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }
    pub(crate) fn get(&self) -> (u8, String) {
        (self.state.load(Ordering::Relaxed), self.detail.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// Opens a connection with automatic recovery.
pub(crate) async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().enable_auto_recover().with_connection_name(name.to_owned().into());
    Connection::connect(url, props).await
}

/// Connects without lapin's auto-recovery, for a link whose owner rebuilds it itself (the inbound
/// consumers): a connection it gave up on must stay down, or lapin would recover it in the background
/// with its consumer, and deliveries would go to a consumer nobody reads (unacked until it closes).
pub(crate) async fn connect_unrecovered(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    Connection::connect(url, props).await
}

/// Whether `channel` is usable now; if lapin is recovering it, waits up to `wait` for it. `false`
/// means: drop the connection and connect afresh.
pub(crate) async fn usable(conn: &Connection, channel: &Channel, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if conn.status().connected() && channel.status().connected() {
            return true;
        }
        let recovering = conn.status().reconnecting() || conn.status().connecting() || channel.status().reconnecting();
        if !recovering || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exponential delay for attempt `n` (1-based) between `initial` and `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, n: u32) -> Duration {
    initial.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(max)
}

/// A shared status handle.
pub(crate) type Status = Arc<LinkStatus>;
