//! The content service: create, get, patch, delete; list by author / tag / words (combinable) with
//! cursors; and the feed of followed authors.
//!
//! Store layout (see `schema`): one row per item in [`CONTENT`], and four indexes whose clustering key is
//! `(u64::MAX - created_ms, content_id)`, so every index partition reads newest first and one cursor shape
//! fits all of them: [`CONTENT_ALL`] (one partition), [`CONTENT_BY_AUTHOR`], [`CONTENT_BY_TAG`] and the word
//! index [`CONTENT_BY_WORD`] (title + body tokenized on non-alphanumerics, lowercased, deduplicated, words of
//! 2..=40 characters, at most [`MAX_INDEXED_WORDS`] per item). The item row, every index row it adds or
//! removes, the event and its outbox entry are written in one atomic batch, so a patch or delete never
//! leaves a stale index row behind.
//!
//! Listing drives one index partition — author if given, else tag, else the longest query word, else
//! [`CONTENT_ALL`] — and checks the other filters on the items it reads, reading at most
//! [`LIST_SCAN_BUDGET`] index rows per page (a page may be short and still carry a cursor).
//!
//! The feed merges the newest-first author partitions of the first [`MAX_FEED_AUTHORS`] followed users
//! (in id order): each contributes at most `limit` rows after the cursor, the merge keeps the `limit`
//! newest; the cursor is the last key returned, so pages have no duplicates and no gaps.
//!
//! Collaborators: `policy`, `common` (events, cursors), `users` (follow edges), the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_actors::ServiceRef;
use troupe_storage::{Condition, Cursor, Key, KeyPart, Row, Scan, Store, WriteBatch};

use crate::common::{
    Ctx, MAX_ATTEMPTS, NewEvent, Page, backoff, check_id, check_text, committed, content_log, decode_cursor,
    decode_row, encode_cursor, new_id, page_limit, stage_event, too_contended,
};
use crate::error::{Result, ServiceError};
use crate::events::{CONTENT_CREATED, CONTENT_DELETED, CONTENT_UPDATED};
use crate::policy::{Action, authorize, require};
use crate::runtime::Inflight;
use crate::schema::{CONTENT, CONTENT_ALL, CONTENT_BY_AUTHOR, CONTENT_BY_TAG, CONTENT_BY_WORD, FOLLOWING};
use crate::users::edge_ids;

/// Longest title (characters).
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest body (characters).
pub const MAX_BODY_CHARS: usize = 20_000;
/// Most tags per item.
pub const MAX_TAGS: usize = 10;
/// Longest tag (characters of `[a-z0-9_-]`).
pub const MAX_TAG_CHARS: usize = 32;
/// Most distinct words indexed per item (the alphabetically first ones beyond that are kept).
pub const MAX_INDEXED_WORDS: usize = 2_000;
/// Shortest indexed word (characters).
pub const MIN_WORD_CHARS: usize = 2;
/// Longest indexed word (characters).
pub const MAX_WORD_CHARS: usize = 40;
/// Most followed authors merged into one feed page.
pub const MAX_FEED_AUTHORS: usize = 200;
/// Most index rows one filtered list page reads.
pub const LIST_SCAN_BUDGET: usize = 1000;
/// Concurrent store reads one request issues.
const READ_CONCURRENCY: usize = 16;

/// A content item as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContentItem {
    /// Id (UUIDv7).
    pub id: String,
    /// Author's user id.
    pub author_id: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Tags (normalized).
    pub tags: Vec<String>,
    /// Creation time (ms since the epoch).
    pub created_at: u64,
    /// Last change (ms since the epoch).
    pub updated_at: u64,
}

/// The stored item (value of [`CONTENT`]); `words` are exactly the word-index rows it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ContentRecord {
    id: String,
    author_id: String,
    title: String,
    body: String,
    tags: Vec<String>,
    words: Vec<String>,
    created_at_ms: u64,
    updated_at_ms: u64,
}

impl ContentRecord {
    fn view(&self) -> ContentItem {
        ContentItem {
            id: self.id.clone(),
            author_id: self.author_id.clone(),
            title: self.title.clone(),
            body: self.body.clone(),
            tags: self.tags.clone(),
            created_at: self.created_at_ms,
            updated_at: self.updated_at_ms,
        }
    }

    /// The clustering key of all its index rows.
    fn order_key(&self) -> Key {
        order_key(self.created_at_ms, &self.id)
    }

    /// `(table, partition)` of every index row it owns.
    fn index_partitions(&self) -> BTreeSet<(&'static str, Key)> {
        let mut out = BTreeSet::new();
        out.insert((CONTENT_ALL, Key::empty()));
        out.insert((CONTENT_BY_AUTHOR, Key::from(self.author_id.as_str())));
        for tag in &self.tags {
            out.insert((CONTENT_BY_TAG, Key::from(tag.as_str())));
        }
        for word in &self.words {
            out.insert((CONTENT_BY_WORD, Key::from(word.as_str())));
        }
        out
    }
}

fn order_key(created_at_ms: u64, id: &str) -> Key {
    Key::empty().u64(u64::MAX - created_at_ms).str(id)
}

/// The id in an index row's clustering key.
fn indexed_id(row: &Row) -> Result<String> {
    match row.ck.0.as_slice() {
        [KeyPart::U64(_), KeyPart::Str(id)] => Ok(id.clone()),
        _ => Err(ServiceError::internal("content index key is not (rev_time, id)")),
    }
}

/// The words of `text`: split on non-alphanumerics, lowercased, deduplicated, 2..=40 characters.
pub fn tokenize(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| (MIN_WORD_CHARS..=MAX_WORD_CHARS).contains(&w.chars().count()))
        .map(str::to_lowercase)
        .collect()
}

fn index_words(title: &str, body: &str) -> Vec<String> {
    let mut words = tokenize(title);
    words.extend(tokenize(body));
    words.into_iter().take(MAX_INDEXED_WORDS).collect()
}

/// Normalizes one tag: trimmed, lowercased, 1..=32 of `[a-z0-9_-]`.
pub fn normalize_tag(tag: &str) -> Result<String> {
    let t = tag.trim().to_lowercase();
    let ok = !t.is_empty()
        && t.chars().count() <= MAX_TAG_CHARS
        && t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok { Ok(t) } else { Err(ServiceError::invalid("tags", "each tag is 1 to 32 of a-z, 0-9, '-', '_'")) }
}

fn normalize_tags(tags: &[String]) -> Result<Vec<String>> {
    if tags.len() > MAX_TAGS {
        return Err(ServiceError::invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = normalize_tag(t)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn check_title(title: &str) -> Result<String> {
    check_text("title", title, MAX_TITLE_CHARS, false)
}

fn check_body(body: &str) -> Result<String> {
    check_text("body", body, MAX_BODY_CHARS, true)
}

/// `POST /content` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContent {
    /// Title, 1..=200 characters.
    pub title: String,
    /// Body, 1..=20,000 characters.
    pub body: String,
    /// Up to 10 tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `PATCH /content/{id}` body (absent fields stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentPatch {
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New body.
    #[serde(default)]
    pub body: Option<String>,
    /// New tags (replace the old ones).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// `GET /content` query: filters combine (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    /// Author's user id.
    #[serde(default)]
    pub author: Option<String>,
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Words that must all occur in title or body.
    #[serde(default)]
    pub q: Option<String>,
    /// Page size (1..=100, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `GET /feed` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Page size (1..=100, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Parsed list filters.
struct Filters {
    author: Option<String>,
    tag: Option<String>,
    words: Vec<String>,
}

impl Filters {
    fn matches(&self, rec: &ContentRecord) -> bool {
        self.author.as_ref().is_none_or(|a| *a == rec.author_id)
            && self.tag.as_ref().is_none_or(|t| rec.tags.contains(t))
            && self.words.iter().all(|w| rec.words.binary_search(w).is_ok())
    }

    /// The index partition to drive the scan, and whether other filters remain to check.
    fn driver(&self) -> ((&'static str, Key), bool) {
        let filters = usize::from(self.author.is_some()) + usize::from(self.tag.is_some()) + self.words.len();
        let driver = if let Some(a) = &self.author {
            (CONTENT_BY_AUTHOR, Key::from(a.as_str()))
        } else if let Some(t) = &self.tag {
            (CONTENT_BY_TAG, Key::from(t.as_str()))
        } else if let Some(w) = self.words.iter().max_by_key(|w| w.chars().count()) {
            // Longer words tend to be rarer: fewer rows to read.
            (CONTENT_BY_WORD, Key::from(w.as_str()))
        } else {
            (CONTENT_ALL, Key::empty())
        };
        (driver, filters > 1)
    }
}

/// The content service's operations (run by [`ContentActor`]; callable directly in tests).
#[derive(Debug)]
pub struct Content {
    store: Store,
}

impl Content {
    /// A service over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn load(&self, id: &str) -> Result<Option<(Row, ContentRecord)>> {
        match self.store.get(CONTENT, &Key::from(id), &Key::empty()).await? {
            None => Ok(None),
            Some(row) => {
                let rec = decode_row(CONTENT, &row)?;
                Ok(Some((row, rec)))
            }
        }
    }

    async fn existing(&self, id: &str) -> Result<(Row, ContentRecord)> {
        self.load(id).await?.ok_or(ServiceError::NotFound { what: "content" })
    }

    /// Loads items in the given order (missing ones skipped), several reads at once.
    async fn load_many(&self, ids: Vec<(Key, String)>) -> Result<Vec<(Key, ContentRecord)>> {
        let loaded: Vec<Option<(Key, ContentRecord)>> = futures::stream::iter(ids)
            .map(|(ck, id)| async move { Ok::<_, ServiceError>(self.load(&id).await?.map(|(_, rec)| (ck, rec))) })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(loaded.into_iter().flatten().collect())
    }

    /// Creates an item authored by the caller.
    pub async fn create(&self, ctx: &Ctx, new: NewContent) -> Result<ContentItem> {
        authorize(ctx.principal(), Action::CreateContent, None)?;
        let author = require(ctx.principal())?.user_id.clone();
        let title = check_title(&new.title)?;
        let body = check_body(&new.body)?;
        let tags = normalize_tags(&new.tags)?;
        // A still-valid access token may outlive its account.
        if crate::users::load_user(&self.store, &author).await?.is_none() {
            return Err(ServiceError::Unauthorized { reason: "account no longer exists" });
        }
        let now = self.store.now_ms();
        let rec = ContentRecord {
            id: new_id(),
            author_id: author,
            words: index_words(&title, &body),
            title,
            body,
            tags,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let mut batch = WriteBatch::new();
        batch.put_with(
            CONTENT,
            &Key::from(rec.id.as_str()),
            &Key::empty(),
            troupe_storage::typed::encode(&rec),
            None,
            Condition::Absent,
        );
        let ck = rec.order_key();
        for (table, pk) in rec.index_partitions() {
            batch.put(table, &pk, &ck, Vec::new());
        }
        stage_event(
            &mut batch,
            NewEvent {
                log: &content_log(&rec.id),
                expected_version: 0,
                kind: CONTENT_CREATED,
                aggregate_id: &rec.id,
                payload: serde_json::json!({
                    "content_id": rec.id, "author_id": rec.author_id, "title": rec.title, "tags": rec.tags,
                }),
            },
            now,
            ctx,
        )?;
        self.store.commit(batch).await?;
        Ok(rec.view())
    }

    /// One item.
    pub async fn get(&self, ctx: &Ctx, id: &str) -> Result<ContentItem> {
        authorize(ctx.principal(), Action::ReadContent, None)?;
        check_id("id", id)?;
        Ok(self.existing(id).await?.1.view())
    }

    /// Changes an item (author or admin); index rows follow in the same batch. A patch that changes
    /// nothing emits no event.
    pub async fn update(&self, ctx: &Ctx, id: &str, patch: ContentPatch) -> Result<ContentItem> {
        authorize(ctx.principal(), Action::ReadContent, None)?;
        check_id("id", id)?;
        let title = patch.title.as_deref().map(check_title).transpose()?;
        let body = patch.body.as_deref().map(check_body).transpose()?;
        let tags = patch.tags.as_deref().map(normalize_tags).transpose()?;
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (row, old) = self.existing(id).await?;
            authorize(ctx.principal(), Action::UpdateContent, Some(&old.author_id))?;
            let mut rec = old.clone();
            let mut fields = Vec::new();
            if let Some(t) = &title
                && *t != rec.title
            {
                rec.title = t.clone();
                fields.push("title");
            }
            if let Some(b) = &body
                && *b != rec.body
            {
                rec.body = b.clone();
                fields.push("body");
            }
            if let Some(t) = &tags
                && *t != rec.tags
            {
                rec.tags = t.clone();
                fields.push("tags");
            }
            if fields.is_empty() {
                return Ok(rec.view());
            }
            rec.words = index_words(&rec.title, &rec.body);
            let now = self.store.now_ms();
            rec.updated_at_ms = now;
            let log = content_log(id);
            let version = self.store.event_version(&log).await?;
            let mut batch = WriteBatch::new();
            batch.put_with(
                CONTENT,
                &Key::from(id),
                &Key::empty(),
                troupe_storage::typed::encode(&rec),
                None,
                Condition::Version(row.version),
            );
            let ck = rec.order_key();
            let (before, after) = (old.index_partitions(), rec.index_partitions());
            for (table, pk) in before.difference(&after) {
                batch.delete(table, pk, &ck, Condition::None);
            }
            for (table, pk) in after.difference(&before) {
                batch.put(table, pk, &ck, Vec::new());
            }
            stage_event(
                &mut batch,
                NewEvent {
                    log: &log,
                    expected_version: version,
                    kind: CONTENT_UPDATED,
                    aggregate_id: id,
                    payload: serde_json::json!({ "content_id": id, "author_id": rec.author_id, "fields": fields }),
                },
                now,
                ctx,
            )?;
            if committed(self.store.commit(batch).await)? {
                return Ok(rec.view());
            }
        }
        Err(too_contended())
    }

    /// Deletes an item (author or admin) with all its index rows.
    pub async fn delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        authorize(ctx.principal(), Action::ReadContent, None)?;
        check_id("id", id)?;
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (row, rec) = self.existing(id).await?;
            authorize(ctx.principal(), Action::DeleteContent, Some(&rec.author_id))?;
            let log = content_log(id);
            let version = self.store.event_version(&log).await?;
            let mut batch = WriteBatch::new();
            batch.delete(CONTENT, &Key::from(id), &Key::empty(), Condition::Version(row.version));
            let ck = rec.order_key();
            for (table, pk) in rec.index_partitions() {
                batch.delete(table, &pk, &ck, Condition::None);
            }
            stage_event(
                &mut batch,
                NewEvent {
                    log: &log,
                    expected_version: version,
                    kind: CONTENT_DELETED,
                    aggregate_id: id,
                    payload: serde_json::json!({ "content_id": id, "author_id": rec.author_id }),
                },
                self.store.now_ms(),
                ctx,
            )?;
            if committed(self.store.commit(batch).await)? {
                return Ok(());
            }
        }
        Err(too_contended())
    }

    /// Lists items newest first, filtered by author, tag and words (all that are given).
    pub async fn list(&self, ctx: &Ctx, query: ContentQuery) -> Result<Page<ContentItem>> {
        authorize(ctx.principal(), Action::ReadContent, None)?;
        let limit = page_limit(query.limit)?;
        if let Some(a) = &query.author {
            check_id("author", a)?;
        }
        let tag = query
            .tag
            .as_deref()
            .map(normalize_tag)
            .transpose()
            .map_err(|_| ServiceError::invalid("tag", "1 to 32 of a-z, 0-9, '-', '_'"))?;
        let words: Vec<String> = match query.q.as_deref() {
            None => Vec::new(),
            Some(q) if q.len() > 1024 => return Err(ServiceError::invalid("q", "too long")),
            Some(q) => {
                let words: Vec<String> = tokenize(q).into_iter().collect();
                if words.is_empty() {
                    return Err(ServiceError::invalid("q", "needs a word of at least 2 letters or digits"));
                }
                words
            }
        };
        let filters = Filters { author: query.author, tag, words };
        let mut after = query.cursor.as_deref().map(|c| decode_cursor(c, &['u', 's'])).transpose()?;
        let ((table, pk), filtered) = filters.driver();
        let mut items = Vec::new();
        let mut budget = LIST_SCAN_BUDGET;
        loop {
            let want = if filtered { budget.min(limit * 4) } else { limit - items.len() };
            let scan = Scan::all().limit(want).after(after.as_ref().map(|k| Cursor(k.encode())));
            let page = self.store.scan(table, &pk, &scan).await?;
            budget = budget.saturating_sub(page.rows.len());
            let ids = page.rows.iter().map(|r| Ok((r.ck.clone(), indexed_id(r)?))).collect::<Result<Vec<_>>>()?;
            let last_scanned = page.rows.last().map(|r| r.ck.clone());
            let mut full = false;
            for (ck, rec) in self.load_many(ids).await? {
                if filters.matches(&rec) {
                    items.push(rec.view());
                    if items.len() == limit {
                        after = Some(ck);
                        full = true;
                        break;
                    }
                }
            }
            if !full && let Some(ck) = last_scanned {
                after = Some(ck);
            }
            if page.next.is_none() && !full {
                return Ok(Page { items, next_cursor: None });
            }
            if full || budget == 0 {
                return Ok(Page { items, next_cursor: after.as_ref().map(encode_cursor) });
            }
        }
    }

    /// The newest items of the authors the caller follows (see the module doc for the bounds).
    pub async fn feed(&self, ctx: &Ctx, query: FeedQuery) -> Result<Page<ContentItem>> {
        authorize(ctx.principal(), Action::ReadFeed, None)?;
        let me = require(ctx.principal())?.user_id.clone();
        let limit = page_limit(query.limit)?;
        let after = query.cursor.as_deref().map(|c| decode_cursor(c, &['u', 's'])).transpose()?;
        let follows = self.store.scan(FOLLOWING, &Key::from(me.as_str()), &Scan::all().limit(MAX_FEED_AUTHORS)).await?;
        let scan = Scan::all().limit(limit).after(after.as_ref().map(|k| Cursor(k.encode())));
        let pages: Vec<troupe_storage::Page> = futures::stream::iter(edge_ids(&follows.rows))
            .map(|author| {
                let scan = scan.clone();
                async move { self.store.scan(CONTENT_BY_AUTHOR, &Key::from(author), &scan).await }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut more = pages.iter().any(|p| p.next.is_some());
        let mut candidates: Vec<(Vec<u8>, Key, String)> = Vec::new();
        for row in pages.iter().flat_map(|p| &p.rows) {
            candidates.push((row.ck.encode(), row.ck.clone(), indexed_id(row)?));
        }
        candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if candidates.len() > limit {
            more = true;
            candidates.truncate(limit);
        }
        let last = candidates.last().map(|c| c.1.clone());
        let loaded = self.load_many(candidates.into_iter().map(|(_, ck, id)| (ck, id)).collect()).await?;
        let items = loaded.into_iter().map(|(_, rec)| rec.view()).collect();
        let next_cursor = if more { last.as_ref().map(encode_cursor) } else { None };
        Ok(Page { items, next_cursor })
    }
}

/// Requests the content actor handles (closed set; each carries its reply port).
pub enum ContentMsg {
    /// [`Content::create`].
    Create {
        /// Caller.
        ctx: Ctx,
        /// Body.
        new: NewContent,
        /// Answer.
        reply: RpcReplyPort<Result<ContentItem>>,
    },
    /// [`Content::get`].
    Get {
        /// Caller.
        ctx: Ctx,
        /// Content id.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<ContentItem>>,
    },
    /// [`Content::update`].
    Update {
        /// Caller.
        ctx: Ctx,
        /// Content id.
        id: String,
        /// Changes.
        patch: ContentPatch,
        /// Answer.
        reply: RpcReplyPort<Result<ContentItem>>,
    },
    /// [`Content::delete`].
    Delete {
        /// Caller.
        ctx: Ctx,
        /// Content id.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
    /// [`Content::list`].
    List {
        /// Caller.
        ctx: Ctx,
        /// Filters and paging.
        query: ContentQuery,
        /// Answer.
        reply: RpcReplyPort<Result<Page<ContentItem>>>,
    },
    /// [`Content::feed`].
    Feed {
        /// Caller.
        ctx: Ctx,
        /// Paging.
        query: FeedQuery,
        /// Answer.
        reply: RpcReplyPort<Result<Page<ContentItem>>>,
    },
}

impl ractor::Message for ContentMsg {}

/// The supervised content actor: dispatches each request to a task (see `runtime`).
#[derive(Clone, Debug)]
pub struct ContentActor {
    svc: Arc<Content>,
}

impl ContentActor {
    /// An actor serving `svc`.
    pub fn new(svc: Arc<Content>) -> Self {
        Self { svc }
    }
}

impl Actor for ContentActor {
    type Msg = ContentMsg;
    type State = Inflight;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<ContentMsg>, _args: ()) -> Result<Inflight, ActorProcessingErr> {
        Ok(Inflight::default())
    }

    async fn post_stop(&self, _myself: ActorRef<ContentMsg>, state: &mut Inflight) -> Result<(), ActorProcessingErr> {
        state.drain().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ContentMsg>,
        msg: ContentMsg,
        state: &mut Inflight,
    ) -> Result<(), ActorProcessingErr> {
        let svc = Arc::clone(&self.svc);
        const NAME: &str = crate::runtime::CONTENT_SERVICE;
        match msg {
            ContentMsg::Create { ctx, new, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.create(&ctx, new).await })
            }
            ContentMsg::Get { ctx, id, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.get(&ctx, &id).await })
            }
            ContentMsg::Update { ctx, id, patch, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.update(&ctx, &id, patch).await })
            }
            ContentMsg::Delete { ctx, id, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.delete(&ctx, &id).await })
            }
            ContentMsg::List { ctx, query, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.list(&ctx, query).await })
            }
            ContentMsg::Feed { ctx, query, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.feed(&ctx, query).await })
            }
        }
        Ok(())
    }
}

/// Typed client of the content service (deadline, breaker and admission limit from its `ServiceRef`).
#[derive(Clone, Debug)]
pub struct ContentClient {
    svc: ServiceRef<ContentMsg>,
}

impl ContentClient {
    /// A client over `svc`.
    pub fn new(svc: ServiceRef<ContentMsg>) -> Self {
        Self { svc }
    }

    /// The underlying service handle.
    pub fn service(&self) -> &ServiceRef<ContentMsg> {
        &self.svc
    }

    /// See [`Content::create`].
    pub async fn create(&self, ctx: Ctx, new: NewContent) -> Result<ContentItem> {
        self.svc.call(|reply| ContentMsg::Create { ctx, new, reply }).await?
    }

    /// See [`Content::get`].
    pub async fn get(&self, ctx: Ctx, id: String) -> Result<ContentItem> {
        crate::runtime::query(&self.svc, crate::runtime::CONTENT_SERVICE, |c: Arc<Content>| async move {
            c.get(&ctx, &id).await
        })
        .await
    }

    /// See [`Content::update`].
    pub async fn update(&self, ctx: Ctx, id: String, patch: ContentPatch) -> Result<ContentItem> {
        self.svc.call(|reply| ContentMsg::Update { ctx, id, patch, reply }).await?
    }

    /// See [`Content::delete`].
    pub async fn delete(&self, ctx: Ctx, id: String) -> Result<()> {
        self.svc.call(|reply| ContentMsg::Delete { ctx, id, reply }).await?
    }

    /// See [`Content::list`].
    pub async fn list(&self, ctx: Ctx, query: ContentQuery) -> Result<Page<ContentItem>> {
        crate::runtime::query(&self.svc, crate::runtime::CONTENT_SERVICE, |c: Arc<Content>| async move {
            c.list(&ctx, query).await
        })
        .await
    }

    /// See [`Content::feed`].
    pub async fn feed(&self, ctx: Ctx, query: FeedQuery) -> Result<Page<ContentItem>> {
        crate::runtime::query(&self.svc, crate::runtime::CONTENT_SERVICE, |c: Arc<Content>| async move {
            c.feed(&ctx, query).await
        })
        .await
    }
}

#[cfg(test)]
mod tests;
