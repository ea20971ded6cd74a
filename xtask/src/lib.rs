//! Project chores run with `cargo xtask <task>` (alias in `.cargo/config.toml`): the manifest check
//! behind `deploy/check-manifests` and `xtask/tests/manifests.rs`.

pub mod manifests;
