//! The list of config keys and the TOML type each one is written as.
//!
//! This is what the file, environment and override layers are checked
//! against before serde sees them, so every problem can be reported with
//! its dotted key (and all of them at once, not just serde's first).

use toml::Value;

/// How a key is written in TOML (and how an env/override string is converted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Duration,
    Int,
    Float,
    Bool,
    /// Array of strings in TOML; comma-separated in env vars and overrides.
    List,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Duration => "a duration string such as \"5s\"",
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::Bool => "true or false",
            Kind::List => "an array of strings",
        }
    }

    /// Checks a value from the TOML file; the error never echoes the value
    /// (it may be a secret).
    pub(crate) fn check(self, value: &Value) -> Result<(), String> {
        let ok = match (self, value) {
            (Kind::Str | Kind::Duration, Value::String(_))
            | (Kind::Int, Value::Integer(_))
            | (Kind::Float, Value::Integer(_) | Value::Float(_))
            | (Kind::Bool, Value::Boolean(_)) => true,
            (Kind::List, Value::Array(items)) => items.iter().all(Value::is_str),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let found = match value {
                Value::Array(items) if items.iter().any(|v| !v.is_str()) => "an array with non-string items",
                other => other.type_str(),
            };
            Err(format!("expected {}, found {found}", self.expected()))
        }
    }

    /// Converts an env var / override string to a TOML value of this kind.
    /// `raw` is already trimmed and non-empty.
    pub(crate) fn convert(self, raw: &str) -> Result<Value, String> {
        match self {
            Kind::Str | Kind::Duration => Ok(Value::String(raw.to_owned())),
            Kind::Int => raw.parse::<i64>().map(Value::Integer).map_err(|_| format!("invalid integer {raw:?}")),
            Kind::Float => raw.parse::<f64>().map(Value::Float).map_err(|_| format!("invalid number {raw:?}")),
            Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
                _ => Err(format!("invalid boolean {raw:?} (expected true/false, 1/0, yes/no or on/off)")),
            },
            Kind::List => Ok(Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            )),
        }
    }
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

impl Key {
    pub(crate) fn section(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(s, _)| s)
    }
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

/// Every config key, in the order they appear in `troupe.example.toml`.
pub(crate) const KEYS: &[Key] = &[
    key("node.name", Kind::Str),
    key("node.data_dir", Kind::Str),
    key("http.addr", Kind::Str),
    key("http.request_timeout", Kind::Duration),
    key("http.max_body_bytes", Kind::Int),
    key("cluster.addr", Kind::Str),
    key("cluster.seeds", Kind::List),
    key("cluster.cookie", Kind::Str),
    key("store.backend", Kind::Str),
    key("store.url", Kind::Str),
    key("rabbitmq.url", Kind::Str),
    key("log.format", Kind::Str),
    key("log.level", Kind::Str),
    key("shutdown.grace", Kind::Duration),
    key("supervisor.max_restarts", Kind::Int),
    key("supervisor.within", Kind::Duration),
    key("supervisor.backoff_initial", Kind::Duration),
    key("supervisor.backoff_max", Kind::Duration),
    key("supervisor.backoff_jitter", Kind::Float),
    key("breaker.consecutive_failures", Kind::Int),
    key("breaker.failure_rate", Kind::Float),
    key("breaker.window", Kind::Duration),
    key("breaker.min_calls", Kind::Int),
    key("breaker.cooldown", Kind::Duration),
    key("calls.timeout", Kind::Duration),
    key("calls.max_in_flight", Kind::Int),
    key("admin.allow_kill", Kind::Bool),
];

pub(crate) fn lookup(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

pub(crate) fn is_section(name: &str) -> bool {
    KEYS.iter().any(|k| k.section() == name)
}

/// Sections in schema order, without duplicates.
pub(crate) fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        if !out.contains(&k.section()) {
            out.push(k.section());
        }
    }
    out
}

/// Best "did you mean" candidate for an unknown dotted key or section.
pub(crate) fn suggest_key(unknown: &str) -> Option<&'static str> {
    if let Some((_, leaf)) = unknown.split_once('.') {
        // Right key, wrong section (e.g. `http.data_dir`).
        let mut same_leaf = KEYS.iter().filter(|k| k.name.split_once('.').is_some_and(|(_, l)| l == leaf));
        if let (Some(only), None) = (same_leaf.next(), same_leaf.next()) {
            return Some(only.name);
        }
        suggest(unknown, KEYS.iter().map(|k| k.name))
    } else {
        suggest(unknown, sections())
    }
}

/// The closest candidate by edit distance (case-insensitive), if close enough.
pub(crate) fn suggest<'a>(unknown: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let unknown = unknown.to_lowercase();
    let len = unknown.chars().count();
    if len > 128 {
        return None;
    }
    let limit = (len / 4).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&unknown, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
