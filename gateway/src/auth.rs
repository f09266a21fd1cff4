//! Bearer authentication: the `Authorization: Bearer <jwt>` header becomes a [`Principal`] through
//! `Tokens::verify` (stateless: signature, `exp`/`nbf` with 60 s leeway, `iss`, `aud`, the one configured
//! algorithm — `alg: none` never verifies). The outcome is computed at most once per request and cached
//! in the request's extensions, so the rate limiter (which keys on the user) and the handler's extractor
//! share it.
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
}

/// Client-safe reason for a refused token.
fn reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::Expired => "token expired",
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

fn compute(parts: &Parts, state: &GatewayState) -> AuthOutcome {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return AuthOutcome::Anonymous };
    let Ok(value) = value.to_str() else { return AuthOutcome::Invalid("malformed authorization header") };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return AuthOutcome::Invalid("expected a bearer token");
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return AuthOutcome::Invalid("expected a bearer token");
    }
    let Some(tokens) = state.api().tokens.as_ref() else {
        return AuthOutcome::Invalid("authentication is not configured on this node");
    };
    match tokens.verify(token.trim()) {
        Ok(p) => AuthOutcome::Valid(p),
        Err(e) => AuthOutcome::Invalid(reason(&e)),
    }
}

/// A caller with a valid bearer token; otherwise the request is refused with 401.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<GatewayState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        match outcome(parts, state) {
            AuthOutcome::Valid(p) => Ok(Self(p)),
            AuthOutcome::Anonymous => Err(ApiError::Unauthorized("sign-in required")),
            AuthOutcome::Invalid(why) => Err(ApiError::InvalidToken(why)),
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
        match outcome(parts, state) {
            AuthOutcome::Valid(p) => Ok(Self(Some(p))),
            AuthOutcome::Anonymous => Ok(Self(None)),
            AuthOutcome::Invalid(why) => Err(ApiError::InvalidToken(why)),
        }
    }
}
