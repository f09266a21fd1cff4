#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use troupe_actors::{Backoff, ChildSpec, Registry, RootHandle, Status, Supervisor, SupervisorSpec};

use super::*;
use crate::auth::{LoginRequest, RegisterRequest};
use crate::common::Ctx;
use crate::content::{ContentMsg, FeedQuery, NewContent};
use crate::testkit::{Fixture, PASSWORD, fixture};

async fn start(f: &Fixture) -> (RootHandle, Clients) {
    let registry = Registry::new();
    let spec = SupervisorSpec::new("troupe")
        .backoff(Backoff::NONE)
        .child(ChildSpec::supervisor(f.svc.supervisor_spec().backoff(Backoff::NONE)));
    let root = Supervisor::start_root(spec, registry.clone()).await.unwrap();
    let clients = Clients::from_registry(&registry).unwrap();
    (root, clients)
}

fn reg(email: &str) -> RegisterRequest {
    RegisterRequest { email: email.into(), password: PASSWORD.into(), display_name: email.into() }
}

async fn login(clients: &Clients, email: &str) -> crate::TokenPair {
    clients.auth.login(Ctx::anonymous(), LoginRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap()
}

#[tokio::test]
async fn services_run_under_the_supervisor_and_answer_through_clients() {
    let f = fixture().await;
    let (root, clients) = start(&f).await;
    assert_eq!(clients.users.service().path(), "/troupe/services/users");

    // Register → login → verify, as the gateway will.
    let alice = clients.auth.register(Ctx::anonymous(), reg("alice@example.com")).await.unwrap();
    let bob = clients.auth.register(Ctx::anonymous(), reg("bob@example.com")).await.unwrap();
    let tokens = f.svc.tokens();
    let alice_ctx = Ctx::user(tokens.verify(&login(&clients, "alice@example.com").await.access_token).unwrap());
    let bob_ctx = Ctx::user(tokens.verify(&login(&clients, "bob@example.com").await.access_token).unwrap());
    assert_eq!(alice_ctx.principal().unwrap().user_id, alice.id);

    // Users and content through their actors.
    assert_eq!(clients.users.me(alice_ctx.clone()).await.unwrap().id, alice.id);
    clients.users.follow(alice_ctx.clone(), bob.id.clone()).await.unwrap();
    let post = NewContent { title: "Hi".into(), body: "from bob".into(), tags: vec![] };
    let item = clients.content.create(bob_ctx.clone(), post).await.unwrap();
    assert_eq!(clients.content.get(alice_ctx.clone(), item.id.clone()).await.unwrap(), item);
    let feed = clients.content.feed(alice_ctx.clone(), FeedQuery::default()).await.unwrap();
    assert_eq!(feed.items, vec![item.clone()]);

    // Domain errors pass through unchanged.
    let e = clients.users.get(alice_ctx.clone(), crate::common::new_id()).await.unwrap_err();
    assert_eq!(e.kind(), "not_found");
    let e = clients.content.delete(alice_ctx.clone(), item.id.clone()).await.unwrap_err();
    assert_eq!(e.kind(), "forbidden");
    let e = clients.users.list(alice_ctx.clone(), Default::default()).await.unwrap_err();
    assert_eq!(e.kind(), "forbidden");

    assert!(root.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_killed_service_is_restarted_and_its_client_keeps_working() {
    let f = fixture().await;
    let (root, clients) = start(&f).await;
    let (_, p) = f.user("k@example.com").await;
    let ctx = Ctx::user(p);
    let item = clients.content.create(ctx.clone(), NewContent { title: "t".into(), body: "b".into(), tags: vec![] });
    let item = item.await.unwrap();
    let registry = root.registry().clone();
    let before = registry.actor_ref::<ContentMsg>(CONTENT_SERVICE).unwrap().get_id();
    registry.actor_ref::<ContentMsg>(CONTENT_SERVICE).unwrap().kill();
    // While it restarts, calls fail fast with a retryable error (reads may still be answered until the
    // supervisor has seen the exit); afterwards they succeed again, from the new incarnation.
    let slot = registry.slot(CONTENT_SERVICE).unwrap();
    let mut answered = None;
    for _ in 0..200 {
        let restarted = slot.restarts() >= 1 && slot.status() == Status::Running;
        match clients.content.get(ctx.clone(), item.id.clone()).await {
            Ok(got) if restarted => {
                answered = Some(got);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => {
                assert!(e.retry_after().is_some() || e.kind() == "unavailable", "{e:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(answered, Some(item));
    assert_eq!(slot.status(), Status::Running);
    assert_ne!(registry.actor_ref::<ContentMsg>(CONTENT_SERVICE).unwrap().get_id(), before);
    assert!(slot.restarts() >= 1);
    assert!(root.shutdown(Duration::from_secs(5)).await);
}

/// A login waiting for the password hasher does not hold up the auth actor's mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_login_does_not_block_other_auth_calls() {
    let f = fixture().await;
    let (root, clients) = start(&f).await;
    f.user("slow@example.com").await;
    // Take every hashing permit: logins now wait.
    let permits = std::sync::Arc::clone(f.svc.auth.hasher().permits());
    let held = permits.acquire_many(2).await.unwrap();
    let slow = {
        let clients = clients.clone();
        tokio::spawn(async move { login(&clients, "slow@example.com").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!slow.is_finished());
    // Other requests to the same actor are served meanwhile.
    tokio::time::timeout(Duration::from_secs(2), clients.auth.logout(Ctx::anonymous(), "0".repeat(64)))
        .await
        .expect("logout answered while a login is stalled")
        .unwrap();
    drop(held);
    let pair = tokio::time::timeout(Duration::from_secs(5), slow).await.unwrap().unwrap();
    assert!(f.svc.tokens().verify(&pair.access_token).is_ok());
    assert!(root.shutdown(Duration::from_secs(5)).await);
}
