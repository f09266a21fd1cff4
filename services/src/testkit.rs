//! Test fixtures shared by the service tests: a fjall store in a temp dir with a manual clock, fast
//! password hashing, registered users, and readers for the outbox and event logs.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use troupe_storage::{FjallBackend, ManualClock, Store};

use crate::auth::{LoginRequest, RegisterRequest};
use crate::common::Ctx;
use crate::events::DomainEvent;
use crate::password::HashParams;
use crate::policy::Principal;
use crate::runtime::DomainServices;
use crate::{AuthSettings, User};

/// The admin email in [`settings`].
pub(crate) const ADMIN_EMAIL: &str = "root@example.com";
/// The password every fixture user has.
pub(crate) const PASSWORD: &str = "correct horse battery";

/// A store, its manual clock (starting at the real time, since JWTs are checked against it) and the
/// temp dir keeping it alive.
pub(crate) struct Fixture {
    pub store: Store,
    pub clock: ManualClock,
    pub svc: DomainServices,
    _dir: tempfile::TempDir,
}

pub(crate) fn settings() -> AuthSettings {
    AuthSettings {
        admin_emails: vec![ADMIN_EMAIL.to_uppercase()],
        hash_params: HashParams::insecure_fast(),
        ..AuthSettings::default()
    }
}

pub(crate) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallBackend::open(dir.path().join("store")).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let clock = ManualClock::new(u64::try_from(now.as_millis()).unwrap());
    let store = Store::new(Arc::new(backend), Arc::new(clock.clone()));
    let svc = DomainServices::new(store.clone(), settings()).unwrap();
    Fixture { store, clock, svc, _dir: dir }
}

impl Fixture {
    /// Registers `email` (display name = its local part) and returns the user and its principal.
    pub async fn user(&self, email: &str) -> (User, Principal) {
        let name = email.split('@').next().unwrap().to_owned();
        let req = RegisterRequest { email: email.into(), password: PASSWORD.into(), display_name: name };
        let user = self.svc.auth.register(&Ctx::anonymous(), req).await.unwrap();
        let principal = Principal::new(user.id.clone(), user.roles.clone());
        (user, principal)
    }

    /// Registers the configured admin.
    pub async fn admin(&self) -> (User, Principal) {
        self.user(ADMIN_EMAIL).await
    }

    /// Logs in with the fixture password.
    pub async fn login(&self, email: &str) -> crate::TokenPair {
        let req = LoginRequest { email: email.into(), password: PASSWORD.into() };
        self.svc.auth.login(&Ctx::anonymous(), req).await.unwrap()
    }

    /// Every outbox entry (topic, decoded event), oldest first.
    pub async fn outbox(&self) -> Vec<(String, DomainEvent)> {
        let entries = self.store.pending_outbox(100_000).await.unwrap();
        entries
            .into_iter()
            .map(|e| {
                let ev: DomainEvent = serde_json::from_slice(&e.payload).unwrap();
                assert_eq!(e.topic, ev.kind, "outbox topic is the event type");
                (e.topic, ev)
            })
            .collect()
    }

    /// Outbox events of one type.
    pub async fn outbox_of(&self, kind: &str) -> Vec<DomainEvent> {
        self.outbox().await.into_iter().filter(|(t, _)| t == kind).map(|(_, e)| e).collect()
    }

    /// The event log of `log` (e.g. `user-<id>`), decoded.
    pub async fn events(&self, log: &str) -> Vec<DomainEvent> {
        let events = self.store.read_events(log, 1, 10_000).await.unwrap();
        events
            .into_iter()
            .map(|e| {
                let ev: DomainEvent = serde_json::from_slice(&e.payload).unwrap();
                assert_eq!(ev.version, e.version, "event carries its log version");
                ev
            })
            .collect()
    }

    /// Moves the store clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

pub(crate) fn ctx(p: &Principal) -> Ctx {
    Ctx::user(p.clone())
}
