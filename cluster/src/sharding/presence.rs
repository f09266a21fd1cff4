//! The `presence` entity kind: per user, on which nodes they have WebSocket connections (and how
//! many). One entity per user id, living on the owner of the user's shard; every change is written
//! through (fenced) before it is acknowledged, so an acknowledged change survives the owner's crash.
//!
//! It is the binary's one built-in entity kind: small, honest state that has to be cluster-wide (a
//! user's connections are spread over nodes) and that operators can read and set through
//! `GET`/`POST /api/v1/cluster/presence/{user}`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Entity, EntityContext, EntityFactory, Sharding};
use crate::error::{ClusterError, Result};

/// The entity kind's name.
pub const PRESENCE_KIND: &str = "presence";

/// A message to a presence entity (postcard).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum PresenceMsg {
    /// The user opened a connection on `node`.
    Connected {
        /// The node.
        node: String,
    },
    /// The user closed a connection on `node`.
    Disconnected {
        /// The node.
        node: String,
    },
    /// Read only.
    Get,
}

/// Where a user is connected: node id → open connections.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceState {
    /// Node id → open connections (nodes with none are left out).
    pub nodes: BTreeMap<String, u32>,
}

/// A presence entity's answer: its state and where it lives.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceReply {
    /// The user.
    pub user: String,
    /// The state after the message.
    pub state: PresenceState,
    /// The node hosting the entity.
    pub owner: String,
    /// The user's shard.
    pub shard: u32,
    /// The fencing token the entity runs under.
    pub token: u64,
}

struct Presence {
    state: PresenceState,
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| ClusterError::Decode { what, reason: e.to_string() })
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| ClusterError::Encode { what, reason: e.to_string() })
}

impl Entity for Presence {
    fn handle<'a>(&'a mut self, ctx: &'a EntityContext, message: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let msg: PresenceMsg = decode("presence message", &message)?;
            let mut next = self.state.clone();
            match &msg {
                PresenceMsg::Connected { node } => *next.nodes.entry(node.clone()).or_default() += 1,
                PresenceMsg::Disconnected { node } => {
                    if let Some(n) = next.nodes.get_mut(node) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            next.nodes.remove(node);
                        }
                    }
                }
                PresenceMsg::Get => {}
            }
            if next != self.state {
                ctx.save(encode("presence state", &next)?).await?;
                self.state = next;
            }
            let reply = PresenceReply {
                user: ctx.key().to_owned(),
                state: self.state.clone(),
                owner: ctx.node_id().to_owned(),
                shard: ctx.shard(),
                token: ctx.token(),
            };
            encode("presence reply", &reply)
        })
    }
}

/// Makes presence entities (state loaded, and claimed, on first use).
#[derive(Clone, Copy, Debug, Default)]
pub struct PresenceFactory;

impl EntityFactory for PresenceFactory {
    fn create<'a>(&'a self, ctx: &'a EntityContext) -> BoxFuture<'a, Result<Box<dyn Entity>>> {
        Box::pin(async move {
            let state = match ctx.load().await? {
                Some(bytes) => decode("presence state", &bytes)?,
                None => PresenceState::default(),
            };
            Ok(Box::new(Presence { state }) as Box<dyn Entity>)
        })
    }
}

/// Sends `msg` to `user`'s presence entity and returns its answer.
pub async fn presence(sharding: &Sharding, user: &str, msg: &PresenceMsg, timeout: Duration) -> Result<PresenceReply> {
    let bytes = sharding.call(PRESENCE_KIND, user, encode("presence message", msg)?, timeout).await?;
    decode("presence reply", &bytes)
}
