//! Human-readable durations: `"250ms"`, `"5s"`, `"2m"`, `"1h30m"`, `"30d"`.
//!
//! A duration is one or more `<integer><unit>` parts (optionally separated by
//! spaces) with units `ns`, `us`, `ms`, `s`, `m`, `h`, `d` (24 hours). [`format`] produces
//! the same syntax, so `parse(&format(d)) == Ok(d)`.

use std::time::Duration;

/// Parses a duration such as `"250ms"` or `"1m30s"`.
///
/// The error is a reason suitable for a [`crate::ConfigError`].
pub(crate) fn parse(input: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {input:?} (expected a number with a unit such as \"250ms\", \"5s\", \"2m\", \"1h\" or \"30d\")"
        )
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if digits.is_empty() || unit.is_empty() {
            return Err(invalid());
        }
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        let part = match unit {
            "ns" => Some(Duration::from_nanos(n)),
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            _ => return Err(invalid()),
        };
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(|| format!("duration {input:?} is too large"))?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// Formats a duration in the syntax accepted by [`parse`], e.g. `"1m30s"`.
pub(crate) fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect()
}

/// `serialize_with` helper rendering a [`Duration`] via [`format`].
pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}
