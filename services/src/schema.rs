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
