//! Access-token verification cost (what every REST request pays): today's path (`jsonwebtoken::decode`
//! of our own HS256 token, measured in the same run as the baseline) against `Tokens::verify` with no
//! JWKS and no revocations, with 10 000 revoked sessions, with a JWKS configured (own token: one extra
//! header decode to route it), and an external RS256 token from the JWKS cache (for reference).
//! Variants alternate, `RUNS` rounds of `ITERS` verifications each; medians in ns per verification.
//!
//! Run: `cargo bench -p troupe-services --bench verify` (env: `ITERS`, default 200000; `RUNS`, default 7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "benchmark binary")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use troupe_services::tokens::jwks::JwksSettings;
use troupe_services::tokens::{Claims, now_secs};
use troupe_services::{JwtKey, Role, Tokens};

const RSA_PRIV: &[u8] = include_bytes!("../src/tokens/testdata/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("../src/tokens/testdata/rsa.pub");
const SECRET: [u8; 32] = [7; 32];

/// A named verification to time.
type Variant<'a> = (&'static str, Box<dyn Fn() + 'a>);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(iters: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (iters, runs) = (env("ITERS", 200_000), env("RUNS", 7));
    let ttl = Duration::from_secs(900);
    let key = JwtKey::Hs256 { secret: SECRET.to_vec() };
    let plain = Tokens::new(&key, "troupe", "troupe-api", ttl).unwrap();
    let token = plain.issue_for_session("u1", &[Role::User], "live-session").unwrap().token;

    // Today's path: decode with the same validation rules.
    let decoding = DecodingKey::from_secret(&SECRET);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 60;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.set_issuer(&["troupe"]);
    validation.set_audience(&["troupe-api"]);

    let revoked = Tokens::new(&key, "troupe", "troupe-api", ttl).unwrap();
    for i in 0..10_000 {
        revoked.revoke_session(&format!("gone-{i}"), now_secs());
    }

    // A JWKS served by a local server, loaded once.
    let mut jwk = Jwk::from_decoding_key(&DecodingKey::from_rsa_pem(RSA_PUB).unwrap(), Some(Algorithm::RS256)).unwrap();
    jwk.common.key_id = Some("r1".into());
    let body = serde_json::json!({ "keys": [jwk] }).to_string();
    let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { body.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let jwks_settings = JwksSettings::new(url, "https://idp.example", "troupe-api");
    let with_jwks = Tokens::with_jwks(&key, "troupe", "troupe-api", ttl, Some(jwks_settings)).unwrap();
    with_jwks.jwks().unwrap().refresh().await.unwrap();
    let now = now_secs();
    let claims = serde_json::json!({"sub": "e", "iss": "https://idp.example", "aud": "troupe-api", "exp": now + 3600, "nbf": now});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("r1".into());
    let external = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(RSA_PRIV).unwrap()).unwrap();

    let variants: Vec<Variant<'_>> = vec![
        (
            "baseline: jsonwebtoken::decode (today's verify)",
            Box::new(|| {
                black_box(jsonwebtoken::decode::<Claims>(black_box(&token), &decoding, &validation).unwrap());
            }),
        ),
        (
            "Tokens::verify, no JWKS, no revocations",
            Box::new(|| drop(black_box(plain.verify(black_box(&token)).unwrap()))),
        ),
        (
            "Tokens::verify, 10k revoked sessions",
            Box::new(|| drop(black_box(revoked.verify(black_box(&token)).unwrap()))),
        ),
        (
            "Tokens::verify, JWKS configured (own token)",
            Box::new(|| drop(black_box(with_jwks.verify(black_box(&token)).unwrap()))),
        ),
        (
            "Tokens::verify, external RS256 token (JWKS cache)",
            Box::new(|| drop(black_box(with_jwks.verify(black_box(&external)).unwrap()))),
        ),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for (_, f) in &variants {
        time(iters / 10, f); // warm-up
    }
    for _ in 0..runs {
        for (i, (name, f)) in variants.iter().enumerate() {
            // External RS256 verification is ~100x slower: fewer iterations.
            let n = if name.contains("external") { iters / 20 } else { iters };
            results[i].push(time(n.max(1), f));
        }
    }
    let base = median(results[0].clone());
    println!("{:<52} {:>10} {:>8}", "variant", "ns/verify", "vs base");
    for (i, (name, _)) in variants.iter().enumerate() {
        let m = median(results[i].clone());
        println!("{name:<52} {m:>10.0} {:>7.2}x", m / base);
    }
}
