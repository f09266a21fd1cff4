//! Tests of the application sections: `[auth]`, `[gateway]`, `[ws]`, `[bus]`, `[notifications]`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::{assert_one_error, errors_of, from_toml, temp_file, vars};
use crate::*;

const SECRET_32: &str = "0123456789abcdef0123456789abcdef";
const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPRIVATEXYZZY\n-----END PRIVATE KEY-----\n";
const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEApublic\n-----END PUBLIC KEY-----\n";

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn key_pair() -> (PathBuf, PathBuf) {
    (temp_file(PRIVATE_PEM), temp_file(PUBLIC_PEM))
}

// ---- defaults ----

#[test]
fn app_section_defaults() {
    let c = ConfigLoader::new().load().unwrap();
    let a = &c.auth;
    assert_eq!(a.issuer, "troupe");
    assert_eq!(a.audience, "troupe-api");
    assert_eq!(a.jwt_algorithm, JwtAlgorithm::Hs256);
    assert!(a.jwt_secret.is_none() && a.jwt_private_key_file.is_none() && a.jwt_public_key_file.is_none());
    assert!(a.uses_ephemeral_secret());
    assert_eq!(a.jwt_key_material().unwrap(), JwtKeyMaterial::Hs256Ephemeral);
    assert_eq!(a.access_token_ttl, Duration::from_secs(15 * 60));
    assert_eq!(a.refresh_token_ttl, Duration::from_secs(30 * 86_400));
    assert!(a.admin_emails.is_empty());
    assert_eq!(a.password_hash_concurrency, 2);

    let g = &c.gateway;
    assert!(g.cors_allowed_origins.is_empty() && !g.cors_allows_any_origin());
    assert!(g.trusted_proxies.is_empty());
    let r = g.rate_limit;
    assert!(r.enabled);
    assert_eq!(r.auth, RateLimit::new(5, 10).unwrap());
    assert_eq!(r.read, RateLimit::new(50, 100).unwrap());
    assert_eq!(r.write, RateLimit::new(20, 40).unwrap());
    assert_eq!(r.per_ip, RateLimit::new(20, 40).unwrap());

    let w = &c.ws;
    assert_eq!(w.ping_interval, Duration::from_secs(25));
    assert_eq!(w.max_message_bytes, 65_536);
    assert_eq!(w.read_buffer_bytes, 4096);
    assert_eq!(w.outbound_queue, 256);
    assert_eq!(w.history_messages, 100);
    assert_eq!(w.history_ttl, Duration::from_secs(300));
    assert_eq!(w.public_channel_prefixes, ["public:"]);
    assert!(w.is_public_channel("public:news") && !w.is_public_channel("notifications:u1"));

    let b = &c.bus;
    assert_eq!(b.poll_interval, Duration::from_millis(100));
    assert_eq!(b.page_size, 256);
    assert_eq!(b.max_in_flight, 1024);
    assert_eq!(b.max_attempts, 12);
    assert_eq!(b.backoff_initial, Duration::from_millis(100));
    assert_eq!(b.backoff_max, Duration::from_secs(30));
    assert!((b.backoff_jitter - 0.2).abs() < f64::EPSILON);
    assert_eq!(b.handler_timeout, Duration::from_secs(60));

    let n = &c.notifications;
    assert_eq!((n.fanout_page, n.fanout_concurrency), (256, 16));
    assert_eq!(n.deliver_timeout, Duration::from_secs(30));
}

// ---- environment overrides ----

#[test]
fn app_sections_from_env() {
    let c = ConfigLoader::new()
        .env(vars(&[
            ("TROUPE_AUTH_ISSUER", "issuer-x"),
            ("TROUPE_AUTH_AUDIENCE", "aud-x"),
            ("TROUPE_AUTH_JWT_SECRET", SECRET_32),
            ("TROUPE_AUTH_ACCESS_TOKEN_TTL", "5m"),
            ("TROUPE_AUTH_REFRESH_TOKEN_TTL", "7d"),
            ("TROUPE_AUTH_ADMIN_EMAILS", " Root@Example.com, ops@example.com,root@example.com "),
            ("TROUPE_AUTH_PASSWORD_HASH_CONCURRENCY", "8"),
            ("TROUPE_GATEWAY_CORS_ALLOWED_ORIGINS", "https://App.Example.com,http://localhost:3000"),
            ("TROUPE_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7, fd00::/8"),
            ("TROUPE_GATEWAY_RATE_LIMIT_ENABLED", "off"),
            ("TROUPE_GATEWAY_RATE_LIMIT_AUTH_PER_SECOND", "1"),
            ("TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURST", "2"),
            ("TROUPE_GATEWAY_RATE_LIMIT_READ_PER_SECOND", "3"),
            ("TROUPE_GATEWAY_RATE_LIMIT_READ_BURST", "4"),
            ("TROUPE_GATEWAY_RATE_LIMIT_WRITE_PER_SECOND", "5"),
            ("TROUPE_GATEWAY_RATE_LIMIT_WRITE_BURST", "6"),
            ("TROUPE_GATEWAY_RATE_LIMIT_PER_IP_PER_SECOND", "7"),
            ("TROUPE_GATEWAY_RATE_LIMIT_PER_IP_BURST", "8"),
            ("TROUPE_WS_PING_INTERVAL", "10s"),
            ("TROUPE_WS_MAX_MESSAGE_BYTES", "1024"),
            ("TROUPE_WS_READ_BUFFER_BYTES", "512"),
            ("TROUPE_WS_OUTBOUND_QUEUE", "4"),
            ("TROUPE_WS_HISTORY_MESSAGES", "0"),
            ("TROUPE_WS_HISTORY_TTL", "1m"),
            ("TROUPE_WS_PUBLIC_CHANNEL_PREFIXES", "public:,news:"),
            ("TROUPE_BUS_POLL_INTERVAL", "1s"),
            ("TROUPE_BUS_PAGE_SIZE", "16"),
            ("TROUPE_BUS_MAX_IN_FLIGHT", "64"),
            ("TROUPE_BUS_MAX_ATTEMPTS", "3"),
            ("TROUPE_BUS_BACKOFF_INITIAL", "10ms"),
            ("TROUPE_BUS_BACKOFF_MAX", "1s"),
            ("TROUPE_BUS_BACKOFF_JITTER", "0"),
            ("TROUPE_BUS_HANDLER_TIMEOUT", "2m"),
            ("TROUPE_NOTIFICATIONS_FANOUT_PAGE", "32"),
            ("TROUPE_NOTIFICATIONS_FANOUT_CONCURRENCY", "4"),
            ("TROUPE_NOTIFICATIONS_DELIVER_TIMEOUT", "90s"),
        ]))
        .load()
        .unwrap();
    assert_eq!((c.auth.issuer.as_str(), c.auth.audience.as_str()), ("issuer-x", "aud-x"));
    assert_eq!(c.auth.jwt_secret.as_ref().unwrap().expose(), SECRET_32);
    assert!(!c.auth.uses_ephemeral_secret());
    assert_eq!(c.auth.jwt_key_material().unwrap(), JwtKeyMaterial::Hs256 { secret: Secret::new(SECRET_32) });
    assert_eq!(c.auth.access_token_ttl, Duration::from_secs(300));
    assert_eq!(c.auth.refresh_token_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(c.auth.admin_emails, ["root@example.com", "ops@example.com"]); // normalized, deduplicated
    assert_eq!(c.auth.password_hash_concurrency, 8);

    assert_eq!(c.gateway.cors_allowed_origins, ["https://app.example.com", "http://localhost:3000"]);
    let proxies: Vec<String> = c.gateway.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
    let r = c.gateway.rate_limit;
    assert!(!r.enabled);
    let limits = [r.auth, r.read, r.write, r.per_ip].map(|l| (l.per_second.get(), l.burst.get()));
    assert_eq!(limits, [(1, 2), (3, 4), (5, 6), (7, 8)]);

    assert_eq!(
        c.ws,
        WsConfig {
            ping_interval: Duration::from_secs(10),
            max_message_bytes: 1024,
            read_buffer_bytes: 512,
            outbound_queue: 4,
            history_messages: 0,
            history_ttl: Duration::from_secs(60),
            public_channel_prefixes: vec!["public:".into(), "news:".into()],
        }
    );
    assert_eq!(
        c.bus,
        BusConfig {
            poll_interval: Duration::from_secs(1),
            page_size: 16,
            max_in_flight: 64,
            max_attempts: 3,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            backoff_jitter: 0.0,
            handler_timeout: Duration::from_secs(120),
        }
    );
    assert_eq!(
        c.notifications,
        NotificationsConfig { fanout_page: 32, fanout_concurrency: 4, deliver_timeout: Duration::from_secs(90) }
    );
    // Rate limiting off is worth a warning; a configured secret is not.
    let warned: Vec<&str> = c.warnings().iter().map(|w| w.key).collect();
    assert_eq!(warned, ["gateway.rate_limit.enabled"]);
}

#[test]
fn nested_tables_in_files_inline_or_not() {
    let c = from_toml(
        "[gateway.rate_limit.read]\nper_second = 9\n\n[gateway.rate_limit]\nwrite = { per_second = 3, burst = 7 }\n",
    )
    .unwrap();
    assert_eq!(c.gateway.rate_limit.read, RateLimit { per_second: nz(9), burst: nz(100) });
    assert_eq!(c.gateway.rate_limit.write, RateLimit::new(3, 7).unwrap());
    let c = from_toml("gateway.rate_limit.per_ip.burst = 1\n").unwrap();
    assert_eq!(c.gateway.rate_limit.per_ip.burst, nz(1));
    // Env beats the file at any depth.
    let c = ConfigLoader::new()
        .toml_str("t.toml", "[gateway.rate_limit.auth]\nburst = 3\n")
        .env(vars(&[("TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURST", "4")]))
        .load()
        .unwrap();
    assert_eq!(c.gateway.rate_limit.auth.burst, nz(4));
}

// ---- unknown keys ----

#[test]
fn unknown_app_keys_get_did_you_mean() {
    let cases = [
        ("[auth]\njwt_secrt = \"x\"\n", "auth.jwt_secrt", "auth.jwt_secret", "line 2"),
        ("[ws]\nping_intervall = \"5s\"\n", "ws.ping_intervall", "ws.ping_interval", "line 2"),
        ("[bus]\nmax_attempt = 3\n", "bus.max_attempt", "bus.max_attempts", "line 2"),
        ("[notifications]\nfanout_pages = 3\n", "notifications.fanout_pages", "notifications.fanout_page", "line 2"),
        (
            "[gateway]\ncors_allowed_origin = []\n",
            "gateway.cors_allowed_origin",
            "gateway.cors_allowed_origins",
            "line 2",
        ),
        (
            "[gateway.rate_limit.auth]\n\nper_secnd = 1\n",
            "gateway.rate_limit.auth.per_secnd",
            "gateway.rate_limit.auth.per_second",
            "line 3",
        ),
        ("[gateway.rate_limt]\nenabled = true\n", "gateway.rate_limt", "gateway.rate_limit", "line 1"),
        ("[gateway.rate_limit.reed]\nburst = 1\n", "gateway.rate_limit.reed", "gateway.rate_limit.read", "line 1"),
        ("[notification]\nfanout_page = 1\n", "notification", "notifications", "line 1"),
        // Right key, wrong section.
        ("[ws]\nadmin_emails = []\n", "ws.admin_emails", "auth.admin_emails", "line 2"),
    ];
    for (text, unknown, suggestion, line) in cases {
        let errors = errors_of(from_toml(text));
        assert_eq!(errors.len(), 1, "{text}: {errors}");
        let e = errors.to_string();
        assert!(e.contains(&format!("unknown key {unknown:?}")), "{e}");
        assert!(e.contains(&format!("did you mean {suggestion:?}?")), "{e}");
        assert!(e.contains(line), "{e}");
    }
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_AUTH_JWT_SECRETS", "x")])).load(),
        "TROUPE_AUTH_JWT_SECRETS",
        "did you mean TROUPE_AUTH_JWT_SECRET?",
    );
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURTS", "1")])).load(),
        "TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURTS",
        "did you mean TROUPE_GATEWAY_RATE_LIMIT_AUTH_BURST?",
    );
    assert_one_error(
        ConfigLoader::new().set("ws.history_ttls", "1s").load(),
        "ws.history_ttls",
        r#"did you mean "ws.history_ttl"?"#,
    );
}

#[test]
fn tables_and_values_in_the_wrong_shape() {
    assert_one_error(
        from_toml("[gateway.rate_limit]\nauth = 5\n"),
        "gateway.rate_limit.auth",
        "expected a table ([gateway.rate_limit.auth]), found integer (set in troupe.toml:2)",
    );
    assert_one_error(
        from_toml("[gateway.rate_limit.auth.per_second]\nx = 1\n"),
        "gateway.rate_limit.auth.per_second",
        "expected an integer, found table",
    );
    assert_one_error(from_toml("[ws]\nping_interval = 25\n"), "ws.ping_interval", "expected a duration string");
    assert_one_error(from_toml("[auth]\nadmin_emails = \"a@b.c\"\n"), "auth.admin_emails", "expected an array");
}

// ---- [auth] validation ----

#[test]
fn auth_values_are_checked() {
    assert_one_error(from_toml("[auth]\nissuer = \" \"\n"), "auth.issuer", "must not be empty");
    assert_one_error(
        ConfigLoader::new().set("auth.jwt_algorithm", "none").load(),
        "auth.jwt_algorithm",
        r#"unknown JWT algorithm "none" (expected one of HS256, RS256, EdDSA)"#,
    );
    assert_eq!(
        ConfigLoader::new().set("auth.jwt_algorithm", "hs256").load().unwrap().auth.jwt_algorithm,
        JwtAlgorithm::Hs256
    );
    assert_one_error(
        ConfigLoader::new().set("auth.access_token_ttl", "0s").load(),
        "auth.access_token_ttl",
        "must be greater than 0",
    );
    assert_one_error(
        from_toml("[auth]\naccess_token_ttl = \"1h\"\nrefresh_token_ttl = \"30m\"\n"),
        "auth.refresh_token_ttl",
        "must be longer than auth.access_token_ttl (30m <= 1h) (set in troupe.toml:3)",
    );
    assert_one_error(
        ConfigLoader::new().set("auth.password_hash_concurrency", "0").load(),
        "auth.password_hash_concurrency",
        "must be an integer from 1 to 64, got 0",
    );
    assert_one_error(
        ConfigLoader::new().set("auth.password_hash_concurrency", "65").load(),
        "auth.password_hash_concurrency",
        "got 65",
    );
    assert_one_error(
        from_toml("[auth]\nadmin_emails = [\"ok@example.com\", \"nope\", \"a@@b\", \"x y@z\"]\n"),
        "auth.admin_emails",
        r#"invalid email "nope" (expected name@domain); invalid email "a@@b" (expected name@domain); invalid email "x y@z""#,
    );
}

#[test]
fn short_jwt_secret_is_refused_without_echoing_it() {
    let errors = errors_of(ConfigLoader::new().env(vars(&[("TROUPE_AUTH_JWT_SECRET", "short-XYZZY")])).load());
    assert_eq!(errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(
        text.starts_with("auth.jwt_secret: must be at least 32 bytes long")
            && text.ends_with("(set by TROUPE_AUTH_JWT_SECRET)"),
        "{text}"
    );
    assert!(!text.contains("XYZZY"), "{text}");
    assert_one_error(ConfigLoader::new().set("auth.jwt_secret", "<redacted>").load(), "auth.jwt_secret", "placeholder");
}

#[test]
fn key_files_required_and_checked_for_rs256_and_eddsa() {
    for algorithm in ["RS256", "EdDSA"] {
        let errors = errors_of(from_toml(&format!("[auth]\njwt_algorithm = \"{algorithm}\"\n")));
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!(
                    "auth.jwt_private_key_file: required by auth.jwt_algorithm {algorithm} (auth.jwt_algorithm set in troupe.toml:2)"
                ),
                format!(
                    "auth.jwt_public_key_file: required by auth.jwt_algorithm {algorithm} (auth.jwt_algorithm set in troupe.toml:2)"
                ),
            ]
        );
    }

    let (private, public) = key_pair();
    let c = ConfigLoader::new()
        .set("auth.jwt_algorithm", "eddsa")
        .set("auth.jwt_private_key_file", private.display().to_string())
        .set("auth.jwt_public_key_file", public.display().to_string())
        .load()
        .unwrap();
    assert_eq!(c.auth.jwt_algorithm, JwtAlgorithm::EdDsa);
    assert!(!c.auth.uses_ephemeral_secret());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    match c.auth.jwt_key_material().unwrap() {
        JwtKeyMaterial::EdDsa { private_pem, public_pem } => {
            assert_eq!(private_pem.expose(), PRIVATE_PEM);
            assert_eq!(public_pem, PUBLIC_PEM);
            let debug = format!("{:?}", JwtKeyMaterial::EdDsa { private_pem, public_pem });
            assert!(!debug.contains("XYZZY"), "{debug}");
        }
        other => panic!("{other:?}"),
    }

    // Missing file, swapped files, not PEM: each named by key and path.
    let missing = std::env::temp_dir().join("troupe-config-no-such-key.pem");
    let not_pem = temp_file("just text");
    let with = |private: &PathBuf, public: &PathBuf| {
        ConfigLoader::new()
            .set("auth.jwt_algorithm", "RS256")
            .set("auth.jwt_private_key_file", private.display().to_string())
            .set("auth.jwt_public_key_file", public.display().to_string())
            .load()
    };
    assert_one_error(
        with(&missing, &public),
        "auth.jwt_private_key_file",
        &format!("file {} not found", missing.display()),
    );
    let errors = errors_of(with(&public, &private));
    let text = errors.to_string();
    assert_eq!(errors.len(), 2, "{text}");
    assert!(text.contains("auth.jwt_private_key_file: ") && text.contains("expected a PRIVATE KEY"), "{text}");
    assert!(text.contains("auth.jwt_public_key_file: ") && text.contains("holds a private key"), "{text}");
    assert!(!text.contains("XYZZY"), "{text}");
    assert_one_error(with(&private, &not_pem), "auth.jwt_public_key_file", "is not a PEM file");
    let dir = std::env::temp_dir();
    assert_one_error(with(&dir, &public), "auth.jwt_private_key_file", "is not a regular file");

    // A file that disappears after loading is reported by jwt_key_material.
    let (gone_private, gone_public) = key_pair();
    let c = with(&gone_private, &gone_public).unwrap();
    std::fs::remove_file(&gone_private).unwrap();
    let e = c.auth.jwt_key_material().unwrap_err();
    assert_eq!(e.key, "auth.jwt_private_key_file");
    assert!(e.reason.contains("not found"), "{e}");

    for path in [private, public, not_pem, gone_public] {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn secret_and_key_files_do_not_mix() {
    let (private, public) = key_pair();
    assert_one_error(
        ConfigLoader::new()
            .set("auth.jwt_private_key_file", private.display().to_string())
            .set("auth.jwt_secret", SECRET_32)
            .load(),
        "auth.jwt_private_key_file",
        "only used with auth.jwt_algorithm RS256 or EdDSA",
    );
    assert_one_error(
        ConfigLoader::new()
            .set("auth.jwt_algorithm", "RS256")
            .set("auth.jwt_private_key_file", private.display().to_string())
            .set("auth.jwt_public_key_file", public.display().to_string())
            .set("auth.jwt_secret", SECRET_32)
            .load(),
        "auth.jwt_secret",
        "only used with auth.jwt_algorithm HS256 (auth.jwt_algorithm is RS256)",
    );
    // A bad algorithm does not cascade into key-file errors.
    assert_one_error(
        ConfigLoader::new().set("auth.jwt_algorithm", "RS512").load(),
        "auth.jwt_algorithm",
        "unknown JWT algorithm",
    );
    std::fs::remove_file(private).unwrap();
    std::fs::remove_file(public).unwrap();
}

#[test]
fn ephemeral_secret_is_warned_about() {
    let warnings = NodeConfig::default().warnings();
    assert_eq!(warnings.len(), 1);
    let w = warnings[0].to_string();
    assert!(w.starts_with("auth.jwt_secret: not set: a random HS256 secret"), "{w}");
    assert!(w.contains("do not survive a restart") && w.contains("not accepted by other nodes"), "{w}");
    let clustered = ConfigLoader::new()
        .set("cluster.addr", "127.0.0.1:4000")
        .set("cluster.cookie", "c")
        .set("store.backend", "postgres")
        .set("store.url", "postgres://db/troupe")
        .load()
        .unwrap()
        .warnings();
    assert!(clustered[0].message.contains("this node is clustered"), "{clustered:?}");
}

// ---- [gateway] validation ----

#[test]
fn cors_origins_are_origins() {
    let ok = |list: &str| ConfigLoader::new().set("gateway.cors_allowed_origins", list).load();
    let c = ok("*").unwrap();
    assert!(c.gateway.cors_allows_any_origin());
    assert_eq!(c.gateway.cors_allowed_origins, ["*"]);
    let c = ok("https://a.example.com:8443,http://127.0.0.1:3000,http://[::1]:8080,app://local").unwrap();
    assert_eq!(c.gateway.cors_allowed_origins.len(), 4);
    assert_one_error(
        ok("*,https://a.example"),
        "gateway.cors_allowed_origins",
        "\"*\" allows every origin and must be the only item",
    );
    for (bad, why) in [
        ("https://a.example.com/", "no path or trailing slash"),
        ("https://a.example.com/app", "no path"),
        ("a.example.com", "expected scheme://host[:port]"),
        ("https://a.example.com:0", "bad port"),
        ("https://a.example.com:99999", "bad port"),
        ("https://bad_host", "bad host"),
        ("https://user@a.example", "no user info"),
        ("1ttp://a.example", "bad scheme"),
        ("https://[zz]:1", "bad IPv6"),
    ] {
        assert_one_error(ok(bad), "gateway.cors_allowed_origins", &format!("invalid origin {bad:?} ("));
        assert_one_error(ok(bad), "gateway.cors_allowed_origins", why);
    }
}

#[test]
fn trusted_proxies_are_ips_or_cidrs() {
    let c = from_toml("[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"0.0.0.0/0\"]\n").unwrap();
    let g = &c.gateway;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(g.is_trusted_proxy(ip("10.200.3.4")));
    assert!(g.is_trusted_proxy(ip("::1")));
    assert!(g.is_trusted_proxy(ip("::ffff:8.8.8.8"))); // mapped v4 in 0.0.0.0/0
    assert!(!g.is_trusted_proxy(ip("::2")));
    let only_ten = from_toml("[gateway]\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap().gateway;
    assert!(!only_ten.is_trusted_proxy(ip("11.0.0.1")));
    assert!(only_ten.is_trusted_proxy(ip("::ffff:10.1.1.1")));
    assert_one_error(
        ConfigLoader::new().set("gateway.trusted_proxies", "10.0.0.1/8,proxy.local,10.0.0.0/33").load(),
        "gateway.trusted_proxies",
        r#""10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?); invalid IP address or CIDR "proxy.local" (expected e.g. 10.0.0.1 or 10.0.0.0/8); invalid IP address or CIDR "10.0.0.0/33""#,
    );
}

#[test]
fn ip_net_contains_at_every_prefix() {
    let net: IpNet = "192.168.0.0/16".parse().unwrap();
    assert!(net.contains("192.168.255.255".parse().unwrap()));
    assert!(!net.contains("192.169.0.0".parse().unwrap()));
    let v6: IpNet = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    let all6: IpNet = "::/0".parse().unwrap();
    assert!(all6.contains("ffff::1".parse().unwrap()));
    let host: IpNet = "10.0.0.1".parse().unwrap();
    assert_eq!(host.to_string(), "10.0.0.1/32");
    assert!(host.contains("10.0.0.1".parse().unwrap()) && !host.contains("10.0.0.2".parse().unwrap()));
}

#[test]
fn rate_limits_must_be_positive() {
    assert_one_error(
        from_toml("[gateway.rate_limit.read]\nburst = 0\n"),
        "gateway.rate_limit.read.burst",
        "must be an integer from 1 to 4294967295, got 0 (set in troupe.toml:2)",
    );
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_GATEWAY_RATE_LIMIT_PER_IP_PER_SECOND", "-3")])).load(),
        "gateway.rate_limit.per_ip.per_second",
        "got -3 (set by TROUPE_GATEWAY_RATE_LIMIT_PER_IP_PER_SECOND)",
    );
    assert_one_error(
        ConfigLoader::new().set("gateway.rate_limit.write.per_second", "5000000000").load(),
        "gateway.rate_limit.write.per_second",
        "got 5000000000",
    );
    assert_one_error(
        ConfigLoader::new().set("gateway.rate_limit.enabled", "sometimes").load(),
        "gateway.rate_limit.enabled",
        "invalid boolean",
    );
}

// ---- [ws] validation ----

#[test]
fn ws_values_are_checked() {
    assert_one_error(
        ConfigLoader::new().set("ws.ping_interval", "0ms").load(),
        "ws.ping_interval",
        "must be greater than 0",
    );
    assert_one_error(
        ConfigLoader::new().set("ws.max_message_bytes", "10").load(),
        "ws.max_message_bytes",
        "must be an integer from 64 to 67108864, got 10",
    );
    assert_one_error(
        ConfigLoader::new().set("ws.read_buffer_bytes", "2097152").load(),
        "ws.read_buffer_bytes",
        "must be an integer from 256 to 1048576",
    );
    assert_one_error(ConfigLoader::new().set("ws.outbound_queue", "0").load(), "ws.outbound_queue", "from 1");
    assert_one_error(ConfigLoader::new().set("ws.history_messages", "-1").load(), "ws.history_messages", "got -1");
    assert_one_error(ConfigLoader::new().set("ws.history_ttl", "soon").load(), "ws.history_ttl", "invalid duration");
}

#[test]
fn public_prefixes_never_expose_private_channels() {
    for bad in ["notifications:", "notif", "notifications:u1", ""] {
        assert_one_error(
            from_toml(&format!("[ws]\npublic_channel_prefixes = [\"public:\", \"{bad}\"]\n")),
            "ws.public_channel_prefixes",
            if bad.is_empty() {
                "empty prefix would make every channel public"
            } else {
                "private notifications:{user_id}"
            },
        );
    }
    assert_one_error(
        from_toml("[ws]\npublic_channel_prefixes = [\"a b\"]\n"),
        "ws.public_channel_prefixes",
        "whitespace",
    );
    let none = from_toml("[ws]\npublic_channel_prefixes = []\n").unwrap();
    assert!(!none.ws.is_public_channel("public:x"));
}

// ---- [bus] and [notifications] validation ----

#[test]
fn bus_values_are_checked() {
    assert_one_error(
        ConfigLoader::new().set("bus.max_attempts", "0").load(),
        "bus.max_attempts",
        "must be an integer from 1 to 1000, got 0",
    );
    assert_one_error(ConfigLoader::new().set("bus.max_in_flight", "0").load(), "bus.max_in_flight", "from 1");
    assert_one_error(ConfigLoader::new().set("bus.page_size", "0").load(), "bus.page_size", "from 1");
    assert_one_error(ConfigLoader::new().set("bus.poll_interval", "0s").load(), "bus.poll_interval", "greater than 0");
    assert_one_error(
        ConfigLoader::new().set("bus.backoff_jitter", "-0.1").load(),
        "bus.backoff_jitter",
        "between 0 and 1",
    );
    assert_one_error(
        ConfigLoader::new().set("bus.backoff_initial", "1m").load(),
        "bus.backoff_max",
        "must be at least bus.backoff_initial (30s < 1m)",
    );
    assert_one_error(
        ConfigLoader::new().set("bus.handler_timeout", "20s").load(),
        "notifications.deliver_timeout",
        "must be shorter than bus.handler_timeout, so the service's own deadline answers before the bus gives up (30s >= 20s)",
    );
    // A bad handler timeout does not also blame the notification deadline.
    assert_one_error(
        ConfigLoader::new().set("bus.handler_timeout", "x").load(),
        "bus.handler_timeout",
        "invalid duration",
    );
}

#[test]
fn notifications_values_are_checked() {
    assert_one_error(
        ConfigLoader::new().set("notifications.fanout_page", "0").load(),
        "notifications.fanout_page",
        "must be an integer from 1 to",
    );
    assert_one_error(
        ConfigLoader::new().env(vars(&[("TROUPE_NOTIFICATIONS_FANOUT_CONCURRENCY", "2000")])).load(),
        "notifications.fanout_concurrency",
        "must be an integer from 1 to 1024, got 2000 (set by TROUPE_NOTIFICATIONS_FANOUT_CONCURRENCY)",
    );
    assert_one_error(
        ConfigLoader::new().set("notifications.deliver_timeout", "0s").load(),
        "notifications.deliver_timeout",
        "must be greater than 0",
    );
}

// ---- secrets, rendering ----

#[test]
fn jwt_secret_is_redacted_in_check_output_and_debug() {
    let c = ConfigLoader::new()
        .env(vars(&[("TROUPE_AUTH_JWT_SECRET", "XYZZY-0123456789abcdef0123456789")]))
        .load()
        .unwrap();
    let rendered = c.to_redacted_toml();
    let debug = format!("{c:?} {c:#?} {:?}", c.auth.jwt_key_material().unwrap());
    for text in [&rendered, &debug] {
        assert!(!text.contains("XYZZY"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    assert!(rendered.contains("jwt_secret = \"<redacted>\""), "{rendered}");
    // The rendering reloads once the secret is supplied again.
    let reloaded = ConfigLoader::new()
        .toml_str("rendered.toml", rendered)
        .env(vars(&[("TROUPE_AUTH_JWT_SECRET", "XYZZY-0123456789abcdef0123456789")]))
        .load()
        .unwrap();
    assert_eq!(reloaded, c);
}

#[test]
fn app_sections_render_and_reload() {
    let (private, public) = key_pair();
    let c = ConfigLoader::new()
        .set("auth.jwt_algorithm", "RS256")
        .set("auth.jwt_private_key_file", private.display().to_string())
        .set("auth.jwt_public_key_file", public.display().to_string())
        .set("auth.refresh_token_ttl", "36h")
        .set("auth.admin_emails", "a@b.c")
        .set("gateway.cors_allowed_origins", "https://x.example")
        .set("gateway.trusted_proxies", "10.0.0.0/8,::1")
        .set("gateway.rate_limit.read.burst", "7")
        .set("ws.public_channel_prefixes", "public:,room:")
        .set("bus.backoff_jitter", "0.5")
        .load()
        .unwrap();
    let rendered = c.to_redacted_toml();
    for needle in [
        "jwt_algorithm = \"RS256\"",
        "refresh_token_ttl = \"1d12h\"",
        "[gateway.rate_limit.read]",
        "trusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]",
        "public_channel_prefixes = [\"public:\", \"room:\"]",
    ] {
        assert!(rendered.contains(needle), "{needle} not in:\n{rendered}");
    }
    assert!(!rendered.contains("XYZZY"), "{rendered}");
    assert_eq!(ConfigLoader::new().toml_str("rendered.toml", rendered).load().unwrap(), c);
    std::fs::remove_file(private).unwrap();
    std::fs::remove_file(public).unwrap();
}

// ---- [auth] password hash costs and JWKS ----

#[test]
fn password_hash_costs_default_to_owasp_and_are_configurable() {
    let a = ConfigLoader::new().load().unwrap().auth;
    assert_eq!((a.password_hash_memory_kib, a.password_hash_iterations, a.password_hash_parallelism), (19456, 2, 1));
    assert!(!a.allow_insecure_password_hashing);
    let a = from_toml(
        "[auth]\npassword_hash_memory_kib = 47104\npassword_hash_iterations = 1\npassword_hash_parallelism = 2\n",
    )
    .unwrap()
    .auth;
    assert_eq!((a.password_hash_memory_kib, a.password_hash_iterations, a.password_hash_parallelism), (47104, 1, 2));
    let a = ConfigLoader::new().set("auth.password_hash_memory_kib", "7168").set("auth.password_hash_iterations", "5");
    assert!(a.load().is_ok(), "OWASP's 7 MiB x 5 row is accepted");
}

#[test]
fn password_hash_costs_below_owasp_need_the_explicit_switch() {
    assert_one_error(
        ConfigLoader::new().set("auth.password_hash_memory_kib", "64").load(),
        "auth.password_hash_memory_kib",
        "must be at least 7168 KiB (OWASP's argon2id minimum), got 64",
    );
    assert_one_error(
        ConfigLoader::new()
            .set("auth.password_hash_memory_kib", "19456")
            .set("auth.password_hash_iterations", "1")
            .load(),
        "auth.password_hash_iterations",
        "memory x iterations must be at least 35840 KiB",
    );
    let a = ConfigLoader::new()
        .set("auth.password_hash_memory_kib", "64")
        .set("auth.password_hash_iterations", "1")
        .set("auth.allow_insecure_password_hashing", "true")
        .load()
        .unwrap()
        .auth;
    assert_eq!((a.password_hash_memory_kib, a.password_hash_iterations), (64, 1));
    // argon2's own rule holds even with the switch: 8 KiB per lane.
    assert_one_error(
        ConfigLoader::new()
            .set("auth.password_hash_memory_kib", "64")
            .set("auth.password_hash_parallelism", "16")
            .set("auth.allow_insecure_password_hashing", "true")
            .load(),
        "auth.password_hash_memory_kib",
        "at least 8 KiB per lane",
    );
    for (key, value, needle) in [
        ("auth.password_hash_memory_kib", "0", "must be an integer from 8 to 1048576, got 0"),
        ("auth.password_hash_iterations", "0", "must be an integer from 1 to 100, got 0"),
        ("auth.password_hash_parallelism", "17", "must be an integer from 1 to 16, got 17"),
    ] {
        assert_one_error(ConfigLoader::new().set(key, value).load(), key, needle);
    }
}

#[test]
fn jwks_settings_are_checked() {
    let a = from_toml(
        "[auth]\njwks_url = \"http://127.0.0.1:8081/.well-known/jwks.json\"\njwks_issuer = \"https://idp.example\"\n",
    )
    .unwrap()
    .auth;
    assert_eq!(a.jwks_url.as_deref(), Some("http://127.0.0.1:8081/.well-known/jwks.json"));
    assert_eq!(a.jwks_issuer.as_deref(), Some("https://idp.example"));
    assert_eq!((a.jwks_audience, a.jwks_roles_claim.as_str()), (None, "roles"));
    assert_eq!(a.jwks_refresh_interval, Duration::from_secs(300));
    assert_one_error(
        ConfigLoader::new().set("auth.jwks_url", "http://idp/jwks").load(),
        "auth.jwks_issuer",
        "required by auth.jwks_url",
    );
    assert_one_error(
        ConfigLoader::new().set("auth.jwks_url", "https://idp/jwks").set("auth.jwks_issuer", "i").load(),
        "auth.jwks_url",
        "https:// is not supported",
    );
    for bad in ["ftp://idp/jwks", "http://", "http:///x", "idp/jwks", "http://a b/"] {
        let r = ConfigLoader::new().set("auth.jwks_url", bad).set("auth.jwks_issuer", "i").load();
        assert!(r.is_err(), "{bad} accepted");
    }
    assert_one_error(
        ConfigLoader::new().set("auth.jwks_issuer", "i").load(),
        "auth.jwks_issuer",
        "only used with auth.jwks_url",
    );
    assert_one_error(
        ConfigLoader::new().set("auth.jwks_refresh_interval", "0s").load(),
        "auth.jwks_refresh_interval",
        "must be greater than 0",
    );
    assert_one_error(from_toml("[auth]\njwks_roles_claim = \" \"\n"), "auth.jwks_roles_claim", "empty");
}
