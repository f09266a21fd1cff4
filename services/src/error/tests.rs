#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use super::*;

#[test]
fn internal_detail_never_shows_in_display() {
    let e = ServiceError::from(StoreError::CorruptData {
        table: "users".into(),
        key: "(\"secret-id\")".into(),
        reason: "postcard: bad varint".into(),
    });
    assert_eq!(e.kind(), "internal");
    assert_eq!(e.to_string(), "internal error");
    assert!(e.internal_detail().unwrap().contains("secret-id"));
}

#[test]
fn actor_errors_keep_retry_after() {
    let e = ServiceError::from(troupe_actors::Error::Unavailable {
        service: "/troupe/services/users".into(),
        retry_after: Duration::from_millis(1500),
    });
    assert_eq!(e.kind(), "unavailable");
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
    assert_eq!(
        ServiceError::from(troupe_actors::Error::Overloaded { service: "x".into(), limit: 3 }).kind(),
        "overloaded"
    );
    assert_eq!(
        ServiceError::from(troupe_actors::Error::Timeout { service: "x".into(), timeout: Duration::from_secs(1) })
            .kind(),
        "timeout"
    );
    assert_eq!(ServiceError::from(troupe_actors::Error::Stopped { service: "x".into() }).kind(), "unavailable");
}

#[test]
fn store_unavailable_is_retryable_unavailable() {
    let e = ServiceError::from(StoreError::Unavailable { reason: "disk on fire at /var/x".into() });
    assert!(e.retry_after().is_some());
    assert!(!e.to_string().contains("disk"));
}
