#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use troupe_storage::Key;

use super::*;
use crate::events::DomainEvent;
use crate::policy::Principal;
use crate::testkit::{ADMIN_EMAIL, PASSWORD, fixture};

fn reg(email: &str, password: &str, name: &str) -> RegisterRequest {
    RegisterRequest { email: email.into(), password: password.into(), display_name: name.into() }
}

fn anon() -> Ctx {
    Ctx::anonymous()
}

#[tokio::test]
async fn register_writes_user_email_index_event_and_outbox_together() {
    let f = fixture().await;
    let ctx = Ctx::anonymous().with_traceparent(Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()));
    let user = f.svc.auth.register(&ctx, reg("  Ada@Example.COM ", PASSWORD, " Ada ")).await.unwrap();
    assert_eq!(user.email.as_deref(), Some("ada@example.com"));
    assert_eq!(user.display_name, "Ada");
    assert_eq!(user.roles, vec![Role::User]);
    let idx = f.store.get(USER_EMAILS, &Key::from("ada@example.com"), &Key::empty()).await.unwrap().unwrap();
    assert_eq!(idx.value, user.id.as_bytes());
    // The password is stored as an argon2id PHC string, never in clear.
    let (_, rec) = load_user(&f.store, &user.id).await.unwrap().unwrap();
    assert!(rec.password_hash.starts_with("$argon2id$"));
    assert!(!rec.password_hash.contains(PASSWORD));
    let created = f.outbox_of(crate::events::USER_CREATED).await;
    assert_eq!(created.len(), 1);
    let ev: &DomainEvent = &created[0];
    assert_eq!((ev.aggregate_id.as_str(), ev.version), (user.id.as_str(), 1));
    assert_eq!(ev.payload["email"], "ada@example.com");
    assert_eq!(ev.payload["display_name"], "Ada");
    assert_eq!(ev.traceparent, ctx.traceparent);
    assert_eq!(f.events(&crate::common::user_log(&user.id)).await, created);
}

#[tokio::test]
async fn login_refresh_rotation_and_logout() {
    let f = fixture().await;
    let (user, _) = f.user("bob@example.com").await;
    let pair = f.login("BOB@example.com").await;
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 15 * 60);
    let p = f.svc.tokens().verify(&pair.access_token).unwrap();
    assert_eq!(p, Principal::new(user.id.clone(), vec![Role::User]));
    // Only the digest is stored.
    assert!(
        f.store.get(REFRESH_TOKENS, &Key::from(pair.refresh_token.as_str()), &Key::empty()).await.unwrap().is_none()
    );
    assert!(
        f.store
            .get(REFRESH_TOKENS, &Key::from(token_digest(&pair.refresh_token)), &Key::empty())
            .await
            .unwrap()
            .is_some()
    );

    // Rotation: a new refresh token each time; the old one is spent.
    let second = f.svc.auth.refresh(&anon(), &pair.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, pair.refresh_token);
    assert_eq!(f.svc.tokens().verify(&second.access_token).unwrap().user_id, user.id);
    let third = f.svc.auth.refresh(&anon(), &second.refresh_token).await.unwrap();
    // (Replaying `second` now would revoke this family: see the reuse test.)

    // Logout revokes; logging out twice is fine.
    let session = f.login("bob@example.com").await;
    f.svc.auth.logout(&anon(), &session.refresh_token).await.unwrap();
    f.svc.auth.logout(&anon(), &session.refresh_token).await.unwrap();
    assert_eq!(f.svc.auth.refresh(&anon(), &session.refresh_token).await.unwrap_err().kind(), "unauthorized");
    // Other sessions (families) are not affected.
    let fourth = f.svc.auth.refresh(&anon(), &third.refresh_token).await.unwrap();
    f.svc.auth.logout(&anon(), &fourth.refresh_token).await.unwrap();
    // Garbage is refused without a panic.
    for bad in ["", "x", &"z".repeat(64), &"a".repeat(10_000)] {
        assert_eq!(f.svc.auth.refresh(&anon(), bad).await.unwrap_err().kind(), "unauthorized");
        f.svc.auth.logout(&anon(), bad).await.unwrap();
    }
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_its_family() {
    let f = fixture().await;
    f.user("victim@example.com").await;
    let stolen = f.login("victim@example.com").await;
    let other_session = f.login("victim@example.com").await;
    // The legitimate client rotates; the thief later replays the old token.
    let current = f.svc.auth.refresh(&anon(), &stolen.refresh_token).await.unwrap();
    assert_eq!(f.svc.auth.refresh(&anon(), &stolen.refresh_token).await.unwrap_err().kind(), "unauthorized");
    // The whole family is dead, including the newest token.
    assert_eq!(f.svc.auth.refresh(&anon(), &current.refresh_token).await.unwrap_err().kind(), "unauthorized");
    // Another login of the same user is a different family and still works.
    f.svc.auth.refresh(&anon(), &other_session.refresh_token).await.unwrap();
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_yield_one_winner() {
    let f = fixture().await;
    f.user("race@example.com").await;
    let pair = f.login("race@example.com").await;
    let auth = std::sync::Arc::clone(&f.svc.auth);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (auth, token) = (std::sync::Arc::clone(&auth), pair.refresh_token.clone());
            tokio::spawn(async move { auth.refresh(&Ctx::anonymous(), &token).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.kind(), "unauthorized"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn refresh_token_expires() {
    let f = fixture().await;
    f.user("exp@example.com").await;
    let pair = f.login("exp@example.com").await;
    f.advance(Duration::from_secs(30 * 24 * 3600 + 1));
    assert_eq!(f.svc.auth.refresh(&anon(), &pair.refresh_token).await.unwrap_err().kind(), "unauthorized");
}

#[tokio::test]
async fn refresh_fails_once_the_user_is_deleted() {
    let f = fixture().await;
    let (_, p) = f.user("gone@example.com").await;
    let pair = f.login("gone@example.com").await;
    f.svc.users.delete(&Ctx::user(p.clone()), &p.user_id).await.unwrap();
    assert_eq!(f.svc.auth.refresh(&anon(), &pair.refresh_token).await.unwrap_err().kind(), "unauthorized");
    let req = LoginRequest { email: "gone@example.com".into(), password: PASSWORD.into() };
    assert_eq!(f.svc.auth.login(&anon(), req).await.unwrap_err().kind(), "unauthorized");
    // Its still-valid access token can no longer write.
    let (other, _) = f.user("still-here@example.com").await;
    let ctx = Ctx::user(p);
    assert_eq!(f.svc.users.follow(&ctx, &other.id).await.unwrap_err().kind(), "unauthorized");
    let post = crate::content::NewContent { title: "t".into(), body: "b".into(), tags: vec![] };
    assert_eq!(f.svc.content.create(&ctx, post).await.unwrap_err().kind(), "unauthorized");
}

#[tokio::test]
async fn bad_credentials_all_look_the_same() {
    let f = fixture().await;
    f.user("carol@example.com").await;
    let attempts = [
        ("carol@example.com", "wrong password!"),
        ("nobody@example.com", PASSWORD),
        ("not-an-email", PASSWORD),
        ("carol@example.com", ""),
    ];
    let mut messages = Vec::new();
    for (email, password) in attempts {
        let e = f.svc.auth.login(&anon(), LoginRequest { email: email.into(), password: password.into() }).await;
        let e = e.unwrap_err();
        assert_eq!(e.kind(), "unauthorized");
        messages.push(e.to_string());
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let huge = "p".repeat(MAX_PASSWORD_CHARS + 1);
    let e = f.svc.auth.login(&anon(), LoginRequest { email: "carol@example.com".into(), password: huge }).await;
    assert_eq!(e.unwrap_err().kind(), "unauthorized");
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_case_insensitively() {
    let f = fixture().await;
    f.user("dup@example.com").await;
    let e = f.svc.auth.register(&anon(), reg("DUP@Example.com", PASSWORD, "Other")).await.unwrap_err();
    assert_eq!(e, ServiceError::Conflict { reason: "email already registered" });
    assert_eq!(f.outbox_of(crate::events::USER_CREATED).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_with_one_email_have_exactly_one_winner() {
    let f = fixture().await;
    let auth = std::sync::Arc::clone(&f.svc.auth);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let auth = std::sync::Arc::clone(&auth);
            tokio::spawn(async move {
                auth.register(&Ctx::anonymous(), reg("same@example.com", PASSWORD, &format!("racer {i}"))).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(u) => winners.push(u),
            Err(e) => assert_eq!(e.kind(), "conflict", "{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let idx = f.store.get(USER_EMAILS, &Key::from("same@example.com"), &Key::empty()).await.unwrap().unwrap();
    assert_eq!(idx.value, winners[0].id.as_bytes());
    let created = f.outbox_of(crate::events::USER_CREATED).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].aggregate_id, winners[0].id);
    // The losers left nothing behind: one directory row.
    let dir = f.store.scan(USER_DIRECTORY, &Key::empty(), &troupe_storage::Scan::all()).await.unwrap();
    assert_eq!(dir.rows.len(), 1);
}

#[tokio::test]
async fn admin_emails_grant_admin() {
    let f = fixture().await;
    let (admin, _) = f.admin().await;
    assert_eq!(admin.roles, vec![Role::User, Role::Admin]);
    let pair = f.login(&ADMIN_EMAIL.to_uppercase()).await;
    assert!(f.svc.tokens().verify(&pair.access_token).unwrap().is_admin());
    let (plain, _) = f.user("plain@example.com").await;
    assert_eq!(plain.roles, vec![Role::User]);
}

#[tokio::test]
async fn registration_input_is_validated() {
    let f = fixture().await;
    let cases = [
        (reg("no-at-sign", PASSWORD, "x"), "email"),
        (reg("a@b", PASSWORD, "x"), "email"),
        (reg("a b@example.com", PASSWORD, "x"), "email"),
        (reg("@example.com", PASSWORD, "x"), "email"),
        (reg(&format!("{}@example.com", "a".repeat(250)), PASSWORD, "x"), "email"),
        (reg("ok@example.com", "short", "x"), "password"),
        (reg("ok@example.com", &"p".repeat(129), "x"), "password"),
        (reg("ok@example.com", PASSWORD, "   "), "display_name"),
        (reg("ok@example.com", PASSWORD, &"n".repeat(65)), "display_name"),
        (reg("ok@example.com", PASSWORD, "bell\u{7}"), "display_name"),
    ];
    for (req, field) in cases {
        match f.svc.auth.register(&anon(), req.clone()).await {
            Err(ServiceError::Invalid { field: got, .. }) => assert_eq!(got, field, "{req:?}"),
            other => panic!("{req:?}: {other:?}"),
        }
    }
    assert!(f.outbox().await.is_empty());
}

#[test]
fn request_bodies_reject_unknown_fields() {
    let e =
        serde_json::from_str::<RegisterRequest>(r#"{"email":"a@b.c","password":"x","display_name":"y","admin":true}"#);
    assert!(e.is_err());
    let ok = serde_json::from_str::<LoginRequest>(r#"{"email":"a@b.c","password":"x"}"#);
    assert!(ok.is_ok());
}

#[tokio::test]
async fn logout_revokes_the_sessions_access_tokens_and_only_them() {
    let f = fixture().await;
    f.user("sid@example.com").await;
    let a = f.login("sid@example.com").await;
    let b = f.login("sid@example.com").await;
    let tokens = f.svc.tokens();
    let sid_a = tokens.verify_claims(&a.access_token).unwrap().sid.unwrap();
    assert_ne!(Some(sid_a.clone()), tokens.verify_claims(&b.access_token).unwrap().sid);
    // Refresh keeps the session: the new access token carries the same sid.
    let a2 = f.svc.auth.refresh(&anon(), &a.refresh_token).await.unwrap();
    assert_eq!(tokens.verify_claims(&a2.access_token).unwrap().sid.as_deref(), Some(sid_a.as_str()));

    f.svc.auth.logout(&anon(), &a2.refresh_token).await.unwrap();
    assert_eq!(tokens.verify(&a.access_token).unwrap_err(), crate::AuthError::Revoked);
    assert_eq!(tokens.verify(&a2.access_token).unwrap_err(), crate::AuthError::Revoked);
    // The other login is untouched.
    assert!(tokens.verify(&b.access_token).is_ok());
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_sessions_access_tokens() {
    let f = fixture().await;
    f.user("reuse-sid@example.com").await;
    let first = f.login("reuse-sid@example.com").await;
    let second = f.svc.auth.refresh(&anon(), &first.refresh_token).await.unwrap();
    // Replaying the redeemed token: the family (session) is revoked.
    assert!(f.svc.auth.refresh(&anon(), &first.refresh_token).await.is_err());
    assert_eq!(f.svc.tokens().verify(&second.access_token).unwrap_err(), crate::AuthError::Revoked);
}

#[tokio::test]
async fn revoked_sessions_are_reloaded_from_the_store_after_a_restart() {
    let f = fixture().await;
    f.user("restart-sid@example.com").await;
    let gone = f.login("restart-sid@example.com").await;
    let live = f.login("restart-sid@example.com").await;
    let (sid_gone, sid_live) = (sid_of(&f, &gone), sid_of(&f, &live));
    f.svc.auth.logout(&anon(), &gone.refresh_token).await.unwrap();

    // A new process: same store and key, empty in-memory set.
    let key = JwtKey::Hs256 { secret: vec![5; 32] };
    let settings = AuthSettings { key, ..crate::testkit::settings() };
    let before = Auth::new(f.store.clone(), settings.clone()).unwrap();
    let s_gone = before.tokens().issue_for_session("u", &[Role::User], &sid_gone).unwrap().token;
    let s_live = before.tokens().issue_for_session("u", &[Role::User], &sid_live).unwrap().token;
    assert!(before.tokens().verify(&s_gone).is_ok(), "nothing loaded yet");
    assert_eq!(before.load_revoked_sessions().await.unwrap(), 1);
    assert_eq!(before.tokens().verify(&s_gone).unwrap_err(), crate::AuthError::Revoked);
    assert!(before.tokens().verify(&s_live).is_ok());

    // Once every access token of the session has expired the record is no longer loaded.
    f.clock.advance(settings.access_ttl + Duration::from_secs(crate::tokens::LEEWAY_SECS + 2));
    let later = Auth::new(f.store.clone(), settings).unwrap();
    assert_eq!(later.load_revoked_sessions().await.unwrap(), 0);
}

fn sid_of(f: &crate::testkit::Fixture, pair: &TokenPair) -> String {
    f.svc.tokens().verify_claims(&pair.access_token).unwrap().sid.unwrap()
}
