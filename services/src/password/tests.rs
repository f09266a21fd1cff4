#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

#[tokio::test]
async fn hash_is_phc_argon2id_and_verifies() {
    let h = PasswordHasher::new(HashParams::insecure_fast(), 2).unwrap();
    let phc = h.hash("correct horse".into()).await.unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
    assert!(h.verify(phc.clone(), "correct horse".into()).await.unwrap());
    assert!(!h.verify(phc.clone(), "wrong horse".into()).await.unwrap());
    // Same password, fresh salt.
    assert_ne!(phc, h.hash("correct horse".into()).await.unwrap());
    assert!(!h.verify_dummy("correct horse".into()).await.unwrap());
}

#[tokio::test]
async fn malformed_stored_hash_is_internal_not_a_panic() {
    let h = PasswordHasher::new(HashParams::insecure_fast(), 1).unwrap();
    let e = h.verify("not a phc".into(), "x".into()).await.unwrap_err();
    assert_eq!(e.kind(), "internal");
}

#[tokio::test]
async fn blocking_work_is_bounded_by_the_semaphore() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let h = PasswordHasher::new(HashParams::insecure_fast(), 2).unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (h, running, peak) = (h.clone(), Arc::clone(&running), Arc::clone(&peak));
            tokio::spawn(async move {
                h.blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "at most two hashes at once, and the bound is reached");
}

#[tokio::test]
async fn hashes_made_with_other_costs_still_verify() {
    let old = PasswordHasher::new(HashParams::insecure_fast(), 1).unwrap();
    let phc = old.hash("correct horse".into()).await.unwrap();
    // A node reconfigured with other costs: new hashes use them, old ones verify with their own.
    let new = PasswordHasher::new(HashParams { m_cost_kib: 128, t_cost: 2, p_cost: 2 }, 1).unwrap();
    assert!(new.verify(phc.clone(), "correct horse".into()).await.unwrap());
    assert!(!new.verify(phc, "wrong horse".into()).await.unwrap());
    let fresh = new.hash("correct horse".into()).await.unwrap();
    assert!(fresh.starts_with("$argon2id$v=19$m=128,t=2,p=2$"), "{fresh}");
    assert!(old.verify(fresh, "correct horse".into()).await.unwrap());
}

#[test]
fn impossible_costs_are_a_typed_error() {
    let e = PasswordHasher::new(HashParams { m_cost_kib: 8, t_cost: 1, p_cost: 4 }, 1).unwrap_err();
    assert_eq!(e.kind(), "internal");
}
