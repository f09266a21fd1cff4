//! The users service: profiles (get, me, patch, delete), the admin directory (list/search with cursors)
//! and follows.
//!
//! Store layout (see `schema`): one row per user in [`USERS`]; the unique email index [`USER_EMAILS`];
//! the admin directory [`USER_DIRECTORY`], one partition ordered by `(email, id)`. Admin search scans that
//! one partition in email order and keeps rows whose email or display name contains `q`
//! (case-insensitive; an email prefix is a special case of it), reading at most [`SEARCH_SCAN_BUDGET`]
//! rows per page — a page may be short and still carry a cursor. Get, me, patch, delete and follow are
//! point reads and single-partition writes. Follows live in [`FOLLOWERS`] and [`FOLLOWING`] (this module
//! is their only writer); both rows, the `user.followed`/`user.unfollowed` event (aggregate = the
//! follower) and its outbox entry are one atomic batch.
//!
//! Every change is an optimistic read-modify-write: state rows are written on the version read, events
//! on the aggregate version read; a conflict re-reads and retries a few times.
//!
//! Collaborators: `policy` (every operation), `common` (events, cursors), `auth` (creates users).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_actors::ServiceRef;
use troupe_storage::{Condition, Key, KeyPart, Row, Scan, Store, WriteBatch};

use crate::common::{
    Ctx, MAX_ATTEMPTS, NewEvent, Page, backoff, check_id, check_text, committed, decode_cursor, decode_row,
    encode_cursor, page_limit, stage_event, too_contended, user_log,
};
use crate::error::{Result, ServiceError};
use crate::events::{USER_DELETED, USER_FOLLOWED, USER_UNFOLLOWED, USER_UPDATED};
use crate::policy::{Action, Principal, Role, authorize, require};
use crate::runtime::Inflight;
use crate::schema::{FOLLOWERS, FOLLOWING, USER_DIRECTORY, USER_EMAILS, USERS};

/// Most directory rows one search page reads.
pub const SEARCH_SCAN_BUDGET: usize = 1000;
/// Most follow edges (per direction) a user deletion removes in its batch; edges beyond are left (readers
/// of follow tables tolerate users that no longer exist).
pub const MAX_EDGES_REMOVED_ON_DELETE: usize = 1000;
/// Longest accepted search string (bytes).
pub const MAX_QUERY_LEN: usize = 254;

/// A user as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// Id (UUIDv7).
    pub id: String,
    /// Email: only shown to the user and to admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Creation time (ms since the epoch).
    pub created_at: u64,
    /// Last change (ms since the epoch).
    pub updated_at: u64,
}

/// The stored user (value of [`USERS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl UserRecord {
    /// The client view; `show_email` for the user itself and admins.
    pub(crate) fn view(&self, show_email: bool) -> User {
        User {
            id: self.id.clone(),
            email: show_email.then(|| self.email.clone()),
            display_name: self.display_name.clone(),
            roles: self.roles.clone(),
            created_at: self.created_at_ms,
            updated_at: self.updated_at_ms,
        }
    }
}

/// A directory row's value (everything a listing shows besides the key's email and id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirectoryEntry {
    pub display_name: String,
    pub roles: Vec<Role>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl DirectoryEntry {
    pub(crate) fn of(rec: &UserRecord) -> Self {
        Self {
            display_name: rec.display_name.clone(),
            roles: rec.roles.clone(),
            created_at_ms: rec.created_at_ms,
            updated_at_ms: rec.updated_at_ms,
        }
    }
}

/// Clustering key of a directory row.
pub(crate) fn directory_ck(email: &str, id: &str) -> Key {
    Key::empty().str(email).str(id)
}

/// Reads a user row: `(row, record)` or `None`.
pub(crate) async fn load_user(store: &Store, id: &str) -> Result<Option<(Row, UserRecord)>> {
    match store.get(USERS, &Key::from(id), &Key::empty()).await? {
        None => Ok(None),
        Some(row) => {
            let rec = decode_row(USERS, &row)?;
            Ok(Some((row, rec)))
        }
    }
}

/// `PATCH /users/{id}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `GET /users` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Case-insensitive substring (or prefix) of email or display name.
    #[serde(default)]
    pub q: Option<String>,
    /// Page size (1..=100, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

fn shows_email(viewer: Option<&Principal>, id: &str) -> bool {
    viewer.is_some_and(|p| p.is_admin() || p.user_id == id)
}

/// The users service's operations (run by [`UsersActor`]; callable directly in tests).
#[derive(Debug)]
pub struct Users {
    store: Store,
}

impl Users {
    /// A service over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn existing(&self, id: &str) -> Result<(Row, UserRecord)> {
        load_user(&self.store, id).await?.ok_or(ServiceError::NotFound { what: "user" })
    }

    /// A user's profile (email only for self or admin).
    pub async fn get(&self, ctx: &Ctx, id: &str) -> Result<User> {
        authorize(ctx.principal(), Action::ReadUser, Some(id))?;
        check_id("id", id)?;
        let (_, rec) = self.existing(id).await?;
        Ok(rec.view(shows_email(ctx.principal(), id)))
    }

    /// The caller's own profile.
    pub async fn me(&self, ctx: &Ctx) -> Result<User> {
        let me = require(ctx.principal())?.user_id.clone();
        self.get(ctx, &me).await
    }

    /// Changes a profile (self or admin). A patch that changes nothing emits no event.
    pub async fn update(&self, ctx: &Ctx, id: &str, patch: UserPatch) -> Result<User> {
        authorize(ctx.principal(), Action::UpdateUser, Some(id))?;
        check_id("id", id)?;
        let display_name = patch
            .display_name
            .as_deref()
            .map(|n| check_text("display_name", n, crate::auth::MAX_DISPLAY_NAME_CHARS, false))
            .transpose()?;
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (row, mut rec) = self.existing(id).await?;
            let mut fields = Vec::new();
            if let Some(name) = &display_name
                && *name != rec.display_name
            {
                rec.display_name = name.clone();
                fields.push("display_name");
            }
            if fields.is_empty() {
                return Ok(rec.view(true));
            }
            let now = self.store.now_ms();
            rec.updated_at_ms = now;
            let log = user_log(id);
            let version = self.store.event_version(&log).await?;
            let mut batch = WriteBatch::new();
            batch.put_with(
                USERS,
                &Key::from(id),
                &Key::empty(),
                troupe_storage::typed::encode(&rec),
                None,
                Condition::Version(row.version),
            );
            batch.put(
                USER_DIRECTORY,
                &Key::empty(),
                &directory_ck(&rec.email, id),
                troupe_storage::typed::encode(&DirectoryEntry::of(&rec)),
            );
            stage_event(
                &mut batch,
                NewEvent {
                    log: &log,
                    expected_version: version,
                    kind: USER_UPDATED,
                    aggregate_id: id,
                    payload: serde_json::json!({ "user_id": id, "fields": fields }),
                },
                now,
                ctx,
            )?;
            if committed(self.store.commit(batch).await)? {
                return Ok(rec.view(true));
            }
        }
        Err(too_contended())
    }

    /// Deletes a user (self or admin): the user row, email index and directory rows, up to
    /// [`MAX_EDGES_REMOVED_ON_DELETE`] follow edges each way, and emits `user.deleted`, in one batch.
    /// The email can be registered again afterwards. The user's content stays.
    pub async fn delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        authorize(ctx.principal(), Action::DeleteUser, Some(id))?;
        check_id("id", id)?;
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (row, rec) = self.existing(id).await?;
            let log = user_log(id);
            let version = self.store.event_version(&log).await?;
            let me = Key::from(id);
            let mut batch = WriteBatch::new();
            batch.delete(USERS, &me, &Key::empty(), Condition::Version(row.version));
            batch.delete(USER_EMAILS, &Key::from(rec.email.as_str()), &Key::empty(), Condition::None);
            batch.delete(USER_DIRECTORY, &Key::empty(), &directory_ck(&rec.email, id), Condition::None);
            let edges = Scan::all().limit(MAX_EDGES_REMOVED_ON_DELETE);
            for other in edge_ids(&self.store.scan(FOLLOWING, &me, &edges).await?.rows) {
                batch.delete(FOLLOWING, &me, &Key::from(other.as_str()), Condition::None);
                batch.delete(FOLLOWERS, &Key::from(other.as_str()), &me, Condition::None);
            }
            for other in edge_ids(&self.store.scan(FOLLOWERS, &me, &edges).await?.rows) {
                batch.delete(FOLLOWERS, &me, &Key::from(other.as_str()), Condition::None);
                batch.delete(FOLLOWING, &Key::from(other.as_str()), &me, Condition::None);
            }
            stage_event(
                &mut batch,
                NewEvent {
                    log: &log,
                    expected_version: version,
                    kind: USER_DELETED,
                    aggregate_id: id,
                    payload: serde_json::json!({ "user_id": id }),
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

    /// Lists users in email order, optionally filtered by `q` (admin only).
    pub async fn list(&self, ctx: &Ctx, query: UserQuery) -> Result<Page<User>> {
        authorize(ctx.principal(), Action::ListUsers, None)?;
        let limit = page_limit(query.limit)?;
        let q = match query.q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.len() > MAX_QUERY_LEN => return Err(ServiceError::invalid("q", "too long")),
            Some(q) => Some(q.to_lowercase()),
        };
        let mut after = query.cursor.as_deref().map(|c| decode_cursor(c, &['s', 's'])).transpose()?;
        let mut items = Vec::new();
        let mut budget = SEARCH_SCAN_BUDGET;
        loop {
            let want = if q.is_some() { budget.min(256) } else { limit - items.len() };
            let scan = Scan::all().limit(want).after(after.as_ref().map(|k| troupe_storage::Cursor(k.encode())));
            let page = self.store.scan(USER_DIRECTORY, &Key::empty(), &scan).await?;
            budget = budget.saturating_sub(page.rows.len());
            for row in &page.rows {
                let (email, id) = match row.ck.0.as_slice() {
                    [KeyPart::Str(email), KeyPart::Str(id)] => (email, id),
                    _ => return Err(ServiceError::internal("directory key is not (email, id)")),
                };
                let entry: DirectoryEntry = decode_row(USER_DIRECTORY, row)?;
                after = Some(row.ck.clone());
                let hit = q.as_ref().is_none_or(|q| email.contains(q) || entry.display_name.to_lowercase().contains(q));
                if hit {
                    items.push(User {
                        id: id.clone(),
                        email: Some(email.clone()),
                        display_name: entry.display_name,
                        roles: entry.roles,
                        created_at: entry.created_at_ms,
                        updated_at: entry.updated_at_ms,
                    });
                    if items.len() == limit {
                        break;
                    }
                }
            }
            let exhausted = page.next.is_none() && items.len() < limit;
            if exhausted {
                return Ok(Page { items, next_cursor: None });
            }
            if items.len() == limit || budget == 0 {
                return Ok(Page { items, next_cursor: after.as_ref().map(encode_cursor) });
            }
        }
    }

    /// The caller follows `id`. Idempotent; `Invalid` for oneself; `NotFound` for unknown users.
    pub async fn follow(&self, ctx: &Ctx, id: &str) -> Result<()> {
        authorize(ctx.principal(), Action::Follow, None)?;
        let me = require(ctx.principal())?.user_id.clone();
        check_id("id", id)?;
        if me == id {
            return Err(ServiceError::invalid("id", "cannot follow yourself"));
        }
        self.existing(id).await?;
        // A still-valid access token may outlive its account.
        if load_user(&self.store, &me).await?.is_none() {
            return Err(ServiceError::Unauthorized { reason: "account no longer exists" });
        }
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (follower, followed) = (Key::from(me.as_str()), Key::from(id));
            if self.store.get(FOLLOWING, &follower, &followed).await?.is_some() {
                return Ok(());
            }
            let now = self.store.now_ms();
            let log = user_log(&me);
            let version = self.store.event_version(&log).await?;
            let mut batch = WriteBatch::new();
            let at = now.to_be_bytes().to_vec();
            batch.put_with(FOLLOWERS, &followed, &follower, at.clone(), None, Condition::Absent);
            batch.put_with(FOLLOWING, &follower, &followed, at, None, Condition::Absent);
            stage_event(
                &mut batch,
                NewEvent {
                    log: &log,
                    expected_version: version,
                    kind: USER_FOLLOWED,
                    aggregate_id: &me,
                    payload: serde_json::json!({ "follower_id": me, "followed_id": id }),
                },
                now,
                ctx,
            )?;
            if committed(self.store.commit(batch).await)? {
                return Ok(());
            }
        }
        Err(too_contended())
    }

    /// The caller stops following `id`. Idempotent; `NotFound` for unknown users not followed.
    pub async fn unfollow(&self, ctx: &Ctx, id: &str) -> Result<()> {
        authorize(ctx.principal(), Action::Follow, None)?;
        let me = require(ctx.principal())?.user_id.clone();
        check_id("id", id)?;
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (follower, followed) = (Key::from(me.as_str()), Key::from(id));
            let Some(edge) = self.store.get(FOLLOWING, &follower, &followed).await? else {
                self.existing(id).await?;
                return Ok(());
            };
            let now = self.store.now_ms();
            let log = user_log(&me);
            let version = self.store.event_version(&log).await?;
            let mut batch = WriteBatch::new();
            batch.delete(FOLLOWING, &follower, &followed, Condition::Version(edge.version));
            batch.delete(FOLLOWERS, &followed, &follower, Condition::None);
            stage_event(
                &mut batch,
                NewEvent {
                    log: &log,
                    expected_version: version,
                    kind: USER_UNFOLLOWED,
                    aggregate_id: &me,
                    payload: serde_json::json!({ "follower_id": me, "followed_id": id }),
                },
                now,
                ctx,
            )?;
            if committed(self.store.commit(batch).await)? {
                return Ok(());
            }
        }
        Err(too_contended())
    }
}

/// The user ids in the clustering keys of follow rows.
pub(crate) fn edge_ids(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| match r.ck.0.as_slice() {
            [KeyPart::Str(id)] => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Requests the users actor handles (closed set; each carries its reply port).
pub enum UsersMsg {
    /// [`Users::get`].
    Get {
        /// Caller.
        ctx: Ctx,
        /// User id.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<User>>,
    },
    /// [`Users::me`].
    Me {
        /// Caller.
        ctx: Ctx,
        /// Answer.
        reply: RpcReplyPort<Result<User>>,
    },
    /// [`Users::update`].
    Update {
        /// Caller.
        ctx: Ctx,
        /// User id.
        id: String,
        /// Changes.
        patch: UserPatch,
        /// Answer.
        reply: RpcReplyPort<Result<User>>,
    },
    /// [`Users::delete`].
    Delete {
        /// Caller.
        ctx: Ctx,
        /// User id.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
    /// [`Users::list`].
    List {
        /// Caller.
        ctx: Ctx,
        /// Filter and paging.
        query: UserQuery,
        /// Answer.
        reply: RpcReplyPort<Result<Page<User>>>,
    },
    /// [`Users::follow`].
    Follow {
        /// Caller.
        ctx: Ctx,
        /// Whom to follow.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
    /// [`Users::unfollow`].
    Unfollow {
        /// Caller.
        ctx: Ctx,
        /// Whom to unfollow.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
}

impl ractor::Message for UsersMsg {}

/// The supervised users actor: dispatches each request to a task (see `runtime`).
#[derive(Clone, Debug)]
pub struct UsersActor {
    svc: Arc<Users>,
}

impl UsersActor {
    /// An actor serving `svc`.
    pub fn new(svc: Arc<Users>) -> Self {
        Self { svc }
    }
}

impl Actor for UsersActor {
    type Msg = UsersMsg;
    type State = Inflight;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<UsersMsg>, _args: ()) -> Result<Inflight, ActorProcessingErr> {
        Ok(Inflight::default())
    }

    async fn post_stop(&self, _myself: ActorRef<UsersMsg>, state: &mut Inflight) -> Result<(), ActorProcessingErr> {
        state.drain().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<UsersMsg>,
        msg: UsersMsg,
        state: &mut Inflight,
    ) -> Result<(), ActorProcessingErr> {
        let svc = Arc::clone(&self.svc);
        const NAME: &str = crate::runtime::USERS_SERVICE;
        match msg {
            UsersMsg::Get { ctx, id, reply } => state.spawn_reply(NAME, reply, async move { svc.get(&ctx, &id).await }),
            UsersMsg::Me { ctx, reply } => state.spawn_reply(NAME, reply, async move { svc.me(&ctx).await }),
            UsersMsg::Update { ctx, id, patch, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.update(&ctx, &id, patch).await })
            }
            UsersMsg::Delete { ctx, id, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.delete(&ctx, &id).await })
            }
            UsersMsg::List { ctx, query, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.list(&ctx, query).await })
            }
            UsersMsg::Follow { ctx, id, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.follow(&ctx, &id).await })
            }
            UsersMsg::Unfollow { ctx, id, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.unfollow(&ctx, &id).await })
            }
        }
        Ok(())
    }
}

/// Typed client of the users service (deadline, breaker and admission limit from its `ServiceRef`).
#[derive(Clone, Debug)]
pub struct UsersClient {
    svc: ServiceRef<UsersMsg>,
}

impl UsersClient {
    /// A client over `svc`.
    pub fn new(svc: ServiceRef<UsersMsg>) -> Self {
        Self { svc }
    }

    /// The underlying service handle.
    pub fn service(&self) -> &ServiceRef<UsersMsg> {
        &self.svc
    }

    /// See [`Users::get`].
    pub async fn get(&self, ctx: Ctx, id: String) -> Result<User> {
        crate::runtime::query(&self.svc, crate::runtime::USERS_SERVICE, |u: Arc<Users>| async move {
            u.get(&ctx, &id).await
        })
        .await
    }

    /// See [`Users::me`].
    pub async fn me(&self, ctx: Ctx) -> Result<User> {
        crate::runtime::query(&self.svc, crate::runtime::USERS_SERVICE, |u: Arc<Users>| async move { u.me(&ctx).await })
            .await
    }

    /// See [`Users::update`].
    pub async fn update(&self, ctx: Ctx, id: String, patch: UserPatch) -> Result<User> {
        self.svc.call(|reply| UsersMsg::Update { ctx, id, patch, reply }).await?
    }

    /// See [`Users::delete`].
    pub async fn delete(&self, ctx: Ctx, id: String) -> Result<()> {
        self.svc.call(|reply| UsersMsg::Delete { ctx, id, reply }).await?
    }

    /// See [`Users::list`].
    pub async fn list(&self, ctx: Ctx, query: UserQuery) -> Result<Page<User>> {
        crate::runtime::query(&self.svc, crate::runtime::USERS_SERVICE, |u: Arc<Users>| async move {
            u.list(&ctx, query).await
        })
        .await
    }

    /// See [`Users::follow`].
    pub async fn follow(&self, ctx: Ctx, id: String) -> Result<()> {
        self.svc.call(|reply| UsersMsg::Follow { ctx, id, reply }).await?
    }

    /// See [`Users::unfollow`].
    pub async fn unfollow(&self, ctx: Ctx, id: String) -> Result<()> {
        self.svc.call(|reply| UsersMsg::Unfollow { ctx, id, reply }).await?
    }
}

#[cfg(test)]
mod tests;
