//! Smoke tests of the measuring tools against the real `riftd` server, with
//! tiny numbers: one test binary, a module per tool. The server binary comes
//! from the workspace's target directory (`cargo test --workspace` builds it).

// riftd's own test harness, shared rather than copied; these tests use only
// part of it.
#[allow(dead_code)]
#[path = "../../tests/common/mod.rs"]
mod common;

mod bench;
mod chaos;
mod stress;
