//! Password hashing: argon2id PHC strings computed on tokio's blocking pool, at most `concurrency` at a
//! time (a semaphore), so a burst of logins never starves the async workers nor stalls an actor's mailbox
//! (the services call this from the task they spawn per request, never inside a handler).
//!
//! Collaborators: `auth` (register, login), `argon2`.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Result, ServiceError};

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id baseline: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self { m_cost_kib: 19 * 1024, t_cost: 2, p_cost: 1 }
    }
}

impl HashParams {
    /// Cheap parameters for tests (never in production: 64 KiB, 1 iteration).
    pub fn insecure_fast() -> Self {
        Self { m_cost_kib: 64, t_cost: 1, p_cost: 1 }
    }
}

/// Hashes and verifies passwords off the async workers with a concurrency bound. Clone freely.
#[derive(Clone)]
pub struct PasswordHasher {
    params: argon2::Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account does not exist so that unknown
    /// emails take as long as wrong passwords.
    dummy: Arc<OnceCell<String>>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost_kib", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("available_permits", &self.permits.available_permits())
            .finish()
    }
}

impl PasswordHasher {
    /// A hasher with these costs running at most `concurrency` (≥ 1) hashes at once.
    pub fn new(params: HashParams, concurrency: usize) -> Result<Self> {
        let params = argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, None)
            .map_err(|e| ServiceError::internal(format!("argon2 parameters: {e}")))?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy: Arc::new(OnceCell::new()) })
    }

    /// The concurrency bound (tests hold permits to stall hashing).
    #[cfg(test)]
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    fn argon2(params: argon2::Params) -> Argon2<'static> {
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    }

    /// Runs `f` on the blocking pool once a permit is free.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit =
            self.permits.acquire().await.map_err(|_| ServiceError::internal("password hasher semaphore closed"))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::internal(format!("hash task: {e}")))
    }

    /// The PHC string (`$argon2id$v=19$m=…`) of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        let params = self.params.clone();
        self.blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Self::argon2(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| ServiceError::internal(format!("argon2 hash: {e}")))
        })
        .await?
    }

    /// True when `password` matches the PHC string (its own parameters and salt are used). A malformed
    /// PHC string is an internal error (stored data is bad), not a mismatch.
    pub async fn verify(&self, phc: String, password: String) -> Result<bool> {
        let params = self.params.clone();
        self.blocking(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| ServiceError::internal(format!("stored PHC: {e}")))?;
            match Self::argon2(params).verify_password(password.as_bytes(), &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(ServiceError::internal(format!("argon2 verify: {e}"))),
            }
        })
        .await?
    }

    /// Spends the same work as a real verification and returns `false` (unknown account).
    pub async fn verify_dummy(&self, password: String) -> Result<bool> {
        let phc = self.dummy.get_or_try_init(|| self.hash(crate::tokens::random_token())).await?.clone();
        self.verify(phc, password).await.map(|_| false)
    }
}

#[cfg(test)]
mod tests;
