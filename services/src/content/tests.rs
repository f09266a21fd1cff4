#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use troupe_storage::{Key, Scan};

use super::*;
use crate::policy::Principal;
use crate::testkit::{Fixture, ctx, fixture};

fn kind<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

fn new(title: &str, body: &str, tags: &[&str]) -> NewContent {
    NewContent { title: title.into(), body: body.into(), tags: tags.iter().map(|t| t.to_string()).collect() }
}

async fn post(f: &Fixture, p: &Principal, title: &str, body: &str, tags: &[&str]) -> ContentItem {
    f.advance(Duration::from_millis(1));
    f.svc.content.create(&ctx(p), new(title, body, tags)).await.unwrap()
}

async fn ids(f: &Fixture, p: &Principal, query: ContentQuery) -> Vec<String> {
    f.svc.content.list(&ctx(p), query).await.unwrap().items.into_iter().map(|c| c.id).collect()
}

fn by_word(q: &str) -> ContentQuery {
    ContentQuery { q: Some(q.into()), ..Default::default() }
}

fn by_tag(t: &str) -> ContentQuery {
    ContentQuery { tag: Some(t.into()), ..Default::default() }
}

/// Every index partition still holding a row for `id`, read straight from the store.
async fn index_rows_of(f: &Fixture, item: &ContentItem, words: &[&str], tags: &[&str]) -> usize {
    let mut parts = vec![(CONTENT_ALL, Key::empty()), (CONTENT_BY_AUTHOR, Key::from(item.author_id.as_str()))];
    parts.extend(words.iter().map(|w| (CONTENT_BY_WORD, Key::from(*w))));
    parts.extend(tags.iter().map(|t| (CONTENT_BY_TAG, Key::from(*t))));
    let mut n = 0;
    for (table, pk) in parts {
        let rows = f.store.scan(table, &pk, &Scan::all()).await.unwrap().rows;
        n += rows.iter().filter(|r| indexed_id(r).unwrap() == item.id).count();
    }
    n
}

#[test]
fn tokenizer_lowercases_dedupes_and_drops_noise() {
    let words: Vec<String> = tokenize("Hello, hello WORLD! a 42 x-ray Ünïcode — ok_go").into_iter().collect();
    assert_eq!(words, ["42", "go", "hello", "ok", "ray", "world", "ünïcode"]);
    assert!(tokenize(&"y".repeat(MAX_WORD_CHARS + 1)).is_empty());
}

#[tokio::test]
async fn crud_with_events_and_rbac() {
    let f = fixture().await;
    let (_, author) = f.user("author@example.com").await;
    let (_, other) = f.user("other@example.com").await;
    let (_, admin) = f.admin().await;
    let c = f.svc.content.create(&ctx(&author), new(" Hello ", "First body", &["News", "rust"])).await.unwrap();
    assert_eq!((c.title.as_str(), c.author_id.as_str()), ("Hello", author.user_id.as_str()));
    assert_eq!(c.tags, ["news", "rust"]);
    assert_eq!(f.svc.content.get(&ctx(&other), &c.id).await.unwrap(), c);
    assert_eq!(kind(f.svc.content.get(&Ctx::anonymous(), &c.id).await), "unauthorized");

    let patch = |t: &str| ContentPatch { title: Some(t.into()), ..Default::default() };
    assert_eq!(kind(f.svc.content.update(&ctx(&other), &c.id, patch("x")).await), "forbidden");
    assert_eq!(kind(f.svc.content.delete(&ctx(&other), &c.id).await), "forbidden");
    assert_eq!(f.svc.content.update(&ctx(&author), &c.id, patch("By author")).await.unwrap().title, "By author");
    assert_eq!(f.svc.content.update(&ctx(&admin), &c.id, patch("By admin")).await.unwrap().title, "By admin");
    // A patch that changes nothing emits nothing.
    f.svc.content.update(&ctx(&author), &c.id, patch("By admin")).await.unwrap();
    f.svc.content.delete(&ctx(&author), &c.id).await.unwrap();
    assert_eq!(kind(f.svc.content.get(&ctx(&author), &c.id).await), "not_found");
    assert_eq!(kind(f.svc.content.delete(&ctx(&author), &c.id).await), "not_found");
    assert_eq!(kind(f.svc.content.update(&ctx(&author), &c.id, patch("z")).await), "not_found");

    let events = f.events(&crate::common::content_log(&c.id)).await;
    let kinds: Vec<_> = events.iter().map(|e| (e.kind.as_str(), e.version)).collect();
    assert_eq!(kinds, [(CONTENT_CREATED, 1), (CONTENT_UPDATED, 2), (CONTENT_UPDATED, 3), (CONTENT_DELETED, 4)]);
    assert_eq!(
        events[0].payload,
        serde_json::json!({ "content_id": c.id, "author_id": author.user_id, "title": "Hello", "tags": ["news", "rust"] })
    );
    assert_eq!(events[1].payload["fields"], serde_json::json!(["title"]));
    assert_eq!(events[3].payload, serde_json::json!({ "content_id": c.id, "author_id": author.user_id }));
    let outbox: Vec<_> = f.outbox().await.into_iter().filter(|(_, e)| e.aggregate_id == c.id).map(|(_, e)| e).collect();
    assert_eq!(outbox, events, "each event is in the outbox once, with the same bytes");
}

#[tokio::test]
async fn input_is_validated() {
    let f = fixture().await;
    let (_, p) = f.user("v@example.com").await;
    let c = &f.svc.content;
    let cases = [
        (new("", "b", &[]), "title"),
        (new(&"t".repeat(MAX_TITLE_CHARS + 1), "b", &[]), "title"),
        (new("t", "", &[]), "body"),
        (new("t", &"b".repeat(MAX_BODY_CHARS + 1), &[]), "body"),
        (new("t", "b", &["bad tag"]), "tags"),
        (new("t", "b", &[&"x".repeat(MAX_TAG_CHARS + 1)]), "tags"),
        (new("t", "b", &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]), "tags"),
    ];
    for (n, field) in cases {
        match c.create(&ctx(&p), n.clone()).await {
            Err(ServiceError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{n:?}: {other:?}"),
        }
    }
    assert_eq!(kind(c.list(&ctx(&p), by_word("a !")).await), "invalid");
    assert_eq!(kind(c.list(&ctx(&p), by_tag("no spaces")).await), "invalid");
    let bad_author = ContentQuery { author: Some("x".into()), ..Default::default() };
    assert_eq!(kind(c.list(&ctx(&p), bad_author).await), "invalid");
    let bad_cursor = ContentQuery { cursor: Some("00ff".into()), ..Default::default() };
    assert_eq!(kind(c.list(&ctx(&p), bad_cursor).await), "invalid");
    assert_eq!(kind(c.get(&ctx(&p), "x").await), "invalid");
    assert!(serde_json::from_str::<NewContent>(r#"{"title":"t","body":"b","author_id":"x"}"#).is_err());
}

#[tokio::test]
async fn index_follows_patch_and_delete() {
    let f = fixture().await;
    let (_, p) = f.user("idx@example.com").await;
    let c = post(&f, &p, "Alpha beta", "shared words here", &["old"]).await;
    assert_eq!(ids(&f, &p, by_word("ALPHA")).await, vec![c.id.clone()]);
    assert_eq!(ids(&f, &p, by_tag("old")).await, vec![c.id.clone()]);
    let patch = ContentPatch { title: Some("Gamma beta".into()), tags: Some(vec!["new".into()]), body: None };
    f.svc.content.update(&ctx(&p), &c.id, patch).await.unwrap();
    assert!(ids(&f, &p, by_word("alpha")).await.is_empty(), "old word no longer matches");
    assert!(ids(&f, &p, by_tag("old")).await.is_empty(), "old tag no longer matches");
    assert_eq!(ids(&f, &p, by_word("gamma")).await, vec![c.id.clone()]);
    assert_eq!(ids(&f, &p, by_word("beta shared")).await, vec![c.id.clone()]);
    assert_eq!(ids(&f, &p, by_tag("new")).await, vec![c.id.clone()]);
    assert_eq!(index_rows_of(&f, &c, &["alpha"], &["old"]).await, 2, "only the all + author rows of those");
    f.svc.content.delete(&ctx(&p), &c.id).await.unwrap();
    let words = ["alpha", "beta", "gamma", "shared", "words", "here"];
    assert_eq!(index_rows_of(&f, &c, &words, &["old", "new"]).await, 0, "delete leaves no index row");
    assert!(ids(&f, &p, by_word("gamma")).await.is_empty());
}

#[tokio::test]
async fn search_by_word_tag_author_and_combined() {
    let f = fixture().await;
    let (_, a) = f.user("a@example.com").await;
    let (_, b) = f.user("b@example.com").await;
    let a1 = post(&f, &a, "Rust actors", "supervision trees", &["rust"]).await;
    let a2 = post(&f, &a, "Cooking", "pasta with actors", &["food"]).await;
    let b1 = post(&f, &b, "Rust storage", "fjall and trees", &["rust", "db"]).await;
    let author = |p: &Principal| ContentQuery { author: Some(p.user_id.clone()), ..Default::default() };
    assert_eq!(ids(&f, &a, author(&a)).await, [a2.id.clone(), a1.id.clone()], "newest first");
    assert_eq!(ids(&f, &a, by_tag("RUST")).await, [b1.id.clone(), a1.id.clone()]);
    assert_eq!(ids(&f, &a, by_word("trees")).await, [b1.id.clone(), a1.id.clone()]);
    assert_eq!(ids(&f, &a, by_word("actors")).await, [a2.id.clone(), a1.id.clone()]);
    assert_eq!(ids(&f, &a, by_word("rust trees")).await, [b1.id.clone(), a1.id.clone()]);
    assert_eq!(ids(&f, &a, by_word("pasta trees")).await, Vec::<String>::new());
    let combined = ContentQuery { tag: Some("rust".into()), q: Some("actors".into()), ..author(&a) };
    assert_eq!(ids(&f, &a, combined).await, vec![a1.id.clone()]);
    let combined = ContentQuery { tag: Some("rust".into()), q: Some("trees".into()), ..Default::default() };
    assert_eq!(ids(&f, &a, combined).await, [b1.id.clone(), a1.id.clone()]);
    let all = ids(&f, &a, ContentQuery::default()).await;
    assert_eq!(all, [b1.id, a2.id, a1.id]);
}

/// Pages through `query` with the given page sizes (cycled) until the end.
async fn page_all(f: &Fixture, p: &Principal, query: ContentQuery, sizes: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = None;
    for (i, size) in sizes.iter().cycle().enumerate() {
        assert!(i < 1000, "paging does not end");
        let q = ContentQuery { limit: Some(*size), cursor: cursor.take(), ..query.clone() };
        let page = f.svc.content.list(&ctx(p), q).await.unwrap();
        assert!(page.items.len() <= *size);
        out.extend(page.items.into_iter().map(|c| c.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    unreachable!()
}

#[test]
fn cursor_paging_has_no_duplicates_or_gaps() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (f, p, expected_all, expected_even) = rt.block_on(async {
        let f = fixture().await;
        let (_, p) = f.user("pager@example.com").await;
        let mut items = Vec::new();
        for i in 0..30 {
            // Several items share a millisecond: the id breaks the tie.
            if i % 3 == 0 {
                f.advance(Duration::from_millis(1));
            }
            let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &["odd"] };
            let c = f.svc.content.create(&ctx(&p), new(&format!("item {i}"), "common body", tags)).await.unwrap();
            items.push(c);
        }
        items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let all: Vec<String> = items.iter().map(|c| c.id.clone()).collect();
        let even: Vec<String> = items.iter().filter(|c| c.tags == ["even"]).map(|c| c.id.clone()).collect();
        (f, p, all, even)
    });
    // The newest-first order of the index is (created desc, id asc).
    assert_eq!(rt.block_on(page_all(&f, &p, ContentQuery::default(), &[100])), expected_all);
    proptest!(ProptestConfig::with_cases(24), |(sizes in proptest::collection::vec(1usize..8, 1..6))| {
        rt.block_on(async {
            let all = page_all(&f, &p, ContentQuery::default(), &sizes).await;
            assert_eq!(all, expected_all);
            let words = page_all(&f, &p, by_word("common"), &sizes).await;
            assert_eq!(words, expected_all);
            // Filtered (tag drives, words filter) pages can be short; the union is still exact.
            let even = ContentQuery { tag: Some("even".into()), q: Some("body".into()), ..Default::default() };
            assert_eq!(page_all(&f, &p, even, &sizes).await, expected_even);
            let unique: HashSet<_> = all.iter().collect();
            assert_eq!(unique.len(), all.len());
        });
    });
}

#[tokio::test]
async fn feed_merges_followed_authors_newest_first() {
    let f = fixture().await;
    let (_, reader) = f.user("reader@example.com").await;
    let (bu, b) = f.user("b@example.com").await;
    let (cu, c) = f.user("c@example.com").await;
    let (_, d) = f.user("d@example.com").await;
    f.svc.users.follow(&ctx(&reader), &bu.id).await.unwrap();
    f.svc.users.follow(&ctx(&reader), &cu.id).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..7 {
        let (who, p) = match i % 3 {
            0 => ("b", &b),
            1 => ("c", &c),
            _ => ("d", &d),
        };
        let item = post(&f, p, &format!("{who} {i}"), "body", &[]).await;
        if who != "d" {
            expected.push(item.id);
        }
    }
    expected.reverse();
    let feed = |limit: usize, cursor: Option<String>| {
        let content = &f.svc.content;
        let c = ctx(&reader);
        async move { content.feed(&c, FeedQuery { limit: Some(limit), cursor }).await.unwrap() }
    };
    let whole = feed(100, None).await;
    assert_eq!(whole.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), expected);
    assert!(whole.next_cursor.is_none());
    for size in 1..=4 {
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = feed(size, cursor).await;
            got.extend(page.items.into_iter().map(|i| i.id));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(got, expected, "page size {size}");
    }
    // Unfollowing c removes c's items.
    f.svc.users.unfollow(&ctx(&reader), &cu.id).await.unwrap();
    let only_b = feed(100, None).await;
    assert!(only_b.items.iter().all(|i| i.author_id == bu.id));
    assert_eq!(only_b.items.len(), 3);
    // Nobody followed: empty.
    let lonely = f.svc.content.feed(&ctx(&d), FeedQuery::default()).await.unwrap();
    assert!(lonely.items.is_empty() && lonely.next_cursor.is_none());
    assert_eq!(kind(f.svc.content.feed(&Ctx::anonymous(), FeedQuery::default()).await), "unauthorized");
}
