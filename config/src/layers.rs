//! Merging the file, environment and override layers into one flat map of
//! dotted key → TOML value, remembering where each value came from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use toml::{Table, Value};

use crate::env::{self, ENV_VARS, EnvVar};
use crate::error::ConfigError;
use crate::raw::RawConfig;
use crate::schema;

/// Where a value was set; appended to error reasons.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    File { path: String, line: Option<usize> },
    Env(String),
    Override,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line: Some(line) } => write!(f, "set in {path}:{line}"),
            Origin::File { path, line: None } => write!(f, "set in {path}"),
            Origin::Env(name) => write!(f, "set by {name}"),
            Origin::Override => f.write_str("set by override"),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Layers {
    values: BTreeMap<&'static str, (Value, Origin)>,
    /// Keys whose latest setting was malformed (already reported): skipped
    /// by validation so one mistake does not cascade into several errors.
    poisoned: BTreeSet<&'static str>,
    pub(crate) errors: Vec<ConfigError>,
}

impl Layers {
    pub(crate) fn origin(&self, key: &str) -> Option<&Origin> {
        self.values.get(key).map(|(_, origin)| origin)
    }

    pub(crate) fn is_poisoned(&self, key: &str) -> bool {
        self.poisoned.contains(key)
    }

    fn fail(&mut self, key: &'static str, reason: &str, origin: &Origin) {
        self.errors.push(ConfigError::new(key, format!("{reason} ({origin})")));
        self.poisoned.insert(key);
    }

    /// Adds the TOML file layer. Returns `false` if the file is not usable
    /// at all (syntax errors), in which case validation should not run.
    pub(crate) fn add_file(&mut self, path: &str, text: &str) -> bool {
        let (document, parse_errors) = toml::de::DeTable::parse_recoverable(text);
        if !parse_errors.is_empty() {
            for e in parse_errors {
                let at = e
                    .span()
                    .map(|span| {
                        let (line, col) = line_col(text, span.start);
                        format!(" at line {line}, column {col}")
                    })
                    .unwrap_or_default();
                self.errors.push(ConfigError::new(path, format!("invalid TOML{at}: {}", e.message())));
            }
            return false;
        }
        let lines = key_lines(text, document.get_ref());
        let table: Table = match toml::from_str(text) {
            Ok(table) => table,
            Err(e) => {
                self.errors.push(ConfigError::new(path, format!("invalid TOML: {}", e.message())));
                return false;
            }
        };
        self.add_table(path, &lines, None, table);
        true
    }

    /// Checks every entry of one file table (`prefix` is its dotted path,
    /// `None` for the document root), descending into sub-tables.
    fn add_table(&mut self, path: &str, lines: &BTreeMap<String, usize>, prefix: Option<&str>, table: Table) {
        let at = |dotted: &str| lines.get(dotted).map(|line| format!(" at line {line}")).unwrap_or_default();
        for (name, value) in table {
            let dotted = match prefix {
                Some(prefix) => format!("{prefix}.{name}"),
                None => name,
            };
            if let Some(key) = schema::lookup(&dotted) {
                let origin = Origin::File { path: path.to_owned(), line: lines.get(&dotted).copied() };
                match key.kind.check(&value) {
                    Ok(()) => {
                        self.values.insert(key.name, (value, origin));
                    }
                    Err(reason) => self.fail(key.name, &reason, &origin),
                }
            } else if schema::is_section(&dotted) {
                match value {
                    Value::Table(entries) => self.add_table(path, lines, Some(&dotted), entries),
                    other => {
                        let origin = Origin::File { path: path.to_owned(), line: lines.get(&dotted).copied() };
                        self.errors.push(ConfigError::new(
                            dotted.as_str(),
                            format!("expected a table ([{dotted}]), found {} ({origin})", other.type_str()),
                        ));
                    }
                }
            } else {
                let hint = hint(schema::suggest_key(&dotted));
                self.errors.push(ConfigError::new(path, format!("unknown key {dotted:?}{}{hint}", at(&dotted))));
            }
        }
    }

    /// Adds the environment layer; only `TROUPE_*` variables are looked at.
    pub(crate) fn add_env(&mut self, vars: Vec<(String, String)>) {
        // Sorted for a stable error order; the last duplicate wins.
        let vars: BTreeMap<String, String> =
            vars.into_iter().filter(|(name, _)| name.starts_with(env::PREFIX)).collect();
        for (name, value) in vars {
            match env::lookup(&name) {
                None => {
                    let hint = schema::suggest(&name, ENV_VARS.iter().map(|v| v.name))
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    self.errors
                        .push(ConfigError::new(name.as_str(), format!("unknown Troupe environment variable{hint}")));
                }
                Some(EnvVar { key: None, .. }) => {}
                Some(EnvVar { key: Some(key), .. }) => {
                    self.set(key, &value, Origin::Env(name.clone()));
                }
            }
        }
    }

    /// Adds one explicit override (`set("http.addr", "…")`).
    pub(crate) fn add_override(&mut self, key: &str, value: &str) {
        if schema::lookup(key).is_some() {
            self.set(key, value, Origin::Override);
        } else {
            let hint = hint(schema::suggest_key(key));
            self.errors.push(ConfigError::new(key, format!("unknown config key{hint} (set by override)")));
        }
    }

    /// Sets `dotted` from a string; an empty string restores the default.
    fn set(&mut self, dotted: &str, raw: &str, origin: Origin) {
        let Some(key) = schema::lookup(dotted) else {
            return;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            self.values.remove(key.name);
            self.poisoned.remove(key.name);
            return;
        }
        match key.kind.convert(raw) {
            Ok(value) => {
                self.values.insert(key.name, (value, origin));
                self.poisoned.remove(key.name);
            }
            Err(reason) => self.fail(key.name, &reason, &origin),
        }
    }

    /// Deserializes the merged values (serde, `deny_unknown_fields`).
    pub(crate) fn to_raw(&self) -> Result<RawConfig, ConfigError> {
        let mut root = Table::new();
        for (name, (value, _)) in &self.values {
            let mut table = &mut root;
            let mut segments = name.split('.').peekable();
            while let Some(segment) = segments.next() {
                if segments.peek().is_none() {
                    table.insert(segment.to_owned(), value.clone());
                } else {
                    let entry = table.entry(segment).or_insert_with(|| Value::Table(Table::new()));
                    let Value::Table(inner) = entry else {
                        break;
                    };
                    table = inner;
                }
            }
        }
        root.try_into::<RawConfig>().map_err(|e| serde_error(&e))
    }
}

/// Maps a serde error (only possible if the schema and the raw structs
/// disagree) to the dotted key it names, when it names one.
fn serde_error(e: &toml::de::Error) -> ConfigError {
    let message = e.message();
    let field = message
        .split('`')
        .nth(1)
        .and_then(|field| schema::KEYS.iter().find(|k| k.name.ends_with(&format!(".{field}"))));
    ConfigError::new(field.map_or("config", |k| k.name), message)
}

fn hint(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, col)
}

/// Line of every table and key (dotted, at any depth) in the document.
fn key_lines(text: &str, document: &toml::de::DeTable<'_>) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    collect_lines(text, None, document, &mut lines);
    lines
}

fn collect_lines(text: &str, prefix: Option<&str>, table: &toml::de::DeTable<'_>, lines: &mut BTreeMap<String, usize>) {
    for (name, value) in table.iter() {
        let dotted = match prefix {
            Some(prefix) => format!("{prefix}.{}", name.get_ref()),
            None => name.get_ref().to_string(),
        };
        lines.entry(dotted.clone()).or_insert_with(|| line_col(text, name.span().start).0);
        if let toml::de::DeValue::Table(entries) = value.get_ref() {
            collect_lines(text, Some(&dotted), entries, lines);
        }
    }
}
