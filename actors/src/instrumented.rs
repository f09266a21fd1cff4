//! [`Instrumented`]: wraps an actor developer's plain ractor [`Actor`] so every handled message is
//! counted, timed, traced and subtracted from the approximate mailbox depth — without changing its
//! message, state or argument types (an `ActorRef<A::Msg>` still reaches it).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::Instrument;

use crate::registry::Slot;

/// One handled message in this many is timed for `troupe_actor_handler_seconds`.
pub(crate) const TIMING_SAMPLE: u64 = 16;

/// A supervised actor with Troupe's per-message metrics and tracing span.
pub(crate) struct Instrumented<A> {
    pub(crate) inner: A,
    pub(crate) slot: Arc<Slot>,
}

impl<A: Actor> Actor for Instrumented<A> {
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        self.inner.pre_start(myself, args).await
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(myself, state).await
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_stop(myself, state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let slot = &*self.slot;
        // Every message is counted; one in TIMING_SAMPLE is timed (a clock read costs ~36 ns here, as
        // much as the rest of the wrapper), so the handler-time histogram is a 1/16 sample.
        let timed = slot.note_handled().is_multiple_of(TIMING_SAMPLE);
        let span = tracing::debug_span!("actor.handle", actor = slot.path(), kind = slot.kind());
        let started = timed.then(Instant::now);
        let result = if span.is_disabled() {
            // The common case (debug spans off): no per-poll span enter/exit.
            self.inner.handle(myself, message, state).await
        } else {
            self.inner.handle(myself, message, state).instrument(span).await
        };
        if let Some(started) = started {
            slot.metrics.handler_seconds.record(started.elapsed().as_secs_f64());
        }
        slot.resolve_tell_probe(Some(result.is_ok()));
        result
    }

    async fn handle_serialized(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ractor::message::SerializedMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.handle_serialized(myself, message, state).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.handle_supervisor_evt(myself, message, state).await
    }
}
