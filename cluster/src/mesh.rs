//! The mesh: one ractor_cluster `NodeServer` per node (cookie auth, **Isolated** mode: we dial every
//! member ourselves from the membership table instead of letting ractor_cluster dial transitively, so
//! every dial is one we make and control), and one remotable actor, the pinger, that answers our
//! heartbeat pings.
//!
//! Pings are ractor remote *calls* with a deadline carrying our postcard envelopes; the pinger of every
//! connected peer is found through the process group [`PINGER_GROUP`], which ractor_cluster mirrors onto
//! every peer. An envelope that does not decode is counted (`troupe_cluster_decode_failures_total`) and
//! logged, and the call simply times out on the caller's side.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage, NodeSessionMessage};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use troupe_actors::envelope::Envelope;

use crate::error::{ClusterError, Result};

#[cfg(test)]
mod tests;

/// Process group every node's pinger joins.
pub(crate) const PINGER_GROUP: &str = "troupe.cluster.pinger";
const PING_KIND: &str = "cluster.ping";
const PONG_KIND: &str = "cluster.pong";
const PING_VARIANT: &str = "troupe.ping.v1";

/// A ping's body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PingBody {
    /// The pinging node.
    pub from: String,
    /// Its incarnation.
    pub from_incarnation: u64,
}

/// A ping's answer: who answered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PongBody {
    /// The answering node.
    pub node_id: String,
    /// Its current incarnation.
    pub incarnation: u64,
}

pub(crate) fn count_decode_failure(what: &'static str, reason: &str) {
    metrics::counter!("troupe_cluster_decode_failures_total", "what" => what).increment(1);
    tracing::warn!(what, reason, "dropping an undecodable cluster message");
}

/// Encodes a body in the versioned envelope.
pub(crate) fn seal<T: Serialize>(kind: &'static str, aggregate: &str, body: &T) -> Result<Vec<u8>> {
    let enc = |e: troupe_actors::envelope::EnvelopeError| ClusterError::Encode { what: kind, reason: e.to_string() };
    Envelope::seal(kind, aggregate, 1, body).map_err(enc)?.encode().map_err(enc)
}

/// Decodes an envelope of `kind`.
pub(crate) fn open<T: serde::de::DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T> {
    let dec = |reason: String| ClusterError::Decode { what: kind, reason };
    let env = Envelope::decode(bytes).map_err(|e| dec(e.to_string()))?;
    if env.kind != kind {
        return Err(dec(format!("unexpected kind {:?}", env.kind)));
    }
    env.open::<T>().map_err(|e| dec(e.to_string()))
}

/// The pinger's one message: a remote call with envelope bytes in and out.
pub(crate) enum PingerMsg {
    /// Answer with a pong envelope.
    Ping {
        /// Ping envelope bytes.
        request: Vec<u8>,
        /// Where the pong envelope goes.
        reply: RpcReplyPort<Vec<u8>>,
    },
}

impl ractor::Message for PingerMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            PingerMsg::Ping { request, reply } => {
                Ok(SerializedMessage::Call { variant: PING_VARIANT.to_owned(), args: request, reply, metadata: None })
            }
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Call { variant, args, reply, .. } if variant == PING_VARIANT => {
                Ok(PingerMsg::Ping { request: args, reply })
            }
            SerializedMessage::Call { variant, .. } | SerializedMessage::Cast { variant, .. } => {
                count_decode_failure("pinger message", &format!("unknown variant {variant:?}"));
                Err(BoxedDowncastErr)
            }
            SerializedMessage::CallReply(..) => {
                count_decode_failure("pinger message", "unexpected call reply");
                Err(BoxedDowncastErr)
            }
        }
    }
}

/// Answers pings with this node's id and current incarnation.
struct Pinger {
    node_id: String,
    incarnation: Arc<AtomicU64>,
}

impl Actor for Pinger {
    type Msg = PingerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<PingerMsg>, (): ()) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(PINGER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<PingerMsg>, msg: PingerMsg, (): &mut ()) -> Result<(), ActorProcessingErr> {
        let PingerMsg::Ping { request, reply } = msg;
        match open::<PingBody>(PING_KIND, &request) {
            Ok(_) => {
                let pong =
                    PongBody { node_id: self.node_id.clone(), incarnation: self.incarnation.load(Ordering::Acquire) };
                match seal(PONG_KIND, &self.node_id, &pong) {
                    Ok(bytes) => {
                        let _ = reply.send(bytes);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot encode a pong"),
                }
            }
            Err(e) => count_decode_failure("ping", &e.to_string()),
        }
        Ok(())
    }
}

/// How to start the mesh.
#[derive(Clone, Debug)]
pub(crate) struct MeshSettings {
    pub node_id: String,
    pub cookie: String,
    pub listen: SocketAddr,
    pub advertise_host: String,
    pub tls: Option<crate::tls::MeshTls>,
}

/// A running mesh.
pub(crate) struct Mesh {
    server: ActorRef<NodeServerMessage>,
    server_task: JoinHandle<()>,
    pinger: ActorRef<PingerMsg>,
    pinger_task: JoinHandle<()>,
    /// This node's incarnation as the pinger reports it.
    pub incarnation: Arc<AtomicU64>,
    tls: Option<crate::tls::MeshTls>,
}

/// Opens mesh connections (cheap to clone into a task).
#[derive(Clone)]
pub(crate) struct Dialer {
    server: ActorRef<NodeServerMessage>,
    tls: Option<crate::tls::MeshTls>,
}

impl Dialer {
    /// Connects to `addr` (TLS handshake included when configured); the cookie handshake continues in
    /// the background.
    pub async fn dial(&self, addr: &str) -> std::result::Result<(), String> {
        match &self.tls {
            None => ractor_cluster::client_connect(&self.server, addr).await.map_err(|e| e.to_string()),
            Some(tls) => {
                let name = crate::tls::server_name(addr).map_err(|e| e.to_string())?;
                ractor_cluster::client_connect_enc(&self.server, addr, tls.connector.clone(), name)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

impl Mesh {
    /// Starts the node server (listening on `listen`) and the pinger.
    pub async fn start(settings: &MeshSettings, incarnation: u64) -> Result<Mesh> {
        let server = NodeServer::new(
            settings.listen.port(),
            settings.cookie.clone(),
            settings.node_id.clone(),
            settings.advertise_host.clone(),
            Some(match &settings.tls {
                Some(tls) => ractor_cluster::IncomingEncryptionMode::Tls(tls.acceptor.clone()),
                None => ractor_cluster::IncomingEncryptionMode::Raw,
            }),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(settings.listen.ip());
        let (server, server_task) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| ClusterError::Mesh(format!("cannot listen on {}: {e}", settings.listen)))?;
        let incarnation = Arc::new(AtomicU64::new(incarnation));
        let pinger = Pinger { node_id: settings.node_id.clone(), incarnation: incarnation.clone() };
        let (pinger, pinger_task) = match Actor::spawn(None, pinger, ()).await {
            Ok(p) => p,
            Err(e) => {
                server.stop(None);
                return Err(ClusterError::Mesh(format!("cannot start the pinger: {e}")));
            }
        };
        Ok(Mesh { server, server_task, pinger, pinger_task, incarnation, tls: settings.tls.clone() })
    }

    /// A dialer for tasks: plain TCP, or TLS with this node's certificate when configured.
    pub fn dialer(&self) -> Dialer {
        Dialer { server: self.server.clone(), tls: self.tls.clone() }
    }

    /// Authenticated-or-authenticating sessions by peer node id.
    pub async fn sessions(&self) -> HashMap<String, Vec<ActorRef<NodeSessionMessage>>> {
        let mut out: HashMap<String, Vec<ActorRef<NodeSessionMessage>>> = HashMap::new();
        let got = self.server.call(NodeServerMessage::GetSessions, Some(Duration::from_millis(500))).await;
        if let Ok(ractor::rpc::CallResult::Success(sessions)) = got {
            for info in sessions.into_values() {
                if let Some(name) = info.peer_name.as_ref() {
                    let id = name.name.split('@').next().unwrap_or_default().to_owned();
                    out.entry(id).or_default().push(info.actor.clone());
                }
            }
        }
        out
    }

    /// The pingers of connected peers.
    pub fn remote_pingers(&self) -> Vec<ActorCell> {
        ractor::pg::get_members(&PINGER_GROUP.to_owned()).into_iter().filter(|c| !c.get_id().is_local()).collect()
    }

    /// Stops the node server (closing every session) and the pinger.
    pub async fn stop(self) {
        self.pinger.stop(None);
        self.server.stop(None);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pinger_task).await;
    }
}

/// Pings one peer's pinger; the pong and the round trip, or why not.
pub(crate) async fn ping(
    cell: ActorCell,
    from: &str,
    from_incarnation: u64,
    timeout: Duration,
) -> Result<(PongBody, Duration)> {
    let request = seal(PING_KIND, from, &PingBody { from: from.to_owned(), from_incarnation })?;
    let started = Instant::now();
    let answer =
        ractor::rpc::call::<PingerMsg, Vec<u8>, _>(&cell, |reply| PingerMsg::Ping { request, reply }, Some(timeout))
            .await;
    let rtt = started.elapsed();
    match answer {
        Ok(ractor::rpc::CallResult::Success(bytes)) => match open::<PongBody>(PONG_KIND, &bytes) {
            Ok(pong) => Ok((pong, rtt)),
            Err(e) => {
                count_decode_failure("pong", &e.to_string());
                Err(e)
            }
        },
        Ok(ractor::rpc::CallResult::Timeout) => Err(ClusterError::Mesh("ping timed out".to_owned())),
        Ok(ractor::rpc::CallResult::SenderError) => Err(ClusterError::Mesh("ping dropped".to_owned())),
        Err(e) => Err(ClusterError::Mesh(format!("ping not sent: {e}"))),
    }
}
