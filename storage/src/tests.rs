//! Runs the conformance suite against the fjall backend (always available).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use crate::{FjallBackend, ManualClock, Store};

async fn fjall_store(clock: ManualClock) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FjallBackend::open(dir.path().join("store")).await.expect("open fjall");
    (Store::new(Arc::new(backend), Arc::new(clock)), dir)
}

mod fjall {
    crate::conformance_tests!(super::fjall_store);
}

#[tokio::test]
async fn open_from_config_uses_data_dir_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = troupe_config::StoreConfig::default();
    let store = Store::open(&config, dir.path()).await.unwrap();
    assert_eq!(store.backend_name(), "fjall");
    assert!(dir.path().join("store").join("FORMAT").is_file());
    store.close().await.unwrap();
    let config = troupe_config::StoreConfig { backend: troupe_config::StoreBackend::Postgres, url: None };
    let err = Store::open(&config, dir.path()).await.unwrap_err();
    assert!(matches!(err, crate::StoreError::BadConfig { .. }), "{err:?}");
}

#[test]
fn table_names_are_checked() {
    for ok in ["t", "users", "a_1"] {
        assert!(crate::check_table(ok).is_ok(), "{ok}");
    }
    for bad in ["", "_troupe_x", "Users", "1a", "a-b", &"a".repeat(64)] {
        assert!(crate::check_table(bad).is_err(), "{bad}");
    }
}
