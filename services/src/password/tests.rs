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
