//! Keys of an external identity provider (IdP), fetched from its JWKS URL (RFC 7517 JWK Set), so the
//! node also accepts access tokens the IdP issued.
//!
//! - Which keys: RSA keys (verified as RS256) and OKP Ed25519 keys (EdDSA), each with a `kid`; a key
//!   whose `use` is not `sig` or whose `alg` disagrees with its type is skipped, as are symmetric
//!   (`oct`) and EC keys. The algorithm accepted for a token is the one its *key* dictates, never the
//!   one its header asks for, so an HS256 token "signed" with an RSA public key fails (alg confusion),
//!   and `alg: none` does not even parse.
//! - Cache: the parsed keys sit behind a `RwLock<Arc<…>>`; a verification takes a read lock for one
//!   hash lookup and never touches the network. A background task ([`Jwks::spawn_refresher`])
//!   refetches every `refresh_interval`. A fetch that fails (IdP down, timeout, bad JSON, no usable
//!   key) keeps the cached keys: tokens keep verifying from the cache while the IdP is down.
//! - Unknown `kid`: the IdP may have rotated. The async path ([`Jwks::refresh_for`]) fetches once
//!   (bounded by `fetch_timeout`), single-flight (concurrent callers wait for the same fetch) and
//!   rate-limited (at most one fetch per `min_refetch_interval`), so a flood of forged kids cannot
//!   hammer the IdP; the sync path ([`Jwks::kick`]) only schedules that fetch in the background.
//!
//! HTTP: `reqwest` without TLS features (plain `http://` URLs only; config validation refuses
//! `https://` until a TLS feature is added). Bodies larger than [`MAX_JWKS_BYTES`] are refused.
//!
//! Collaborators: [`super::Tokens`] (routes tokens with a `kid` here), the node (spawns the refresher).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthError, LEEWAY_SECS};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys kept from one document.
pub const MAX_KEYS: usize = 64;

/// Where and how to fetch the IdP's keys, and what its tokens must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// `http://…` URL of the JWK Set.
    pub url: String,
    /// Required `iss` of external tokens.
    pub issuer: String,
    /// Required `aud` of external tokens.
    pub audience: String,
    /// Claim holding the roles (an array of strings, or one space-separated string). Default `roles`.
    pub roles_claim: String,
    /// Period of the background refetch. Default 5 min.
    pub refresh_interval: Duration,
    /// Least time between two fetches triggered by unknown kids (and between retries after a
    /// failed fetch). Default 10 s.
    pub min_refetch_interval: Duration,
    /// Deadline of one fetch (connect + body). Default 5 s.
    pub fetch_timeout: Duration,
}

impl JwksSettings {
    /// Settings for `url` with the defaults above.
    pub fn new(url: impl Into<String>, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            roles_claim: "roles".to_owned(),
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a fetch failed (logged; verification keeps using the cache).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Connection, timeout or HTTP status.
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
    /// Not a JWK Set, too large, or no usable key in it.
    #[error("bad JWKS document: {0}")]
    Document(String),
    /// Skipped: a fetch ran less than `min_refetch_interval` ago.
    #[error("JWKS refetch rate-limited")]
    RateLimited,
}

/// One usable key.
pub(crate) struct ExternalKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

type KeyMap = HashMap<String, Arc<ExternalKey>>;

struct Inner {
    settings: JwksSettings,
    client: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    /// When the last fetch started (rate limit).
    last_attempt: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    rs256: Validation,
    eddsa: Validation,
    fetches: std::sync::atomic::AtomicU64,
}

/// The IdP key cache. Cheap to clone.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.inner.settings.url)
            .field("keys", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

fn validation(algorithm: Algorithm, settings: &JwksSettings) -> Validation {
    let mut v = Validation::new(algorithm);
    v.algorithms = vec![algorithm];
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.set_issuer(&[settings.issuer.as_str()]);
    v.set_audience(&[settings.audience.as_str()]);
    v
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWK Set document (see the module docs for which are usable).
pub(crate) fn parse_set(bytes: &[u8]) -> Result<KeyMap, JwksError> {
    let raw: RawSet = serde_json::from_slice(bytes).map_err(|e| JwksError::Document(e.to_string()))?;
    let mut out = KeyMap::new();
    for value in raw.keys {
        if out.len() >= MAX_KEYS {
            tracing::warn!(max = MAX_KEYS, "JWKS has too many keys; the rest are ignored");
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty() && k.len() <= 256) else { continue };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
                if p.curve == EllipticCurve::Ed25519 =>
            {
                Algorithm::EdDSA
            }
            _ => {
                tracing::debug!(kid, "JWKS key of an unsupported type or algorithm skipped");
                continue;
            }
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                out.insert(kid, Arc::new(ExternalKey { algorithm, key }));
            }
            Err(e) => tracing::warn!(kid, error = %e, "unusable JWKS key skipped"),
        }
    }
    if out.is_empty() {
        return Err(JwksError::Document("no usable signing key (RS256 or EdDSA with a kid)".to_owned()));
    }
    Ok(out)
}

impl Jwks {
    /// An empty cache for `settings` (nothing is fetched until [`Self::spawn_refresher`] or a
    /// token with a `kid` arrives).
    pub fn new(settings: JwksSettings) -> Result<Self, AuthError> {
        let client = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::Key(format!("JWKS HTTP client: {e}")))?;
        let (rs256, eddsa) = (validation(Algorithm::RS256, &settings), validation(Algorithm::EdDSA, &settings));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                client,
                keys: RwLock::new(Arc::new(KeyMap::new())),
                last_attempt: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
                rs256,
                eddsa,
                fetches: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &JwksSettings {
        &self.inner.settings
    }

    fn snapshot(&self) -> Arc<KeyMap> {
        Arc::clone(&self.inner.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The cached key `kid`, if any.
    pub(crate) fn key(&self, kid: &str) -> Option<Arc<ExternalKey>> {
        self.inner.keys.read().unwrap_or_else(PoisonError::into_inner).get(kid).cloned()
    }

    /// The kids currently cached (sorted).
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.snapshot().keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Fetches started so far (tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The validation rules for a key of `algorithm`.
    pub(crate) fn validation(&self, algorithm: Algorithm) -> &Validation {
        if algorithm == Algorithm::EdDSA { &self.inner.eddsa } else { &self.inner.rs256 }
    }

    /// Whether a fetch may start now (rate limit); records the attempt if so.
    fn claim_attempt(&self) -> bool {
        let mut last = self.inner.last_attempt.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < self.inner.settings.min_refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Fetches the document now (single-flight, not rate-limited) and replaces the cache on success.
    /// Returns the number of usable keys.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one = self.inner.fetching.lock().await;
        *self.inner.last_attempt.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, JwksError> {
        self.inner.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.download().await.and_then(|bytes| parse_set(&bytes));
        match result {
            Ok(keys) => {
                let n = keys.len();
                *self.inner.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                metrics::counter!("troupe_jwks_fetches_total", "outcome" => "ok").increment(1);
                Ok(n)
            }
            Err(e) => {
                metrics::counter!("troupe_jwks_fetches_total", "outcome" => "error").increment(1);
                tracing::warn!(url = %self.inner.settings.url, error = %e, "JWKS fetch failed; keeping the cached keys");
                Err(e)
            }
        }
    }

    async fn download(&self) -> Result<Vec<u8>, JwksError> {
        let fetch = |e: reqwest::Error| JwksError::Fetch(e.without_url().to_string());
        let mut resp = self.inner.client.get(&self.inner.settings.url).send().await.map_err(fetch)?;
        if !resp.status().is_success() {
            return Err(JwksError::Fetch(format!("HTTP status {}", resp.status())));
        }
        if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(JwksError::Document("larger than 1 MiB".to_owned()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(fetch)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::Document("larger than 1 MiB".to_owned()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Makes sure `kid` is known if the IdP has it: if it is not cached, fetches once (rate-limited;
    /// if another fetch is running, waits for it instead). Bounded by `fetch_timeout`. Returns
    /// whether `kid` is now cached.
    pub async fn refresh_for(&self, kid: &str) -> bool {
        if self.key(kid).is_some() {
            return true;
        }
        let deadline = self.inner.settings.fetch_timeout + Duration::from_millis(100);
        match self.inner.fetching.try_lock() {
            Ok(_one) => {
                if self.claim_attempt() {
                    let _ = tokio::time::timeout(deadline, self.fetch_locked()).await;
                }
            }
            Err(_) => {
                // Someone is fetching: its result is what we would get.
                let _ = tokio::time::timeout(deadline, self.inner.fetching.lock()).await;
            }
        }
        self.key(kid).is_some()
    }

    /// Sync path for an unknown `kid`: schedules [`Self::refresh_for`] in the background unless the
    /// rate limit says a fetch ran recently (no task is spawned then) or no runtime is running.
    pub fn kick(&self, kid: &str) {
        let recent = self
            .inner
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < self.inner.settings.min_refetch_interval);
        if recent || self.inner.fetching.try_lock().is_err() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (this, kid) = (self.clone(), kid.to_owned());
            rt.spawn(async move {
                this.refresh_for(&kid).await;
            });
        }
    }

    /// Spawns the periodic refresher on the current runtime: fetches now, then every
    /// `refresh_interval` (after a failure, again after `min_refetch_interval`). It stops when every
    /// clone of this cache is dropped.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let this = Jwks { inner };
                let wait = match this.refresh().await {
                    Ok(_) => this.inner.settings.refresh_interval,
                    Err(_) => this.inner.settings.min_refetch_interval.min(this.inner.settings.refresh_interval),
                };
                drop(this);
                tokio::time::sleep(wait).await;
            }
        })
    }
}

#[cfg(test)]
mod tests;
