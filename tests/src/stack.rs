//! The three real binaries as processes, each logging to its own file: for tests about what the
//! processes print or serve (logs, traces, `/metrics`), which in-process services cannot show.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::{free_port, workspace_binary, Broker, TestDb};

/// HS256 needs at least 32 bytes.
const SECRET: &str = "stack-test-secret-0123456789abcdef";
/// The user id every process honours as an admin without an account.
pub const STACK_ADMIN: &str = "admin";
pub const SERVICES: [&str; 3] = ["ingest", "projector", "query-api"];

pub struct Stack {
    pub ingest: String,
    pub projector: String,
    pub query: String,
    pub http: reqwest::Client,
    pub broker: Broker,
    pub db: TestDb,
    logs: PathBuf,
    procs: Vec<Child>,
}

impl Stack {
    /// Start ingest, projector and query-api with `env` added to each; waits for every `/healthz`.
    pub async fn start(env: &[(&str, String)]) -> Stack {
        let broker = Broker::start();
        let db = TestDb::create().await;
        let logs = std::env::temp_dir().join(format!("hie-stack-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&logs).unwrap();
        let (ingest_port, projector_port, query_port) = (free_port(), free_port(), free_port());
        let procs = SERVICES
            .iter()
            .map(|name| {
                let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
                let mut cmd = Command::new(workspace_binary(name));
                cmd.env("KAFKA_BROKERS", broker.address())
                    .env("DATABASE_URL", db.url())
                    .env("HIE_JWT_SECRET", SECRET)
                    .env("INGEST_HTTP_ADDR", format!("127.0.0.1:{ingest_port}"))
                    .env("INGEST_MLLP_ADDR", "off")
                    .env("DROP_DIR", logs.join("drop"))
                    .env("PROJECTOR_HTTP_ADDR", format!("127.0.0.1:{projector_port}"))
                    .env("QUERY_HTTP_ADDR", format!("127.0.0.1:{query_port}"))
                    .env("RUST_LOG", "info")
                    .env("HIE_BOOTSTRAP_ADMIN", STACK_ADMIN)
                    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .stdin(Stdio::null());
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd.spawn().unwrap()
            })
            .collect();
        let stack = Stack {
            ingest: format!("http://127.0.0.1:{ingest_port}"),
            projector: format!("http://127.0.0.1:{projector_port}"),
            query: format!("http://127.0.0.1:{query_port}"),
            http: reqwest::Client::new(),
            broker,
            db,
            logs,
            procs,
        };
        for base in [&stack.ingest, &stack.projector, &stack.query] {
            stack.wait_healthy(base).await;
        }
        stack
    }

    async fn wait_healthy(&self, base: &str) {
        for _ in 0..400 {
            if let Ok(r) = self.http.get(format!("{base}/healthz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{base} not healthy");
    }

    /// A JWT the processes accept (the caller still needs an account, except `STACK_ADMIN`).
    pub fn token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        crate::sign_token(SECRET, sub, org, roles)
    }

    /// Register source `id` of `org` (as the bootstrap admin); returns its API key.
    pub async fn register_source(&self, id: &str, org: &str, assigning_authority: &str) -> String {
        let r = self
            .http
            .put(format!("{}/v1/sources/{id}", self.ingest))
            .bearer_auth(self.admin())
            .json(
                &serde_json::json!({"name": format!("Source {id}"), "organization_id": org,
                "feed": "realtime", "assigning_authority": assigning_authority, "part2": false}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: serde_json::Value = r.json().await.unwrap();
        body["api_key"].as_str().unwrap().to_string()
    }

    /// Create the account `sub` (as the bootstrap admin) and return a token for it.
    pub async fn user_token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        let r = self
            .http
            .put(format!("{}/v1/users/{sub}", self.query))
            .bearer_auth(self.admin())
            .json(&serde_json::json!({"email": format!("{sub}@{org}.example"),
                "organization_id": org, "roles": roles}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        self.token(sub, org, roles)
    }

    pub fn admin(&self) -> String {
        self.token(STACK_ADMIN, "org-hie", &["admin"])
    }

    /// Everything `service` has logged so far.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{service}.log"))).unwrap_or_default()
    }

    /// Wait (up to `within`) until `service` has logged `needle`.
    pub async fn wait_for_log(&self, service: &str, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.log(service).contains(needle) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id of `service` (one of `SERVICES`), e.g. to read its memory from `/proc`.
    pub fn pid(&self, service: &str) -> u32 {
        let i = SERVICES
            .iter()
            .position(|s| *s == service)
            .unwrap_or_else(|| panic!("no service {service}"));
        self.procs[i].id()
    }

    /// Kill the processes (their logs stay readable).
    pub fn stop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}
