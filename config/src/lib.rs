//! `troupe-config` has one job: turn built-in defaults, an optional TOML
//! file, `TROUPE_*` environment variables and explicit (CLI) overrides — in
//! that order of precedence — into one validated, immutable [`NodeConfig`],
//! or into a [`ConfigErrors`] listing every problem by key. Its collaborators
//! are the `troupe` binary, which builds a [`ConfigLoader`] from `--config`
//! (or `TROUPE_CONFIG`), `std::env::vars()` and its flags, and every other
//! crate, which reads its own section of [`NodeConfig`]. [`env`] is the one
//! list of environment variables Troupe reads.
//!
//! ```
//! let config = troupe_config::ConfigLoader::new()
//!     .env([("TROUPE_LOG_FORMAT".to_owned(), "json".to_owned())])
//!     .set("http.addr", "127.0.0.1:0")
//!     .load()
//!     .map_err(|errors| errors.to_string())?;
//! assert_eq!(config.log.format, troupe_config::LogFormat::Json);
//! assert_eq!(config.http.addr.port(), 0);
//! # Ok::<(), String>(())
//! ```

mod duration;
pub mod env;
mod error;
mod layers;
mod model;
mod raw;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use env::{ENV_VARS, EnvVar, env_markdown_table, require_services};
pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use model::{
    AdminConfig, AuthConfig, BreakerConfig, BusConfig, CallsConfig, ClusterConfig, GatewayConfig, HostPort, HttpConfig,
    IpNet, JwtAlgorithm, JwtKeyMaterial, LogConfig, LogFormat, MIN_JWT_SECRET_BYTES, NodeConfig, NodeSettings,
    NotificationsConfig, OWASP_MIN_HASH_MEMORY_KIB, OWASP_MIN_HASH_MEMORY_X_ITERATIONS, RabbitMqConfig, RateLimit,
    RateLimitConfig, Secret, ShutdownConfig, StoreBackend, StoreConfig, SupervisorConfig, WsConfig,
};
pub use model::{RabbitMqBinding, ReturnedMessages};

/// Builds a [`NodeConfig`] from layers. Precedence, lowest first: built-in
/// defaults, the file, the environment, [`ConfigLoader::set`] overrides.
///
/// In the environment and in overrides, an empty value restores the
/// default (e.g. `TROUPE_STORE_URL=` unsets a URL from the file), lists are
/// comma-separated and booleans accept true/false, 1/0, yes/no, on/off.
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<FileSource>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum FileSource {
    Path(PathBuf),
    Inline { name: String, text: String },
}

impl ConfigLoader {
    /// A loader with no file, no environment and no overrides: `load()`
    /// returns the built-in defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this TOML file (replacing any earlier file). A missing or
    /// unreadable file is an error naming the path.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(FileSource::Path(path.into()));
        self
    }

    /// Uses TOML text instead of a file (handy in tests); `name` is shown
    /// in errors in place of a path.
    pub fn toml_str(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.file = Some(FileSource::Inline { name: name.into(), text: text.into() });
        self
    }

    /// Adds environment variables, e.g. `std::env::vars()`. Only `TROUPE_*`
    /// names are looked at; an unknown `TROUPE_*` name is an error.
    pub fn env<I: IntoIterator<Item = (String, String)>>(mut self, vars: I) -> Self {
        self.env.extend(vars);
        self
    }

    /// Overrides one dotted key (`set("http.addr", "127.0.0.1:0")`), as the
    /// binary does for CLI flags. Later calls win.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }

    /// Merges, parses and validates every layer, collecting all errors.
    pub fn load(self) -> Result<NodeConfig, ConfigErrors> {
        let mut layers = layers::Layers::default();
        let file_ok = match &self.file {
            None => true,
            Some(FileSource::Inline { name, text }) => layers.add_file(name, text),
            Some(FileSource::Path(path)) => {
                let shown = path.display().to_string();
                match std::fs::read_to_string(path) {
                    Ok(text) => layers.add_file(&shown, &text),
                    Err(e) => {
                        let reason = if e.kind() == std::io::ErrorKind::NotFound {
                            "config file not found".to_owned()
                        } else {
                            format!("cannot read config file: {e}")
                        };
                        layers.errors.push(ConfigError::new(shown, reason));
                        false
                    }
                }
            }
        };
        layers.add_env(self.env);
        for (key, value) in &self.overrides {
            layers.add_override(key, value);
        }

        let mut errors = std::mem::take(&mut layers.errors);
        if !file_ok {
            // Without the file, validation would only add misleading errors.
            return Err(ConfigErrors(errors));
        }
        match layers.to_raw() {
            Err(e) => errors.push(e),
            Ok(raw) => match validate::validate(raw, &layers) {
                Ok(config) if errors.is_empty() => return Ok(config),
                Ok(_) => {}
                Err(more) => errors.extend(more),
            },
        }
        Err(ConfigErrors(errors))
    }
}
