#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, Method};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cidr_blocks_match_their_addresses_only() {
    let net: IpCidr = "10.0.0.0/8".parse().unwrap();
    assert!(net.contains(ip("10.1.2.3")));
    assert!(!net.contains(ip("11.0.0.1")));
    assert!(net.contains(ip("::ffff:10.9.9.9")), "v4-mapped v6 peers match v4 blocks");
    let one: IpCidr = "192.168.1.7".parse().unwrap();
    assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
    let v6: IpCidr = "fd00::/8".parse().unwrap();
    assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    let all: IpCidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("8.8.8.8")));
    for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
        assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
    }
}

#[test]
fn client_ip_believes_forwarded_for_only_from_trusted_proxies() {
    let trusted = vec!["10.0.0.0/8".parse::<IpCidr>().unwrap()];
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.5"));
    // From an untrusted peer the header is ignored.
    assert_eq!(client_ip(Some(ip("9.9.9.9")), &h, &trusted), ip("9.9.9.9"));
    // From a trusted proxy: the rightmost untrusted entry (6.6.6.6 may be forged by the client).
    assert_eq!(client_ip(Some(ip("10.0.0.1")), &h, &trusted), ip("1.2.3.4"));
    // No trusted list: always the peer.
    assert_eq!(client_ip(Some(ip("10.0.0.1")), &h, &[]), ip("10.0.0.1"));
    // Garbage in the chain: the peer.
    h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, bogus"));
    assert_eq!(client_ip(Some(ip("10.0.0.1")), &h, &trusted), ip("10.0.0.1"));
    // Missing header: the peer.
    assert_eq!(client_ip(Some(ip("10.0.0.1")), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
}

#[test]
fn routes_fall_into_classes() {
    assert_eq!(Class::of(&Method::POST, "/api/v1/auth/login"), Class::Auth);
    assert_eq!(Class::of(&Method::GET, "/api/v1/content/x"), Class::Read);
    assert_eq!(Class::of(&Method::PATCH, "/api/v1/content/x"), Class::Write);
}

#[test]
fn zero_rates_are_refused_and_policies_are_structured_fields() {
    let bad = RateLimitSettings { read: Rate::new(0, 10), ..RateLimitSettings::default() };
    assert_eq!(RateLimits::new(&bad).err(), Some(SettingsError::BadRate("read")));
    let l = Limiter::new(Class::Read, Rate::new(50, 100)).unwrap();
    assert_eq!(l.policy, "\"read\";q=100;w=2");
    assert_eq!(l.refill_secs(100), 0);
    assert_eq!(l.refill_secs(49), 2);
}

#[test]
fn idle_keys_are_pruned() {
    let limits = RateLimits::new(&RateLimitSettings::default()).unwrap();
    let read = limits.limiter(Class::Read).unwrap();
    for i in 0..50u8 {
        read.limiter.check_key(&Key::Ip(IpAddr::from([10, 0, 0, i]))).unwrap();
    }
    assert_eq!(limits.len(), 50);
    // One token per key replenishes within 20 ms at 50/s; after that every bucket is full again.
    std::thread::sleep(std::time::Duration::from_millis(60));
    limits.prune();
    assert_eq!(limits.len(), 0);
}

proptest::proptest! {
    /// An address keeps its block's prefix bits and varies only host bits: it is inside the block, and
    /// flipping a prefix bit takes it out.
    #[test]
    fn cidr_contains_exactly_its_prefix(net in proptest::prelude::any::<u32>(), host in proptest::prelude::any::<u32>(), prefix in 1u8..=32) {
        let cidr: IpCidr = format!("{}/{prefix}", std::net::Ipv4Addr::from(net)).parse().unwrap();
        let mask = u32::MAX << (32 - u32::from(prefix));
        let inside = (net & mask) | (host & !mask);
        proptest::prop_assert!(cidr.contains(IpAddr::from(std::net::Ipv4Addr::from(inside))));
        let flipped = inside ^ (1u32 << (32 - u32::from(prefix)));
        proptest::prop_assert!(!cidr.contains(IpAddr::from(std::net::Ipv4Addr::from(flipped))));
    }
}
