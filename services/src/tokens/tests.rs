//! Token tests. The PEM files in `testdata/` are throwaway keys generated for these tests only.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

const ED_PRIV: &[u8] = include_bytes!("testdata/ed.pem");
const ED_PUB: &[u8] = include_bytes!("testdata/ed.pub");
const RSA_PRIV: &[u8] = include_bytes!("testdata/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("testdata/rsa.pub");

const ISS: &str = "troupe-test";
const AUD: &str = "troupe-api";

fn hs(secret: &[u8]) -> Tokens {
    Tokens::new(&JwtKey::Hs256 { secret: secret.to_vec() }, ISS, AUD, Duration::from_secs(900)).unwrap()
}

fn claims(tokens: &Tokens, iat: u64) -> Claims {
    tokens.issue_at("u1", &[Role::User], iat).unwrap().claims
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding (enough of it for test tokens).
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

#[test]
fn hs256_round_trip_gives_the_principal() {
    let t = hs(&[7; 32]);
    let issued = t.issue("u1", &[Role::User, Role::Admin]).unwrap();
    assert_eq!(issued.expires_in, 900);
    let p = t.verify(&issued.token).unwrap();
    assert_eq!(p, Principal::new("u1", vec![Role::User, Role::Admin]));
    let c = t.verify_claims(&issued.token).unwrap();
    assert_eq!((c.iss.as_str(), c.aud.as_str()), (ISS, AUD));
    assert_eq!(c.exp, c.iat + 900);
    assert_eq!(c.nbf, c.iat);
    assert!(!c.jti.is_empty());
}

#[test]
fn short_secret_is_refused() {
    let e = Tokens::new(&JwtKey::Hs256 { secret: vec![1; 8] }, ISS, AUD, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, AuthError::Key(_)));
}

#[test]
fn forged_signature_is_rejected() {
    let good = hs(&[7; 32]);
    let forger = hs(&[8; 32]);
    let token = forger.issue("u1", &[Role::Admin]).unwrap().token;
    assert_eq!(good.verify(&token).unwrap_err(), AuthError::BadSignature);
    // Tampered payload: swap the claims of a valid token for an admin's.
    let valid = good.issue("u1", &[Role::User]).unwrap().token;
    let mut parts: Vec<&str> = valid.split('.').collect();
    let mut c = good.verify_claims(&valid).unwrap();
    c.roles = vec![Role::Admin];
    let forged_payload = b64(&serde_json::to_vec(&c).unwrap());
    parts[1] = &forged_payload;
    assert_eq!(good.verify(&parts.join(".")).unwrap_err(), AuthError::BadSignature);
}

#[test]
fn expired_beyond_leeway_is_rejected_within_leeway_accepted() {
    let t = hs(&[7; 32]);
    let now = now_secs();
    // Expired 61 s ago: out of the 60 s leeway.
    let old = t.issue_at("u1", &[Role::User], now - 900 - LEEWAY_SECS - 1).unwrap().token;
    assert_eq!(t.verify(&old).unwrap_err(), AuthError::Expired);
    // Expired 30 s ago: inside the leeway.
    let recent = t.issue_at("u1", &[Role::User], now - 900 - 30).unwrap().token;
    assert!(t.verify(&recent).is_ok());
}

#[test]
fn not_yet_valid_is_rejected() {
    let t = hs(&[7; 32]);
    let future = t.issue_at("u1", &[Role::User], now_secs() + 3600).unwrap().token;
    assert_eq!(t.verify(&future).unwrap_err(), AuthError::NotYetValid);
}

#[test]
fn wrong_audience_and_issuer_are_rejected() {
    let t = hs(&[7; 32]);
    let mut c = claims(&t, now_secs());
    c.aud = "someone-else".into();
    assert_eq!(t.verify(&t.sign(&c).unwrap()).unwrap_err(), AuthError::WrongAudience);
    let mut c = claims(&t, now_secs());
    c.iss = "evil".into();
    assert_eq!(t.verify(&t.sign(&c).unwrap()).unwrap_err(), AuthError::WrongIssuer);
}

#[test]
fn missing_required_claims_are_rejected() {
    let t = hs(&[7; 32]);
    let c = claims(&t, now_secs());
    for drop in ["exp", "nbf", "iss", "aud"] {
        let mut v = serde_json::to_value(&c).unwrap();
        v.as_object_mut().unwrap().remove(drop);
        let err = t.verify(&t.sign(&v).unwrap()).unwrap_err();
        assert!(matches!(err, AuthError::BadClaim(_) | AuthError::Malformed), "{drop}: {err:?}");
    }
}

#[test]
fn unknown_role_is_rejected() {
    let t = hs(&[7; 32]);
    let mut v = serde_json::to_value(claims(&t, now_secs())).unwrap();
    v["roles"] = serde_json::json!(["superuser"]);
    assert!(t.verify(&t.sign(&v).unwrap()).is_err());
}

#[test]
fn alg_none_is_rejected() {
    let t = hs(&[7; 32]);
    let c = claims(&t, now_secs());
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let body = b64(&serde_json::to_vec(&c).unwrap());
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert!(t.verify(&token).is_err(), "{alg} accepted: {token}");
        }
    }
}

#[test]
fn other_algorithms_are_rejected() {
    let t = hs(&[7; 32]);
    let c = claims(&t, now_secs());
    // HS512 with the right secret: right key, wrong algorithm.
    let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &c, &EncodingKey::from_secret(&[7; 32])).unwrap();
    assert_eq!(t.verify(&hs512).unwrap_err(), AuthError::WrongAlgorithm);
    // EdDSA-signed token presented to an HS256 verifier.
    let ed = Tokens::new(
        &JwtKey::EdDsa { private_pem: Some(ED_PRIV.to_vec()), public_pem: ED_PUB.to_vec() },
        ISS,
        AUD,
        Duration::from_secs(900),
    )
    .unwrap();
    assert_eq!(t.verify(&ed.sign(&c).unwrap()).unwrap_err(), AuthError::WrongAlgorithm);
}

#[test]
fn rs256_round_trip_and_key_confusion_attack_rejected() {
    let rs = Tokens::new(
        &JwtKey::Rs256 { private_pem: Some(RSA_PRIV.to_vec()), public_pem: RSA_PUB.to_vec() },
        ISS,
        AUD,
        Duration::from_secs(900),
    )
    .unwrap();
    let token = rs.issue("u9", &[Role::User]).unwrap().token;
    assert_eq!(rs.verify(&token).unwrap().user_id, "u9");
    // A verify-only instance (public key only) accepts it and cannot sign.
    let verifier = Tokens::new(
        &JwtKey::Rs256 { private_pem: None, public_pem: RSA_PUB.to_vec() },
        ISS,
        AUD,
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(verifier.verify(&token).is_ok());
    assert!(matches!(verifier.issue("x", &[]).unwrap_err(), AuthError::Key(_)));
    // Classic confusion: HS256 signed with the public key PEM as the HMAC secret.
    let c = claims(&rs, now_secs());
    let confused =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(RSA_PUB)).unwrap();
    assert_eq!(rs.verify(&confused).unwrap_err(), AuthError::WrongAlgorithm);
}

#[test]
fn eddsa_round_trip() {
    let ed = Tokens::new(
        &JwtKey::EdDsa { private_pem: Some(ED_PRIV.to_vec()), public_pem: ED_PUB.to_vec() },
        ISS,
        AUD,
        Duration::from_secs(60),
    )
    .unwrap();
    let token = ed.issue("u2", &[Role::User]).unwrap().token;
    assert_eq!(ed.verify(&token).unwrap(), Principal::new("u2", vec![Role::User]));
}

#[test]
fn garbage_never_panics() {
    let t = hs(&[7; 32]);
    for token in ["", ".", "..", "a.b.c", "eyJ.eyJ.sig", &"x".repeat(10_000)] {
        assert!(t.verify(token).is_err());
    }
}

#[test]
fn refresh_material_is_random_and_digested() {
    let a = random_token();
    assert_eq!(a.len(), 64);
    assert_ne!(a, random_token());
    assert_eq!(token_digest(&a), token_digest(&a));
    assert_ne!(token_digest(&a), a);
    assert_eq!(token_digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn debug_never_prints_key_material() {
    let key = JwtKey::Hs256 { secret: b"super-secret-value-0123456789abcdef".to_vec() };
    assert!(!format!("{key:?}").contains("super"));
}

#[test]
fn revoked_sessions_are_refused_until_their_tokens_would_have_expired() {
    let t = hs(&[7; 32]);
    let a = t.issue_for_session("u1", &[Role::User], "s-a").unwrap();
    assert_eq!(a.claims.sid.as_deref(), Some("s-a"));
    let b = t.issue_for_session("u1", &[Role::User], "s-b").unwrap().token;
    let plain = t.issue("u1", &[Role::User]).unwrap().token;
    t.revoke_session("s-a", now_secs());
    assert!(t.is_session_revoked("s-a"));
    assert_eq!(t.verify(&a.token).unwrap_err(), AuthError::Revoked);
    assert!(t.verify(&b).is_ok());
    assert!(t.verify(&plain).is_ok(), "tokens without a sid are not affected");
    // A revocation older than access TTL + leeway is already moot and not kept.
    t.revoke_session("s-b", now_secs() - 900 - LEEWAY_SECS - 5);
    assert!(!t.is_session_revoked("s-b"));
    assert!(t.verify(&b).is_ok());
    // Clones share the set (the gateway holds a clone of the auth service's verifier).
    assert_eq!(t.clone().verify(&a.token).unwrap_err(), AuthError::Revoked);
}

#[test]
fn the_revocation_hook_hears_local_revocations_only() {
    let t = hs(&[7; 32]);
    let heard: Arc<std::sync::Mutex<Vec<(String, u64)>>> = Arc::default();
    let h = heard.clone();
    assert!(t.on_revoke(Arc::new(move |sid: &str, at: u64| h.lock().unwrap().push((sid.to_owned(), at)))));
    assert!(!t.clone().on_revoke(Arc::new(|_: &str, _: u64| {})), "one hook per verifier");
    let now = now_secs();
    t.revoke_session("local", now);
    // Learnt from a peer or from the store: applied, not echoed.
    t.apply_revocation("remote", now);
    assert!(t.is_session_revoked("local") && t.is_session_revoked("remote"));
    assert_eq!(*heard.lock().unwrap(), [("local".to_owned(), now)]);
}

#[test]
fn own_tokens_start_with_the_precomputed_header_prefix() {
    for t in [
        hs(&[7; 32]),
        Tokens::new(
            &JwtKey::EdDsa { private_pem: Some(ED_PRIV.to_vec()), public_pem: ED_PUB.to_vec() },
            ISS,
            AUD,
            Duration::from_secs(60),
        )
        .unwrap(),
    ] {
        let token = t.issue("u", &[Role::User]).unwrap().token;
        assert!(token.starts_with(&t.inner.own_header_prefix), "{token} vs {}", t.inner.own_header_prefix);
        let header: Header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid, None);
    }
    assert_eq!(base64url(b"any carnal pleasure."), "YW55IGNhcm5hbCBwbGVhc3VyZS4");
}

#[test]
fn a_cached_token_is_still_checked_for_expiry_and_revocation() {
    let t = hs(&[7; 32]);
    let issued = t.issue_for_session("u1", &[Role::User], "s-cache").unwrap();
    let now = now_secs();
    // First use verifies in full and caches; the second is a cache hit with the same answer.
    let first = t.verify(&issued.token).unwrap();
    assert_eq!(t.verify(&issued.token).unwrap(), first);
    assert_eq!(t.verify_own_at(&issued.token, now).unwrap(), first);
    // Past expiry + leeway the cached entry is refused like the token itself.
    assert_eq!(t.verify_own_at(&issued.token, issued.claims.exp + LEEWAY_SECS + 1).unwrap_err(), AuthError::Expired);
    assert!(t.verify_own_at(&issued.token, issued.claims.exp + LEEWAY_SECS).is_ok(), "within leeway");
    // A revoked session is refused even from the cache.
    t.revoke_session("s-cache", now);
    assert_eq!(t.verify(&issued.token).unwrap_err(), AuthError::Revoked);
    // A token differing in one signature byte is not a cache hit.
    // (A middle character of the signature: all six of its bits are signature bits.)
    let mut bytes = issued.token.clone().into_bytes();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    assert!(t.verify(&forged).is_err());
}

#[test]
fn the_verified_cache_stays_bounded() {
    let t = hs(&[7; 32]);
    for i in 0..(super::VERIFIED_CACHE_CAPACITY + 10) {
        let token = t.issue(&format!("u{i}"), &[Role::User]).unwrap().token;
        t.verify(&token).unwrap();
    }
    assert!(t.inner.verified.map.read().unwrap().len() <= super::VERIFIED_CACHE_CAPACITY);
}
