//! Bearer authentication through the real router: tokens of an external identity provider whose key
//! is fetched from a local JWKS server (axum on 127.0.0.1:0) on first sight of its `kid`, forged kids,
//! alg confusion, and access tokens of a revoked session.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;
use tower::ServiceExt;
use troupe_actors::Registry;
use troupe_services::tokens::jwks::JwksSettings;
use troupe_services::tokens::now_secs;
use troupe_services::{JwtKey, Role, Tokens};

use crate::{GatewayConfig, GatewayState, router};

const RSA_PRIV: &[u8] = include_bytes!("../../../services/src/tokens/testdata/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("../../../services/src/tokens/testdata/rsa.pub");
const IDP: &str = "https://idp.example";
const AUD: &str = "troupe-api";

/// A JWKS server with one RSA key `r1`; counts fetches.
async fn idp() -> (String, Arc<AtomicU64>) {
    let mut jwk = Jwk::from_decoding_key(&DecodingKey::from_rsa_pem(RSA_PUB).unwrap(), Some(Algorithm::RS256)).unwrap();
    jwk.common.key_id = Some("r1".into());
    let body = json!({ "keys": [jwk] }).to_string();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

fn external(kid: &str, roles: &[&str]) -> String {
    let now = now_secs();
    let claims = json!({"sub": "ext-1", "iss": IDP, "aud": AUD, "exp": now + 600, "nbf": now, "roles": roles});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(RSA_PRIV).unwrap()).unwrap()
}

fn app(tokens: Tokens) -> axum::Router {
    let cfg = GatewayConfig {
        node_name: "t1".into(),
        version: "0.0.0",
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 1024,
        allow_kill: true,
    };
    router(&cfg, GatewayState::new(&cfg, Registry::new(), None).with_tokens(tokens))
}

/// The kill endpoint is admin-only with authentication configured: 404 for an unknown path means
/// the caller was authenticated as an admin, 403 a non-admin, 401 no valid token.
async fn kill_status(app: &axum::Router, token: &str) -> StatusCode {
    let req = Request::post("/api/v1/system/actors/kill?path=/nope")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn an_external_token_with_a_new_kid_is_verified_after_one_fetch() {
    let (url, hits) = idp().await;
    let settings = JwksSettings { min_refetch_interval: Duration::from_secs(3600), ..JwksSettings::new(url, IDP, AUD) };
    let own = JwtKey::Hs256 { secret: vec![3; 32] };
    let tokens = Tokens::with_jwks(&own, "troupe", AUD, Duration::from_secs(900), Some(settings)).unwrap();
    let app = app(tokens.clone());

    // Nothing cached yet: the extractor waits for the fetch instead of answering 401.
    assert_eq!(kill_status(&app, &external("r1", &["admin"])).await, StatusCode::NOT_FOUND);
    assert_eq!(kill_status(&app, &external("r1", &[])).await, StatusCode::FORBIDDEN);
    // Forged kids: 401, and no further fetch (rate limit).
    for i in 0..20 {
        assert_eq!(kill_status(&app, &external(&format!("forged-{i}"), &["admin"])).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Alg confusion: HS256 signed with the RSA public key, under the IdP's kid.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("r1".into());
    let now = now_secs();
    let claims = json!({"sub": "x", "iss": IDP, "aud": AUD, "exp": now + 600, "nbf": now, "roles": ["admin"]});
    let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(RSA_PUB)).unwrap();
    assert_eq!(kill_status(&app, &forged).await, StatusCode::UNAUTHORIZED);

    // Our own tokens still work, and a revoked session's token does not.
    let own = tokens.issue_for_session("admin-1", &[Role::User, Role::Admin], "s1").unwrap().token;
    assert_eq!(kill_status(&app, &own).await, StatusCode::NOT_FOUND);
    tokens.revoke_session("s1", now_secs());
    assert_eq!(kill_status(&app, &own).await, StatusCode::UNAUTHORIZED);
}
