//! The stack as `deploy/local/up` starts it (its broker and that broker's storage, its
//! supervisor), with a data directory, a database and free ports of its own: for tests of what a
//! person who runs `up` gets. The binaries are the ones the tests were built with (`HIE_BIN_DIR`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, workspace_binary, TestDb};

const SECRET: &str = "local-stack-test-secret-of-32-bytes-or-more";
/// `HIE_BOOTSTRAP_ADMIN` of the stack: not the default, so that `up` (and the `hiectl` it runs)
/// must honour the variable.
pub const LOCAL_ADMIN: &str = "ops-admin";

pub struct LocalStack {
    pub ingest: String,
    pub projector: String,
    pub query: String,
    pub mllp: SocketAddr,
    pub drop_dir: PathBuf,
    pub data_dir: PathBuf,
    pub db: TestDb,
    env: Vec<(String, String)>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the repository")
        .to_path_buf()
}

impl LocalStack {
    /// `deploy/local/up --no-demo` on a fresh data directory and database.
    pub async fn up() -> LocalStack {
        Self::up_with(&[]).await
    }

    /// `up`, with `extra` added to (or overriding) the stack's environment.
    pub async fn up_with(extra: &[(&str, &str)]) -> LocalStack {
        let db = TestDb::create().await;
        let data_dir = std::env::temp_dir().join(format!("hie-up-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir).unwrap();
        // HIE_SOAK_BIN_DIR: the services of another build (tests/run --soak: release ones).
        let bin_dir = match std::env::var("HIE_SOAK_BIN_DIR") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => workspace_binary("hiectl").parent().unwrap().to_path_buf(),
        };
        let (ingest, projector, query, mllp, kafka) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let env: Vec<(String, String)> = [
            ("HIE_DATA_DIR", data_dir.display().to_string()),
            ("HIE_BIN_DIR", bin_dir.display().to_string()),
            ("HIE_JWT_SECRET", SECRET.to_string()),
            ("HIE_BOOTSTRAP_ADMIN", LOCAL_ADMIN.to_string()),
            ("DATABASE_URL", db.url()),
            ("KAFKA_PORT", kafka.to_string()),
            ("INGEST_HTTP_ADDR", format!("127.0.0.1:{ingest}")),
            ("INGEST_MLLP_ADDR", format!("127.0.0.1:{mllp}")),
            ("PROJECTOR_HTTP_ADDR", format!("127.0.0.1:{projector}")),
            ("QUERY_HTTP_ADDR", format!("127.0.0.1:{query}")),
            ("RUST_LOG", "info".to_string()),
            ("HIE_UP_TIMEOUT", "90".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
        let stack = LocalStack {
            ingest: format!("http://127.0.0.1:{ingest}"),
            projector: format!("http://127.0.0.1:{projector}"),
            query: format!("http://127.0.0.1:{query}"),
            mllp: format!("127.0.0.1:{mllp}").parse().unwrap(),
            drop_dir: data_dir.join("drop"),
            data_dir,
            db,
            env,
        };
        // Removed when the test passes: a stack whose test did not is stopped but kept.
        std::fs::write(stack.data_dir.join("keep"), b"").unwrap();
        stack.guard();
        stack.run("up", &["--no-demo"]).await;
        stack
    }

    /// `down` once this test process is gone, however it ends (nextest kills a test that runs too
    /// long, and no destructor runs then): `up` starts the stack detached from us. `--wipe` too
    /// unless the test failed (`keep`).
    fn guard(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -e {keep} ]; then exec bash {down}; else exec bash {down} --wipe; fi",
            pid = std::process::id(),
            keep = self.data_dir.join("keep").display(),
            down = repo().join("deploy/local/down").display()
        );
        let mut cmd = Command::new("setsid");
        cmd.args(["bash", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let _ = cmd.spawn();
    }

    /// Run `deploy/local/<script> <args>` with this stack's environment; panics with its output
    /// when it fails.
    pub async fn run(&self, script: &str, args: &[&str]) -> String {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("deploy/local").join(script))
            .args(args)
            .current_dir(repo());
        // Only what this stack sets: not a broker, storage or drop folder from the caller's shell.
        for k in [
            "KAFKA_BROKERS",
            "TANSU_STORAGE",
            "DROP_DIR",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // To measure another broker storage under the same load (docs/benchmarks.md).
        if let Ok(storage) = std::env::var("HIE_SOAK_TANSU_STORAGE") {
            cmd.env("TANSU_STORAGE", storage);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("running bash");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "deploy/local/{script} {args:?} failed:\n{text}\n--- logs ---\n{}",
            self.logs_tail()
        );
        text
    }

    /// The last lines of every log in the stack's data directory.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.data_dir.join("logs")) {
            for entry in dir.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!("== {}\n", entry.path().display()));
                for line in &lines[lines.len().saturating_sub(15)..] {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// A JWT the stack's services verify (the caller still needs an account, but `LOCAL_ADMIN`).
    pub fn token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        crate::sign_token(SECRET, sub, org, roles)
    }

    pub fn admin(&self) -> String {
        self.token(LOCAL_ADMIN, "org-hie", &["admin"])
    }

    /// The pid `up` recorded for `name` (`$HIE_DATA_DIR/run/<name>.pid`).
    pub fn pid(&self, name: &str) -> u32 {
        let file = self.data_dir.join("run").join(format!("{name}.pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {}", file.display()))
    }

    /// Everything `name` logged so far (`$HIE_DATA_DIR/logs/<name>.log`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.data_dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// What `up` chose for the broker's storage (`$HIE_DATA_DIR/broker-storage`).
    /// The broker and where its log is, for the figures.
    pub fn broker(&self) -> String {
        format!("hie-log, log in {}", self.data_dir.join("log").display())
    }
}

impl Drop for LocalStack {
    /// `down --wipe`; after a failure, `down` only, keeping the logs for whoever looks into it.
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if !failed {
            let _ = std::fs::remove_file(self.data_dir.join("keep"));
        }
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("deploy/local/down"));
        if !failed {
            cmd.arg("--wipe");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let _ = cmd.output();
        if failed {
            eprintln!("the stack's logs: {}/logs", self.data_dir.display());
        }
    }
}
