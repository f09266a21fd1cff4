#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashSet;

use troupe_storage::{Key, Scan};

use super::*;
use crate::events::USER_CREATED;
use crate::testkit::{ctx, fixture};

fn kind<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

#[tokio::test]
async fn get_and_me_show_email_only_to_self_and_admin() {
    let f = fixture().await;
    let (alice, pa) = f.user("alice@example.com").await;
    let (_, pb) = f.user("bob@example.com").await;
    let (_, padmin) = f.admin().await;
    let users = &f.svc.users;
    assert_eq!(users.me(&ctx(&pa)).await.unwrap().email.as_deref(), Some("alice@example.com"));
    assert_eq!(users.get(&ctx(&pa), &alice.id).await.unwrap(), alice);
    let seen_by_bob = users.get(&ctx(&pb), &alice.id).await.unwrap();
    assert_eq!(seen_by_bob.email, None);
    assert_eq!(seen_by_bob.display_name, "alice");
    assert_eq!(users.get(&ctx(&padmin), &alice.id).await.unwrap().email.as_deref(), Some("alice@example.com"));
    assert_eq!(kind(users.get(&Ctx::anonymous(), &alice.id).await), "unauthorized");
    assert_eq!(kind(users.me(&Ctx::anonymous()).await), "unauthorized");
    assert_eq!(kind(users.get(&ctx(&pa), &crate::common::new_id()).await), "not_found");
    assert_eq!(kind(users.get(&ctx(&pa), "not-an-id").await), "invalid");
}

/// Self, another user and an admin against every owner-scoped user operation.
#[tokio::test]
async fn rbac_matrix_for_user_operations() {
    let f = fixture().await;
    let (_, padmin) = f.admin().await;
    let users = &f.svc.users;
    let patch = || UserPatch { display_name: Some("renamed".into()) };
    for (who, expected) in [("self", "ok"), ("other", "forbidden"), ("admin", "ok")] {
        let (target, pt) = f.user(&format!("target-{who}@example.com")).await;
        let (_, po) = f.user(&format!("other-{who}@example.com")).await;
        let caller = match who {
            "self" => pt.clone(),
            "other" => po.clone(),
            _ => padmin.clone(),
        };
        assert_eq!(kind(users.update(&ctx(&caller), &target.id, patch()).await), expected, "patch by {who}");
        assert_eq!(kind(users.delete(&ctx(&caller), &target.id).await), expected, "delete by {who}");
        let list = users.list(&ctx(&caller), UserQuery::default()).await;
        assert_eq!(kind(list), if who == "admin" { "ok" } else { "forbidden" }, "list by {who}");
    }
    let anyone = crate::common::new_id();
    assert_eq!(kind(users.update(&Ctx::anonymous(), &anyone, patch()).await), "unauthorized");
    assert_eq!(kind(users.delete(&Ctx::anonymous(), &anyone).await), "unauthorized");
    assert_eq!(kind(users.list(&Ctx::anonymous(), UserQuery::default()).await), "unauthorized");
}

#[tokio::test]
async fn patch_updates_row_and_directory_and_emits_one_event() {
    let f = fixture().await;
    let (u, p) = f.user("pat@example.com").await;
    let (_, padmin) = f.admin().await;
    f.advance(std::time::Duration::from_secs(1));
    let patched = f.svc.users.update(&ctx(&p), &u.id, UserPatch { display_name: Some(" Pat ".into()) }).await.unwrap();
    assert_eq!(patched.display_name, "Pat");
    assert!(patched.updated_at > u.updated_at);
    // Nothing to change: no event.
    f.svc.users.update(&ctx(&p), &u.id, UserPatch { display_name: Some("Pat".into()) }).await.unwrap();
    f.svc.users.update(&ctx(&p), &u.id, UserPatch::default()).await.unwrap();
    let events = f.events(&crate::common::user_log(&u.id)).await;
    let kinds: Vec<_> = events.iter().map(|e| (e.kind.as_str(), e.version)).collect();
    assert_eq!(kinds, [(USER_CREATED, 1), (crate::events::USER_UPDATED, 2)]);
    assert_eq!(events[1].payload["fields"], serde_json::json!(["display_name"]));
    let listed = f.svc.users.list(&ctx(&padmin), UserQuery { q: Some("pat".into()), ..Default::default() }).await;
    assert_eq!(listed.unwrap().items.iter().map(|u| u.display_name.as_str()).collect::<Vec<_>>(), ["Pat"]);
    let bad = f.svc.users.update(&ctx(&p), &u.id, UserPatch { display_name: Some("".into()) }).await;
    assert_eq!(kind(bad), "invalid");
}

#[tokio::test]
async fn delete_removes_user_email_index_directory_and_edges() {
    let f = fixture().await;
    let (u, p) = f.user("del@example.com").await;
    let (v, pv) = f.user("friend@example.com").await;
    f.svc.users.follow(&ctx(&p), &v.id).await.unwrap();
    f.svc.users.follow(&ctx(&pv), &u.id).await.unwrap();
    f.svc.users.delete(&ctx(&p), &u.id).await.unwrap();
    assert_eq!(kind(f.svc.users.get(&ctx(&pv), &u.id).await), "not_found");
    assert_eq!(kind(f.svc.users.delete(&ctx(&p), &u.id).await), "not_found");
    assert!(f.store.get(USER_EMAILS, &Key::from("del@example.com"), &Key::empty()).await.unwrap().is_none());
    for (table, pk) in [(FOLLOWERS, &v.id), (FOLLOWING, &v.id), (FOLLOWERS, &u.id), (FOLLOWING, &u.id)] {
        let rows = f.store.scan(table, &Key::from(pk.as_str()), &Scan::all()).await.unwrap().rows;
        assert!(rows.is_empty(), "{table} of {pk}");
    }
    let deleted = f.outbox_of(USER_DELETED).await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].payload, serde_json::json!({ "user_id": u.id }));
    // The email is free again.
    let (again, _) = f.user("del@example.com").await;
    assert_ne!(again.id, u.id);
}

#[tokio::test]
async fn follow_writes_both_tables_one_event_and_one_outbox_entry() {
    let f = fixture().await;
    let (a, pa) = f.user("a@example.com").await;
    let (b, _) = f.user("b@example.com").await;
    let before = f.outbox().await.len();
    f.svc.users.follow(&ctx(&pa), &b.id).await.unwrap();
    let followers = f.store.get(FOLLOWERS, &Key::from(b.id.as_str()), &Key::from(a.id.as_str())).await.unwrap();
    let following = f.store.get(FOLLOWING, &Key::from(a.id.as_str()), &Key::from(b.id.as_str())).await.unwrap();
    let (followers, following) = (followers.unwrap(), following.unwrap());
    assert_eq!(followers.value, following.value);
    assert_eq!(u64::from_be_bytes(followers.value.clone().try_into().unwrap()), f.store.now_ms());
    let outbox = f.outbox().await;
    assert_eq!(outbox.len(), before + 1);
    let (topic, ev) = outbox.last().unwrap();
    assert_eq!(topic, USER_FOLLOWED);
    assert_eq!(ev.aggregate_id, a.id);
    assert_eq!(ev.payload, serde_json::json!({ "follower_id": a.id, "followed_id": b.id }));
    let log = f.events(&crate::common::user_log(&a.id)).await;
    assert_eq!(log.last().unwrap(), ev);

    // Idempotent: no second event.
    f.svc.users.follow(&ctx(&pa), &b.id).await.unwrap();
    assert_eq!(f.outbox().await.len(), before + 1);

    // Rules.
    assert_eq!(kind(f.svc.users.follow(&ctx(&pa), &a.id).await), "invalid");
    assert_eq!(kind(f.svc.users.follow(&ctx(&pa), &crate::common::new_id()).await), "not_found");
    assert_eq!(kind(f.svc.users.follow(&ctx(&pa), "nope").await), "invalid");
    assert_eq!(kind(f.svc.users.follow(&Ctx::anonymous(), &b.id).await), "unauthorized");

    // Unfollow removes both rows with one event; again is a no-op.
    f.svc.users.unfollow(&ctx(&pa), &b.id).await.unwrap();
    f.svc.users.unfollow(&ctx(&pa), &b.id).await.unwrap();
    assert!(f.store.get(FOLLOWERS, &Key::from(b.id.as_str()), &Key::from(a.id.as_str())).await.unwrap().is_none());
    assert!(f.store.get(FOLLOWING, &Key::from(a.id.as_str()), &Key::from(b.id.as_str())).await.unwrap().is_none());
    assert_eq!(f.outbox_of(USER_UNFOLLOWED).await.len(), 1);
    assert_eq!(kind(f.svc.users.unfollow(&ctx(&pa), &crate::common::new_id()).await), "not_found");
    let versions: Vec<u64> = f.events(&crate::common::user_log(&a.id)).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_follows_keep_the_event_log_gap_free() {
    let f = fixture().await;
    let (a, pa) = f.user("fan@example.com").await;
    let mut targets = Vec::new();
    for i in 0..4 {
        targets.push(f.user(&format!("star{i}@example.com")).await.0.id);
    }
    let users = std::sync::Arc::clone(&f.svc.users);
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let (users, pa, t) = (std::sync::Arc::clone(&users), pa.clone(), t.clone());
            tokio::spawn(async move { users.follow(&ctx(&pa), &t).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let versions: Vec<u64> = f.events(&crate::common::user_log(&a.id)).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(f.outbox_of(USER_FOLLOWED).await.len(), 4);
}

#[tokio::test]
async fn admin_search_matches_email_and_name_and_pages_without_gaps() {
    let f = fixture().await;
    let (_, padmin) = f.admin().await;
    let mut all = HashSet::new();
    for i in 0..23 {
        let (u, _) = f.user(&format!("user{i:02}@{}.example.com", if i % 3 == 0 { "red" } else { "blue" })).await;
        all.insert(u.id);
    }
    let list = |q: Option<&str>, limit: usize, cursor: Option<String>| {
        let query = UserQuery { q: q.map(Into::into), limit: Some(limit), cursor };
        let users = &f.svc.users;
        let c = ctx(&padmin);
        async move { users.list(&c, query).await.unwrap() }
    };
    // Unfiltered paging: every user (plus the admin) exactly once, in email order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(None, 4, cursor).await;
        assert!(page.items.len() <= 4);
        seen.extend(page.items.into_iter().map(|u| u.email.unwrap()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 24);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    // Substring of the email domain.
    let red = list(Some("RED.example"), 100, None).await;
    assert_eq!(red.items.len(), 8);
    assert!(red.next_cursor.is_none());
    // Prefix of the email.
    let prefix = list(Some("user1"), 100, None).await;
    assert_eq!(prefix.items.len(), 10);
    // Display name (the fixture uses the local part) — and paging a filtered list.
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(Some("ser2"), 1, cursor).await;
        names.extend(page.items.into_iter().map(|u| u.display_name));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(names, ["user20", "user21", "user22"]);
    let none = list(Some("zzz"), 10, None).await;
    assert!(none.items.is_empty() && none.next_cursor.is_none());
    let bad = f.svc.users.list(&ctx(&padmin), UserQuery { cursor: Some("xyz".into()), ..Default::default() }).await;
    assert_eq!(kind(bad), "invalid");
    let bad = f.svc.users.list(&ctx(&padmin), UserQuery { limit: Some(0), ..Default::default() }).await;
    assert_eq!(kind(bad), "invalid");
}

/// All-or-nothing: when one condition of the follow batch fails, neither table, the event log nor the
/// outbox changes.
#[tokio::test]
async fn a_failed_follow_batch_writes_nothing() {
    let f = fixture().await;
    let (a, pa) = f.user("atom@example.com").await;
    let (b, _) = f.user("bond@example.com").await;
    // A stray FOLLOWERS row (as if half a follow had been written) makes the batch's condition fail.
    f.store.put(FOLLOWERS, &Key::from(b.id.as_str()), &Key::from(a.id.as_str()), vec![0u8; 8]).await.unwrap();
    let outbox_before = f.outbox().await.len();
    let err = f.svc.users.follow(&ctx(&pa), &b.id).await.unwrap_err();
    assert_eq!(err.kind(), "conflict");
    assert!(f.store.get(FOLLOWING, &Key::from(a.id.as_str()), &Key::from(b.id.as_str())).await.unwrap().is_none());
    assert_eq!(f.outbox().await.len(), outbox_before);
    assert_eq!(f.store.event_version(&crate::common::user_log(&a.id)).await.unwrap(), 1);
}
