//! Store tables shared between services (the contract between modules; each table has one writer).
//!
//! Keys are `troupe_storage::Key` tuples; ids are UUIDv7 strings.

/// Who follows a user. pk = `(followed_user_id)`, ck = `(follower_user_id)`, value = follow time (ms, u64 BE).
/// Written by the users service only; read by notifications to find the followers of an author.
pub const FOLLOWERS: &str = "followers";
/// Whom a user follows. pk = `(follower_user_id)`, ck = `(followed_user_id)`, value as [`FOLLOWERS`].
/// Written by the users service only (in the same atomic write as the `FOLLOWERS` row).
pub const FOLLOWING: &str = "following";
/// Dead-lettered bus deliveries (see `troupe_actors::bus`).
pub const DEAD_LETTERS: &str = "dead_letters";

// ---- Tables owned by the auth, users and content services (one writer each: the owning module). ----
//
// Hot paths are single-partition: a user or content item is one point read; login is two (email index,
// user); lists and search scan one index partition newest first; only the feed reads several partitions
// (one per followed author, bounded by `content::MAX_FEED_AUTHORS`).

/// Users. pk = `(user_id)`, ck = `()`, value = `typed` postcard of the user record (incl. PHC hash).
pub const USERS: &str = "users";
/// Unique email index. pk = `(normalized_email)`, ck = `()`, value = user id (UTF-8). Written with
/// `Condition::Absent` in the same batch as the user row: the one place email uniqueness is decided.
pub const USER_EMAILS: &str = "user_emails";
/// The admin user directory: ONE partition pk = `()`, ck = `(normalized_email, user_id)`, value = `typed`
/// `(display_name)`. Admin list/search scans it in email order (a prefix query on email is a range scan;
/// other substring matches are filtered over a bounded number of rows per page). Admin-only, not a hot
/// path; a cluster would bucket this partition.
pub const USER_DIRECTORY: &str = "user_directory";
/// Refresh tokens. pk = `(sha256_hex(token))`, ck = `()`, value = `typed` record, row TTL = token expiry.
pub const REFRESH_TOKENS: &str = "refresh_tokens";
/// Redeemed refresh tokens. pk = `(sha256_hex(token))`, ck = `()`, value = `typed` family id, row TTL = the
/// token's expiry. Presenting one again revokes its family.
pub const REFRESH_SPENT: &str = "refresh_spent";
/// Revoked refresh-token families. pk = `(family_id)`, ck = `()`, empty value, row TTL = refresh TTL.
pub const REFRESH_REVOKED: &str = "refresh_revoked";
/// Revoked sessions (logout, refresh-token reuse): ONE partition pk = `()`, ck = `(revoked_at_ms, family_id)`,
/// empty value, row TTL = access-token TTL + leeway (after that every access token of the session has
/// expired). The auth service loads it into the token verifier's in-memory set at start.
pub const SESSIONS_REVOKED: &str = "sessions_revoked";
/// Content items. pk = `(content_id)`, ck = `()`, value = `typed` content record (incl. its indexed words).
pub const CONTENT: &str = "content";
/// Every item, newest first. ONE partition pk = `()`, ck = `(u64::MAX - created_ms, content_id)`, empty value.
pub const CONTENT_ALL: &str = "content_all";
/// Items by author. pk = `(author_id)`, ck as [`CONTENT_ALL`].
pub const CONTENT_BY_AUTHOR: &str = "content_by_author";
/// Items by tag. pk = `(tag)`, ck as [`CONTENT_ALL`].
pub const CONTENT_BY_TAG: &str = "content_by_tag";
/// Word index over title + body (lowercased, deduplicated). pk = `(word)`, ck as [`CONTENT_ALL`].
pub const CONTENT_BY_WORD: &str = "content_by_word";
