//! The auth service: registration, login, refresh-token rotation and logout.
//!
//! - Register normalizes and validates the input, hashes the password (argon2id, blocking pool, bounded),
//!   then writes in ONE atomic batch: the user row, the unique email index row (`Condition::Absent`: the
//!   one place uniqueness is decided, so of N concurrent registrations with one email exactly one wins),
//!   the admin-directory row, the `user.created` event and its outbox entry. Emails listed in
//!   `AuthSettings::admin_emails` get the `admin` role.
//! - Login checks the password (unknown emails cost the same work as wrong passwords) and returns a
//!   short-lived JWT access token and an opaque refresh token.
//! - Refresh tokens are 32 random bytes; only their SHA-256 is stored ([`crate::schema::REFRESH_TOKENS`], row TTL =
//!   expiry). Refresh rotates: the old row is deleted (conditional on its version, so a token is
//!   redeemed at most once) and a new one written in the same batch; the access token carries the user's
//!   current roles. Logout deletes the row. Token issue/rotation is session state, not a domain event.
//! - Reuse detection: every token belongs to a family (one login and its rotations). A redeemed token
//!   leaves a "spent" marker ([`crate::schema::REFRESH_SPENT`]); presenting a spent token again means it
//!   was copied, so the whole family is revoked ([`crate::schema::REFRESH_REVOKED`]) and the holder of the
//!   current token must log in again. Logout revokes the family too.
//!
//! Collaborators: `password` (hashing), `tokens` (JWT), `users` (the user record), `policy`, the store.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_actors::ServiceRef;
use troupe_storage::{Condition, Key, KeyPart, Scan, Store, WriteBatch};

use crate::common::{Ctx, NewEvent, decode_row, new_id, stage_event, user_log};
use crate::error::{Result, ServiceError};
use crate::events::USER_CREATED;
use crate::password::{HashParams, PasswordHasher};
use crate::policy::{Action, Role, authorize};
use crate::runtime::Inflight;
use crate::schema::{
    REFRESH_REVOKED, REFRESH_SPENT, REFRESH_TOKENS, SESSIONS_REVOKED, USER_DIRECTORY, USER_EMAILS, USERS,
};
use crate::tokens::jwks::JwksSettings;
use crate::tokens::{JwtKey, Tokens, random_token, token_digest};
use crate::users::{DirectoryEntry, User, UserRecord, directory_ck, load_user};

/// Shortest accepted password (characters).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password (characters).
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Longest accepted email (bytes, RFC 5321).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest display name (characters).
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Session revocations read per page at start.
const REVOCATION_PAGE: usize = 512;

/// Auth configuration (the node fills it from `auth.*` config).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `iss` of issued tokens, required on verify.
    pub issuer: String,
    /// `aud` of issued tokens, required on verify.
    pub audience: String,
    /// Signing / verification key (the algorithm follows from it).
    pub key: JwtKey,
    /// Access token lifetime (default 15 min).
    pub access_ttl: Duration,
    /// Refresh token lifetime (default 30 days).
    pub refresh_ttl: Duration,
    /// Registering with one of these emails grants `admin` (compared normalized).
    pub admin_emails: Vec<String>,
    /// Password hashes computed at once (default 2).
    pub hash_concurrency: usize,
    /// argon2id costs.
    pub hash_params: HashParams,
    /// Also accept tokens of this external identity provider (default none).
    pub jwks: Option<JwksSettings>,
}

impl Default for AuthSettings {
    /// Issuer `troupe`, audience `troupe-api`, a random HS256 secret (tokens die with the process), 15 min
    /// access, 30 days refresh, no admins, 2 concurrent hashes, OWASP argon2id costs.
    fn default() -> Self {
        Self {
            issuer: "troupe".into(),
            audience: "troupe-api".into(),
            key: JwtKey::random_hs256(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            admin_emails: Vec::new(),
            hash_concurrency: 2,
            hash_params: HashParams::default(),
            jwks: None,
        }
    }
}

impl AuthSettings {
    /// The token signer/verifier these settings describe.
    pub fn tokens(&self) -> Result<Tokens> {
        Ok(Tokens::with_jwks(&self.key, &self.issuer, &self.audience, self.access_ttl, self.jwks.clone())?)
    }
}

/// `POST /auth/register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Email (normalized: trimmed, lowercased).
    pub email: String,
    /// Password, 8..=128 characters.
    pub password: String,
    /// Display name, 1..=64 characters.
    pub display_name: String,
}

/// `POST /auth/login` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /auth/refresh` and `POST /auth/logout` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the previous refresh.
    pub refresh_token: String,
}

/// Login / refresh answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// JWT access token.
    pub access_token: String,
    /// Opaque refresh token (single use).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A stored refresh token (keyed by the token's SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshRecord {
    user_id: String,
    /// The login this token descends from (UUIDv7).
    family: String,
    issued_at_ms: u64,
}

/// A redeemed refresh token (keyed by its SHA-256), kept until it would have expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpentRecord {
    family: String,
}

/// Normalizes and validates an email: trimmed, lowercased, one `@`, non-empty local part, a dotted
/// domain, no spaces or control characters, at most 254 bytes.
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let bad = |why: &str| ServiceError::invalid("email", why);
    if e.is_empty() || e.len() > MAX_EMAIL_LEN {
        return Err(bad("must be 1 to 254 characters"));
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces"));
    }
    let Some((local, domain)) = e.split_once('@') else { return Err(bad("must contain @")) };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(bad("is not a valid address"));
    }
    Ok(e)
}

fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        return Err(ServiceError::invalid(
            "password",
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

fn bad_credentials() -> ServiceError {
    ServiceError::Unauthorized { reason: "invalid email or password" }
}

fn bad_refresh() -> ServiceError {
    ServiceError::Unauthorized { reason: "invalid refresh token" }
}

/// The auth service's operations (run by [`AuthActor`]; callable directly in tests).
#[derive(Debug)]
pub struct Auth {
    store: Store,
    tokens: Tokens,
    hasher: PasswordHasher,
    refresh_ttl: Duration,
    admin_emails: Vec<String>,
}

impl Auth {
    /// Builds the service; fails on unusable keys or hash parameters.
    pub fn new(store: Store, settings: AuthSettings) -> Result<Self> {
        let tokens = settings.tokens()?;
        let hasher = PasswordHasher::new(settings.hash_params, settings.hash_concurrency)?;
        let admin_emails = settings.admin_emails.iter().filter_map(|e| normalize_email(e).ok()).collect();
        Ok(Self { store, tokens, hasher, refresh_ttl: settings.refresh_ttl, admin_emails })
    }

    /// The access-token signer/verifier.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The password hasher (tests stall it).
    #[cfg(test)]
    pub(crate) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Creates an account. `Conflict` if the email is taken, `Invalid` for bad input.
    pub async fn register(&self, ctx: &Ctx, req: RegisterRequest) -> Result<User> {
        authorize(ctx.principal(), Action::Register, None)?;
        let email = normalize_email(&req.email)?;
        let display_name = crate::common::check_text("display_name", &req.display_name, MAX_DISPLAY_NAME_CHARS, false)?;
        check_password(&req.password)?;
        let email_key = Key::from(email.as_str());
        // Cheap early answer; the conditional write below is what actually decides.
        if self.store.get(USER_EMAILS, &email_key, &Key::empty()).await?.is_some() {
            return Err(ServiceError::Conflict { reason: "email already registered" });
        }
        let password_hash = self.hasher.hash(req.password).await?;
        let now = self.store.now_ms();
        let mut roles = vec![Role::User];
        if self.admin_emails.contains(&email) {
            roles.push(Role::Admin);
        }
        let rec = UserRecord {
            id: new_id(),
            email: email.clone(),
            display_name,
            roles,
            password_hash,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let mut batch = WriteBatch::new();
        let user_key = Key::from(rec.id.as_str());
        batch.put_with(USERS, &user_key, &Key::empty(), troupe_storage::typed::encode(&rec), None, Condition::Absent);
        batch.put_with(USER_EMAILS, &email_key, &Key::empty(), rec.id.as_bytes().to_vec(), None, Condition::Absent);
        batch.put(
            USER_DIRECTORY,
            &Key::empty(),
            &directory_ck(&rec.email, &rec.id),
            troupe_storage::typed::encode(&DirectoryEntry::of(&rec)),
        );
        stage_event(
            &mut batch,
            NewEvent {
                log: &user_log(&rec.id),
                expected_version: 0,
                kind: USER_CREATED,
                aggregate_id: &rec.id,
                payload: serde_json::json!({
                    "user_id": rec.id, "email": rec.email, "display_name": rec.display_name,
                }),
            },
            now,
            ctx,
        )?;
        if !crate::common::committed(self.store.commit(batch).await)? {
            return Err(ServiceError::Conflict { reason: "email already registered" });
        }
        Ok(rec.view(true))
    }

    /// Exchanges email + password for tokens. Every failure is the same `Unauthorized`.
    pub async fn login(&self, ctx: &Ctx, req: LoginRequest) -> Result<TokenPair> {
        authorize(ctx.principal(), Action::Login, None)?;
        // Never spend a hash on absurd input (same answer as a wrong password).
        if req.password.chars().count() > MAX_PASSWORD_CHARS {
            return Err(bad_credentials());
        }
        let user = match normalize_email(&req.email) {
            Ok(email) => self.user_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            self.hasher.verify_dummy(req.password).await?;
            return Err(bad_credentials());
        };
        if !self.hasher.verify(user.password_hash.clone(), req.password).await? {
            return Err(bad_credentials());
        }
        let mut batch = WriteBatch::new();
        let family = new_id();
        let refresh = self.stage_refresh(&mut batch, &user.id, &family);
        self.store.commit(batch).await?;
        self.pair(&user, refresh, &family)
    }

    /// Redeems a refresh token for a new pair; the old refresh token is revoked (single use).
    pub async fn refresh(&self, ctx: &Ctx, refresh_token: &str) -> Result<TokenPair> {
        authorize(ctx.principal(), Action::Login, None)?;
        let pk = refresh_key(refresh_token)?;
        let Some(row) = self.store.get(REFRESH_TOKENS, &pk, &Key::empty()).await? else {
            self.revoke_if_spent(&pk).await?;
            return Err(bad_refresh());
        };
        let rec: RefreshRecord = decode_row(REFRESH_TOKENS, &row)?;
        let mut batch = WriteBatch::new();
        batch.delete(REFRESH_TOKENS, &pk, &Key::empty(), Condition::Version(row.version));
        let family = Key::from(rec.family.as_str());
        let revoked = self.store.get(REFRESH_REVOKED, &family, &Key::empty()).await?.is_some();
        let user = load_user(&self.store, &rec.user_id).await?.map(|(_, u)| u);
        let Some(user) = user.filter(|_| !revoked) else {
            // The family was revoked or the user is gone: the token dies.
            self.store.commit(batch).await?;
            return Err(bad_refresh());
        };
        let spent = SpentRecord { family: rec.family.clone() };
        batch.put_with(
            REFRESH_SPENT,
            &pk,
            &Key::empty(),
            troupe_storage::typed::encode(&spent),
            row.expires_at_ms.or(Some(self.store.expires_in(self.refresh_ttl))),
            Condition::None,
        );
        let refresh = self.stage_refresh(&mut batch, &user.id, &rec.family);
        if !crate::common::committed(self.store.commit(batch).await)? {
            // Someone redeemed (or revoked) this token first.
            return Err(bad_refresh());
        }
        self.pair(&user, refresh, &rec.family)
    }

    /// Revokes a refresh token and its family. Idempotent: unknown or already revoked tokens are fine.
    pub async fn logout(&self, ctx: &Ctx, refresh_token: &str) -> Result<()> {
        authorize(ctx.principal(), Action::Logout, None)?;
        let Ok(pk) = refresh_key(refresh_token) else { return Ok(()) };
        let Some(row) = self.store.get(REFRESH_TOKENS, &pk, &Key::empty()).await? else { return Ok(()) };
        let rec: RefreshRecord = decode_row(REFRESH_TOKENS, &row)?;
        let mut batch = WriteBatch::new();
        batch.delete(REFRESH_TOKENS, &pk, &Key::empty(), Condition::None);
        self.stage_revoke(&mut batch, &rec.family);
        self.store.commit(batch).await?;
        self.tokens.revoke_session(&rec.family, self.store.now_ms() / 1000);
        Ok(())
    }

    /// A token that is not live: if it was redeemed before, it has been copied — revoke its family.
    async fn revoke_if_spent(&self, pk: &Key) -> Result<()> {
        let Some(row) = self.store.get(REFRESH_SPENT, pk, &Key::empty()).await? else { return Ok(()) };
        let spent: SpentRecord = decode_row(REFRESH_SPENT, &row)?;
        tracing::warn!(family = %spent.family, "refresh token reused; revoking its family");
        let mut batch = WriteBatch::new();
        self.stage_revoke(&mut batch, &spent.family);
        self.store.commit(batch).await?;
        self.tokens.revoke_session(&spent.family, self.store.now_ms() / 1000);
        Ok(())
    }

    /// Marks a token family revoked until every token of it would have expired anyway, and records
    /// the session revocation that access-token verification loads at start
    /// ([`crate::schema::SESSIONS_REVOKED`], kept as long as an access token of it may live).
    fn stage_revoke(&self, batch: &mut WriteBatch, family: &str) {
        let until = Some(self.store.expires_in(self.refresh_ttl));
        batch.put_with(REFRESH_REVOKED, &Key::from(family), &Key::empty(), Vec::new(), until, Condition::None);
        let now = self.store.now_ms();
        let keep = self.tokens.access_ttl() + Duration::from_secs(crate::tokens::LEEWAY_SECS + 1);
        batch.put_with(
            SESSIONS_REVOKED,
            &Key::empty(),
            &Key::empty().u64(now).str(family),
            Vec::new(),
            Some(self.store.expires_in(keep)),
            Condition::None,
        );
    }

    /// Loads the sessions revoked within the last access-token lifetime into the token verifier's
    /// in-memory set (the auth actor runs it at every start). Returns how many.
    pub async fn load_revoked_sessions(&self) -> Result<usize> {
        let now = self.store.now_ms();
        let window = self.tokens.access_ttl() + Duration::from_secs(crate::tokens::LEEWAY_SECS + 1);
        let since = now.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let mut loaded = 0;
        let mut cursor = None;
        loop {
            let first = cursor.is_none();
            let mut scan = Scan::all().limit(REVOCATION_PAGE).after(cursor.take());
            if first {
                scan.start = std::ops::Bound::Included(Key::empty().u64(since).encode());
            }
            let page = self.store.scan(SESSIONS_REVOKED, &Key::empty(), &scan).await?;
            for row in &page.rows {
                if let [KeyPart::U64(at_ms), KeyPart::Str(sid)] = row.ck.0.as_slice() {
                    self.tokens.apply_revocation(sid, at_ms / 1000);
                    loaded += 1;
                }
            }
            match page.next {
                Some(next) if page.rows.len() == REVOCATION_PAGE => cursor = Some(next),
                _ => return Ok(loaded),
            }
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let Some(row) = self.store.get(USER_EMAILS, &Key::from(email), &Key::empty()).await? else {
            return Ok(None);
        };
        let id = String::from_utf8(row.value).map_err(|_| ServiceError::internal("email index value is not UTF-8"))?;
        Ok(load_user(&self.store, &id).await?.map(|(_, u)| u))
    }

    /// Adds a new refresh-token row to `batch`; returns the token.
    fn stage_refresh(&self, batch: &mut WriteBatch, user_id: &str, family: &str) -> String {
        let token = random_token();
        let rec =
            RefreshRecord { user_id: user_id.to_owned(), family: family.to_owned(), issued_at_ms: self.store.now_ms() };
        batch.put_with(
            REFRESH_TOKENS,
            &Key::from(token_digest(&token)),
            &Key::empty(),
            troupe_storage::typed::encode(&rec),
            Some(self.store.expires_in(self.refresh_ttl)),
            Condition::Absent,
        );
        token
    }

    fn pair(&self, user: &UserRecord, refresh_token: String, session: &str) -> Result<TokenPair> {
        let access = self.tokens.issue_for_session(&user.id, &user.roles, session)?;
        Ok(TokenPair {
            access_token: access.token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
        })
    }
}

/// The store key of a presented refresh token; anything not shaped like one is refused unread.
fn refresh_key(token: &str) -> Result<Key> {
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_refresh());
    }
    Ok(Key::from(token_digest(token)))
}

/// Requests the auth actor handles (closed set; each carries its reply port).
pub enum AuthMsg {
    /// [`Auth::register`].
    Register {
        /// Caller.
        ctx: Ctx,
        /// Body.
        req: RegisterRequest,
        /// Answer.
        reply: RpcReplyPort<Result<User>>,
    },
    /// [`Auth::login`].
    Login {
        /// Caller.
        ctx: Ctx,
        /// Body.
        req: LoginRequest,
        /// Answer.
        reply: RpcReplyPort<Result<TokenPair>>,
    },
    /// [`Auth::refresh`].
    Refresh {
        /// Caller.
        ctx: Ctx,
        /// The refresh token.
        refresh_token: String,
        /// Answer.
        reply: RpcReplyPort<Result<TokenPair>>,
    },
    /// [`Auth::logout`].
    Logout {
        /// Caller.
        ctx: Ctx,
        /// The refresh token.
        refresh_token: String,
        /// Answer.
        reply: RpcReplyPort<Result<()>>,
    },
}

impl ractor::Message for AuthMsg {}

/// The supervised auth actor: dispatches each request to a task (see `runtime`).
#[derive(Clone, Debug)]
pub struct AuthActor {
    svc: Arc<Auth>,
}

impl AuthActor {
    /// An actor serving `svc`.
    pub fn new(svc: Arc<Auth>) -> Self {
        Self { svc }
    }
}

impl Actor for AuthActor {
    type Msg = AuthMsg;
    type State = Inflight;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<AuthMsg>, _args: ()) -> Result<Inflight, ActorProcessingErr> {
        // Access tokens of sessions ended before a restart stay refused.
        let n = self.svc.load_revoked_sessions().await?;
        tracing::debug!(sessions = n, "revoked sessions loaded");
        Ok(Inflight::default())
    }

    async fn post_stop(&self, _myself: ActorRef<AuthMsg>, state: &mut Inflight) -> Result<(), ActorProcessingErr> {
        state.drain().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AuthMsg>,
        msg: AuthMsg,
        state: &mut Inflight,
    ) -> Result<(), ActorProcessingErr> {
        let svc = Arc::clone(&self.svc);
        const NAME: &str = crate::runtime::AUTH_SERVICE;
        match msg {
            AuthMsg::Register { ctx, req, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.register(&ctx, req).await })
            }
            AuthMsg::Login { ctx, req, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.login(&ctx, req).await })
            }
            AuthMsg::Refresh { ctx, refresh_token, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.refresh(&ctx, &refresh_token).await })
            }
            AuthMsg::Logout { ctx, refresh_token, reply } => {
                state.spawn_reply(NAME, reply, async move { svc.logout(&ctx, &refresh_token).await })
            }
        }
        Ok(())
    }
}

/// Typed client of the auth service (deadline, breaker and admission limit from its `ServiceRef`).
#[derive(Clone, Debug)]
pub struct AuthClient {
    svc: ServiceRef<AuthMsg>,
}

impl AuthClient {
    /// A client over `svc`.
    pub fn new(svc: ServiceRef<AuthMsg>) -> Self {
        Self { svc }
    }

    /// The underlying service handle (path, default timeout).
    pub fn service(&self) -> &ServiceRef<AuthMsg> {
        &self.svc
    }

    /// See [`Auth::register`].
    pub async fn register(&self, ctx: Ctx, req: RegisterRequest) -> Result<User> {
        self.svc.call(|reply| AuthMsg::Register { ctx, req, reply }).await?
    }

    /// See [`Auth::login`].
    pub async fn login(&self, ctx: Ctx, req: LoginRequest) -> Result<TokenPair> {
        self.svc.call(|reply| AuthMsg::Login { ctx, req, reply }).await?
    }

    /// See [`Auth::refresh`].
    pub async fn refresh(&self, ctx: Ctx, refresh_token: String) -> Result<TokenPair> {
        self.svc.call(|reply| AuthMsg::Refresh { ctx, refresh_token, reply }).await?
    }

    /// See [`Auth::logout`].
    pub async fn logout(&self, ctx: Ctx, refresh_token: String) -> Result<()> {
        self.svc.call(|reply| AuthMsg::Logout { ctx, refresh_token, reply }).await?
    }
}

#[cfg(test)]
mod tests;
