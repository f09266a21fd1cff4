//! Access tokens (JWT via `jsonwebtoken`) and opaque refresh-token material.
//!
//! [`Tokens`] signs and verifies access tokens with one configured algorithm (HS256 secret, or RS256 /
//! EdDSA PEM keys). Verification is stateless and cheap, so the gateway calls [`Tokens::verify`] directly
//! on every request instead of asking the auth actor. It requires `exp`, `nbf`, `iss` and `aud` (and
//! `sub`), allows 60 s of clock leeway, and accepts only the configured algorithm: `alg: none` does not
//! even parse, and a token signed with any other algorithm (e.g. HS256 with the RSA public key as the
//! secret) is refused before any key is used.
//!
//! Collaborators: `auth` (issues tokens at login/refresh), `policy` (the [`Principal`] a token yields),
//! the gateway (verifies bearer tokens).

use std::sync::Arc;
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

struct Inner {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
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

    /// Signs an access token as if issued at `iat` (seconds since the epoch).
    pub fn issue_at(&self, user_id: &str, roles: &[Role], iat: u64) -> Result<IssuedToken, AuthError> {
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
        };
        let token = self.sign(&claims)?;
        Ok(IssuedToken { token, expires_in: ttl, claims })
    }

    /// Signs arbitrary claims with this instance's key (tests build odd tokens with it).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let key = self.inner.encoding.as_ref().ok_or_else(|| AuthError::Key("no signing key configured".into()))?;
        jsonwebtoken::encode(&Header::new(self.inner.algorithm), claims, key).map_err(|e| map_jwt_error(&e))
    }

    /// Verifies a compact JWT and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_claims(token).map(|c| Principal { user_id: c.sub, roles: c.roles })
    }

    /// Verifies a compact JWT and returns all its claims.
    pub fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > 8192 {
            return Err(AuthError::Malformed);
        }
        jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
            .map(|data| data.claims)
            .map_err(|e| map_jwt_error(&e))
    }
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
