//! How the auth, users and content services run: each is a supervised ractor actor whose handler only
//! dispatches — it spawns one task per request that runs the operation (store I/O, password hashing on the
//! blocking pool) and answers the request's reply port, so a slow login never stalls the mailbox. The
//! `ServiceRef` in front of each actor bounds the requests in flight (admission limit), so the spawned
//! tasks are bounded too. A crash of the actor aborts its in-flight tasks (their callers get an error) and
//! the supervisor restarts it.
//!
//! [`DomainServices`] builds the three services over one store and hands the node a `SupervisorSpec`;
//! [`Clients`] finds them in the registry for the gateway.
//!
//! Collaborators: `troupe-actors` (`SupervisorSpec`, `ChildSpec`, `Registry`, `ServiceRef`), `auth`,
//! `users`, `content`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use tokio::task::JoinSet;
use troupe_actors::{ChildSpec, Registry, SupervisorSpec};
use troupe_storage::Store;

use crate::auth::{Auth, AuthActor, AuthClient, AuthSettings};
use crate::content::{Content, ContentActor, ContentClient};
use crate::error::Result;
use crate::tokens::Tokens;
use crate::users::{Users, UsersActor, UsersClient};

/// Registry name of the auth service.
pub const AUTH_SERVICE: &str = "auth";
/// Registry name of the users service.
pub const USERS_SERVICE: &str = "users";
/// Registry name of the content service.
pub const CONTENT_SERVICE: &str = "content";
/// Name of the supervisor [`DomainServices::supervisor_spec`] builds.
pub const SERVICES_SUPERVISOR: &str = "services";

/// How long a stopping service lets its in-flight requests finish before aborting them.
const DRAIN_ON_STOP: Duration = Duration::from_secs(1);

/// The in-flight request tasks of one service actor (its `State`).
#[derive(Default)]
pub struct Inflight {
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Inflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflight").field("tasks", &self.tasks.len()).finish()
    }
}

impl Inflight {
    /// Runs `work` in its own task and sends its result to `reply` (a caller that gave up is ignored).
    pub(crate) fn spawn_reply<T, F>(&mut self, service: &'static str, reply: RpcReplyPort<Result<T>>, work: F)
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.reap(service);
        self.tasks.spawn(async move {
            let outcome = work.await;
            if let Err(e) = &outcome
                && let Some(detail) = e.internal_detail()
            {
                tracing::error!(service, detail, "internal error");
            }
            // The caller may have timed out and dropped its port: nothing to do then.
            let _ = reply.send(outcome);
        });
    }

    /// Collects finished tasks (logging panics) so the set does not grow.
    fn reap(&mut self, service: &'static str) {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(service, "request task panicked");
            }
        }
    }

    /// Lets in-flight requests finish for a short while, then aborts the rest.
    pub(crate) async fn drain(&mut self) {
        let _ = tokio::time::timeout(DRAIN_ON_STOP, async { while self.tasks.join_next().await.is_some() {} }).await;
        self.tasks.abort_all();
    }

    /// Number of requests in flight.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when no request is in flight.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Runs a read-only operation on the caller's task against the service core `S` the actor's child spec
/// shares ([`ServiceRef::query`](troupe_actors::ServiceRef::query): same breaker, admission limit and
/// deadline as a call, without the mailbox hop and the per-request task), logging internal errors as
/// the actor path does.
pub(crate) async fn query<M, S, R, F, Fut>(svc: &troupe_actors::ServiceRef<M>, service: &'static str, f: F) -> Result<R>
where
    M: ractor::Message,
    S: Send + Sync + 'static,
    F: FnOnce(Arc<S>) -> Fut,
    Fut: Future<Output = Result<R>>,
{
    let outcome = svc.query(f).await?;
    if let Err(e) = &outcome
        && let Some(detail) = e.internal_detail()
    {
        tracing::error!(service, detail, "internal error");
    }
    outcome
}

/// The three domain services over one store, ready to be supervised.
#[derive(Clone, Debug)]
pub struct DomainServices {
    /// Registration, login, token refresh and logout.
    pub auth: Arc<Auth>,
    /// Profiles, admin directory, follows.
    pub users: Arc<Users>,
    /// Content, search and feeds.
    pub content: Arc<Content>,
}

impl DomainServices {
    /// Builds the services (fails on unusable key material or hash parameters).
    pub fn new(store: Store, settings: AuthSettings) -> Result<Self> {
        Ok(Self {
            auth: Arc::new(Auth::new(store.clone(), settings)?),
            users: Arc::new(Users::new(store.clone())),
            content: Arc::new(Content::new(store)),
        })
    }

    /// The token verifier the gateway checks bearer tokens with.
    pub fn tokens(&self) -> Tokens {
        self.auth.tokens().clone()
    }

    /// One child spec per service (permanent, named [`AUTH_SERVICE`], [`USERS_SERVICE`],
    /// [`CONTENT_SERVICE`]), for a node that adds them to a supervisor of its own. Users and content
    /// share their cores for reads ([`ChildSpec::local`]); writes go through the mailbox.
    pub fn child_specs(&self) -> Vec<ChildSpec> {
        vec![
            ChildSpec::new(AUTH_SERVICE, AuthActor::new(Arc::clone(&self.auth)), || ()),
            // Reads run on the caller's task against the shared cores (`ChildSpec::local`).
            ChildSpec::new(USERS_SERVICE, UsersActor::new(Arc::clone(&self.users)), || ())
                .local(Arc::clone(&self.users)),
            ChildSpec::new(CONTENT_SERVICE, ContentActor::new(Arc::clone(&self.content)), || ())
                .local(Arc::clone(&self.content)),
        ]
    }

    /// A one-for-one supervisor named [`SERVICES_SUPERVISOR`] over the three services (supervisor
    /// defaults for intensity, backoff, breaker and call limits; adjust the returned spec as needed).
    pub fn supervisor_spec(&self) -> SupervisorSpec {
        self.child_specs().into_iter().fold(SupervisorSpec::new(SERVICES_SUPERVISOR), SupervisorSpec::child)
    }
}

/// Typed clients of the three services, found in the registry (they survive restarts).
#[derive(Clone, Debug)]
pub struct Clients {
    /// Auth.
    pub auth: AuthClient,
    /// Users.
    pub users: UsersClient,
    /// Content.
    pub content: ContentClient,
}

impl Clients {
    /// Looks the services up by their registry names.
    pub fn from_registry(registry: &Registry) -> Result<Self> {
        Ok(Self {
            auth: AuthClient::new(registry.service(AUTH_SERVICE)?),
            users: UsersClient::new(registry.service(USERS_SERVICE)?),
            content: ContentClient::new(registry.service(CONTENT_SERVICE)?),
        })
    }
}

#[cfg(test)]
mod tests;
