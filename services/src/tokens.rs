//! Access tokens (JWT via `jsonwebtoken`) and opaque refresh-token material.
//!
//! [`Tokens`] signs and verifies access tokens with one configured algorithm (HS256 secret, or RS256 /
//! EdDSA PEM keys). Verification is stateless and cheap, so the gateway calls [`Tokens::verify`] directly
//! on every request instead of asking the auth actor. It requires `exp`, `nbf`, `iss` and `aud` (and
//! `sub`), allows 60 s of clock leeway, and accepts only the configured algorithm: `alg: none` does not
//! even parse, and a token signed with any other algorithm (e.g. HS256 with the RSA public key as the
//! secret) is refused before any key is used.
//!
//! External tokens: with a JWKS configured ([`jwks`]), a token whose header carries a `kid` is
//! checked against the identity provider's cached keys instead (our own tokens never carry a `kid`).
//! Its `sub` becomes the principal's user id **as-is** (no lookup: an external subject that is not a
//! Troupe user id owns no Troupe resources and `GET /users/me` answers 404 for it); its roles come
//! from the configured claim (default `roles`): every external token gets `user`, and `admin` only if
//! the claim lists it; unknown role names are ignored.
//!
//! Sessions: access tokens issued at login/refresh carry `sid` (the refresh-token family, one per
//! login). Logout and refresh-token reuse revoke the session: [`Tokens::revoke_session`] puts the sid
//! in an in-memory set (entries expire after the access-token TTL plus leeway, when every token of the
//! session has expired anyway), filled from the store when the auth service starts. Verification then
//! refuses the session's tokens with one hash lookup (none at all while the set is empty): no store
//! read per request. The set is per node: on a cluster the logout must be propagated to every node's
//! set, so a clustered node installs an [`Tokens::on_revoke`] hook that broadcasts a `session.revoked` message
//! over the cluster links, and applies the ones it receives with [`Tokens::apply_revocation`].
//!
//! Collaborators: `auth` (issues tokens at login/refresh), `policy` (the [`Principal`] a token yields),
//! the gateway (verifies bearer tokens).

pub mod jwks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ServiceError;
use crate::policy::{Principal, Role};

/// Clock leeway on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Signing/verification key material for access tokens.
#[derive(Clone)]
pub enum JwtKey {
    /// HMAC-SHA256 with a shared secret (≥ 32 bytes).
    Hs256 {
        /// The secret.
        secret: Vec<u8>,
    },
    /// RSA PKCS#1 v1.5 SHA-256. Without a private key the instance only verifies.
    Rs256 {
        /// PEM private key (PKCS#1 or PKCS#8), if this node issues tokens.
        private_pem: Option<Vec<u8>>,
        /// PEM public key.
        public_pem: Vec<u8>,
    },
    /// Ed25519. Without a private key the instance only verifies.
    EdDsa {
        /// PEM (PKCS#8) private key, if this node issues tokens.
        private_pem: Option<Vec<u8>>,
        /// PEM (SPKI) public key.
        public_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            Self::Hs256 { .. } => f.write_str("Hs256 { secret: <redacted> }"),
            Self::Rs256 { private_pem, .. } => write!(f, "Rs256 {{ private: {} }}", private_pem.is_some()),
            Self::EdDsa { private_pem, .. } => write!(f, "EdDsa {{ private: {} }}", private_pem.is_some()),
        }
    }
}

impl JwtKey {
    /// A fresh random HS256 secret (tokens do not survive a restart: for tests and single-node demos).
    pub fn random_hs256() -> Self {
        let mut secret = vec![0u8; 32];
        OsRng.fill_bytes(&mut secret);
        Self::Hs256 { secret }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256 { .. } => Algorithm::HS256,
            Self::Rs256 { .. } => Algorithm::RS256,
            Self::EdDsa { .. } => Algorithm::EdDSA,
        }
    }
}

/// Why a token was refused (or tokens could not be set up). `Display` is client-safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a well-formed JWT (bad base64/JSON, unknown `alg` such as `none`).
    #[error("malformed token")]
    Malformed,
    /// Signature does not match.
    #[error("invalid token signature")]
    BadSignature,
    /// The header's algorithm is not the configured one.
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is not this service's audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("token claim {0} missing or invalid")]
    BadClaim(String),
    /// Key material is unusable, or this instance has no private key to sign with.
    #[error("token keys misconfigured: {0}")]
    Key(String),
    /// The header's `kid` names no key of the identity provider (even after a refetch).
    #[error("token signing key unknown")]
    UnknownKey,
    /// The token's session was ended (logout or refresh-token reuse).
    #[error("token session revoked")]
    Revoked,
}

impl From<AuthError> for ServiceError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Key(detail) => ServiceError::internal(format!("jwt keys: {detail}")),
            AuthError::Expired => ServiceError::Unauthorized { reason: "token expired" },
            _ => ServiceError::Unauthorized { reason: "invalid token" },
        }
    }
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::WrongAlgorithm
        }
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => AuthError::BadClaim(c.clone()),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::RsaFailedSigning
        | ErrorKind::Signing(_)
        | ErrorKind::Provider(_) => AuthError::Key(e.to_string()),
        _ => AuthError::Malformed,
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before (seconds since the epoch).
    pub nbf: u64,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Token id (UUIDv7).
    pub jti: String,
    /// Roles (`["user"]`, `["user", "admin"]`).
    pub roles: Vec<Role>,
    /// Session id (the refresh-token family of the login); absent on tokens issued outside a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// A freshly signed access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Its claims.
    pub claims: Claims,
}

/// Told `(session id, revoked at in seconds since the epoch)` of each session this process revokes.
pub type RevocationHook = Arc<dyn Fn(&str, u64) + Send + Sync>;

struct Inner {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    jwks: Option<jwks::Jwks>,
    revoked: Revocations,
    /// Told about every session this process revokes (the cluster broadcasts it to the other nodes).
    on_revoke: OnceLock<RevocationHook>,
    /// Our own access tokens that passed full verification, so a client's next requests skip the
    /// signature check and claim parsing.
    verified: VerifiedCache,
    /// `base64url(header).` of the tokens we sign: a token starting with it is ours (no `kid`), so
    /// routing it costs a prefix compare instead of a header decode.
    own_header_prefix: String,
}

/// What the verified-token cache keeps of a token that passed full verification.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    exp: u64,
    nbf: u64,
    sid: Option<String>,
}

/// Most tokens the verified-token cache holds; when full it starts over (bounded memory, no LRU
/// bookkeeping on the hit path).
const VERIFIED_CACHE_CAPACITY: usize = 16_384;

/// Exact token text → its verified claims. Keyed by the whole token, so a hit is the very string
/// whose signature was checked; only our own tokens (fixed key and validation) are cached.
#[derive(Default)]
struct VerifiedCache {
    map: RwLock<HashMap<Box<str>, Verified>>,
}

impl VerifiedCache {
    fn get(&self, token: &str) -> Option<Verified> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(token).cloned()
    }

    fn insert(&self, token: &str, v: Verified) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= VERIFIED_CACHE_CAPACITY {
            map.clear();
        }
        map.insert(token.into(), v);
    }
}

/// Revoked session ids → when the entry may be forgotten (seconds since the epoch).
#[derive(Default)]
struct Revocations {
    /// Number of entries: lets verification skip the lock while nothing is revoked.
    len: AtomicUsize,
    map: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    fn contains(&self, sid: &str, now: u64) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(sid).is_some_and(|until| *until > now)
    }

    fn insert(&self, sid: &str, until: u64, now: u64) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, u| *u > now);
        if until > now {
            let e = map.entry(sid.to_owned()).or_insert(until);
            *e = (*e).max(until);
        }
        self.len.store(map.len(), Ordering::Release);
    }
}

/// Signs and verifies access tokens. Cheap to clone (shared); stateless verification.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

/// What the gateway holds to check bearer tokens (the same type: verification needs no actor).
pub type TokenVerifier = Tokens;

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("algorithm", &self.inner.algorithm)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("can_sign", &self.inner.encoding.is_some())
            .finish()
    }
}

/// Seconds since the Unix epoch (system clock, as `jsonwebtoken` validates with).
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Tokens {
    /// Sets up signing (if a private key or secret is given) and verification.
    pub fn new(key: &JwtKey, issuer: &str, audience: &str, access_ttl: Duration) -> Result<Self, AuthError> {
        Self::with_jwks(key, issuer, audience, access_ttl, None)
    }

    /// As [`Self::new`], also accepting tokens of the identity provider `jwks` describes.
    pub fn with_jwks(
        key: &JwtKey,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
        jwks: Option<jwks::JwksSettings>,
    ) -> Result<Self, AuthError> {
        let jwks = jwks.map(jwks::Jwks::new).transpose()?;
        let bad = |e: jsonwebtoken::errors::Error| AuthError::Key(e.to_string());
        let (encoding, decoding) = match key {
            JwtKey::Hs256 { secret } => {
                if secret.len() < 32 {
                    return Err(AuthError::Key("HS256 secret must be at least 32 bytes".into()));
                }
                (Some(EncodingKey::from_secret(secret)), DecodingKey::from_secret(secret))
            }
            JwtKey::Rs256 { private_pem, public_pem } => (
                private_pem.as_deref().map(EncodingKey::from_rsa_pem).transpose().map_err(bad)?,
                DecodingKey::from_rsa_pem(public_pem).map_err(bad)?,
            ),
            JwtKey::EdDsa { private_pem, public_pem } => (
                private_pem.as_deref().map(EncodingKey::from_ed_pem).transpose().map_err(bad)?,
                DecodingKey::from_ed_pem(public_pem).map_err(bad)?,
            ),
        };
        let algorithm = key.algorithm();
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Ok(Self {
            inner: Arc::new(Inner {
                algorithm,
                encoding,
                decoding,
                validation,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                access_ttl,
                jwks,
                revoked: Revocations::default(),
                on_revoke: OnceLock::new(),
                verified: VerifiedCache::default(),
                own_header_prefix: header_prefix(algorithm)?,
            }),
        })
    }

    /// The one algorithm accepted.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.inner.access_ttl
    }

    /// Signs an access token for `user_id` with `roles`, valid from now for the access TTL.
    pub fn issue(&self, user_id: &str, roles: &[Role]) -> Result<IssuedToken, AuthError> {
        self.issue_at(user_id, roles, now_secs())
    }

    /// Signs an access token of session `sid` (see [`Self::revoke_session`]), valid from now.
    pub fn issue_for_session(&self, user_id: &str, roles: &[Role], sid: &str) -> Result<IssuedToken, AuthError> {
        self.issue_claims(user_id, roles, now_secs(), Some(sid.to_owned()))
    }

    /// Signs an access token as if issued at `iat` (seconds since the epoch).
    pub fn issue_at(&self, user_id: &str, roles: &[Role], iat: u64) -> Result<IssuedToken, AuthError> {
        self.issue_claims(user_id, roles, iat, None)
    }

    fn issue_claims(
        &self,
        user_id: &str,
        roles: &[Role],
        iat: u64,
        sid: Option<String>,
    ) -> Result<IssuedToken, AuthError> {
        let ttl = self.inner.access_ttl.as_secs().max(1);
        let claims = Claims {
            sub: user_id.to_owned(),
            exp: iat.saturating_add(ttl),
            nbf: iat,
            iat,
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            jti: uuid::Uuid::now_v7().to_string(),
            roles: roles.to_vec(),
            sid,
        };
        let token = self.sign(&claims)?;
        Ok(IssuedToken { token, expires_in: ttl, claims })
    }

    /// Signs arbitrary claims with this instance's key (tests build odd tokens with it).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let key = self.inner.encoding.as_ref().ok_or_else(|| AuthError::Key("no signing key configured".into()))?;
        jsonwebtoken::encode(&Header::new(self.inner.algorithm), claims, key).map_err(|e| map_jwt_error(&e))
    }

    /// Verifies a compact JWT and returns who it speaks for. Never waits: a token of the identity
    /// provider whose `kid` is not cached fails with [`AuthError::UnknownKey`] and schedules a
    /// (rate-limited) refetch; [`Self::verify_async`] waits for it instead.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(jwks) = &self.inner.jwks
            && !token.starts_with(&self.inner.own_header_prefix)
            && let Some(kid) = external_kid(token)?
        {
            let r = self.verify_external(jwks, &kid, token);
            if r == Err(AuthError::UnknownKey) {
                jwks.kick(&kid);
            }
            return r;
        }
        self.verify_own_at(token, now_secs())
    }

    /// Our own token at time `now`: from the verified-token cache when this exact token passed full
    /// verification before (expiry, not-before and session revocation are still checked each time),
    /// else fully verified and remembered.
    fn verify_own_at(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        if let Some(hit) = self.inner.verified.get(token) {
            if hit.exp.saturating_add(LEEWAY_SECS) < now {
                return Err(AuthError::Expired);
            }
            if hit.nbf > now.saturating_add(LEEWAY_SECS) {
                return Err(AuthError::NotYetValid);
            }
            if let Some(sid) = &hit.sid
                && self.inner.revoked.contains(sid, now)
            {
                return Err(AuthError::Revoked);
            }
            return Ok(hit.principal.clone());
        }
        let c = self.verify_claims(token)?;
        let principal = Principal { user_id: c.sub, roles: c.roles };
        self.inner
            .verified
            .insert(token, Verified { principal: principal.clone(), exp: c.exp, nbf: c.nbf, sid: c.sid });
        Ok(principal)
    }

    /// As [`Self::verify`], but a token of the identity provider with an unknown `kid` waits for one
    /// refetch of its keys (rate-limited, single-flight, bounded by the fetch timeout) and is checked
    /// again. Our own tokens never wait.
    pub async fn verify_async(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey) => {}
            other => return other,
        }
        let (Some(jwks), Some(kid)) = (&self.inner.jwks, external_kid(token)?) else {
            return Err(AuthError::UnknownKey);
        };
        jwks.refresh_for(&kid).await;
        self.verify_external(jwks, &kid, token)
    }

    /// The identity provider's key cache, if a JWKS URL is configured.
    pub fn jwks(&self) -> Option<&jwks::Jwks> {
        self.inner.jwks.as_ref()
    }

    fn verify_external(&self, jwks: &jwks::Jwks, kid: &str, token: &str) -> Result<Principal, AuthError> {
        let key = jwks.key(kid).ok_or(AuthError::UnknownKey)?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            jwks.validation(key.algorithm),
        )
        .map_err(|e| map_jwt_error(&e))?;
        let claims = data.claims;
        let sub = match claims.get("sub") {
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
            _ => return Err(AuthError::BadClaim("sub".into())),
        };
        let mut roles = vec![Role::User];
        let listed: Vec<&str> = match claims.get(&jwks.settings().roles_claim) {
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(serde_json::Value::as_str).collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        if listed.contains(&Role::Admin.as_str()) {
            roles.push(Role::Admin);
        }
        Ok(Principal { user_id: sub, roles })
    }

    /// Verifies one of our own compact JWTs and returns all its claims (refusing revoked sessions).
    pub fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > 8192 {
            return Err(AuthError::Malformed);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
            .map(|data| data.claims)
            .map_err(|e| map_jwt_error(&e))?;
        if let Some(sid) = &claims.sid
            && self.inner.revoked.contains(sid, now_secs())
        {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// Refuses every access token of session `sid` from now on (in this process), until they would
    /// all have expired: `revoked_at` (seconds since the epoch) + access TTL + leeway.
    /// Also tells the [`Self::on_revoke`] hook, if any.
    pub fn revoke_session(&self, sid: &str, revoked_at: u64) {
        self.apply_revocation(sid, revoked_at);
        if let Some(hook) = self.inner.on_revoke.get() {
            hook(sid, revoked_at);
        }
    }

    /// [`Self::revoke_session`] without telling the hook: for revocations learnt from the store or from
    /// another node.
    pub fn apply_revocation(&self, sid: &str, revoked_at: u64) {
        let until = revoked_at.saturating_add(self.inner.access_ttl.as_secs()).saturating_add(LEEWAY_SECS + 1);
        self.inner.revoked.insert(sid, until, now_secs());
    }

    /// Installs the hook told about every later [`Self::revoke_session`] (once; `false` if one was set).
    pub fn on_revoke(&self, hook: RevocationHook) -> bool {
        self.inner.on_revoke.set(hook).is_ok()
    }

    /// Whether `sid` is currently revoked.
    pub fn is_session_revoked(&self, sid: &str) -> bool {
        self.inner.revoked.contains(sid, now_secs())
    }
}

/// `base64url(JSON of the header we sign with) + "."`, as `jsonwebtoken::encode` writes it.
fn header_prefix(algorithm: Algorithm) -> Result<String, AuthError> {
    let json = serde_json::to_vec(&Header::new(algorithm)).map_err(|e| AuthError::Key(e.to_string()))?;
    let mut out = base64url(&json);
    out.push('.');
    Ok(out)
}

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The header `kid` of a token, if it has one (only tokens of the identity provider do).
fn external_kid(token: &str) -> Result<Option<String>, AuthError> {
    if token.len() > 8192 {
        return Err(AuthError::Malformed);
    }
    jsonwebtoken::decode_header(token).map(|h| h.kid).map_err(|e| map_jwt_error(&e))
}

/// 32 random bytes from the OS, hex-encoded (64 chars): refresh tokens and throwaway secrets.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// SHA-256 of a refresh token, hex: what the store keeps (a leaked table does not yield usable tokens).
pub fn token_digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests;
