//! `[rabbitmq]`: the broker URL and the bridge's settings, bindings included.

use super::{Checker, int_at_least, non_empty_secret, positive_duration};
use crate::duration;
use crate::model::{RabbitMqBinding, RabbitMqConfig, ReturnedMessages};
use crate::raw::RawRabbitMq;

pub(super) fn rabbitmq(c: &mut Checker<'_>, raw: RawRabbitMq) -> RabbitMqConfig {
    let d = RabbitMqConfig::default();
    let url = c.field("rabbitmq.url", raw.url, None, |s| {
        let secret = non_empty_secret(s)?;
        let lower = secret.expose().to_ascii_lowercase();
        let rest = lower.strip_prefix("amqp://").or_else(|| lower.strip_prefix("amqps://"));
        match rest {
            Some(rest) if !rest.is_empty() => Ok(Some(secret)),
            _ => Err("must be an amqp:// or amqps:// URL".to_owned()),
        }
    });
    let exchange = c.field("rabbitmq.exchange", raw.exchange, d.exchange.clone(), name);
    let topics = c.field("rabbitmq.topics", raw.topics, d.topics.clone(), |t| {
        if t.is_empty() {
            return Err("at least one topic filter (`*` for every topic)".to_owned());
        }
        for f in &t {
            let bad = f.is_empty() || f.len() > 255 || f.chars().any(char::is_whitespace);
            let star = f.contains('*') && f != "*" && !(f.ends_with(".*") && f.matches('*').count() == 1);
            if bad || star {
                return Err(format!("bad topic filter {f:?}: use `*`, `prefix.*` or an exact topic"));
            }
        }
        Ok(t)
    });
    let confirm_window =
        c.field("rabbitmq.confirm_window", raw.confirm_window, d.confirm_window, |v| in_range(v, 1, 65_535));
    let packed = c.field("rabbitmq.packed", raw.packed, d.packed, Ok);
    let packed_max_events =
        c.field("rabbitmq.packed_max_events", raw.packed_max_events, d.packed_max_events, |v| in_range(v, 1, 100_000));
    let returned = c.field("rabbitmq.returned", raw.returned, d.returned, |s| match s.as_str() {
        "dead_letter" => Ok(ReturnedMessages::DeadLetter),
        "drop" => Ok(ReturnedMessages::Drop),
        "retry" => Ok(ReturnedMessages::Retry),
        _ => Err("must be dead_letter, drop or retry".to_owned()),
    });
    let reconnect_initial =
        c.field("rabbitmq.reconnect_initial", raw.reconnect_initial, d.reconnect_initial, |s| positive_duration(&s));
    let reconnect_max =
        c.field("rabbitmq.reconnect_max", raw.reconnect_max, d.reconnect_max, |s| positive_duration(&s));
    if c.ok(&["rabbitmq.reconnect_initial", "rabbitmq.reconnect_max"]) && reconnect_max < reconnect_initial {
        c.fail(
            "rabbitmq.reconnect_max",
            format!(
                "must be at least rabbitmq.reconnect_initial ({} < {})",
                duration::format(reconnect_max),
                duration::format(reconnect_initial)
            ),
        );
    }
    let prefetch = c.field("rabbitmq.prefetch", raw.prefetch, 64u16, |v| {
        u16::try_from(v).ok().filter(|n| *n >= 1).ok_or_else(|| format!("must be an integer from 1 to 65535, got {v}"))
    });
    let delivery_limit = c.field("rabbitmq.delivery_limit", raw.delivery_limit, 10u32, |v| int_at_least(v, 1u32));
    let max_attempts = c.field("rabbitmq.max_attempts", raw.max_attempts, 5u32, |v| int_at_least(v, 1u32));
    let defaults = BindingDefaults { prefetch, delivery_limit, max_attempts, exchange: exchange.clone() };
    let bindings = c.field("rabbitmq.bindings", raw.bindings, Vec::new(), |items| {
        let mut out: Vec<RabbitMqBinding> = Vec::new();
        for item in &items {
            let b = binding(item, &defaults)?;
            if out.iter().any(|o| o.queue == b.queue) {
                return Err(format!("queue {:?} is bound twice", b.queue));
            }
            out.push(b);
        }
        Ok(out)
    });
    RabbitMqConfig {
        url,
        exchange,
        topics,
        confirm_window,
        packed,
        packed_max_events,
        returned,
        reconnect_initial,
        reconnect_max,
        bindings,
    }
}

struct BindingDefaults {
    prefetch: u16,
    delivery_limit: u32,
    max_attempts: u32,
    exchange: String,
}

fn in_range(v: i64, min: usize, max: usize) -> Result<usize, String> {
    usize::try_from(v)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be an integer from {min} to {max}, got {v}"))
}

/// An AMQP exchange or queue name: 1 to 255 bytes of letters, digits, `-`, `_`, `.`, `:`.
fn name(s: String) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok { Ok(s) } else { Err(format!("{s:?} is not a name (1 to 255 of [A-Za-z0-9._:-])")) }
}

/// `queue=handler;prefetch=32;delivery_limit=5;max_attempts=3;dlx=orders.dead;exchange=x;keys=a.*|b`.
fn binding(item: &str, d: &BindingDefaults) -> Result<RabbitMqBinding, String> {
    let mut parts = item.split(';').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let Some((queue, handler)) = head.split_once('=') else {
        return Err(format!("binding {item:?}: expected queue=handler[;option=value...]"));
    };
    let mut b = RabbitMqBinding {
        queue: name(queue.trim().to_owned())?,
        handler: name(handler.trim().to_owned())?,
        prefetch: d.prefetch,
        delivery_limit: d.delivery_limit,
        max_attempts: d.max_attempts,
        dead_letter_exchange: format!("{}.dlx", queue.trim()),
        exchange: d.exchange.clone(),
        routing_keys: Vec::new(),
    };
    for opt in parts.filter(|p| !p.is_empty()) {
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("binding {item:?}: option {opt:?} is not key=value"))?;
        let v = v.trim();
        let int = |max: u64| -> Result<u64, String> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n >= 1 && *n <= max)
                .ok_or_else(|| format!("binding {item:?}: {k} must be an integer from 1 to {max}"))
        };
        match k.trim() {
            "prefetch" => b.prefetch = u16::try_from(int(65_535)?).unwrap_or(u16::MAX),
            "delivery_limit" => b.delivery_limit = u32::try_from(int(u64::from(u32::MAX))?).unwrap_or(u32::MAX),
            "max_attempts" => b.max_attempts = u32::try_from(int(u64::from(u32::MAX))?).unwrap_or(u32::MAX),
            "dlx" => b.dead_letter_exchange = name(v.to_owned())?,
            "exchange" => b.exchange = name(v.to_owned())?,
            "keys" => {
                b.routing_keys = v.split('|').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
                if b.routing_keys.iter().any(|k| k.len() > 255 || k.chars().any(char::is_whitespace)) {
                    return Err(format!("binding {item:?}: bad routing key"));
                }
            }
            other => {
                return Err(format!(
                    "binding {item:?}: unknown option {other:?} (prefetch, delivery_limit, max_attempts, dlx, \
                     exchange, keys)"
                ));
            }
        }
    }
    Ok(b)
}
