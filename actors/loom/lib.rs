//! Empty: this crate only hosts the loom model in `../tests/loom_breaker.rs`.
