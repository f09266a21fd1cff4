//! JWKS tests against a real local HTTP server (axum on 127.0.0.1:0) serving a JWK Set that the
//! test can rotate, take down, or make hang.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::policy::{Principal, Role};
use crate::tokens::{JwtKey, Tokens, now_secs};

const ED_PRIV: &[u8] = include_bytes!("../testdata/ed.pem");
const RSA_PRIV: &[u8] = include_bytes!("../testdata/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("../testdata/rsa.pub");

const IDP: &str = "https://idp.example";
const AUD: &str = "troupe-api";

/// What the fake IdP answers.
#[derive(Clone)]
enum Mode {
    Serve(String),
    Down,
    Hang,
}

#[derive(Clone)]
struct Idp {
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicU64>,
    url: String,
}

impl Idp {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(State(idp): State<Idp>) -> Response {
    idp.hits.fetch_add(1, Ordering::SeqCst);
    let mode = idp.mode.lock().unwrap().clone();
    match mode {
        Mode::Serve(body) => ([("content-type", "application/json")], body).into_response(),
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
    }
}

async fn idp(mode: Mode) -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let idp = Idp { mode: Arc::new(Mutex::new(mode)), hits: Arc::new(AtomicU64::new(0)), url };
    let app = axum::Router::new().route("/.well-known/jwks.json", axum::routing::get(serve)).with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    idp
}

fn rsa_jwk(kid: &str) -> serde_json::Value {
    let key = DecodingKey::from_rsa_pem(RSA_PUB).unwrap();
    let mut jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256)).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn ed_jwk(kid: &str) -> serde_json::Value {
    let key = EncodingKey::from_ed_pem(ED_PRIV).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn set(keys: &[serde_json::Value]) -> Mode {
    Mode::Serve(json!({ "keys": keys }).to_string())
}

fn settings(url: &str) -> JwksSettings {
    JwksSettings {
        min_refetch_interval: Duration::from_secs(3600),
        fetch_timeout: Duration::from_millis(500),
        ..JwksSettings::new(url, IDP, AUD)
    }
}

/// A node with its own HS256 key that also accepts the IdP's tokens.
fn tokens(jwks: JwksSettings) -> Tokens {
    Tokens::with_jwks(&JwtKey::Hs256 { secret: vec![9; 32] }, "troupe", AUD, Duration::from_secs(900), Some(jwks))
        .unwrap()
}

fn ext_claims(sub: &str) -> serde_json::Value {
    let now = now_secs();
    json!({ "sub": sub, "iss": IDP, "aud": AUD, "exp": now + 600, "nbf": now - 5, "iat": now - 5 })
}

fn sign(alg: Algorithm, kid: &str, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_PRIV).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_PRIV).unwrap(),
        _ => unreachable!(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_of_the_idp_verify_and_own_tokens_still_do() {
    let idp = idp(set(&[rsa_jwk("r1"), ed_jwk("e1")])).await;
    let t = tokens(settings(&idp.url));
    assert_eq!(t.jwks().unwrap().refresh().await.unwrap(), 2);
    assert_eq!(t.jwks().unwrap().kids(), ["e1", "r1"]);

    let mut c = ext_claims("ext-user-1");
    c["roles"] = json!(["admin", "auditor"]);
    let p = t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap();
    assert_eq!(p, Principal::new("ext-user-1", vec![Role::User, Role::Admin]));
    let p = t.verify(&sign(Algorithm::EdDSA, "e1", &ext_claims("ext-user-2"))).unwrap();
    assert_eq!(p, Principal::new("ext-user-2", vec![Role::User]));

    // A key of one type does not verify a token claiming the other's kid.
    assert!(t.verify(&sign(Algorithm::EdDSA, "r1", &ext_claims("x"))).is_err());
    // Our own tokens (no kid) are untouched.
    let own = t.issue("u1", &[Role::User]).unwrap().token;
    assert_eq!(t.verify(&own).unwrap().user_id, "u1");
    // Verification never fetched again.
    assert_eq!(idp.hits(), 1);
}

#[tokio::test]
async fn roles_claim_is_configurable_and_may_be_a_space_separated_string() {
    let idp = idp(set(&[rsa_jwk("r1")])).await;
    let t = tokens(JwksSettings { roles_claim: "scope".into(), ..settings(&idp.url) });
    t.jwks().unwrap().refresh().await.unwrap();
    let mut c = ext_claims("s");
    c["scope"] = json!("read admin");
    c["roles"] = json!(["user"]);
    assert!(t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap().is_admin());
    c["scope"] = json!("read");
    c["roles"] = json!(["admin"]);
    assert!(!t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap().is_admin());
}

#[tokio::test]
async fn iss_aud_exp_nbf_are_required_of_external_tokens() {
    let idp = idp(set(&[rsa_jwk("r1")])).await;
    let t = tokens(settings(&idp.url));
    t.jwks().unwrap().refresh().await.unwrap();
    let now = now_secs();
    let mut c = ext_claims("s");
    c["iss"] = json!("troupe");
    assert_eq!(t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap_err(), AuthError::WrongIssuer);
    let mut c = ext_claims("s");
    c["aud"] = json!("someone-else");
    assert_eq!(t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap_err(), AuthError::WrongAudience);
    let mut c = ext_claims("s");
    c["exp"] = json!(now - 3600);
    assert_eq!(t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap_err(), AuthError::Expired);
    let mut c = ext_claims("s");
    c["nbf"] = json!(now + 3600);
    assert_eq!(t.verify(&sign(Algorithm::RS256, "r1", &c)).unwrap_err(), AuthError::NotYetValid);
    for claim in ["exp", "nbf", "iss", "aud", "sub"] {
        let mut c = ext_claims("s");
        c.as_object_mut().unwrap().remove(claim);
        assert!(t.verify(&sign(Algorithm::RS256, "r1", &c)).is_err(), "{claim} missing but accepted");
    }
    let mut c = ext_claims("s");
    c["sub"] = json!(42);
    assert!(t.verify(&sign(Algorithm::RS256, "r1", &c)).is_err());
}

#[tokio::test]
async fn alg_confusion_and_alg_none_fail() {
    let idp = idp(set(&[rsa_jwk("r1"), ed_jwk("e1")])).await;
    let t = tokens(settings(&idp.url));
    t.jwks().unwrap().refresh().await.unwrap();
    let c = ext_claims("attacker");
    // HS256 "signed" with the RSA public key (PEM, and the JWK's modulus) as the HMAC secret.
    for secret in [RSA_PUB.to_vec(), rsa_jwk("r1")["n"].as_str().unwrap().as_bytes().to_vec()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("r1".into());
        let forged = jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(t.verify(&forged).unwrap_err(), AuthError::WrongAlgorithm);
        assert_eq!(t.verify_async(&forged).await.unwrap_err(), AuthError::WrongAlgorithm);
    }
    // An RS256 token presented under the EdDSA key's kid.
    assert!(t.verify(&sign(Algorithm::RS256, "e1", &c)).is_err());
    // alg: none, with and without a kid.
    let payload = b64(c.to_string().as_bytes());
    for header in [r#"{"alg":"none","kid":"r1"}"#, r#"{"alg":"none"}"#, r#"{"alg":"None","kid":"r1"}"#] {
        for sig in ["", "x"] {
            let token = format!("{}.{payload}.{sig}", b64(header.as_bytes()));
            assert!(t.verify(&token).is_err(), "{header} accepted");
            assert!(t.verify_async(&token).await.is_err(), "{header} accepted");
        }
    }
    assert_eq!(idp.hits(), 1);
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn key_rotation_is_picked_up_on_an_unknown_kid() {
    let idp = idp(set(&[rsa_jwk("r1")])).await;
    let t = tokens(JwksSettings { min_refetch_interval: Duration::ZERO, ..settings(&idp.url) });
    t.jwks().unwrap().refresh().await.unwrap();
    let old = sign(Algorithm::RS256, "r1", &ext_claims("s"));
    assert!(t.verify(&old).is_ok());

    // The IdP rotates: e2 replaces r1.
    idp.set(set(&[ed_jwk("e2")]));
    let new = sign(Algorithm::EdDSA, "e2", &ext_claims("s"));
    // The sync path does not wait: it refuses and schedules a refetch.
    assert_eq!(t.verify(&new).unwrap_err(), AuthError::UnknownKey);
    // The async path waits for the refetch (single flight with the one just scheduled).
    assert_eq!(t.verify_async(&new).await.unwrap().user_id, "s");
    assert_eq!(t.jwks().unwrap().kids(), ["e2"]);
    // The retired key is gone.
    assert_eq!(t.verify_async(&old).await.unwrap_err(), AuthError::UnknownKey);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let idp = idp(set(&[rsa_jwk("r1")])).await;
    // Nothing fetched yet: the first unknown kid may fetch, the rest must not.
    let t = tokens(settings(&idp.url));
    let forged: Vec<String> =
        (0..50).map(|i| sign(Algorithm::RS256, &format!("forged-{i}"), &ext_claims("s"))).collect();
    let results = futures::future::join_all(forged.iter().map(|tok| t.verify_async(tok))).await;
    assert!(results.iter().all(|r| *r == Err(AuthError::UnknownKey)));
    for tok in &forged {
        assert_eq!(t.verify(tok).unwrap_err(), AuthError::UnknownKey);
    }
    tokio::task::yield_now().await;
    assert_eq!(idp.hits(), 1, "one fetch for 100 forged tokens");
    assert_eq!(t.jwks().unwrap().fetch_count(), 1);
    // The fetch did load the real key.
    assert!(t.verify(&sign(Algorithm::RS256, "r1", &ext_claims("s"))).is_ok());
}

#[tokio::test]
async fn cached_keys_serve_while_the_idp_is_down() {
    let idp = idp(set(&[rsa_jwk("r1")])).await;
    let t = tokens(JwksSettings { min_refetch_interval: Duration::ZERO, ..settings(&idp.url) });
    let jwks = t.jwks().unwrap();
    jwks.refresh().await.unwrap();
    let token = sign(Algorithm::RS256, "r1", &ext_claims("s"));

    idp.set(Mode::Down);
    assert!(matches!(jwks.refresh().await, Err(JwksError::Fetch(_))));
    assert!(t.verify(&token).is_ok());
    assert_eq!(t.verify_async(&sign(Algorithm::EdDSA, "e9", &ext_claims("s"))).await, Err(AuthError::UnknownKey));

    // Garbage and key-less documents do not wipe the cache either.
    idp.set(Mode::Serve("not json".into()));
    assert!(matches!(jwks.refresh().await, Err(JwksError::Document(_))));
    idp.set(Mode::Serve(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h1"}]}).to_string()));
    assert!(matches!(jwks.refresh().await, Err(JwksError::Document(_))));
    assert!(t.verify(&token).is_ok());
    assert_eq!(jwks.kids(), ["r1"]);
}

#[tokio::test]
async fn a_hanging_idp_is_cut_off_by_the_fetch_timeout() {
    let idp = idp(Mode::Hang).await;
    let t = tokens(settings(&idp.url));
    let token = sign(Algorithm::RS256, "r1", &ext_claims("s"));
    let r = tokio::time::timeout(Duration::from_secs(10), t.verify_async(&token)).await;
    assert_eq!(r.expect("verify_async waited past its fetch timeout"), Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn an_unreachable_url_is_an_error_not_a_panic() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let t = tokens(settings(&url));
    assert!(matches!(t.jwks().unwrap().refresh().await, Err(JwksError::Fetch(_))));
}

#[tokio::test]
async fn the_refresher_loads_keys_in_the_background() {
    let idp = idp(set(&[rsa_jwk("r1")])).await;
    let t = tokens(JwksSettings { refresh_interval: Duration::from_millis(50), ..settings(&idp.url) });
    let task = t.jwks().unwrap().spawn_refresher();
    let token = sign(Algorithm::RS256, "r1", &ext_claims("s"));
    let mut ok = false;
    for _ in 0..200 {
        if t.verify(&token).is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "the refresher never loaded the keys");
    idp.set(set(&[ed_jwk("e1")]));
    while t.jwks().unwrap().kids() != ["e1"] {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(t);
    // Once every handle is gone the task ends.
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

#[test]
fn parse_set_keeps_only_signing_keys_with_kids() {
    let doc = json!({"keys": [
        rsa_jwk("r1"),
        ed_jwk("e1"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h1"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "ec1"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "enc", "use": "enc"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "wrong-alg", "alg": "HS256"},
        {"kty": "weird", "kid": "w"},
        "not an object",
    ]});
    let keys = parse_set(doc.to_string().as_bytes()).unwrap();
    let mut kids: Vec<_> = keys.keys().cloned().collect();
    kids.sort();
    assert_eq!(kids, ["e1", "r1"]);
    assert!(parse_set(b"{}").is_err());
    assert!(parse_set(br#"{"keys": []}"#).is_err());
    let _: JwkSet = serde_json::from_value(json!({"keys": [rsa_jwk("r1")]})).unwrap();
}

#[test]
fn a_verify_without_a_runtime_does_not_panic() {
    let t = tokens(settings("http://127.0.0.1:9/jwks"));
    assert_eq!(t.verify(&sign(Algorithm::RS256, "r1", &ext_claims("s"))).unwrap_err(), AuthError::UnknownKey);
}
