//! The drain gate: an optional switch that makes the outbox drain a cluster singleton. With a gate the
//! bus runs its drainer only while the gate is open and aborts it (its workers with it) as soon as the
//! gate closes; unacknowledged entries are delivered again by whichever drainer runs next (at least
//! once). The bus knows nothing of what opens the gate (in a cluster: holding a store lease).

use std::sync::Arc;

use tokio::sync::watch;

use super::{Inner, Subscriber, drain};

/// Runs the drainer while `gate` is open. Returns (a reason) only when the drainer ended on its own
/// (a bug) or the gate's sender is gone.
pub(super) async fn run(
    inner: Arc<Inner>,
    subscribers: Vec<Arc<Subscriber>>,
    mut gate: watch::Receiver<bool>,
) -> String {
    let open = metrics::gauge!("troupe_bus_draining");
    loop {
        open.set(0.0);
        while !*gate.borrow_and_update() {
            if gate.changed().await.is_err() {
                return "the bus drain gate is gone".to_owned();
            }
        }
        open.set(1.0);
        tracing::info!("bus: drain gate open; this node drains the outbox");
        let mut task = AbortOnDrop(tokio::spawn(drain::run(Arc::clone(&inner), subscribers.clone())));
        let task = &mut task.0;
        loop {
            tokio::select! {
                ended = &mut *task => {
                    return match ended {
                        Ok(reason) => reason,
                        Err(e) => format!("drainer panicked: {e}"),
                    };
                }
                changed = gate.changed() => {
                    if changed.is_err() || !*gate.borrow_and_update() {
                        // Closed: stop at once (workers are aborted with the drainer's task set).
                        task.abort();
                        let _ = (&mut *task).await;
                        inner.in_flight.store(0, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("bus: drain gate closed; this node stopped draining the outbox");
                        if changed.is_err() {
                            return "the bus drain gate is gone".to_owned();
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Aborts the drainer when the gate task itself is aborted (a killed bus actor): never two drainers.
struct AbortOnDrop(tokio::task::JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
