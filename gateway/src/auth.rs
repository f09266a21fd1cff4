//! Bearer authentication: the `Authorization: Bearer <jwt>` header becomes a [`Principal`] through
//! `Tokens::verify` (stateless: signature, `exp`/`nbf` with 60 s leeway, `iss`, `aud`, the one configured
//! algorithm — `alg: none` never verifies). The outcome is computed at most once per request and cached
//! in the request's extensions, so the rate limiter (which keys on the user) and the handler's extractor
//! share it.
//!
//! Tokens of an external identity provider (JWKS configured) whose `kid` is not cached yet: the sync
//! pass (also used by the rate limiter, which then counts the request as anonymous) records
//! `UnknownKey` without waiting; the extractors, which are async, then wait for one bounded,
//! rate-limited refetch of the provider's keys (`Tokens::verify_async`) and verify again. Our own
//! tokens never wait for anything.
//!
//! Extractors: [`Authenticated`] (401 unless a valid token was sent) and [`MaybeAuthenticated`] (anonymous
//! when no `Authorization` header was sent; a header with a bad token is still a 401, never a silent
//! downgrade to anonymous). Both answer 401 with `WWW-Authenticate: Bearer`.
//!
//! Collaborators: `troupe_services::Tokens`, `crate::limits` (keys on the principal), `crate::error`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use troupe_services::{AuthError, Principal};

use crate::{ApiError, GatewayState};

/// The result of looking at a request's `Authorization` header, cached in its extensions.
#[derive(Clone, Debug)]
pub(crate) enum AuthOutcome {
    /// No `Authorization` header.
    Anonymous,
    /// A valid bearer token.
    Valid(Principal),
    /// A header that is not a valid bearer token (client-safe reason).
    Invalid(&'static str),
    /// An external token whose signing key is not cached: the extractors refetch and decide.
    UnknownKey,
}

/// Client-safe reason for a refused token.
fn reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::Expired => "token expired",
        AuthError::Revoked => "session ended; sign in again",
        AuthError::Key(detail) => {
            tracing::error!(detail = %detail, "token verification is misconfigured");
            "token could not be verified"
        }
        _ => "invalid token",
    }
}

/// Verifies the bearer token of `parts` (once per request; later calls read the cached outcome).
pub(crate) fn outcome(parts: &mut Parts, state: &GatewayState) -> AuthOutcome {
    if let Some(done) = parts.extensions.get::<AuthOutcome>() {
        return done.clone();
    }
    let result = compute(parts, state);
    parts.extensions.insert(result.clone());
    result
}

/// The bearer token of `parts`: `Ok(None)` without an `Authorization` header.
fn bearer(parts: &Parts) -> Result<Option<&str>, &'static str> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let Ok(value) = value.to_str() else { return Err("malformed authorization header") };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err("expected a bearer token");
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("expected a bearer token");
    }
    Ok(Some(token.trim()))
}

fn verified(result: Result<Principal, AuthError>) -> AuthOutcome {
    match result {
        Ok(p) => AuthOutcome::Valid(p),
        Err(AuthError::UnknownKey) => AuthOutcome::UnknownKey,
        Err(e) => AuthOutcome::Invalid(reason(&e)),
    }
}

fn compute(parts: &Parts, state: &GatewayState) -> AuthOutcome {
    let token = match bearer(parts) {
        Ok(None) => return AuthOutcome::Anonymous,
        Ok(Some(token)) => token,
        Err(why) => return AuthOutcome::Invalid(why),
    };
    let Some(tokens) = state.api().tokens.as_ref() else {
        return AuthOutcome::Invalid("authentication is not configured on this node");
    };
    verified(tokens.verify(token))
}

/// [`outcome`], then for an external token with an unknown `kid` one bounded refetch of the
/// provider's keys and a second verification (cached in the extensions like the first).
async fn resolve(parts: &mut Parts, state: &GatewayState) -> AuthOutcome {
    let first = outcome(parts, state);
    if !matches!(first, AuthOutcome::UnknownKey) {
        return first;
    }
    let result = match (bearer(parts), state.api().tokens.as_ref()) {
        (Ok(Some(token)), Some(tokens)) => match verified(tokens.verify_async(token).await) {
            AuthOutcome::UnknownKey => AuthOutcome::Invalid("invalid token"),
            other => other,
        },
        _ => AuthOutcome::Invalid("invalid token"),
    };
    parts.extensions.insert(result.clone());
    result
}

/// A caller with a valid bearer token; otherwise the request is refused with 401.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<GatewayState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        match resolve(parts, state).await {
            AuthOutcome::Valid(p) => Ok(Self(p)),
            AuthOutcome::Anonymous => Err(ApiError::Unauthorized("sign-in required")),
            AuthOutcome::Invalid(why) => Err(ApiError::InvalidToken(why)),
            AuthOutcome::UnknownKey => Err(ApiError::InvalidToken("invalid token")),
        }
    }
}

/// A caller who may be anonymous (no `Authorization` header). A header with an invalid token is still
/// refused with 401.
#[derive(Clone, Debug)]
pub struct MaybeAuthenticated(pub Option<Principal>);

impl FromRequestParts<GatewayState> for MaybeAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        match resolve(parts, state).await {
            AuthOutcome::Valid(p) => Ok(Self(Some(p))),
            AuthOutcome::Anonymous => Ok(Self(None)),
            AuthOutcome::Invalid(why) => Err(ApiError::InvalidToken(why)),
            AuthOutcome::UnknownKey => Err(ApiError::InvalidToken("invalid token")),
        }
    }
}

#[cfg(test)]
mod tests;
