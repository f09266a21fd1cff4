//! Error types returned by [`crate::ConfigLoader::load`].

use std::fmt;

/// One problem found while loading the configuration.
///
/// `key` is the dotted config key (`http.addr`), the environment variable
/// name (`TROUPE_HTTP_ADR`) or the config file path, whichever best locates
/// the problem; `reason` says what is wrong. Secret values are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted config key, environment variable name, or file path.
    pub key: String,
    /// Human-readable explanation, single line.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            // Keep the "one line per error" promise of `ConfigErrors`.
            reason: reason.into().replace(['\n', '\r'], " "),
        }
    }
}

/// Every problem found by one [`crate::ConfigLoader::load`] call (never empty).
///
/// `Display` prints one `<key>: <reason>` line per error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub(crate) Vec<ConfigError>);

impl ConfigErrors {
    /// Iterates over the individual errors, in discovery order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false` for errors returned by the loader; provided for completeness.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Consumes `self`, returning the errors.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A valid but risky setting, from [`crate::NodeConfig::warnings`].
///
/// `Display` prints `<key>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted config key.
    pub key: &'static str,
    /// What is risky and what to do instead, single line.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
