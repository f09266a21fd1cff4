//! The node router (one remotable actor per node, in the process group `troupe.cluster.shards.<node
//! id>`) and the entity actors it spawns and monitors.
//!
//! Local callers reach it with [`deliver_local`]; other nodes through [`forward`] (a ractor remote call
//! with a postcard envelope, answered with one). The router hosts an entity only while this node holds
//! its shard ([`ShardTable`]); otherwise it answers "unavailable" (retryable) and never forwards again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use troupe_storage::Store;

use super::{Entity, EntityContext, EntityFactory, EntityKinds, ShardTable};
use crate::error::{ClusterError, Result};
use crate::link::{Links, Request};
use crate::mesh::{open, seal};

const FORWARD_KIND: &str = "cluster.shard.forward";
const REPLY_KIND: &str = "cluster.shard.reply";
const FORWARD_VARIANT: &str = "troupe.shard.forward.v1";

/// The process group of `node_id`'s router.
pub(crate) fn group_name(node_id: &str) -> String {
    format!("troupe.cluster.shards.{node_id}")
}

/// A message forwarded to the owner's router.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ForwardBody {
    kind: String,
    key: String,
    payload: Vec<u8>,
    /// How long the caller still waits (ms).
    timeout_ms: u64,
}

/// The owner's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
enum ForwardReply {
    Ok(Vec<u8>),
    /// Retryable: the shard is not (or no longer) held there.
    Unavailable(String),
    UnknownKind(String),
    Failed(String),
}

type Reply = oneshot::Sender<Result<Vec<u8>>>;

/// Messages of the router. Only `Forward` crosses nodes.
pub enum RouterMsg {
    /// From another node's caller: envelope bytes in, envelope bytes out.
    Forward {
        /// [`ForwardBody`] envelope.
        request: Vec<u8>,
        /// Where the [`ForwardReply`] envelope goes.
        reply: RpcReplyPort<Vec<u8>>,
    },
    /// From a local caller.
    Deliver {
        /// Entity kind.
        kind: String,
        /// Entity key.
        key: String,
        /// Its shard.
        shard: u32,
        /// The message.
        payload: Vec<u8>,
        /// The answer.
        reply: oneshot::Sender<Result<Vec<u8>>>,
    },
    /// From the manager: stop every entity of `shard` (after their checkpoint when `checkpoint`).
    StopShard {
        /// The shard.
        shard: u32,
        /// Whether entities checkpoint first (a handover) or not (the lease was lost).
        checkpoint: bool,
        /// Answered once they stopped (or the checkpoint timeout passed).
        done: oneshot::Sender<()>,
    },
}

impl ractor::Message for RouterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> std::result::Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            RouterMsg::Forward { request, reply } => Ok(SerializedMessage::Call {
                variant: FORWARD_VARIANT.to_owned(),
                args: request,
                reply,
                metadata: None,
            }),
            RouterMsg::Deliver { .. } | RouterMsg::StopShard { .. } => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> std::result::Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Call { variant, args, reply, .. } if variant == FORWARD_VARIANT => {
                Ok(RouterMsg::Forward { request: args, reply })
            }
            _ => {
                metrics::counter!("troupe_cluster_decode_failures_total", "what" => "shard router message")
                    .increment(1);
                tracing::warn!("sharding: dropping an unknown router message");
                Err(BoxedDowncastErr)
            }
        }
    }
}

/// Sends `message` to the local router and waits up to `left` for the entity's answer.
pub(super) async fn deliver_local(
    router: &ActorRef<RouterMsg>,
    kind: &str,
    key: &str,
    shard: u32,
    payload: Vec<u8>,
    left: Duration,
) -> Result<Vec<u8>> {
    let (tx, rx) = oneshot::channel();
    let msg = RouterMsg::Deliver { kind: kind.to_owned(), key: key.to_owned(), shard, payload, reply: tx };
    if router.send_message(msg).is_err() {
        return Err(ClusterError::Stopped);
    }
    await_answer(shard, rx, left).await
}

async fn await_answer(shard: u32, rx: oneshot::Receiver<Result<Vec<u8>>>, left: Duration) -> Result<Vec<u8>> {
    match tokio::time::timeout(left, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => {
            Err(ClusterError::ShardUnavailable { shard, reason: "entity stopped before answering".to_owned() })
        }
        Err(_) => Err(ClusterError::Deadline(format!("shard {shard}: the entity did not answer in time"))),
    }
}

/// The link port forwarded entity messages use.
pub(super) const SHARD_PORT: &str = "shards";

/// The cross-node hop: sends `(kind, key, payload)` to `owner`'s router and returns the answer. With
/// `links` (a clustered node) it is one link call on [`SHARD_PORT`] over the bounded, batched links;
/// without (in-process tests) one ractor_cluster remote call to the owner's router. Same envelopes.
pub(super) async fn forward(
    links: Option<&Links>,
    owner: &str,
    shard: u32,
    kind: &str,
    key: &str,
    payload: Vec<u8>,
    left: Duration,
) -> Result<Vec<u8>> {
    let unavailable = |reason: String| ClusterError::ShardUnavailable { shard, reason };
    let timeout_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    let body = ForwardBody { kind: kind.to_owned(), key: key.to_owned(), payload, timeout_ms };
    let request = seal(FORWARD_KIND, key, &body)?;
    if let Some(links) = links {
        return match links.call(owner, SHARD_PORT, Bytes::from(request), left).await {
            Ok(bytes) => from_wire(owner, shard, open::<ForwardReply>(REPLY_KIND, &bytes)?),
            Err(e) => Err(unavailable(format!("to {owner}: {e}"))),
        };
    }
    let Some(cell) = ractor::pg::get_members(&group_name(owner)).into_iter().next() else {
        return Err(unavailable(format!("owner {owner} is not connected")));
    };
    let answer =
        ractor::rpc::call::<RouterMsg, Vec<u8>, _>(&cell, |reply| RouterMsg::Forward { request, reply }, Some(left))
            .await;
    match answer {
        Ok(ractor::rpc::CallResult::Success(bytes)) => {
            from_wire(owner, shard, open::<ForwardReply>(REPLY_KIND, &bytes)?)
        }
        Ok(ractor::rpc::CallResult::Timeout) => Err(unavailable(format!("owner {owner} did not answer in time"))),
        Ok(ractor::rpc::CallResult::SenderError) => Err(unavailable(format!("owner {owner} dropped the message"))),
        Err(e) => Err(unavailable(format!("not sent to {owner}: {e}"))),
    }
}

/// Serves [`SHARD_PORT`] requests with the local router: answers each on its own task, so the
/// links' inbox never waits for an entity.
pub(super) fn serve_links(links: &Links, router: ActorRef<RouterMsg>, shards: u32) {
    links.register_call(SHARD_PORT, move |request: Request| {
        let router = router.clone();
        tokio::spawn(async move {
            let body = match open::<ForwardBody>(FORWARD_KIND, &request.payload) {
                Ok(body) => body,
                Err(e) => {
                    metrics::counter!("troupe_cluster_decode_failures_total", "what" => "shard forward").increment(1);
                    tracing::warn!(error = %e, from = %request.from, "sharding: refusing an undecodable forwarded message");
                    request.fail("undecodable shard message");
                    return;
                }
            };
            let shard = crate::placement::shard_of(body.key.as_bytes(), shards);
            let left = Duration::from_millis(body.timeout_ms);
            let answer = to_wire(deliver_local(&router, &body.kind, &body.key, shard, body.payload, left).await);
            match seal(REPLY_KIND, &body.key, &answer) {
                Ok(bytes) => request.reply(Bytes::from(bytes)),
                Err(e) => {
                    tracing::warn!(error = %e, "sharding: cannot encode a forwarded answer");
                    request.fail("cannot encode the answer");
                }
            }
        });
    });
}

fn from_wire(owner: &str, shard: u32, reply: ForwardReply) -> Result<Vec<u8>> {
    match reply {
        ForwardReply::Ok(v) => Ok(v),
        ForwardReply::Unavailable(reason) => {
            Err(ClusterError::ShardUnavailable { shard, reason: format!("at {owner}: {reason}") })
        }
        ForwardReply::UnknownKind(kind) => Err(ClusterError::UnknownKind(kind)),
        ForwardReply::Failed(reason) => Err(ClusterError::Entity(reason)),
    }
}

fn to_wire(answer: Result<Vec<u8>>) -> ForwardReply {
    match answer {
        Ok(v) => ForwardReply::Ok(v),
        Err(ClusterError::UnknownKind(k)) => ForwardReply::UnknownKind(k),
        Err(e) if e.is_retryable() => ForwardReply::Unavailable(e.to_string()),
        Err(ClusterError::Deadline(reason)) => ForwardReply::Unavailable(reason),
        Err(e) => ForwardReply::Failed(e.to_string()),
    }
}

/// The router actor.
pub(super) struct Router {
    pub node_id: String,
    pub shards: u32,
    pub store: Store,
    pub table: Arc<ShardTable>,
    pub kinds: EntityKinds,
}

struct Hosted {
    shard: u32,
    token: u64,
    actor: ActorRef<EntityMsg>,
}

/// The router's entities.
#[derive(Default)]
pub(super) struct RouterState {
    entities: HashMap<(String, String), Hosted>,
    by_id: HashMap<ActorId, (String, String)>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        (): (),
    ) -> std::result::Result<RouterState, ActorProcessingErr> {
        ractor::pg::join(group_name(&self.node_id), vec![myself.get_cell()]);
        Ok(RouterState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Deliver { kind, key, shard, payload, reply } => {
                self.deliver(&myself, state, kind, key, shard, payload, reply).await;
            }
            RouterMsg::Forward { request, reply } => {
                let body = match open::<ForwardBody>(FORWARD_KIND, &request) {
                    Ok(body) => body,
                    Err(e) => {
                        metrics::counter!("troupe_cluster_decode_failures_total", "what" => "shard forward")
                            .increment(1);
                        tracing::warn!(error = %e, "sharding: dropping an undecodable forwarded message");
                        return Ok(());
                    }
                };
                let shard = crate::placement::shard_of(body.key.as_bytes(), self.shards);
                let (tx, rx) = oneshot::channel();
                self.deliver(&myself, state, body.kind, body.key.clone(), shard, body.payload, tx).await;
                let left = Duration::from_millis(body.timeout_ms);
                tokio::spawn(async move {
                    let answer = to_wire(await_answer(shard, rx, left).await);
                    match seal(REPLY_KIND, &body.key, &answer) {
                        Ok(bytes) => {
                            let _ = reply.send(bytes);
                        }
                        Err(e) => tracing::warn!(error = %e, "sharding: cannot encode a forwarded answer"),
                    }
                });
            }
            RouterMsg::StopShard { shard, checkpoint, done } => {
                let keys: Vec<(String, String)> =
                    state.entities.iter().filter(|(_, h)| h.shard == shard).map(|(k, _)| k.clone()).collect();
                let mut waits = Vec::with_capacity(keys.len());
                for k in keys {
                    if let Some(h) = state.entities.remove(&k) {
                        state.by_id.remove(&h.actor.get_id());
                        let (tx, rx) = oneshot::channel();
                        if h.actor.send_message(EntityMsg::Stop { checkpoint, done: tx }).is_ok() {
                            waits.push(rx);
                        }
                    }
                }
                tokio::spawn(async move {
                    for w in waits {
                        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
                    }
                    let _ = done.send(());
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<RouterMsg>,
        event: SupervisionEvent,
        state: &mut RouterState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let (id, failed) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(err.to_string())),
            _ => return Ok(()),
        };
        if let Some(k) = state.by_id.remove(&id) {
            if let Some(reason) = failed {
                metrics::counter!("troupe_cluster_entity_failures_total").increment(1);
                tracing::warn!(kind = %k.0, key = %k.1, reason, "sharding: an entity failed; respawned on its next message");
            }
            if state.entities.get(&k).is_some_and(|h| h.actor.get_id() == id) {
                state.entities.remove(&k);
            }
        }
        Ok(())
    }
}

impl Router {
    #[allow(clippy::too_many_arguments, reason = "one delivery's parts")]
    async fn deliver(
        &self,
        myself: &ActorRef<RouterMsg>,
        state: &mut RouterState,
        kind: String,
        key: String,
        shard: u32,
        payload: Vec<u8>,
        reply: Reply,
    ) {
        let Some(token) = self.table.token(shard) else {
            let _ = reply
                .send(Err(ClusterError::ShardUnavailable { shard, reason: format!("not held by {}", self.node_id) }));
            return;
        };
        let k = (kind, key);
        if let Some(h) = state.entities.get(&k)
            && h.token != token
        {
            // Hosted under an older lease of the shard: that incarnation must not act any more.
            let _ = h.actor.send_message(EntityMsg::Stop { checkpoint: false, done: oneshot::channel().0 });
            state.by_id.remove(&h.actor.get_id());
            state.entities.remove(&k);
        }
        if !state.entities.contains_key(&k) {
            let Some(factory) = self.kinds.get(&k.0) else {
                let _ = reply.send(Err(ClusterError::UnknownKind(k.0)));
                return;
            };
            let ctx = EntityContext {
                kind: k.0.clone(),
                key: k.1.clone(),
                shard,
                token,
                node_id: self.node_id.clone(),
                store: self.store.clone(),
            };
            match Actor::spawn_linked(None, EntityActor { factory, ctx }, (), myself.get_cell()).await {
                Ok((actor, _)) => {
                    metrics::counter!("troupe_cluster_entity_starts_total").increment(1);
                    state.by_id.insert(actor.get_id(), k.clone());
                    state.entities.insert(k.clone(), Hosted { shard, token, actor });
                }
                Err(e) => {
                    let _ = reply.send(Err(ClusterError::Entity(format!("cannot start the entity: {e}"))));
                    return;
                }
            }
        }
        if let Some(h) = state.entities.get(&k) {
            // If the entity stopped meanwhile, the dropped reply tells the caller (retryable).
            let _ = h.actor.send_message(EntityMsg::Handle { payload, reply });
        }
    }
}

/// Messages of an entity actor (local only).
pub(super) enum EntityMsg {
    Handle { payload: Vec<u8>, reply: Reply },
    Stop { checkpoint: bool, done: oneshot::Sender<()> },
}

impl ractor::Message for EntityMsg {}

struct EntityActor {
    factory: Arc<dyn EntityFactory>,
    ctx: EntityContext,
}

impl Actor for EntityActor {
    type Msg = EntityMsg;
    type State = Option<Box<dyn Entity>>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<EntityMsg>,
        (): (),
    ) -> std::result::Result<Option<Box<dyn Entity>>, ActorProcessingErr> {
        // Created on the first message, in this actor's own task: the router never waits for a load.
        Ok(None)
    }

    async fn handle(
        &self,
        myself: ActorRef<EntityMsg>,
        msg: EntityMsg,
        state: &mut Option<Box<dyn Entity>>,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            EntityMsg::Handle { payload, reply } => {
                if state.is_none() {
                    match self.factory.create(&self.ctx).await {
                        Ok(entity) => *state = Some(entity),
                        Err(e) => {
                            let fenced = matches!(e, ClusterError::Fenced(_));
                            let _ = reply.send(Err(if fenced { unavailable_after_fence(&self.ctx) } else { e }));
                            myself.stop(Some("entity could not start".to_owned()));
                            return Ok(());
                        }
                    }
                }
                let Some(entity) = state.as_mut() else { return Ok(()) };
                let answer = entity.handle(&self.ctx, payload).await;
                if matches!(answer, Err(ClusterError::Fenced(_))) {
                    // A newer owner has the state: this one must stop acting.
                    let _ = reply.send(Err(unavailable_after_fence(&self.ctx)));
                    myself.stop(Some("fenced off".to_owned()));
                    return Ok(());
                }
                let _ = reply.send(answer);
            }
            EntityMsg::Stop { checkpoint, done } => {
                if checkpoint
                    && let Some(entity) = state.as_mut()
                    && let Err(e) = entity.checkpoint(&self.ctx).await
                {
                    tracing::warn!(kind = %self.ctx.kind, key = %self.ctx.key, error = %e, "sharding: checkpoint failed");
                }
                *state = None;
                myself.stop(None);
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

fn unavailable_after_fence(ctx: &EntityContext) -> ClusterError {
    ClusterError::ShardUnavailable {
        shard: ctx.shard,
        reason: format!("{} lost the shard (a newer owner has the state)", ctx.node_id),
    }
}
