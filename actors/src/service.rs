//! [`ServiceRef`]: the typed handle callers use to reach a supervised actor — across restarts, with a
//! deadline on every call, an admission limit on calls in flight, and the child's circuit breaker.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use ractor::rpc::CallResult;
use ractor::{Message, RpcReplyPort};
use tokio::time::Instant;

use crate::breaker::{BreakerState, Permit};
use crate::error::{Error, Result};
use crate::registry::Slot;

/// How long a caller is told to wait when the actor is between incarnations.
const RESTARTING_RETRY_AFTER: Duration = Duration::from_millis(100);

/// A typed, restart-proof handle to a supervised actor taking messages of type `M`.
///
/// - [`tell`](Self::tell) enqueues without waiting; refused at once while the breaker is not closed.
/// - [`call`](Self::call) sends a request with a reply port and waits up to the deadline; at most
///   `max_in_flight` calls are outstanding per actor (more get [`Error::Overloaded`] at once, never a
///   queue), and timeouts count as failures for the breaker.
pub struct ServiceRef<M> {
    slot: Arc<Slot>,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for ServiceRef<M> {
    fn clone(&self) -> Self {
        Self { slot: Arc::clone(&self.slot), _msg: PhantomData }
    }
}

impl<M> fmt::Debug for ServiceRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRef").field("path", &self.slot.path()).finish()
    }
}

impl<M: Message> ServiceRef<M> {
    pub(crate) fn new(slot: Arc<Slot>) -> Self {
        Self { slot, _msg: PhantomData }
    }

    /// Path of the actor in the supervision tree.
    pub fn path(&self) -> &str {
        self.slot.path()
    }

    /// The default call deadline of this service.
    pub fn default_timeout(&self) -> Duration {
        self.slot.call_timeout
    }

    fn unavailable(&self, retry_after: Duration) -> Error {
        Error::Unavailable { service: self.slot.path().to_owned(), retry_after }
    }

    /// Send without waiting for a reply.
    ///
    /// While the breaker is open this fails fast with `Unavailable`. Once the cooldown has passed, one
    /// `tell` is admitted as the half-open probe: the breaker closes when the actor next finishes a
    /// message without error, and opens again if it fails — so services reached only by `tell` recover.
    pub fn tell(&self, msg: M) -> Result<()> {
        let slot = &*self.slot;
        if slot.breaker.state() != BreakerState::Closed {
            return self.tell_probing(msg);
        }
        // Counted before the send, so the actor never handles a message not yet counted.
        slot.mailbox_enqueued();
        match slot.with_cell(|cell| cell.send_message(msg)) {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) | None => {
                slot.mailbox_unenqueued();
                Err(self.unavailable(RESTARTING_RETRY_AFTER))
            }
        }
    }

    /// `tell` while the breaker is not closed: refused, unless this message becomes the probe.
    #[cold]
    fn tell_probing(&self, msg: M) -> Result<()> {
        let slot = &*self.slot;
        // Between incarnations: refuse before asking the breaker, so no probe is taken for nothing.
        let cell = slot.cell().ok_or_else(|| self.unavailable(RESTARTING_RETRY_AFTER))?;
        let permit = slot.breaker.try_acquire(Instant::now()).map_err(|ra| self.unavailable(ra))?;
        if permit.is_probe() {
            slot.arm_tell_probe(permit);
        }
        slot.mailbox_enqueued();
        cell.send_message(msg).map_err(|_| {
            slot.mailbox_unenqueued();
            slot.resolve_tell_probe(None);
            self.unavailable(RESTARTING_RETRY_AFTER)
        })
    }

    /// Call with the service's default deadline.
    pub async fn call<R, F>(&self, build: F) -> Result<R>
    where
        F: FnOnce(RpcReplyPort<R>) -> M,
        R: Send + 'static,
    {
        self.call_with_timeout(build, self.slot.call_timeout).await
    }

    /// Call with an explicit deadline.
    pub async fn call_with_timeout<R, F>(&self, build: F, timeout: Duration) -> Result<R>
    where
        F: FnOnce(RpcReplyPort<R>) -> M,
        R: Send + 'static,
    {
        let slot = &*self.slot;
        // Admission first, so a refused call never takes the breaker's probe.
        let _admitted = slot
            .gate
            .try_acquire()
            .map_err(|_| Error::Overloaded { service: slot.path().to_owned(), limit: slot.max_in_flight })?;
        // Between incarnations: refuse before asking the breaker, so no probe is taken for nothing.
        let Some(cell) = slot.cell() else {
            return Err(self.unavailable(RESTARTING_RETRY_AFTER));
        };
        // A permit granted while the breaker is not closed is the half-open probe: it must be
        // resolved (success or failure), or the breaker could wait for it forever.
        let permit = slot.breaker.try_acquire_with(Instant::now).map_err(|ra| self.unavailable(ra))?;
        let probing = permit.is_probe();
        slot.mailbox_enqueued();
        let outcome = ractor::rpc::call(&cell, build, Some(timeout)).await;
        match outcome {
            Ok(CallResult::Success(reply)) => {
                slot.breaker.record_success_with(permit, Instant::now);
                if probing {
                    // Only a probe's success changes the state.
                    slot.publish_breaker();
                }
                Ok(reply)
            }
            Ok(CallResult::Timeout) => {
                slot.breaker.record_failure(permit, Instant::now());
                slot.publish_breaker();
                Err(Error::Timeout { service: slot.path().to_owned(), timeout })
            }
            // The actor dropped the reply port: it crashed or stopped mid-call. The crash itself is
            // recorded by the supervisor, so it is not counted twice here — unless this was the probe.
            Ok(CallResult::SenderError) => {
                self.release(permit, probing);
                Err(Error::Stopped { service: slot.path().to_owned() })
            }
            Err(_send_failed) => {
                slot.mailbox_unenqueued();
                self.release(permit, probing);
                Err(self.unavailable(RESTARTING_RETRY_AFTER))
            }
        }
    }

    /// Runs a read-only request on the caller's task against the service's shared object (the `T` given
    /// to [`ChildSpec::local`](crate::ChildSpec::local)), with the same admission limit, breaker and
    /// default deadline as [`call`](Self::call) but without the two task hops through the mailbox.
    ///
    /// For requests that change no actor state (a store read): the actor's mailbox order does not
    /// matter to them. While the actor is between incarnations or its breaker is open, queries fail
    /// fast like calls. A timeout or a panic in `f` counts as a failure for the breaker; a panic is
    /// reported as [`Error::Stopped`] (the caller's task survives it).
    pub async fn query<T, R, F, Fut>(&self, f: F) -> Result<R>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Arc<T>) -> Fut,
        Fut: Future<Output = R>,
    {
        let slot = &*self.slot;
        let _admitted = slot
            .gate
            .try_acquire()
            .map_err(|_| Error::Overloaded { service: slot.path().to_owned(), limit: slot.max_in_flight })?;
        let Some(local) = slot.local::<T>() else {
            return Err(self.unavailable(RESTARTING_RETRY_AFTER));
        };
        let permit = slot.breaker.try_acquire_with(Instant::now).map_err(|ra| self.unavailable(ra))?;
        let probing = permit.is_probe();
        let timeout = slot.call_timeout;
        match tokio::time::timeout(timeout, AssertUnwindSafe(f(local)).catch_unwind()).await {
            Ok(Ok(reply)) => {
                slot.breaker.record_success_with(permit, Instant::now);
                if probing {
                    slot.publish_breaker();
                }
                Ok(reply)
            }
            Ok(Err(_panic)) => {
                slot.breaker.record_failure(permit, Instant::now());
                slot.publish_breaker();
                tracing::error!(service = slot.path(), "query panicked");
                Err(Error::Stopped { service: slot.path().to_owned() })
            }
            Err(_elapsed) => {
                slot.breaker.record_failure(permit, Instant::now());
                slot.publish_breaker();
                Err(Error::Timeout { service: slot.path().to_owned(), timeout })
            }
        }
    }

    /// Give back a permit whose call had no verdict of its own; a probe counts as failed.
    fn release(&self, permit: Permit, probing: bool) {
        if probing {
            self.slot.breaker.record_failure(permit, Instant::now());
            self.slot.publish_breaker();
        } else {
            drop(permit);
        }
    }
}

#[cfg(test)]
mod tests;
