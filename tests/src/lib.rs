//! The integration-test harness: a real broker (hie-log) on a free port, a fresh PostgreSQL database,
//! and the three services on random ports, spoken to only over their public APIs.

mod app;
mod broker;
pub mod browser;
mod database;
mod portal_session;
mod stack;
mod up;

pub use app::{urlencode, Services, TestApp, BOOTSTRAP_ADMIN, OPERATOR_ORG, SECRET};
pub use broker::Broker;
pub use database::TestDb;
pub use portal_session::{document_text, PortalSession};
pub use stack::{Stack, SERVICES, STACK_ADMIN};
pub use up::{LocalStack, LOCAL_ADMIN};

/// The Synthea bundles shipped beside the repository (`../shared/data/synthea`).
pub fn synthea_dir() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("../../shared/data/synthea");
    assert!(
        dir.is_dir(),
        "Synthea sample data not found at {}",
        dir.display()
    );
    dir
}

/// Every Synthea patient bundle (not the shared Organization/Practitioner files).
pub fn synthea_patient_bundles() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(synthea_dir())
        .expect("synthea dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(".json")
                && !name.starts_with("hospital")
                && !name.starts_with("practitioner")
        })
        .collect();
    files.sort();
    files
}

/// A built binary of the workspace (`tests/run` builds them before the tests).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test runs from target/<profile>/deps, a binary such as the bench from target/<profile>.
    let dir = exe.parent().expect("target/<profile>");
    let path = [dir.join(name), dir.parent().unwrap_or(dir).join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing beside {}: run `cargo build --bins` first (tests/run does)",
                dir.display()
            )
        });
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HS256 JWT for `sub` of `org` with `roles`, valid for an hour, signed with `secret`. Its
/// email is the one the harness gives the account (`<sub>@<org>.example`).
pub fn sign_token(secret: &str, sub: &str, org: &str, roles: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = platform::auth::Claims {
        sub: sub.into(),
        email: format!("{sub}@{org}.example"),
        org: org.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        exp,
        iat: None,
    };
    platform::auth::sign_hs256(&claims, secret.as_bytes())
}
