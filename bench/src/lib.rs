//! The manifest check behind `deploy/check-manifests` and `bench/tests/manifests.rs`.

pub mod manifests;
